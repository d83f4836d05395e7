"""Key rotation: re-encrypt every protected value still under an older key with the current one,
in small batches while Patron runs (docs/data-protection.md#rotating-the-data-key).

The keyring lists the new key first and the old one after it: new writes already use the new
key and both keys read, so nothing stops. Each batch is its own short transaction: read values
whose key id is not the current one, decrypt each with its row's binding, encrypt again, and
write it back only if it is still the value read (a writer that changed it meanwhile used the
new key already). When ``status`` shows no value left under the old key, remove it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Engine, Table, Text, func, select, type_coerce, update

import patron.tables  # noqa: F401 - every area's tables, so every protected column is seen
from patron.db import UnitOfWork, metadata
from patron.protection.fields import (
    Encrypted,
    StoredCiphertext,
    binding_text,
    decrypt,
    encrypt,
    key_id_of,
)
from patron.protection.keys import Keyring, data_keyring


@dataclass(frozen=True)
class Protected:
    table: Table
    column: Column[Any]

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"

    @property
    def type(self) -> Encrypted:
        assert isinstance(self.column.type, Encrypted)
        return self.column.type


def protected_columns() -> list[Protected]:
    return [Protected(t, c) for t in metadata.sorted_tables for c in t.columns
            if isinstance(c.type, Encrypted)]


def _raw(col: Column[Any]) -> Any:
    """The stored text itself: no decryption, no binding prefix."""
    return type_coerce(col, Text)


def status(engine: Engine) -> dict[str, dict[str, int]]:
    """Per protected column, how many values each key id protects."""
    out: dict[str, dict[str, int]] = {}
    with UnitOfWork(engine, readonly=True) as uow:
        for p in protected_columns():
            raw = _raw(p.column)
            counts: Counter[str] = Counter()
            prefix = func.substr(raw, 1, func.instr(raw, "$") - 1) if engine.dialect.name \
                == "sqlite" else func.split_part(raw, "$", 1)
            for key_id, n in uow.c.execute(select(prefix, func.count()).where(
                    p.column.is_not(None)).group_by(prefix)):
                counts[str(key_id)] += int(n)
            if counts:
                out[p.name] = dict(counts)
    return out


def _batches(engine: Engine, p: Protected, current: str, batch: int
             ) -> Iterator[list[Any]]:
    (pk,) = p.table.primary_key.columns
    binding = [p.table.c[name] for name in p.type.binding]
    last: Any = None
    while True:
        with UnitOfWork(engine, readonly=True) as uow:
            q = (select(pk, _raw(p.column).label("raw"), *binding)
                 .where(p.column.is_not(None),
                        ~_raw(p.column).startswith(f"{current}$", autoescape=True))
                 .order_by(pk).limit(batch))
            if last is not None:
                q = q.where(pk > last)
            rows = uow.c.execute(q).all()
        if not rows:
            return
        last = rows[-1][0]
        yield rows


def rotate(engine: Engine, *, batch: int = 500, keyring: Keyring | None = None,
           on_batch: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Re-encrypt every value not under the keyring's current key; returns the count per
    column. Raises ``KeyUnavailable`` if a value's key is not in the keyring (nothing of that
    batch is written)."""
    ring = keyring or data_keyring()
    done: dict[str, int] = {}
    for p in protected_columns():
        (pk,) = p.table.primary_key.columns
        where = p.type.where or p.name
        for rows in _batches(engine, p, ring.current_id, batch):
            changed = 0
            with UnitOfWork(engine) as uow:
                for row in rows:
                    binding = binding_text(tuple(row[2:]))
                    plain = decrypt(row.raw, where=where, binding=binding, keyring=ring)
                    fresh = encrypt(plain, where=where, binding=binding, keyring=ring)
                    changed += uow.c.execute(
                        update(p.table).where(pk == row[0], _raw(p.column) == row.raw)
                        .values({p.column.name: StoredCiphertext(fresh)})).rowcount
                uow.commit()
            done[p.name] = done.get(p.name, 0) + changed
            if on_batch is not None:
                on_batch(p.name, changed)
    return done


def keys_in_use(engine: Engine) -> set[str]:
    return {key_id for counts in status(engine).values() for key_id in counts}


__all__ = ["protected_columns", "rotate", "status", "keys_in_use", "key_id_of"]
