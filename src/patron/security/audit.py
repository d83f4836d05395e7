"""The audit trail: who did what, when, from where, with what outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert

from patron.db import utcnow
from patron.security.model import Actor
from patron.security.tables import audit_log


def record(conn: Connection, actor: Actor, action: str, *, entity: str | None = None,
           entity_id: Any = None, details: dict[str, Any] | None = None,
           outcome: str = "ok") -> None:
    conn.execute(insert(audit_log).values(
        at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=actor.name,
        action=action,
        entity=entity,
        entity_id=None if entity_id is None else str(entity_id),
        ip=actor.ip,
        outcome=outcome,
        details=details or {},
    ))
