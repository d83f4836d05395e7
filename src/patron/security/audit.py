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


def record_many(conn: Connection,
                entries: list[tuple[Actor, str, str | None, Any, dict[str, Any]]]) -> None:
    """Several entries in one statement: (actor, action, entity, entity_id, details)."""
    if not entries:
        return
    at = utcnow()
    conn.execute(insert(audit_log), [{
        "at": at, "actor_type": a.type, "actor_id": a.id, "actor_name": a.name,
        "action": action, "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id), "ip": a.ip,
        "outcome": "ok", "details": details,
    } for a, action, entity, entity_id, details in entries])
