"""Outgoing webhooks: events are written to an outbox in the transaction that caused them and
delivered later, signed, with retries (see ``deliver_due``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from patron.db import utcnow
from patron.webhooks.tables import webhook_deliveries, webhook_endpoints

EVENTS = ("order.recorded", "customer.created", "customers.merged", "customers.unmerged",
          "return.recorded")


def enqueue(conn: Connection, event: str, payloads: list[dict[str, Any]]) -> int:
    """Queue one delivery per payload for every active endpoint subscribed to ``event``."""
    if not payloads:
        return 0
    endpoints = [
        r.id for r in conn.execute(select(webhook_endpoints.c.id, webhook_endpoints.c.events)
                                   .where(webhook_endpoints.c.active.is_(True)))
        if event in (r.events or []) or "*" in (r.events or [])
    ]
    if not endpoints:
        return 0
    now = utcnow()
    rows = [{"endpoint_id": e, "event": event, "payload": p, "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for e in endpoints for p in payloads]
    conn.execute(insert(webhook_deliveries), rows)
    return len(rows)
