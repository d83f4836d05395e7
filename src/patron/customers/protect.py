"""Where customer personal data is written and looked up: values sealed to their row, blind
indexes beside them (docs/data-protection.md#personal-data-at-rest). Every write of a
customer's name, phone, email or birthday and of an identity goes through these functions;
every exact lookup by an identifier's value compares its blind index."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

from sqlalchemy import ColumnElement

from patron.customers.tables import identities
from patron.protection.fields import Sealed, blind, blind_many

PERSONAL = ("name", "phone", "email", "birthday")
_SPACES = re.compile(r"\s+")


def identity_index(value: str) -> str:
    """The blind index of an identifier's (normalised) value, whatever its kind: search finds
    a customer by any identifier without knowing which kind it is."""
    return blind("identity", value)


def identity_indexes(values: list[str]) -> list[str]:
    """:func:`identity_index` of each value (the key looked up once: ingestion indexes every
    identifier of a chunk)."""
    return blind_many("identity", values)


def identity_row(*, kind: str, namespace: str, value: str, index: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    """An identity's row; ``index``: its value's blind index when the caller has it already."""
    if index is None:
        index = identity_index(value)
    return {"kind": kind, "namespace": namespace, "value_index": index,
            "value": Sealed((kind, namespace, index), value), **extra}


def identity_is(value: str) -> ColumnElement[bool]:
    """``WHERE`` clause: the identity's value equals ``value`` (exactly, normalised)."""
    return identities.c.value_index == identity_index(value)


def identity_in(values: list[str]) -> ColumnElement[bool]:
    return identities.c.value_index.in_([identity_index(v) for v in values])


def normalize_name(name: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", name)).strip().casefold()


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def surname_of(name: str) -> str | None:
    """The part of a (normalised) name searched as a surname: the first character of a Chinese
    name (王 of 王小明; compound surnames such as 欧阳 are found by their first character), the
    first word of a name in Latin letters (li of "Li Wei")."""
    if not name:
        return None
    if _is_cjk(name[0]):
        return name[0]
    return name.split(" ", 1)[0]


def name_indexes(name: str | None) -> dict[str, str | None]:
    if not name or not name.strip():
        return {"name_index": None, "surname_index": None}
    norm = normalize_name(name)
    surname = surname_of(norm)
    return {"name_index": blind("name", norm),
            "surname_index": blind("surname", surname) if surname else None}


def name_search_indexes(query: str) -> list[str]:
    """Blind indexes a search box query may match: the whole name, or a surname."""
    norm = normalize_name(query)
    return [blind("name", norm), blind("surname", norm)] if norm else []


def birth_md(birthday: dt.date | str | None) -> int | None:
    if birthday is None or birthday == "":
        return None
    if isinstance(birthday, str):
        birthday = dt.date.fromisoformat(birthday)
    return birthday.month * 100 + birthday.day


def profile_values(customer_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Column values for writing ``values`` into customer ``customer_id``'s row: personal fields
    sealed to the row, the name's blind indexes and the birthday's month and day beside them."""
    out = dict(values)
    for field in PERSONAL:
        if field in values:
            out[field] = Sealed((customer_id,), values[field])
    if "name" in values:
        out.update(name_indexes(values["name"]))
    if "birthday" in values:
        out["birth_md"] = birth_md(values["birthday"])
    return out
