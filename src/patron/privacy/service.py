"""Data-subject requests, erasure, retention and the person-level consent ledger.

Requests (access, correction, deletion) are recorded when received with a deadline
(``PATRON_PRIVACY_REQUEST_DAYS``), then fulfilled or refused by someone with ``privacy.manage``.
Every step is audited without personal data. Each service function owns its transaction."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from patron.config import get_settings
from patron.customers.queries import visible_customer
from patron.customers.tables import customers
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from patron.privacy import copy, erasure
from patron.privacy.tables import (
    privacy_consents,
    privacy_erasures,
    privacy_requests,
    privacy_retention_runs,
)
from patron.security import audit
from patron.security.model import Actor

KINDS = ("access", "correction", "deletion")
MARKETING_CHANNELS = ("sms", "wechat", "app", "email")
SOURCES = ("store", "phone", "email", "app", "web", "api", "letter")


def need(actor: Actor, permission: str = "privacy.manage") -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


def _customer(conn: Connection, actor: Actor, customer_id: int) -> dict[str, Any]:
    row = visible_customer(conn, actor, customer_id)
    if row["merged_into_id"] is not None:
        raise Conflict("customer_merged", params={"survivor_id": int(row["merged_into_id"])})
    return row


def _request_out(r: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    overdue = r["status"] == "open" and r["due_at"] < now
    # Whole days, counted up: 3 hours left is "1 day left", 3 hours late is "1 day overdue".
    remaining = (r["due_at"] - now).total_seconds() / 86400
    days = math.ceil(remaining) if remaining >= 0 else -math.ceil(-remaining)
    return {"id": int(r["id"]), "customer_id": int(r["customer_id"]), "kind": r["kind"],
            "status": r["status"], "source": r["source"], "note": r["note"],
            "received_at": r["received_at"], "due_at": r["due_at"], "overdue": overdue,
            "days_left": days if r["status"] == "open" else None,
            "completed_at": r["completed_at"], "completed_by": r["completed_by"],
            "outcome": r["outcome"], "created_by": r["created_by"]}


# --- requests -----------------------------------------------------------------------------------

def create_request(*, uow: UnitOfWork, actor: Actor, customer_id: int, kind: str, source: str,
                   note: str | None = None, received_at: dt.datetime | None = None,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor)
    now = now or utcnow()
    errors = []
    if kind not in KINDS:
        errors.append(FieldError("kind", "privacy_bad_kind", {"allowed": ", ".join(KINDS)}))
    if source not in SOURCES:
        errors.append(FieldError("source", "privacy_bad_source",
                                 {"allowed": ", ".join(SOURCES)}))
    received = received_at or now
    if received.tzinfo is None:
        errors.append(FieldError("received_at", "timezone_required"))
    elif received > now + dt.timedelta(minutes=5):
        errors.append(FieldError("received_at", "privacy_in_future"))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    conn = uow.c
    _customer(conn, actor, customer_id)
    if erasure.is_erased(conn, customer_id):
        raise Conflict("customer_erased")
    due = received + dt.timedelta(days=get_settings().privacy_request_days)
    request_id = int(conn.execute(insert(privacy_requests).values(
        customer_id=customer_id, kind=kind, status="open", source=source, note=note,
        received_at=received, due_at=due, created_by=actor.name, created_at=now,
    ).returning(privacy_requests.c.id)).scalar_one())
    audit.record(conn, actor, "privacy.request_received", entity="privacy_request",
                 entity_id=request_id, details={"customer_id": customer_id, "kind": kind,
                                                "source": source, "due_at": due.isoformat()})
    out = get_request(conn, actor=actor, request_id=request_id, now=now)
    uow.commit()
    return out


def get_request(conn: Connection, *, actor: Actor, request_id: int,
                now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor)
    r = conn.execute(select(privacy_requests).where(privacy_requests.c.id == request_id)
                     ).mappings().first()
    if r is None:
        raise NotFound("privacy_request_not_found")
    visible_customer(conn, actor, int(r["customer_id"]))
    return _request_out(r, now or utcnow())


def list_requests(conn: Connection, *, actor: Actor, status: str | None = None,
                  overdue: bool = False, customer_id: int | None = None,
                  now: dt.datetime | None = None, limit: int = 200) -> list[dict[str, Any]]:
    need(actor)
    now = now or utcnow()
    p = privacy_requests.c
    q = select(privacy_requests).order_by(p.status != "open", p.due_at, p.id).limit(limit)
    if status is not None:
        q = q.where(p.status == status)
    if overdue:
        q = q.where(p.status == "open", p.due_at < now)
    if customer_id is not None:
        q = q.where(p.customer_id == customer_id)
    if actor.store_ids is not None:
        from patron.customers.queries import visible_clause
        q = q.where(p.customer_id.in_(select(customers.c.id).where(visible_clause(actor))))
    return [_request_out(r, now) for r in conn.execute(q).mappings()]


def _open_request(conn: Connection, actor: Actor, request_id: int, kind: str | None = None
                  ) -> dict[str, Any]:
    q = select(privacy_requests).where(privacy_requests.c.id == request_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    r = conn.execute(q).mappings().first()
    if r is None:
        raise NotFound("privacy_request_not_found")
    visible_customer(conn, actor, int(r["customer_id"]))
    if r["status"] != "open":
        raise Conflict("privacy_request_closed", params={"status": r["status"]})
    if kind is not None and r["kind"] != kind:
        raise Conflict("privacy_request_kind", params={"kind": r["kind"]})
    return dict(r)


def _close(conn: Connection, actor: Actor, request_id: int, status: str,
           outcome: dict[str, Any], now: dt.datetime) -> None:
    conn.execute(update(privacy_requests).where(privacy_requests.c.id == request_id).values(
        status=status, completed_at=now, completed_by=actor.name, outcome=outcome))
    audit.record(conn, actor, f"privacy.request_{status}", entity="privacy_request",
                 entity_id=request_id, details=outcome)


def person_copy(*, uow: UnitOfWork, actor: Actor, customer_id: int,
                request_id: int | None = None, now: dt.datetime | None = None
                ) -> dict[str, Any]:
    """Everything Patron holds about the person, as JSON-ready data. With ``request_id`` the
    access request is answered by it (and closed). Audited either way."""
    need(actor)
    need(actor, "personal_data.reveal")
    now = now or utcnow()
    conn = uow.c
    if request_id is not None:
        r = _open_request(conn, actor, request_id, "access")
        if int(r["customer_id"]) != customer_id:
            raise Conflict("privacy_request_other_customer")
    _customer(conn, actor, customer_id)
    data = copy.person_copy(conn, customer_id, now)
    audit.record(conn, actor, "privacy.copy_made", entity="customer", entity_id=customer_id,
                 details={"request_id": request_id, "rows": sum(data["counts"].values())})
    if request_id is not None:
        _close(conn, actor, request_id, "done", {"tables": data["counts"]}, now)
    uow.commit()
    return data


def correct(*, uow: UnitOfWork, actor: Actor, request_id: int, changes: Mapping[str, Any],
            now: dt.datetime | None = None) -> dict[str, Any]:
    """Answer a correction request: apply the corrected profile fields (validated like any
    profile edit) and close the request, in one transaction."""
    from patron.customers.custom_fields import update_customer

    need(actor)
    now = now or utcnow()
    conn = uow.c
    r = _open_request(conn, actor, request_id, "correction")
    if not changes:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("changes", "privacy_no_changes")])

    class _NoCommit:
        """update_customer commits its own unit of work; here it joins the request's."""
        c = conn

        @staticmethod
        def commit() -> None:
            pass

    out = update_customer(uow=_NoCommit(), actor=actor,  # type: ignore[arg-type]
                          customer_id=int(r["customer_id"]), changes=changes)
    _close(conn, actor, request_id, "done",
           {"fields": out["changed"], "custom_fields": out["custom_fields_changed"]}, now)
    uow.commit()
    return get_request(conn, actor=actor, request_id=request_id, now=now)


def _stored_value_outstanding(conn: Connection, ids: list[int]) -> bool:
    from patron.db import metadata

    accounts = metadata.tables.get("sv_accounts")
    members = metadata.tables.get("loyalty_members")
    if accounts is None or members is None:
        return False
    a = accounts.c
    return bool(conn.execute(select(func.count()).select_from(
        accounts.join(members, members.c.id == a.member_id)).where(
        members.c.customer_id.in_(ids),
        (a.principal + a.bonus + a.principal_held + a.bonus_held) > 0)).scalar_one())


def _erase(conn: Connection, actor: Actor, customer_id: int, *, reason: str,
           now: dt.datetime, request_id: int | None = None,
           retention_run_id: int | None = None) -> dict[str, int]:
    ids = erasure.customer_ids_of(conn, customer_id)
    if _stored_value_outstanding(conn, ids):
        raise Conflict("privacy_stored_value_outstanding")
    from patron.db import metadata

    members = metadata.tables.get("loyalty_members")
    if members is not None:
        conn.execute(update(members).where(members.c.customer_id.in_(ids))
                     .values(status="closed", updated_at=now))
    counts = erasure.erase_in(conn, customer_id=customer_id, reason=reason,
                              actor_name=actor.name, now=now, request_id=request_id,
                              retention_run_id=retention_run_id)
    audit.record(conn, actor, "privacy.erased", entity="customer", entity_id=customer_id,
                 details={"reason": reason, "request_id": request_id, "counts": counts})
    return counts


def erase(*, uow: UnitOfWork, actor: Actor, request_id: int,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """Answer a deletion request: anonymise the person (their profile and every profile merged
    into it) and close the request, in one transaction. Orders, points and stored-value
    ledgers and reports keep their sums. Refused while stored value is outstanding (pay it
    back or spend it first: the money is the person's)."""
    need(actor)
    now = now or utcnow()
    conn = uow.c
    r = _open_request(conn, actor, request_id, "deletion")
    customer_id = int(r["customer_id"])
    _customer(conn, actor, customer_id)
    counts = _erase(conn, actor, customer_id, reason="request", now=now, request_id=request_id)
    _close(conn, actor, request_id, "done", {"erased": counts}, now)
    uow.commit()
    return get_request(conn, actor=actor, request_id=request_id, now=now)


def refuse(*, uow: UnitOfWork, actor: Actor, request_id: int, reason: str,
           now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor)
    now = now or utcnow()
    if not reason or len(reason.strip()) < 3 or len(reason) > 500:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("reason", "privacy_reason_needed")])
    conn = uow.c
    _open_request(conn, actor, request_id)
    _close(conn, actor, request_id, "refused", {"reason": reason.strip()}, now)
    uow.commit()
    return get_request(conn, actor=actor, request_id=request_id, now=now)


# --- retention ----------------------------------------------------------------------------------

def _last_activity(conn: Connection) -> Any:
    """A select of (customer_id, last activity) for unmerged, unerased customers: the latest
    of the profile's creation, its last purchase and its memberships' last change."""
    from patron.customers.tables import customer_figures
    from patron.db import metadata

    c = customers.c
    f = customer_figures.c
    members = metadata.tables.get("loyalty_members")
    cols = [c.id.label("customer_id"), c.created_at, f.last_order_at]
    q = select(*cols).select_from(customers.outerjoin(customer_figures,
                                                      f.customer_id == c.id))
    if members is not None:
        member_last = select(func.max(members.c.updated_at)).where(
            members.c.customer_id == c.id).scalar_subquery()
        q = q.add_columns(member_last.label("member_last"))
    return q.where(c.merged_into_id.is_(None), c.id.not_in(
        select(privacy_erasures.c.customer_id)))


def retention_run(*, uow: UnitOfWork, actor: Actor, now: dt.datetime | None = None,
                  inactive_days: int | None = None, dry_run: bool = False,
                  batch: int = 500) -> dict[str, Any]:
    """Anonymise customers inactive for longer than the retention period. Customers with
    stored value outstanding are kept and counted. Each batch commits on its own, so a long
    run can be interrupted and started again; the run row is the report."""
    need(actor)
    now = now or utcnow()
    days = get_settings().retention_inactive_days if inactive_days is None else inactive_days
    if days <= 0:
        raise Conflict("privacy_retention_off")
    cutoff = now - dt.timedelta(days=days)
    conn = uow.c
    run_id = int(conn.execute(insert(privacy_retention_runs).values(
        started_at=now, inactive_days=days, cutoff=cutoff, dry_run=dry_run, kept={},
        actor=actor.name).returning(privacy_retention_runs.c.id)).scalar_one())
    uow.commit()
    candidates: list[int] = []
    for r in conn.execute(_last_activity(conn)).mappings():
        latest = max(v for v in (r["created_at"], r["last_order_at"], r.get("member_last"))
                     if v is not None)
        if latest < cutoff:
            candidates.append(int(r["customer_id"]))
    uow.rollback()
    kept: dict[str, int] = {}
    anonymised = 0
    for start in range(0, len(candidates), batch):
        for customer_id in candidates[start:start + batch]:
            ids = erasure.customer_ids_of(conn, customer_id)
            if _stored_value_outstanding(conn, ids):
                kept["stored_value_outstanding"] = kept.get("stored_value_outstanding", 0) + 1
                continue
            open_requests = conn.execute(select(func.count()).select_from(privacy_requests)
                                         .where(privacy_requests.c.customer_id == customer_id,
                                                privacy_requests.c.status == "open",
                                                privacy_requests.c.kind != "deletion")
                                         ).scalar_one()
            if open_requests:
                kept["open_request"] = kept.get("open_request", 0) + 1
                continue
            if not dry_run:
                _erase(conn, actor, customer_id, reason="retention", now=now,
                       retention_run_id=run_id)
            anonymised += 1
        conn.execute(update(privacy_retention_runs).where(privacy_retention_runs.c.id == run_id)
                     .values(candidates=len(candidates), anonymised=anonymised, kept=kept))
        uow.commit()
    conn.execute(update(privacy_retention_runs).where(privacy_retention_runs.c.id == run_id)
                 .values(candidates=len(candidates), anonymised=anonymised, kept=kept,
                         finished_at=utcnow()))
    audit.record(conn, actor, "privacy.retention_run", entity="privacy_retention_run",
                 entity_id=run_id, details={"inactive_days": days, "dry_run": dry_run,
                                            "candidates": len(candidates),
                                            "anonymised": anonymised, "kept": kept})
    uow.commit()
    return retention_runs(conn, actor=actor, run_id=run_id)[0]


def retention_runs(conn: Connection, *, actor: Actor, run_id: int | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
    need(actor)
    r = privacy_retention_runs.c
    q = select(privacy_retention_runs).order_by(r.id.desc()).limit(limit)
    if run_id is not None:
        q = q.where(r.id == run_id)
    return [{"id": int(x["id"]), "started_at": x["started_at"], "finished_at": x["finished_at"],
             "inactive_days": x["inactive_days"], "cutoff": x["cutoff"],
             "dry_run": x["dry_run"], "candidates": x["candidates"],
             "anonymised": x["anonymised"], "kept": x["kept"] or {}, "actor": x["actor"]}
            for x in conn.execute(q).mappings()]


# --- person-level consent -----------------------------------------------------------------------

def personalisation(conn: Connection, customer_id: int) -> dict[str, Any]:
    """Whether personalised marketing from automated scoring is allowed (it is until the
    person opts out), with the history of the person's choices."""
    rows = conn.execute(select(privacy_consents).where(
        privacy_consents.c.customer_id == customer_id,
        privacy_consents.c.purpose == "personalisation").order_by(privacy_consents.c.id)
    ).mappings().all()
    return {"allowed": rows[-1]["granted"] if rows else True,
            "history": [{"granted": r["granted"], "source": r["source"], "at": r["at"],
                         "policy_version": r["policy_version"], "actor": r["actor"]}
                        for r in rows]}


def set_personalisation(*, uow: UnitOfWork, actor: Actor, customer_id: int, allowed: bool,
                        source: str, policy_version: str | None = None,
                        now: dt.datetime | None = None, check_permission: bool = True
                        ) -> dict[str, Any]:
    """Record the person's choice about personalised marketing (PIPL article 24). Staff need
    ``customers.write``; the member self-service page calls it for the member themselves."""
    if check_permission and not actor.can("customers.write"):
        raise Forbidden("forbidden", params={"permission": "customers.write"})
    if source not in SOURCES + ("selfservice",):
        raise ValidationFailed("validation_failed", fields=[FieldError(
            "source", "privacy_bad_source", {"allowed": ", ".join(SOURCES)})])
    now = now or utcnow()
    conn = uow.c
    if check_permission:
        _customer(conn, actor, customer_id)
    current = personalisation(conn, customer_id)["allowed"]
    if current != allowed:
        conn.execute(insert(privacy_consents).values(
            customer_id=customer_id, purpose="personalisation", granted=allowed,
            policy_version=policy_version, source=source, at=now, actor=actor.name))
        audit.record(conn, actor, "privacy.personalisation_" + ("allowed" if allowed
                                                                 else "opted_out"),
                     entity="customer", entity_id=customer_id, details={"source": source})
    out = personalisation(conn, customer_id)
    uow.commit()
    return out


def personalisation_opted_out() -> Any:
    """A select of the ids of customers who opted out of personalised marketing: segments and
    campaigns built on automated scores (churn risk, CLV, RFM, probability active) leave them
    out."""
    p = privacy_consents.c
    latest = select(p.customer_id, func.max(p.id).label("id")).where(
        p.purpose == "personalisation").group_by(p.customer_id).subquery()
    return select(p.customer_id).join(latest, and_(latest.c.id == p.id)).where(
        p.granted.is_(False))


def consented_select(channel: str) -> Any:
    """A select of the ids of customers whose marketing consent for ``channel`` is in force in
    at least one of their memberships (the latest row of that kind is a grant)."""
    from patron.loyalty.tables import loyalty_consents, loyalty_members

    lc = loyalty_consents.c
    latest = select(lc.member_id, func.max(lc.id).label("id")).where(
        lc.kind == channel).group_by(lc.member_id).subquery()
    return (select(loyalty_members.c.customer_id)
            .join(latest, latest.c.member_id == loyalty_members.c.id)
            .join(loyalty_consents, lc.id == latest.c.id)
            .where(lc.granted.is_(True)))
