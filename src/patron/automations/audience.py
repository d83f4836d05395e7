"""Who an automation or a campaign may reach: active members of its loyalty program, narrowed
by a segment definition (patron.segments) when it has one.

The one place that speaks to the segments area (``validate``, ``member_ids_select``,
``contains``, docs/segments.md), so that automations and campaigns agree on what a segment
definition means. Segments are evaluated with the system's scope (every store): an automation
or campaign reaches the whole program, whoever defined it.
"""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any

from sqlalchemy import Connection, Select, func, select

from patron.errors import FieldError, ValidationFailed
from patron.loyalty.tables import loyalty_members
from patron.security.model import SYSTEM


def _segments() -> Any | None:
    try:
        return importlib.import_module("patron.segments.service")
    except ModuleNotFoundError as exc:
        if exc.name is not None and "patron.segments.service".startswith(exc.name):
            return None
        raise


def available() -> bool:
    return _segments() is not None


def definition_errors(conn: Connection, definition: dict[str, Any] | None, field: str
                      ) -> list[FieldError]:
    """What is wrong with a segment definition, each error under ``field``."""
    if definition is None:
        return []
    segments = _segments()
    if segments is None:
        return [FieldError(field, "automation_segments_unavailable")]
    try:
        segments.validate(definition, conn)
    except ValidationFailed as exc:
        return [FieldError(f"{field}.{_inner(e.field)}" if _inner(e.field) else field,
                           e.reason, e.params) for e in exc.fields]
    return []


def _inner(path: str) -> str:
    """The segments area names a bad part from ``definition.``; ours is under ``field``."""
    return path.removeprefix("definition").lstrip(".")


def members(program_id: int) -> Select[Any]:
    """(customer_id, member_id) of the program's active members."""
    m = loyalty_members.c
    return select(m.customer_id, m.id.label("member_id")).where(
        m.program_id == program_id, m.status == "active")


def matching(conn: Connection, program_id: int, definition: dict[str, Any] | None,
             as_of: dt.datetime | None = None) -> Select[Any]:
    """(customer_id, member_id) of the active members the definition matches (``as_of``: the
    moment "today" and windows are read at)."""
    q = members(program_id)
    if definition is None:
        return q
    segments = _segments()
    assert segments is not None  # refused when the automation was saved
    ids = segments.member_ids_select(definition, scope=SYSTEM, as_of=as_of).subquery()
    return q.where(loyalty_members.c.customer_id.in_(select(ids.c.customer_id)))


def count(conn: Connection, program_id: int, definition: dict[str, Any] | None,
          as_of: dt.datetime | None = None) -> int:
    sub = matching(conn, program_id, definition, as_of).subquery()
    return int(conn.execute(select(func.count()).select_from(sub)).scalar_one())


def contains(conn: Connection, definition: dict[str, Any] | None, customer_id: int,
             as_of: dt.datetime | None = None) -> bool:
    if definition is None:
        return True
    segments = _segments()
    assert segments is not None
    return bool(segments.contains(conn, definition, customer_id, scope=SYSTEM, as_of=as_of))
