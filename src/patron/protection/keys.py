"""Keys for personal data, its blind indexes and backups: from configuration, never from the
database (docs/data-protection.md#keys).

A keyring is ``id:key[,id:key...]`` with each key 32 random bytes in URL-safe base64; the first
key encrypts, every key listed decrypts (so a rotation lists the new key first and the old one
after it until ``patron keys rotate`` has re-encrypted everything). Key ids are stored with each
ciphertext, never the keys.

When nothing is configured (a laptop, the demo), keys are generated once into
``<PATRON_DATA_DIR>/patron-keys.env`` (mode 0600) and read from there on: a development default,
not for production, where the environment or a secret manager provides them.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from patron import config as _config
from patron.errors import PatronError

log = logging.getLogger("patron.keys")
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
DEV_FILE = "patron-keys.env"
SETTINGS = {"data": "data_keys", "index": "index_key", "backup": "backup_keys"}
_lock = threading.Lock()


class KeyUnavailable(PatronError):
    """A key is missing, malformed or wrong: Patron stops with this rather than read garbage."""

    status = 500
    code = "key_unavailable"


@dataclass(frozen=True)
class Keyring:
    purpose: str
    keys: dict[str, bytes]
    current_id: str

    @property
    def current(self) -> bytes:
        return self.keys[self.current_id]

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeyUnavailable("key_missing", params={"purpose": self.purpose,
                                                        "key_id": key_id}) from None


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _decode(purpose: str, key_id: str, text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyUnavailable("key_malformed", params={"purpose": purpose, "key_id": key_id})
    return raw


def parse_keyring(purpose: str, text: str) -> Keyring:
    keys: dict[str, bytes] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key_id, sep, value = part.partition(":")
        if not sep or not KEY_ID.match(key_id) or key_id in keys:
            raise KeyUnavailable("key_malformed", params={"purpose": purpose,
                                                          "key_id": key_id[:16]})
        keys[key_id] = _decode(purpose, key_id, value.strip())
    if not keys:
        raise KeyUnavailable("key_not_configured", params={"purpose": purpose})
    return Keyring(purpose, keys, next(iter(keys)))


# Resolved key text per settings object (kept alive here so its id is never reused): every
# encrypted value asks for its key, and a fresh lookup (environment, development file) per value
# cost more than the encryption itself.
_resolved: dict[tuple[int, str], tuple[object, str]] = {}


def _configured(purpose: str) -> str:
    from patron.config import get_settings

    settings = get_settings()
    hit = _resolved.get((id(settings), purpose))
    if hit is not None and hit[0] is settings:
        return hit[1]
    value = str(getattr(settings, SETTINGS[purpose])) or _dev_keys(settings.data_dir).get(
        SETTINGS[purpose], "")
    _resolved[(id(settings), purpose)] = (settings, value)
    return value


_dev_cache: dict[Path, dict[str, str]] = {}


def _dev_keys(data_dir: Path) -> dict[str, str]:
    """Read (or write, the first time) the development key file; read once per process."""
    path = data_dir / DEV_FILE
    if path in _dev_cache and path.exists():
        return _dev_cache[path]
    with _lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [
                "# Patron's development keys, generated on first use. Not for production:",
                "# set PATRON_DATA_KEYS, PATRON_INDEX_KEY and PATRON_BACKUP_KEYS instead.",
                "# Losing this file makes the personal data and backups unreadable.",
                f"PATRON_DATA_KEYS=dev1:{new_key()}",
                f"PATRON_INDEX_KEY={new_key()}",
                f"PATRON_BACKUP_KEYS=bk1:{new_key()}",
            ]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("\n".join(lines) + "\n")
            log.warning("generated development keys in %s (set PATRON_DATA_KEYS, "
                        "PATRON_INDEX_KEY and PATRON_BACKUP_KEYS in production)", path)
        found = {}
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.startswith("PATRON_"):
                found[name.removeprefix("PATRON_").lower()] = value.strip()
        _dev_cache[path] = found
        return found


@lru_cache(maxsize=16)
def _parsed(purpose: str, text: str) -> Keyring:
    return parse_keyring(purpose, text)


# The last keyring and index key handed out, with the settings object they came from: every
# sealed value and every blind index asks for one (ingestion several per order), and going
# through _configured and the parsing cache each time cost a third of a blind index. A new
# settings object (get_settings.cache_clear()) misses and takes the long way, as before.
_last_data: tuple[object, Keyring] | None = None
_last_index: tuple[object, bytes] | None = None


def data_keyring() -> Keyring:
    global _last_data
    # The module, not the function, imported once: an import statement per call cost as
    # much as the AES-GCM sealing it serves.
    settings = _config.get_settings()
    last = _last_data
    if last is not None and last[0] is settings:
        return last[1]
    ring = _parsed("data", _configured("data"))
    _last_data = (settings, ring)
    return ring


def backup_keyring() -> Keyring:
    return _parsed("backup", _configured("backup"))


def index_key() -> bytes:
    global _last_index
    settings = _config.get_settings()
    last = _last_index
    if last is not None and last[0] is settings:
        return last[1]
    key = _index_key(_configured("index"))
    _last_index = (settings, key)
    return key


@lru_cache(maxsize=4)
def _index_key(text: str) -> bytes:
    if not text:
        raise KeyUnavailable("key_not_configured", params={"purpose": "index"})
    return _decode("index", "index", text)
