"""Personal data at rest: AES-256-GCM per value, bound to its table, column and row; blind
indexes for exact lookups (docs/data-protection.md#personal-data-at-rest, decision 0013).

A protected column's type (:class:`Encrypted`, :class:`EncryptedDate`, :class:`EncryptedJSON`)
encrypts on write and decrypts on read, so queries read plain values as before. What it needs
to bind a value to its row:

- on write, the value comes wrapped as ``Sealed(binding, value)``, the binding being the row's
  key columns (``customers``: its id; ``identities``: kind, namespace and the value's blind
  index). A plain value is refused: a write that forgot the binding fails loudly in the tests
  instead of storing an unbound or clear value;
- on read, the type's ``column_expression`` selects ``<key columns> | <ciphertext>``, so the
  row's key arrives with the value and is checked as associated data. A ciphertext moved to
  another row or column fails authentication and raises :class:`KeyUnavailable` ("key_wrong"),
  never garbage.

Stored form: ``<key id>$<base64url(nonce | ciphertext | tag)>``. Encrypted values cannot be
compared in SQL; exact lookups compare blind indexes (:func:`blind`): HMAC-SHA-256 under the
index key, truncated to 128 bits, of a purpose and the normalised value.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import String, Text, cast, type_coerce
from sqlalchemy.sql.elements import Label
from sqlalchemy.types import TypeDecorator

from patron.protection.keys import Keyring, KeyUnavailable, data_keyring, index_key

SEP = "|"
# Benchmarks only (benchmarks/search_scale.py --encryption-cost): the same code with AES-GCM and
# HMAC replaced by identity functions, as the anchor that prices encryption. Never set otherwise.
_ANCHOR_WITHOUT_CRYPTO = False


@dataclass(frozen=True)
class Sealed:
    """A value to write into a protected column, with the row key it is bound to."""

    binding: tuple[Any, ...]
    value: Any


def binding_text(values: tuple[Any, ...]) -> str:
    return SEP.join(["" if v is None else str(v) for v in values])


@lru_cache(maxsize=8)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)


def encrypt(plain: str, *, where: str, binding: str, keyring: Keyring | None = None) -> str:
    if _ANCHOR_WITHOUT_CRYPTO:
        return f"plain${plain}"
    ring = keyring or data_keyring()
    nonce = os.urandom(12)
    sealed = _aead(ring.current).encrypt(nonce, plain.encode(), f"{where}{SEP}{binding}".encode())
    return f"{ring.current_id}${base64.urlsafe_b64encode(nonce + sealed).decode()}"


def encrypt_many(plains: list[str], *, where: str, bindings: list[str]) -> list[str]:
    """:func:`encrypt` of each plain text with its binding: the key and cipher looked up once
    and the nonces drawn in one read of the system's random source (12 random bytes each, as
    one by one)."""
    if _ANCHOR_WITHOUT_CRYPTO:
        return [encrypt(p, where=where, binding=b) for p, b in zip(plains, bindings, strict=True)]
    ring = data_keyring()
    seal = _aead(ring.current).encrypt
    prefix = f"{ring.current_id}$"
    nonces = os.urandom(12 * len(plains))
    b64 = base64.urlsafe_b64encode
    out = []
    for i, (plain, binding) in enumerate(zip(plains, bindings, strict=True)):
        nonce = nonces[12 * i:12 * i + 12]
        sealed = seal(nonce, plain.encode(), f"{where}{SEP}{binding}".encode())
        out.append(prefix + b64(nonce + sealed).decode())
    return out


def decrypt(token: str, *, where: str, binding: str, keyring: Keyring | None = None) -> str:
    key_id, sep, body = token.partition("$")
    if _ANCHOR_WITHOUT_CRYPTO and key_id == "plain":
        return body
    ring = keyring or data_keyring()
    if not sep:
        raise KeyUnavailable("key_wrong", params={"purpose": "data", "key_id": "?"})
    raw = base64.urlsafe_b64decode(body)
    try:
        plain = _aead(ring.key(key_id)).decrypt(raw[:12], raw[12:],
                                                f"{where}{SEP}{binding}".encode())
    except InvalidTag:
        raise KeyUnavailable("key_wrong", params={"purpose": "data", "key_id": key_id}) from None
    return plain.decode()


def key_id_of(token: str) -> str:
    return token.partition("$")[0]


def blind(purpose: str, value: str) -> str:
    """The blind index of a normalised value: equal values give equal indexes, and nothing else
    can be learnt without the index key."""
    if _ANCHOR_WITHOUT_CRYPTO:
        return f"{purpose}:{value}"[:32]
    return _blind(index_key(), purpose, value)


def blind_many(purpose: str, values: list[str]) -> list[str]:
    """:func:`blind` of each value, the key looked up once."""
    if _ANCHOR_WITHOUT_CRYPTO:
        return [blind(purpose, v) for v in values]
    key = index_key()
    return [_blind(key, purpose, v) for v in values]


def _blind(key: bytes, purpose: str, value: str) -> str:
    # hmac.digest: the same HMAC in one call to OpenSSL, about twice as fast as hmac.new
    # (ingestion computes one per identifier of every order).
    return hmac.digest(key, f"{purpose}\x00{value}".encode(), "sha256").hex()[:32]


class Encrypted(TypeDecorator[str]):
    """Text encrypted per value, bound to ``where`` (table.column) and the row's ``binding``
    columns (see the module's docstring)."""

    impl = Text
    cache_ok = True

    def __init__(self, where: str = "", binding: tuple[str, ...] = ("id",)) -> None:
        super().__init__()
        self.where = where
        self.binding = binding

    def to_text(self, value: Any) -> str:
        return str(value)

    def from_text(self, text: str) -> Any:
        return text

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, StoredCiphertext):
            return value.token  # re-written as it is (a rotation writes through Text)
        if not isinstance(value, Sealed):
            raise TypeError(f"{self.where}: personal data is written as Sealed(row key, value)")
        return self.seal(value.binding, value.value)

    def seal(self, binding: tuple[Any, ...], value: Any) -> str | None:
        """What ``Sealed(binding, value)`` binds as: for hot paths that build the driver's
        rows themselves (ingestion seals each order's identifiers)."""
        if value is None:
            return None
        return encrypt(self.to_text(value), where=self.where, binding=binding_text(binding))

    def seal_texts(self, bindings: list[tuple[Any, ...]], texts: list[str]) -> list[str]:
        """:meth:`seal` of values the caller wrote as text already (any text that
        :meth:`from_text` reads back as the value: ingestion writes each order's identifiers
        with orjson, several times faster than the json module's encoder), each with its
        binding, in one go (:func:`encrypt_many`)."""
        return encrypt_many(texts, where=self.where, bindings=[binding_text(b) for b in bindings])

    def column_expression(self, col: Any) -> Any:
        if isinstance(col, Label):
            inner = self.column_expression(col.element)
            return inner if inner is col.element else inner.label(col.name)
        table = getattr(col, "table", None)
        if table is None or any(b not in table.c for b in self.binding):
            return col  # already carries its binding (a subquery of a bound select)
        expr: Any = None
        for name in self.binding:
            part = cast(table.c[name], String)
            expr = part if expr is None else expr.concat(SEP).concat(part)
        return type_coerce(expr.concat(SEP).concat(type_coerce(col, Text)), self)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        binding, sep, token = str(value).rpartition(SEP)
        if not sep:
            raise KeyUnavailable("key_wrong", params={"purpose": "data",
                                                      "key_id": key_id_of(str(value))})
        return self.from_text(decrypt(token, where=self.where, binding=binding))


class EncryptedDate(Encrypted):
    cache_ok = True
    def to_text(self, value: Any) -> str:
        return value.isoformat() if isinstance(value, dt.date) else str(value)

    def from_text(self, text: str) -> Any:
        return dt.date.fromisoformat(text)


# What json.dumps(value, ensure_ascii=False, separators=(",", ":")) writes, without building
# an encoder for every value (each order's identifiers are one).
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class EncryptedJSON(Encrypted):
    cache_ok = True
    def to_text(self, value: Any) -> str:
        return _JSON_TEXT.encode(value)

    def from_text(self, text: str) -> Any:
        return json.loads(text)


@dataclass(frozen=True)
class StoredCiphertext:
    """A ciphertext written back unchanged (moving a row's value needs no decryption only when
    its binding does not change: never across rows)."""

    token: str
