"""Alerts to owners (issue 6 §3): bulk exports, many personal-data reveals in a short time,
sign-ins from a new address or at quiet hours, repeated failed sign-ins, API key misuse
(a refused permission or store, a revoked key still used), a disabled user still trying.

An alert is a row in ``security_alerts`` (the owners' alerts page and
``GET /api/v1/security/alerts``) and, when ``PATRON_ALERT_RECIPIENTS`` names addresses, one
message per address through the message outbox, both written in the caller's transaction.
``dedupe_key`` keeps one alert per subject and window, so that a guesser hammering the
sign-in form raises one alert, not thousands.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from patron.config import get_settings
from patron.db import UnitOfWork, utcnow
from patron.security import audit
from patron.security.tables import audit_log, security_alerts

KINDS = ("bulk_export", "many_reveals", "new_address", "quiet_hours", "failed_logins",
         "api_key_misuse", "disabled_user")
TEMPLATE = "security_alert"


def window(now: dt.datetime) -> str:
    minutes = get_settings().alert_window_minutes
    bucket = int(now.timestamp() // (minutes * 60))
    return str(bucket)


def raise_alert(conn: Connection, *, kind: str, subject: str, details: dict[str, Any],
                dedupe: str | None = None, now: dt.datetime | None = None) -> int | None:
    """Record an alert (and queue its messages) unless one with the same dedupe key exists;
    the id, or None when it was a repeat. Runs in a savepoint: a concurrent duplicate is
    simply a repeat, and the caller's transaction stays usable."""
    assert kind in KINDS, kind
    now = now or utcnow()
    key = f"{kind}:{subject}:{dedupe if dedupe is not None else window(now)}"[:200]
    if conn.execute(select(security_alerts.c.id).where(
            security_alerts.c.dedupe_key == key)).first():
        return None
    try:
        with conn.begin_nested():
            alert_id = conn.execute(insert(security_alerts).values(
                at=now, kind=kind, subject=subject[:120], details=details, dedupe_key=key)
                .returning(security_alerts.c.id)).scalar_one()
            _send(conn, int(alert_id), kind, subject, details, now)
    except IntegrityError:
        return None
    return int(alert_id)


def _send(conn: Connection, alert_id: int, kind: str, subject: str, details: dict[str, Any],
          now: dt.datetime) -> None:
    recipients = [r.strip() for r in get_settings().alert_recipients.split(",") if r.strip()]
    if not recipients:
        return
    from patron.messaging.service import enqueue_in

    summary = ", ".join(f"{k}={v}" for k, v in sorted(details.items()))[:300]
    for i, to in enumerate(recipients):
        enqueue_in(conn, customer_id=None, channel="email" if "@" in to else "sms",
                   template=TEMPLATE, to=to, purpose="transactional",
                   dedupe_key=f"security-alert:{alert_id}:{i}",
                   variables={"kind": kind, "subject": subject, "summary": summary,
                              "at": now.isoformat(timespec="seconds")})


def raise_alert_now(*, engine: Any, kind: str, subject: str, details: dict[str, Any],
                    dedupe: str | None = None) -> int | None:
    """An alert from a place with no transaction of its own to write in (a refused request)."""
    with UnitOfWork(engine) as uow:
        alert_id = raise_alert(uow.c, kind=kind, subject=subject, details=details,
                               dedupe=dedupe)
        uow.commit()
    return alert_id


# --- detectors called by the services ---------------------------------------------------------

def after_reveal(conn: Connection, *, actor_id: int | None, actor_name: str,
                 now: dt.datetime | None = None) -> None:
    """Many personal-data reveals by one user within the window."""
    settings = get_settings()
    now = now or utcnow()
    since = now - dt.timedelta(minutes=settings.alert_window_minutes)
    conds = [audit_log.c.action.in_(("customer.revealed", "personal_data.revealed")),
             audit_log.c.at >= since,
             audit_log.c.actor_name == actor_name]
    if actor_id is not None:
        conds.append(audit_log.c.actor_id == actor_id)
    n = conn.execute(select(func.count()).select_from(audit_log).where(*conds)).scalar_one()
    # this transaction's own reveal, appended to the audit chain when it commits
    n += sum(1 for e in audit.pending(conn)
             if e["action"] in ("customer.revealed", "personal_data.revealed")
             and e["actor_name"] == actor_name and e["at"] >= since
             and (actor_id is None or e["actor_id"] == actor_id))
    if n >= settings.alert_reveals:
        raise_alert(conn, kind="many_reveals", subject=actor_name,
                    details={"reveals": int(n), "minutes": settings.alert_window_minutes},
                    now=now)


def after_export(conn: Connection, *, actor_name: str, kind: str, rows: int, file: str,
                 unmasked: bool) -> None:
    if rows >= get_settings().alert_export_rows:
        raise_alert(conn, kind="bulk_export", subject=actor_name,
                    details={"export": kind, "rows": rows, "file": file, "unmasked": unmasked},
                    dedupe=file)


def quiet_hour(local: dt.datetime, spec: str) -> bool:
    """Whether a local time falls in ``"start-end"`` hours (wrapping midnight: "22-6");
    ``off`` (or anything else) never."""
    try:
        start, end = (int(x) for x in spec.split("-", 1))
    except ValueError:
        return False
    h = local.hour
    return start <= h < end if start <= end else (h >= start or h < end)


def after_login(conn: Connection, *, user_id: int, username: str, ip: str | None,
                now: dt.datetime | None = None) -> None:
    """A sign-in from an address this user never signed in from, or at quiet hours. Called
    before the new sign-in's own audit entry is written."""
    from zoneinfo import ZoneInfo

    settings = get_settings()
    now = now or utcnow()
    earlier = select(audit_log.c.ip).where(
        audit_log.c.entity == "user", audit_log.c.entity_id == str(user_id),
        audit_log.c.action == "auth.login")
    seen = {r for r in conn.execute(earlier.limit(1000)).scalars()}
    if seen and ip not in seen:
        raise_alert(conn, kind="new_address", subject=username,
                    details={"ip": ip or "?", "known_addresses": len(seen)}, dedupe=ip or "?")
    local = now.astimezone(ZoneInfo(settings.default_timezone))
    if quiet_hour(local, settings.alert_quiet_hours):
        raise_alert(conn, kind="quiet_hours", subject=username,
                    details={"ip": ip or "?", "local_time": local.strftime("%H:%M")},
                    dedupe=local.strftime("%Y-%m-%d"), now=now)


def list_alerts(conn: Connection, *, page: int = 1, page_size: int = 50,
                unacknowledged: bool = False) -> dict[str, Any]:
    q = select(security_alerts)
    if unacknowledged:
        q = q.where(security_alerts.c.acknowledged_at.is_(None))
    total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
    rows = conn.execute(q.order_by(security_alerts.c.id.desc()).limit(page_size)
                        .offset((max(page, 1) - 1) * page_size)).mappings().all()
    return {"total": int(total), "page": page, "items": [
        {"id": int(r["id"]), "at": r["at"].isoformat(), "kind": r["kind"],
         "subject": r["subject"], "details": r["details"],
         "acknowledged_at": r["acknowledged_at"].isoformat() if r["acknowledged_at"] else None}
        for r in rows]}


def acknowledge(*, uow: UnitOfWork, actor: Any, alert_id: int) -> None:
    from patron.errors import NotFound
    from patron.security import audit

    result = uow.c.execute(update(security_alerts).where(
        security_alerts.c.id == alert_id, security_alerts.c.acknowledged_at.is_(None))
        .values(acknowledged_at=utcnow(), acknowledged_by=actor.id))
    if result.rowcount == 0:
        raise NotFound("not_found")
    audit.record(uow.c, actor, "security_alert.acknowledged", entity="security_alert",
                 entity_id=alert_id)
    uow.commit()
