"""Encrypted backup files: AES-256-GCM over a stream, in chunks (docs/backups.md#file-format).

A database dump can be larger than memory, and AES-GCM encrypts one message at once, so the
file is a sequence of chunks, each its own AES-GCM message (the STREAM construction of Hoang,
Reyhanitabar, Rogaway and Vizar): the nonce is a random 7-byte prefix, the chunk's number and a
flag set on the last chunk; every chunk authenticates the file's header. A chunk changed,
dropped, reordered or cut off at the end, a header edited, or a wrong key each fail
authentication, and nothing of the file is used.

    b"PATRONBK" | version (1 byte) | header length (4 bytes) | header (JSON)
    then per chunk: ciphertext length (4 bytes) | ciphertext (plaintext + 16-byte tag)

The header (key id, nonce prefix, manifest: database kind, time, schema revision) is readable
without the key, so backups can be listed; it holds no data.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from patron.errors import PatronError
from patron.protection.keys import Keyring, KeyUnavailable

MAGIC = b"PATRONBK"
VERSION = 1
CHUNK = 1 << 20
_LEN = struct.Struct(">I")


class BackupUnreadable(PatronError):
    status = 422
    code = "backup_unreadable"


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


def encrypt_stream(source: IO[bytes], target: IO[bytes], *, keyring: Keyring,
                   manifest: dict[str, Any]) -> int:
    """Encrypt everything ``source`` yields into ``target``; returns the plaintext size."""
    prefix = os.urandom(7)
    header_json = json.dumps({"key_id": keyring.current_id, "nonce_prefix": prefix.hex(),
                              "chunk": CHUNK, "manifest": manifest},
                             sort_keys=True, ensure_ascii=False).encode()
    header = MAGIC + bytes([VERSION]) + _LEN.pack(len(header_json)) + header_json
    target.write(header)
    aead = AESGCM(keyring.current)
    counter, total = 0, 0
    chunk = source.read(CHUNK)
    while True:
        following = source.read(CHUNK) if chunk else b""
        last = not following
        sealed = aead.encrypt(_nonce(prefix, counter, last), chunk, header)
        target.write(_LEN.pack(len(sealed)) + sealed)
        total += len(chunk)
        if last:
            return total
        counter += 1
        chunk = following


def read_header(source: IO[bytes]) -> tuple[bytes, dict[str, Any]]:
    """The raw header (authenticated by every chunk) and its JSON."""
    start = source.read(len(MAGIC) + 1 + _LEN.size)
    if len(start) < len(MAGIC) + 1 + _LEN.size or start[:len(MAGIC)] != MAGIC:
        raise BackupUnreadable("backup_not_a_backup")
    if start[len(MAGIC)] != VERSION:
        raise BackupUnreadable("backup_version_unknown", params={"version": start[len(MAGIC)]})
    (length,) = _LEN.unpack(start[len(MAGIC) + 1:])
    raw = source.read(length)
    try:
        header = json.loads(raw)
    except ValueError:
        raise BackupUnreadable("backup_corrupt") from None
    return start + raw, header


def decrypt_stream(source: IO[bytes], *, keyring: Keyring) -> Iterator[bytes]:
    """The plaintext chunks, each authenticated before it is yielded; raises on any change, a
    missing end, or a key that is not the one the file was written with."""
    header_raw, header = read_header(source)
    key = keyring.key(str(header.get("key_id")))
    aead = AESGCM(key)
    prefix = bytes.fromhex(str(header["nonce_prefix"]))
    counter = 0
    pending = _read_chunk(source)
    while pending is not None:
        following = _read_chunk(source)
        last = following is None
        try:
            yield aead.decrypt(_nonce(prefix, counter, last), pending, header_raw)
        except InvalidTag:
            if counter == 0:
                raise KeyUnavailable("backup_key_wrong",
                                     params={"key_id": header.get("key_id")}) from None
            raise BackupUnreadable("backup_corrupt") from None
        counter += 1
        pending = following
    if counter == 0:
        raise BackupUnreadable("backup_corrupt")


def _read_chunk(source: IO[bytes]) -> bytes | None:
    head = source.read(_LEN.size)
    if not head:
        return None
    if len(head) < _LEN.size:
        raise BackupUnreadable("backup_corrupt")
    (length,) = _LEN.unpack(head)
    body = source.read(length)
    if len(body) != length:
        raise BackupUnreadable("backup_corrupt")
    return body
