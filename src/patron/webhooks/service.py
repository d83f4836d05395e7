"""Outgoing webhooks: events are written to an outbox in the transaction that caused them and
delivered later, signed, with retries (see :mod:`patron.webhooks.delivery`).

Owners register endpoints (a URL and the events it wants); every change is audited. The
endpoint secret is generated here and shown once, when created or rotated.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, exists, func, insert, select, update

from patron.config import get_settings
from patron.db import UnitOfWork, allocate_ids, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.protection.fields import Sealed
from patron.security import audit
from patron.security.model import Actor
from patron.webhooks import model, targets
from patron.webhooks.delivery import DeliveryStats, deliver_due, start_background_worker
from patron.webhooks.model import EVENTS, STATUSES
from patron.webhooks.tables import webhook_deliveries, webhook_endpoints

MAX_PAGE_SIZE = 200


@cache
def any_active_endpoint() -> ColumnElement[bool]:
    """Whether any endpoint is active: asked together with other questions by a caller that
    would read :func:`subscribers` only then. One object, built once, so that a caller can
    keep the statement asking it (``orders.hooks``)."""
    return exists().where(webhook_endpoints.c.active.is_(True))


def subscribers(conn: Connection, events: Sequence[str]) -> dict[str, list[int]]:
    """The active endpoints subscribed to each of these events (one query for all of them), so
    that a caller raising several events builds payloads only for those somebody wants."""
    rows = list(conn.execute(select(webhook_endpoints.c.id, webhook_endpoints.c.events)
                             .where(webhook_endpoints.c.active.is_(True))))
    return {event: [r.id for r in rows if model.subscribed(r.events, event)]
            for event in events}


def enqueue(conn: Connection, event: str, payloads: list[dict[str, Any]], *,
            endpoints: list[int] | None = None) -> int:
    """Queue one delivery per payload for every active endpoint subscribed to ``event``, in the
    caller's transaction: the event and its deliveries are committed together or not at all.
    ``endpoints``: the subscribers when the caller has just read them with :func:`subscribers`
    in the same transaction."""
    if not payloads:
        return 0
    if endpoints is None:
        endpoints = subscribers(conn, [event])[event]
    if not endpoints:
        return 0
    now = utcnow()
    rows = [{"endpoint_id": e, "event": event, "payload": p, "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for e in endpoints for p in payloads]
    conn.execute(insert(webhook_deliveries), rows)
    return len(rows)


# --- endpoints ------------------------------------------------------------------------------

def _clean_events(events: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(e.strip() for e in events))


def _check(*, url: str | None, events: Sequence[str] | None) -> None:
    errors: list[FieldError] = []
    if url is not None:
        errors += model.url_errors(url)
        if not errors:
            errors += _target_errors(url)
    if events is not None:
        errors += model.event_errors(events)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)


def _target_errors(url: str) -> list[FieldError]:
    """A URL whose host is or resolves to an address inside the network is refused; one that
    does not resolve yet is accepted (its receiver may come later) and checked at delivery."""
    try:
        targets.addresses(url, allow_private=get_settings().webhook_allow_private_targets)
    except targets.TargetRefused as exc:
        return [FieldError("url", "webhook_url_internal", {"address": exc.address})]
    except targets.TargetUnresolved:
        pass
    return []


def _lock_endpoint(conn: Connection, endpoint_id: int) -> dict[str, Any]:
    q = select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("webhook_endpoint_not_found", params={"id": endpoint_id})
    return dict(row)


def create_endpoint(*, uow: UnitOfWork, actor: Actor, url: str, events: Sequence[str],
                    description: str | None = None) -> dict[str, Any]:
    """Register an endpoint. The returned view carries ``secret``: the only time it is shown."""
    url, chosen = url.strip(), _clean_events(events)
    _check(url=url, events=chosen)
    secret = model.new_secret()
    now = utcnow()
    endpoint_id = allocate_ids(uow.c, webhook_endpoints, 1)[0]
    uow.c.execute(insert(webhook_endpoints).values(
        id=endpoint_id, url=url, secret=Sealed((endpoint_id,), secret), events=chosen,
        description=description or None, active=True, created_at=now, updated_at=now))
    audit.record(uow.c, actor, "webhook.created", entity="webhook_endpoint",
                 entity_id=endpoint_id, details={"url": url, "events": chosen})
    view = get_endpoint(uow.c, int(endpoint_id))
    uow.commit()
    return {**view, "secret": secret}


def update_endpoint(*, uow: UnitOfWork, actor: Actor, endpoint_id: int, url: str | None = None,
                    events: Sequence[str] | None = None, description: str | None = None,
                    active: bool | None = None) -> dict[str, Any]:
    """Change what is given; ``None`` leaves a field as it is, an empty description clears it."""
    wanted: dict[str, Any] = {}
    if url is not None:
        wanted["url"] = url.strip()
    if events is not None:
        wanted["events"] = _clean_events(events)
    if description is not None:
        wanted["description"] = description or None
    if active is not None:
        wanted["active"] = active
    _check(url=wanted.get("url"), events=wanted.get("events"))
    row = _lock_endpoint(uow.c, endpoint_id)
    changes = {k: v for k, v in wanted.items() if v != row[k]}
    if changes:
        uow.c.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                      .values(**changes, updated_at=utcnow()))
        audit.record(uow.c, actor, "webhook.updated", entity="webhook_endpoint",
                     entity_id=endpoint_id,
                     details={k: {"from": row[k], "to": v} for k, v in changes.items()})
    view = get_endpoint(uow.c, endpoint_id)
    uow.commit()
    return view


def disable_endpoint(*, uow: UnitOfWork, actor: Actor, endpoint_id: int) -> None:
    """Stop queueing and sending. Deliveries already queued wait, unsent, until the endpoint is
    enabled again (``update_endpoint(active=True)``)."""
    row = _lock_endpoint(uow.c, endpoint_id)
    if row["active"]:
        uow.c.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                      .values(active=False, updated_at=utcnow()))
        audit.record(uow.c, actor, "webhook.disabled", entity="webhook_endpoint",
                     entity_id=endpoint_id, details={"url": row["url"]})
    uow.commit()


def rotate_secret(*, uow: UnitOfWork, actor: Actor, endpoint_id: int) -> str:
    """A new secret, returned once; every delivery sent from now on is signed with it."""
    _lock_endpoint(uow.c, endpoint_id)
    secret = model.new_secret()
    uow.c.execute(update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                  .values(secret=Sealed((endpoint_id,), secret), updated_at=utcnow()))
    audit.record(uow.c, actor, "webhook.secret_rotated", entity="webhook_endpoint",
                 entity_id=endpoint_id)
    uow.commit()
    return secret


def _delivery_counts(conn: Connection, endpoint_id: int | None = None
                     ) -> dict[int, dict[str, Any]]:
    d = webhook_deliveries
    q = select(d.c.endpoint_id, d.c.status, func.count().label("n"),
               func.max(d.c.delivered_at).label("last_delivered_at")
               ).group_by(d.c.endpoint_id, d.c.status)
    if endpoint_id is not None:
        q = q.where(d.c.endpoint_id == endpoint_id)
    out: dict[int, dict[str, Any]] = {}
    for r in conn.execute(q):
        entry = out.setdefault(int(r.endpoint_id), {"counts": dict.fromkeys(STATUSES, 0),
                                                    "last_delivered_at": None})
        entry["counts"][r.status] = int(r.n)
        if r.last_delivered_at is not None:
            entry["last_delivered_at"] = r.last_delivered_at  # only 'delivered' rows have one
    return out


def _endpoint_view(row: Any, stats: dict[str, Any] | None) -> dict[str, Any]:
    stats = stats or {"counts": dict.fromkeys(STATUSES, 0), "last_delivered_at": None}
    return {"id": int(row["id"]), "url": row["url"], "events": list(row["events"] or []),
            "description": row["description"], "active": bool(row["active"]),
            "secret_hint": model.secret_hint(row["secret"]), "created_at": row["created_at"],
            "updated_at": row["updated_at"], "deliveries": stats["counts"],
            "last_delivered_at": stats["last_delivered_at"]}


def list_endpoints(conn: Connection) -> list[dict[str, Any]]:
    """Every endpoint with how many of its deliveries are pending, sending, delivered, failed."""
    counts = _delivery_counts(conn)
    rows = conn.execute(select(webhook_endpoints).order_by(webhook_endpoints.c.id)).mappings()
    return [_endpoint_view(r, counts.get(int(r["id"]))) for r in rows]


def get_endpoint(conn: Connection, endpoint_id: int) -> dict[str, Any]:
    row = conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
                       ).mappings().first()
    if row is None:
        raise NotFound("webhook_endpoint_not_found", params={"id": endpoint_id})
    return _endpoint_view(row, _delivery_counts(conn, endpoint_id).get(endpoint_id))


# --- deliveries -----------------------------------------------------------------------------

def _delivery_view(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "endpoint_id", "event", "payload", "status", "attempts",
                                "next_attempt_at", "last_attempt_at", "last_status_code",
                                "last_error", "created_at", "delivered_at", "redelivery_of")}


def list_deliveries(conn: Connection, endpoint_id: int | None = None, status: str | None = None,
                    *, page: int = 1, page_size: int = 50) -> dict[str, Any]:
    """Deliveries, newest first. ``next_attempt_at`` of a pending one says when it is tried
    next; ``last_error`` and ``last_status_code`` say why the last attempt failed."""
    errors = []
    if status is not None and status not in STATUSES:
        errors.append(FieldError("status", "literal_error", {"expected": ", ".join(STATUSES)}))
    if page < 1:
        errors.append(FieldError("page", "greater_than_equal", {"ge": 1}))
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        errors.append(FieldError("page_size", "less_than_equal", {"le": MAX_PAGE_SIZE}))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    if endpoint_id is not None:
        get_endpoint(conn, endpoint_id)  # 404 for an unknown endpoint, not an empty page
    d = webhook_deliveries
    where = []
    if endpoint_id is not None:
        where.append(d.c.endpoint_id == endpoint_id)
    if status is not None:
        where.append(d.c.status == status)
    total = conn.execute(select(func.count()).select_from(d).where(*where)).scalar_one()
    rows = conn.execute(select(d).where(*where).order_by(d.c.id.desc())
                        .limit(page_size).offset((page - 1) * page_size)).mappings()
    return {"items": [_delivery_view(r) for r in rows], "total": int(total), "page": page,
            "page_size": page_size}


def redeliver(*, uow: UnitOfWork, actor: Actor, delivery_id: int) -> int:
    """Send a delivery again, as a new delivery (a new id, ``redelivery_of`` the old one) of
    the same event, due now. The old one keeps its history."""
    conn = uow.c
    old = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
                       ).mappings().first()
    if old is None:
        raise NotFound("webhook_delivery_not_found", params={"id": delivery_id})
    endpoint = _lock_endpoint(conn, int(old["endpoint_id"]))
    if not endpoint["active"]:
        raise Conflict("webhook_endpoint_disabled", params={"id": endpoint["id"]})
    now = utcnow()
    new_id = conn.execute(insert(webhook_deliveries).values(
        endpoint_id=old["endpoint_id"], event=old["event"], payload=old["payload"],
        status="pending", attempts=0, next_attempt_at=now, created_at=old["created_at"],
        redelivery_of=delivery_id).returning(webhook_deliveries.c.id)).scalar_one()
    audit.record(conn, actor, "webhook.redelivered", entity="webhook_delivery",
                 entity_id=new_id, details={"redelivery_of": delivery_id,
                                            "endpoint_id": int(old["endpoint_id"]),
                                            "event": old["event"]})
    uow.commit()
    return int(new_id)


__all__ = ["EVENTS", "STATUSES", "DeliveryStats", "create_endpoint", "deliver_due",
           "disable_endpoint", "enqueue", "get_endpoint", "list_deliveries", "list_endpoints",
           "redeliver", "rotate_secret", "start_background_worker", "update_endpoint"]
