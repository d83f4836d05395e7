"""Loyalty use cases: programs, rules and tiers; enrolment and consent; redemptions, holds,
adjustments, transfers and manual tier grants. Each takes ``uow`` and ``actor``, checks the
actor's permission and scope, and commits once; a database conflict (a concurrent writer, a
deadlock) rolls the whole operation back and it is tried again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from patron.customers import service as customers_service
from patron.customers.model import IdentifierError
from patron.customers.protect import identity_is
from patron.customers.queries import visible_customer
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, utcnow
from patron.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    PatronError,
    ValidationFailed,
)
from patron.loyalty import persist
from patron.loyalty.model import (
    InsufficientPoints,
    lot_expiry,
    new_member_code,
    qualifying_tier,
    redemption_value,
)
from patron.loyalty.schemas import (
    AdjustIn,
    ConsentIn,
    EnrolIn,
    HoldIn,
    ProgramIn,
    ProgramSettings,
    RedeemIn,
    RuleVersionIn,
    TierGrantIn,
    TierIn,
    TierUpdate,
    TransferIn,
)
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_members,
    loyalty_operations,
    loyalty_programs,
    loyalty_rule_versions,
    loyalty_tiers,
)
from patron.loyalty.tiering import TierChange, load_tiers, spend_12m, upgrades, write_changes
from patron.org.service import Reference
from patron.org.tables import brands, channels, stores
from patron.security import audit
from patron.security.model import Actor

T = TypeVar("T")
MAX_ATTEMPTS = 4


# --- plumbing -----------------------------------------------------------------------------------

def need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


def invalid(field: str, reason: str, **params: Any) -> ValidationFailed:
    return ValidationFailed("validation_failed", fields=[FieldError(field, reason, params)])


def retrying(uow: UnitOfWork, work: Callable[[], T]) -> T:
    """Run ``work`` (which commits), again from the start after a conflict with a concurrent
    writer: a unique key another transaction took first, a deadlock, a serialization failure."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return work()
        except PatronError:
            # A refusal rolls back what the attempt wrote: a caller that goes on with the same
            # unit of work never sees half an operation.
            uow.rollback()
            raise
        except (IntegrityError, DBAPIError) as exc:
            uow.rollback()
            code = getattr(getattr(exc, "orig", None), "sqlstate", None)
            if attempt == MAX_ATTEMPTS - 1 or not (
                    isinstance(exc, IntegrityError) or code in ("40001", "40P01")):
                raise
    raise AssertionError("unreachable")


def request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _program(conn: Connection, code: str) -> dict[str, Any]:
    row = conn.execute(select(loyalty_programs).where(loyalty_programs.c.code == code)
                       ).mappings().first()
    if row is None:
        raise NotFound("program_not_found", params={"code": code})
    return dict(row)


def _program_by_id(conn: Connection, program_id: int) -> dict[str, Any]:
    return dict(conn.execute(select(loyalty_programs).where(
        loyalty_programs.c.id == program_id)).mappings().one())


def _store_id(conn: Connection, actor: Actor, code: str | None, *, field: str = "store",
              required_when_scoped: bool = True) -> int | None:
    """A store code to its id, within the actor's scope; actors limited to some stores must
    name one of theirs."""
    if code is None:
        if actor.store_ids is not None and required_when_scoped:
            raise invalid(field, "store_required_in_scope")
        return None
    store = Reference(conn).store(code)
    if store is None:
        raise invalid(field, "unknown_store", value=code)
    if not actor.sees_store(store.id):
        raise invalid(field, "store_out_of_scope")
    return store.id


def _member(conn: Connection, actor: Actor, member_id: int, *, lock: bool = False,
            visible: bool = True) -> dict[str, Any]:
    """A member row (locked when asked). ``visible``: a store-scoped actor must see the
    member's customer profile (bought or registered at one of its stores)."""
    if lock:
        row = persist.lock_members(conn, [member_id]).get(member_id)
    else:
        row = conn.execute(select(loyalty_members).where(loyalty_members.c.id == member_id)
                           ).mappings().first()
    if row is None:
        raise NotFound("member_not_found")
    if visible and actor.store_ids is not None:
        try:
            visible_customer(conn, actor, int(row["customer_id"]))
        except NotFound as exc:
            raise NotFound("member_not_found") from exc
    return dict(row)


# --- programs, rules, tiers ---------------------------------------------------------------------

PROGRAM_DEFAULTS: dict[str, Any] = {
    "status": "active", "storeless_channels": [], "timezone": "Asia/Shanghai",
    "expiry_mode": "rolling_months", "expiry_months": 24, "pending_days": 7,
    "reminder_days": 30, "hold_minutes": 15, "redeem_points_per_yuan": 100,
    "clawback_policy": "owe", "tier_basis": "growth", "tier_grace_days": 365,
    "tier_max_downgrade": 1,
}


def _check_settings(conn: Connection, values: dict[str, Any], program_id: int | None) -> None:
    errors = []
    if values["expiry_mode"] == "rolling_months":
        months = values.get("expiry_months")
        if months is None:
            errors.append(FieldError("expiry_months", "expiry_months_required"))
        elif values["pending_days"] >= months * 28:
            errors.append(FieldError("pending_days", "pending_longer_than_expiry"))
    known = set(conn.execute(select(channels.c.code)).scalars())
    claimed = {ch: int(r.id) for r in conn.execute(select(loyalty_programs.c.id,
                                                          loyalty_programs.c.storeless_channels))
               for ch in (r.storeless_channels or [])}
    for i, ch in enumerate(values["storeless_channels"]):
        if ch not in known:
            errors.append(FieldError(f"storeless_channels.{i}", "unknown_channel", {"value": ch}))
        elif claimed.get(ch, program_id) != program_id:
            errors.append(FieldError(f"storeless_channels.{i}", "channel_claimed",
                                     {"value": ch}))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)


def _check_tier_ladder(tiers: list[dict[str, Any]], field: str = "tiers") -> None:
    """Higher ranks need higher thresholds, so that 'the highest tier met' is well defined."""
    ordered = sorted(tiers, key=lambda t: t["rank"])
    ranks = [t["rank"] for t in ordered]
    if len(set(ranks)) != len(ranks):
        raise invalid(field, "tier_rank_duplicate")
    codes = [t["code"] for t in ordered]
    if len(set(codes)) != len(codes):
        raise invalid(field, "tier_code_duplicate")
    for lower, higher in zip(ordered, ordered[1:], strict=False):
        if higher["min_growth"] < lower["min_growth"] or higher["min_spend"] < lower["min_spend"]:
            raise invalid(field, "tier_thresholds_not_increasing", code=higher["code"])


def program_out(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    brand = conn.execute(select(brands.c.code).where(brands.c.id == row["brand_id"])).scalar()
    out = {k: row[k] for k in ("id", "code", "name", "status", "storeless_channels", "timezone",
                               "expiry_mode", "expiry_months", "pending_days", "reminder_days",
                               "hold_minutes", "redeem_points_per_yuan", "clawback_policy",
                               "tier_basis", "tier_grace_days", "tier_max_downgrade",
                               "privacy_version", "code_prefix", "created_at", "updated_at")}
    out["brand"] = brand
    out["tiers"] = tiers_out(conn, int(row["id"]))
    v = loyalty_rule_versions.c
    current = conn.execute(select(v.version, v.effective_from, v.rules)
                           .where(v.program_id == row["id"], v.effective_from <= utcnow())
                           .order_by(v.effective_from.desc()).limit(1)).mappings().first()
    out["rules_in_force"] = dict(current) if current else None
    return out


def tiers_out(conn: Connection, program_id: int) -> list[dict[str, Any]]:
    t = loyalty_tiers.c
    return [{"id": int(r["id"]), "code": r["code"], "name": r["name"], "rank": r["rank"],
             "min_growth": int(r["min_growth"]), "min_spend": r["min_spend"],
             "points_multiplier": r["points_multiplier"], "benefits": r["benefits"]}
            for r in conn.execute(select(loyalty_tiers).where(t.program_id == program_id)
                                  .order_by(t.rank)).mappings()]


def create_program(*, uow: UnitOfWork, actor: Actor, data: ProgramIn,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "loyalty.manage")
    now = now or utcnow()
    conn = uow.c
    brand_id = conn.execute(select(brands.c.id).where(brands.c.code == data.brand)).scalar()
    if brand_id is None:
        raise invalid("brand", "unknown_brand", value=data.brand)
    if conn.execute(select(loyalty_programs.c.id).where(loyalty_programs.c.code == data.code)
                    ).first():
        raise Conflict("program_exists", params={"code": data.code})
    if conn.execute(select(loyalty_programs.c.id).where(loyalty_programs.c.brand_id == brand_id)
                    ).first():
        raise Conflict("brand_has_program", params={"brand": data.brand})
    values = {**PROGRAM_DEFAULTS, **data.model_dump(exclude={"rules", "tiers", "brand"},
                                                    exclude_none=True)}
    if values["expiry_mode"] == "end_of_next_year":
        values["expiry_months"] = None
    _check_settings(conn, values, None)
    tiers = [t.model_dump() for t in data.tiers]
    _check_tier_ladder(tiers)
    program_id = int(conn.execute(insert(loyalty_programs).values(
        **values, brand_id=brand_id, created_at=now, updated_at=now,
    ).returning(loyalty_programs.c.id)).scalar_one())
    conn.execute(insert(loyalty_rule_versions).values(
        program_id=program_id, version=1, effective_from=now, rules=data.rules.as_json(),
        note="initial rules", created_at=now, created_by=actor.name))
    if tiers:
        conn.execute(insert(loyalty_tiers), [{**t, "program_id": program_id} for t in tiers])
    audit.record(conn, actor, "loyalty.program_created", entity="loyalty_program",
                 entity_id=program_id, details={"code": data.code, "brand": data.brand,
                                                "tiers": [t["code"] for t in tiers]})
    out = program_out(conn, _program_by_id(conn, program_id))
    uow.commit()
    return out


def update_program(*, uow: UnitOfWork, actor: Actor, code: str, changes: ProgramSettings,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    """Settings apply from now on: lots already earned keep their expiry dates."""
    need(actor, "loyalty.manage")
    now = now or utcnow()
    conn = uow.c
    row = _program(conn, code)
    diff = changes.model_dump(exclude_unset=True)
    if diff.get("expiry_mode") == "end_of_next_year":
        diff["expiry_months"] = None
    values = {**row, **diff}
    _check_settings(conn, values, int(row["id"]))
    if diff:
        conn.execute(update(loyalty_programs).where(loyalty_programs.c.id == row["id"])
                     .values(**diff, updated_at=now))
        audit.record(conn, actor, "loyalty.program_updated", entity="loyalty_program",
                     entity_id=row["id"], details={"code": code, "changes": {
                         k: v for k, v in diff.items()}})
    out = program_out(conn, _program_by_id(conn, int(row["id"])))
    uow.commit()
    return out


def list_programs(conn: Connection, *, actor: Actor) -> list[dict[str, Any]]:
    need(actor, "loyalty.lookup")
    return [program_out(conn, dict(r)) for r in conn.execute(
        select(loyalty_programs).order_by(loyalty_programs.c.code)).mappings()]


def get_program(conn: Connection, *, actor: Actor, code: str) -> dict[str, Any]:
    need(actor, "loyalty.lookup")
    return program_out(conn, _program(conn, code))


def add_rule_version(*, uow: UnitOfWork, actor: Actor, code: str, body: RuleVersionIn,
                     now: dt.datetime | None = None) -> dict[str, Any]:
    """A new version of the earning rules from ``effective_from`` (now by default). The past is
    not rewritten: orders already recorded earned by the rules in force then."""
    need(actor, "loyalty.manage")
    now = now or utcnow()
    conn = uow.c
    program = _program(conn, code)
    effective = body.effective_from or now
    if effective.tzinfo is None:
        raise invalid("effective_from", "timezone_required")
    # A minute's grace for the caller's clock.
    if effective < now - dt.timedelta(minutes=1):
        raise invalid("effective_from", "effective_in_past")
    v = loyalty_rule_versions.c
    if conn.execute(select(v.id).where(v.program_id == program["id"],
                                       v.effective_from == effective)).first():
        raise invalid("effective_from", "rule_version_same_time")
    last = conn.execute(select(func.max(v.version)).where(v.program_id == program["id"])
                        ).scalar() or 0
    version_id = int(conn.execute(insert(loyalty_rule_versions).values(
        program_id=program["id"], version=int(last) + 1, effective_from=effective,
        rules=body.rules.as_json(), note=body.note, created_at=now, created_by=actor.name,
    ).returning(v.id)).scalar_one())
    audit.record(conn, actor, "loyalty.rules_versioned", entity="loyalty_program",
                 entity_id=program["id"], details={"code": code, "version": int(last) + 1,
                                                   "effective_from": effective.isoformat()})
    uow.commit()
    return {"id": version_id, "version": int(last) + 1, "effective_from": effective,
            "rules": body.rules.as_json(), "note": body.note}


def list_rule_versions(conn: Connection, *, actor: Actor, code: str) -> list[dict[str, Any]]:
    need(actor, "loyalty.read")
    program = _program(conn, code)
    v = loyalty_rule_versions.c
    return [dict(r) for r in conn.execute(
        select(v.id, v.version, v.effective_from, v.rules, v.note, v.created_at, v.created_by)
        .where(v.program_id == program["id"]).order_by(v.version)).mappings()]


def create_tier(*, uow: UnitOfWork, actor: Actor, code: str, tier: TierIn) -> dict[str, Any]:
    need(actor, "loyalty.manage")
    conn = uow.c
    program = _program(conn, code)
    existing = tiers_out(conn, int(program["id"]))
    _check_tier_ladder([*existing, tier.model_dump()], field="rank")
    tier_id = conn.execute(insert(loyalty_tiers).values(**tier.model_dump(),
                                                        program_id=program["id"])
                           .returning(loyalty_tiers.c.id)).scalar_one()
    audit.record(conn, actor, "loyalty.tier_created", entity="loyalty_tier", entity_id=tier_id,
                 details={"program": code, "tier": tier.code})
    uow.commit()
    return next(t for t in tiers_out(conn, int(program["id"])) if t["id"] == tier_id)


def update_tier(*, uow: UnitOfWork, actor: Actor, code: str, tier_code: str,
                changes: TierUpdate) -> dict[str, Any]:
    """New thresholds count from the next qualification (an upgrade or the next review); they
    never take a tier away outside a review."""
    need(actor, "loyalty.manage")
    conn = uow.c
    program = _program(conn, code)
    existing = tiers_out(conn, int(program["id"]))
    target = next((t for t in existing if t["code"] == tier_code), None)
    if target is None:
        raise NotFound("tier_not_found", params={"code": tier_code})
    diff = changes.model_dump(exclude_unset=True, exclude_none=True)
    _check_tier_ladder([{**t, **diff} if t["code"] == tier_code else t for t in existing],
                       field="min_growth" if "min_growth" in diff else "min_spend")
    if diff:
        conn.execute(update(loyalty_tiers).where(loyalty_tiers.c.id == target["id"])
                     .values(**diff))
        audit.record(conn, actor, "loyalty.tier_updated", entity="loyalty_tier",
                     entity_id=target["id"], details={"program": code, "tier": tier_code,
                                                      "changes": {
                                                          k: str(v) if isinstance(v, Decimal)
                                                          else v for k, v in diff.items()}})
    uow.commit()
    return next(t for t in tiers_out(conn, int(program["id"])) if t["code"] == tier_code)


# --- enrolment and consent ----------------------------------------------------------------------

def _unused_code(conn: Connection, prefix: str) -> str:
    for _ in range(20):
        code = new_member_code(prefix)
        taken = conn.execute(select(loyalty_members.c.id).where(
            loyalty_members.c.member_code == code)).first() or conn.execute(
            select(identities.c.id).where(identities.c.kind == "member_code",
                                          identities.c.namespace == "",
                                          identity_is(code))).first()
        if not taken:
            return code
    raise Conflict("member_code_exhausted")


def enrol(*, uow: UnitOfWork, actor: Actor, program_code: str, body: EnrolIn,
          now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Enrol the customer owning this phone (created when new) in the program, with consent to
    the current privacy policy and the marketing channels chosen. Enrolling an existing member
    again returns the membership (``created`` False) and changes nothing."""
    need(actor, "loyalty.enrol")

    def work() -> tuple[dict[str, Any], bool]:
        out = enrol_in(uow.c, actor=actor, program_code=program_code, body=body, now=now)
        uow.commit()
        return out

    return retrying(uow, work)


def enrol_in(conn: Connection, *, actor: Actor, program_code: str, body: EnrolIn,
             now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
    """:func:`enrol` inside the caller's transaction (an enrolment with an invite code links
    the new member in the same transaction); never commits; the caller checks permissions."""
    at = now or utcnow()
    program = _program(conn, program_code)
    if program["status"] != "active":
        raise Conflict("program_closed", params={"code": program_code})
    if body.privacy.version != program["privacy_version"]:
        raise invalid("privacy.version", "privacy_version_outdated",
                      current=program["privacy_version"])
    store_id = _store_id(conn, actor, body.store)
    channel_id = conn.execute(select(channels.c.id).where(channels.c.code == body.source)
                              ).scalar()
    try:
        customer_id, _new = customers_service.find_or_create_by_phone(
            conn, phone=body.phone, name=body.name, store_id=store_id,
            channel_id=channel_id, now=at)
    except IdentifierError as exc:
        raise invalid("phone", exc.reason) from exc
    existing = conn.execute(select(loyalty_members.c.id).where(
        loyalty_members.c.program_id == program["id"],
        loyalty_members.c.customer_id == customer_id)).scalar()
    if existing is not None:
        return member_out(conn, _member(conn, actor, int(existing), visible=False)), False
    if body.language is not None and conn.execute(select(customers.c.language).where(
            customers.c.id == customer_id)).scalar() is None:
        from patron.customers.custom_fields import change_language_in

        change_language_in(conn, actor=actor, customer_id=customer_id, language=body.language,
                           source="enrolment")
    code = _unused_code(conn, program["code_prefix"])
    tiers = load_tiers(conn, [int(program["id"])])[int(program["id"])]
    base = qualifying_tier(tiers, basis=program["tier_basis"], growth=0, spend=Decimal(0))
    member_id = int(conn.execute(insert(loyalty_members).values(
        program_id=program["id"], customer_id=customer_id, member_code=code,
        status="active", enrolled_at=at, enrolled_store_id=store_id,
        enrolled_channel=body.source, tier_id=base.id if base else None,
        tier_since=at if base else None, updated_at=at,
    ).returning(loyalty_members.c.id)).scalar_one())
    consents = [{"member_id": member_id, "kind": "privacy", "granted": True,
                 "policy_version": body.privacy.version, "source": body.source,
                 "store_id": store_id, "at": at, "actor": actor.name}]
    for channel, granted in body.marketing.model_dump().items():
        consents.append({"member_id": member_id, "kind": channel, "granted": granted,
                         "policy_version": None, "source": body.source,
                         "store_id": store_id, "at": at, "actor": actor.name})
    conn.execute(insert(loyalty_consents), consents)
    if base is not None:
        write_changes(conn, [TierChange(member_id, None, base.id, "enrol", growth_value=0)],
                      now=at, actor=actor.name)
    customers_service.add_member_code(conn, customer_id=customer_id, member_code=code, now=at)
    audit.record(conn, actor, "loyalty.member_enrolled", entity="loyalty_member",
                 entity_id=member_id, details={
                     "program": program_code, "customer_id": customer_id,
                     "source": body.source, "privacy_version": body.privacy.version,
                     "marketing": body.marketing.model_dump()})
    return member_out(conn, _member(conn, actor, member_id, visible=False)), True


def current_consents(conn: Connection, member_id: int) -> dict[str, Any]:
    c = loyalty_consents.c
    out: dict[str, Any] = {}
    for r in conn.execute(select(loyalty_consents).where(c.member_id == member_id)
                          .order_by(c.id)).mappings():
        out[r["kind"]] = {"granted": bool(r["granted"]), "version": r["policy_version"],
                          "source": r["source"], "at": r["at"]}
    return out


def record_consent(*, uow: UnitOfWork, actor: Actor, member_id: int, body: ConsentIn,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    """Grant or withdraw one consent; the history keeps every change."""
    need(actor, "loyalty.enrol")
    at = now or utcnow()
    conn = uow.c
    member = _member(conn, actor, member_id, lock=True,
                     visible=actor.can("loyalty.read"))
    program = _program_by_id(conn, int(member["program_id"]))
    store_id = _store_id(conn, actor, body.store, required_when_scoped=False)
    version = body.version
    if body.kind == "privacy":
        if body.granted and version != program["privacy_version"]:
            raise invalid("version", "privacy_version_outdated",
                          current=program["privacy_version"])
        version = version or current_consents(conn, member_id).get("privacy", {}).get("version")
        version = version or program["privacy_version"]
    conn.execute(insert(loyalty_consents).values(
        member_id=member_id, kind=body.kind, granted=body.granted, policy_version=version,
        source=body.source, store_id=store_id, at=at, actor=actor.name))
    audit.record(conn, actor, "loyalty.consent_" + ("granted" if body.granted else "withdrawn"),
                 entity="loyalty_member", entity_id=member_id,
                 details={"kind": body.kind, "source": body.source, "version": version})
    out = current_consents(conn, member_id)
    uow.commit()
    return out


def member_out(conn: Connection, m: dict[str, Any]) -> dict[str, Any]:
    from patron.customers.model import mask_name, mask_phone

    program = _program_by_id(conn, int(m["program_id"]))
    person = conn.execute(select(customers.c.name, customers.c.phone).where(
        customers.c.id == m["customer_id"])).first()
    tier = None
    if m["tier_id"] is not None:
        t = conn.execute(select(loyalty_tiers).where(loyalty_tiers.c.id == m["tier_id"])
                         ).mappings().one()
        tier = {"code": t["code"], "name": t["name"], "rank": t["rank"],
                "points_multiplier": t["points_multiplier"], "benefits": t["benefits"]}
    store = None
    if m["enrolled_store_id"] is not None:
        store = conn.execute(select(stores.c.code).where(stores.c.id == m["enrolled_store_id"])
                             ).scalar()
    return {
        "id": int(m["id"]), "program": program["code"], "member_code": m["member_code"],
        "customer_id": int(m["customer_id"]), "status": m["status"],
        "name": mask_name(person.name) if person else None,
        "phone": mask_phone(person.phone) if person else None,
        "enrolled_at": m["enrolled_at"], "enrolled_store": store,
        "enrolled_source": m["enrolled_channel"],
        "points": {"available": int(m["points_available"]), "pending": int(m["points_pending"]),
                   "held": int(m["points_held"]), "owed": int(m["points_owed"])},
        "growth_value": int(m["growth_value"]), "tier": tier, "tier_since": m["tier_since"],
        "tier_manual_until": m["tier_manual_until"],
        "consents": current_consents(conn, int(m["id"])),
    }


# --- operations ---------------------------------------------------------------------------------

def op_out(conn: Connection, op: dict[str, Any], *, replay: bool = False) -> dict[str, Any]:
    member = conn.execute(select(loyalty_members).where(
        loyalty_members.c.id == op["member_id"])).mappings().one()
    store = None
    if op["store_id"] is not None:
        store = conn.execute(select(stores.c.code).where(stores.c.id == op["store_id"])).scalar()
    return {"id": int(op["id"]), "kind": op["kind"], "member_id": int(op["member_id"]),
            "points": int(op["points"]), "value": op["value"], "status": op["status"],
            "hold_expires_at": op["hold_expires_at"], "store": store,
            "reference": op["reference"], "reason": op["reason"],
            "counterparty_member_id": op["counterparty_member_id"],
            "created_at": op["created_at"], "finished_at": op["finished_at"],
            "replayed": replay,
            "balance": {"available": int(member["points_available"]),
                        "held": int(member["points_held"]),
                        "pending": int(member["points_pending"]),
                        "owed": int(member["points_owed"])}}


def _prior(conn: Connection, program_id: int, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(loyalty_operations).where(
        loyalty_operations.c.program_id == program_id,
        loyalty_operations.c.idempotency_key == key)).mappings().first()
    return dict(row) if row else None


def _replay(conn: Connection, prior: dict[str, Any], digest: str) -> dict[str, Any]:
    if prior["request_hash"] != digest:
        raise Conflict("idempotency_key_reused")
    return op_out(conn, prior, replay=True)


def _operation(*, uow: UnitOfWork, actor: Actor, member_id: int, kind: str, key: str,
               payload: dict[str, Any], points: int, store: str | None, visible: bool,
               apply: Callable[..., dict[str, Any]], now: dt.datetime | None,
               partner_id: int | None = None,
               initial: Callable[[dict[str, Any], dt.datetime], dict[str, Any]] | None = None,
               ) -> dict[str, Any]:
    """The shape every points operation shares: lock the member(s), replay a known idempotency
    key, bring the wallet up to now, apply, save, audit, commit."""

    def work() -> dict[str, Any]:
        out = _operation_in(uow.c, actor=actor, member_id=member_id, kind=kind, key=key,
                            payload=payload, points=points, store=store, visible=visible,
                            apply=apply, now=now, partner_id=partner_id, initial=initial)
        uow.commit()
        return out

    return retrying(uow, work)


def _operation_in(conn: Connection, *, actor: Actor, member_id: int, kind: str, key: str,
                  payload: dict[str, Any], points: int, store: str | None, visible: bool,
                  apply: Callable[..., dict[str, Any]], now: dt.datetime | None,
                  partner_id: int | None = None,
                  initial: Callable[[dict[str, Any], dt.datetime], dict[str, Any]] | None = None,
                  ) -> dict[str, Any]:
    """:func:`_operation` inside the caller's open transaction: writes, never commits (a
    replayed key writes nothing)."""
    at = now or utcnow()
    _member(conn, actor, member_id, visible=visible)  # scope check before any lock
    locked = persist.lock_members(conn, [member_id, *([partner_id] if partner_id else [])])
    member = locked.get(member_id)
    if member is None:
        raise NotFound("member_not_found")
    program = _program_by_id(conn, int(member["program_id"]))
    store_id = _store_id(conn, actor, store, required_when_scoped=kind in ("redeem", "hold"))
    digest = request_hash({"kind": kind, "member": member_id, **payload})
    prior = _prior(conn, int(program["id"]), key)
    if prior is not None:
        return _replay(conn, prior, digest)
    if member["status"] != "active":
        raise Conflict("member_closed")
    keys = persist.temp_keys()
    wallets, expired = persist.catch_up(conn, locked, now=at, keys=keys)
    row = {"status": "done", "finished_at": at, **(initial(program, at) if initial else {})}
    op_id = int(conn.execute(insert(loyalty_operations).values(
        program_id=program["id"], member_id=member_id, kind=kind, idempotency_key=key,
        request_hash=digest, points=points, store_id=store_id, actor=actor.name,
        created_at=at, **row,
    ).returning(loyalty_operations.c.id)).scalar_one())
    try:
        values = apply(wallets=wallets, program=program, op_id=op_id, store_id=store_id,
                       now=at, locked=locked)
    except InsufficientPoints as exc:
        raise Conflict("insufficient_points", params={"wanted": exc.wanted,
                                                      "available": exc.available}) from exc
    persist.save(conn, wallets.values(), program_of={m: int(r["program_id"])
                                                     for m, r in locked.items()},
                 actor=actor.name, now=at)
    persist.finish_expired_holds(conn, expired, at)
    if values:
        conn.execute(update(loyalty_operations).where(loyalty_operations.c.id == op_id)
                     .values(**values))
    growth = {m: w.growth for m, w in wallets.items() if w.deltas()[4]}
    if growth:
        changes = upgrades(conn, programs={int(program["id"]): program},
                           members={m: locked[m] for m in growth}, growth=growth, now=at)
        write_changes(conn, changes, now=at, actor=actor.name)
    op = dict(conn.execute(select(loyalty_operations).where(
        loyalty_operations.c.id == op_id)).mappings().one())
    audit.record(conn, actor, f"loyalty.{kind}", entity="loyalty_member",
                 entity_id=member_id, details={"operation_id": op_id, "points": points,
                                               "key": key, **{k: v for k, v in
                                                              payload.items()
                                                              if k != "points"}})
    return op_out(conn, op)


def redeem(*, uow: UnitOfWork, actor: Actor, member_id: int, body: RedeemIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Spend points at once (soonest-expiring lots first) for their cash value."""
    need(actor, "loyalty.redeem")

    def work() -> dict[str, Any]:
        out = redeem_in(uow.c, actor=actor, member_id=member_id, body=body, now=now)
        uow.commit()
        return out

    return retrying(uow, work)


def redeem_in(conn: Connection, *, actor: Actor, member_id: int, body: RedeemIn,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`redeem` inside the caller's transaction (the POS checkout pays with points in the
    transaction that records the order): never commits; the caller checks its own permission
    and retries the whole transaction on a conflict (:func:`retrying`)."""

    def apply(*, wallets: dict[int, Any], program: dict[str, Any], op_id: int,
              store_id: int | None, now: dt.datetime, **_: Any) -> dict[str, Any]:
        wallets[member_id].redeem(body.points, cause=("operation", str(op_id)), now=now,
                                  store_id=store_id)
        return {"value": redemption_value(body.points, int(program["redeem_points_per_yuan"])),
                "reference": body.reference}

    return _operation_in(conn, actor=actor, member_id=member_id, kind="redeem",
                         key=body.idempotency_key, points=body.points, store=body.store,
                         payload={"points": body.points, "store": body.store,
                                  "reference": body.reference},
                         visible=False, apply=apply, now=now)


def hold(*, uow: UnitOfWork, actor: Actor, member_id: int, body: HoldIn,
         now: dt.datetime | None = None) -> dict[str, Any]:
    """Reserve points for a payment in steps; commit or release it, or it expires by itself
    after the program's hold time (or ``minutes``)."""
    need(actor, "loyalty.redeem")

    def work() -> dict[str, Any]:
        out = hold_in(uow.c, actor=actor, member_id=member_id, body=body, now=now)
        uow.commit()
        return out

    return retrying(uow, work)


def hold_in(conn: Connection, *, actor: Actor, member_id: int, body: HoldIn,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`hold` inside the caller's transaction, for areas that reserve points together
    with their own writes (a reward's stock): never commits; the caller checks its own
    permission and retries the whole transaction on a conflict (:func:`retrying`)."""

    def apply(*, wallets: dict[int, Any], program: dict[str, Any], op_id: int,
              store_id: int | None, now: dt.datetime, **_: Any) -> dict[str, Any]:
        wallets[member_id].hold(body.points, cause=("operation", str(op_id)), now=now,
                                store_id=store_id)
        return {"value": redemption_value(body.points, int(program["redeem_points_per_yuan"])),
                "reference": body.reference}

    def initial(program: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
        minutes = body.minutes or int(program["hold_minutes"])
        return {"status": "held", "finished_at": None,
                "hold_expires_at": at + dt.timedelta(minutes=minutes)}

    return _operation_in(conn, actor=actor, member_id=member_id, kind="hold",
                         key=body.idempotency_key, points=body.points, store=body.store,
                         payload={"points": body.points, "store": body.store,
                                  "reference": body.reference, "minutes": body.minutes},
                         visible=False, apply=apply, now=now, initial=initial)


def adjust(*, uow: UnitOfWork, actor: Actor, member_id: int, body: AdjustIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """A manual correction with a reason: points given form a new lot (expiring like earned
    points); points taken come from the soonest-expiring lots and never exceed the balance."""
    need(actor, "loyalty.adjust")

    def work() -> dict[str, Any]:
        out = adjust_in(uow.c, actor=actor, member_id=member_id, body=body, now=now)
        uow.commit()
        return out

    return retrying(uow, work)


def adjust_in(conn: Connection, *, actor: Actor, member_id: int, body: AdjustIn,
              now: dt.datetime | None = None, visible: bool = True) -> dict[str, Any]:
    """:func:`adjust` inside the caller's transaction (gifts and referral rewards credit points
    with their cause as the reason): never commits; the caller checks its own permission.
    ``visible=False`` skips the store-scope check for system jobs."""

    def apply(*, wallets: dict[int, Any], program: dict[str, Any], op_id: int,
              store_id: int | None, now: dt.datetime, **_: Any) -> dict[str, Any]:
        w = wallets[member_id]
        cause = ("operation", str(op_id))
        if body.bucket == "growth":
            w.adjust_growth(body.points, cause=cause, reason=body.reason)
        elif body.points > 0:
            w.credit(body.points, kind="adjust", cause=cause, now=now, reason=body.reason,
                     store_id=store_id,
                     expires_at=lot_expiry(now, mode=program["expiry_mode"],
                                           months=program["expiry_months"],
                                           tz=program["timezone"]))
        else:
            w.debit(-body.points, kind="adjust", cause=cause, now=now, reason=body.reason,
                    store_id=store_id)
        return {"reason": body.reason}

    return _operation_in(conn, actor=actor, member_id=member_id, kind="adjust",
                         key=body.idempotency_key, points=body.points, store=body.store,
                         payload={"points": body.points, "bucket": body.bucket,
                                  "reason": body.reason, "store": body.store},
                         visible=visible, apply=apply, now=now)


def transfer(*, uow: UnitOfWork, actor: Actor, member_id: int, body: TransferIn,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """Move points to another member of the same program; they keep their expiry dates."""
    need(actor, "loyalty.adjust")
    if body.to_member_id == member_id:
        raise invalid("to_member_id", "transfer_to_self")

    def apply(*, wallets: dict[int, Any], program: dict[str, Any], op_id: int,
              store_id: int | None, now: dt.datetime, locked: dict[int, Any],
              **_: Any) -> dict[str, Any]:
        target = locked.get(body.to_member_id)
        if target is None or int(target["program_id"]) != int(program["id"]):
            raise invalid("to_member_id", "member_not_in_program")
        if target["status"] != "active":
            raise Conflict("member_closed")
        cause = ("operation", str(op_id))
        picked = wallets[member_id].debit(body.points, kind="transfer", cause=cause, now=now,
                                          reason=body.reason)
        wallets[body.to_member_id].transfer_in(picked, cause=cause, now=now)
        return {"reason": body.reason, "counterparty_member_id": body.to_member_id}

    return _operation(uow=uow, actor=actor, member_id=member_id, kind="transfer",
                      key=body.idempotency_key, points=body.points, store=None,
                      payload={"points": body.points, "to": body.to_member_id,
                               "reason": body.reason},
                      visible=True, apply=apply, now=now, partner_id=body.to_member_id)


def _finish_hold(*, uow: UnitOfWork, actor: Actor, hold_id: int, action: str,
                 now: dt.datetime | None) -> dict[str, Any]:
    need(actor, "loyalty.redeem")

    def work() -> dict[str, Any]:
        out, expired = finish_hold_in(uow.c, actor=actor, hold_id=hold_id, action=action,
                                      now=now)
        uow.commit()  # an expiry found on commit is a complete write of its own; then refuse
        if expired:
            raise Conflict("hold_expired")
        return out

    return retrying(uow, work)


def finish_hold_in(conn: Connection, *, actor: Actor, hold_id: int, action: str,
                   now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
    """Commit or release a hold inside the caller's transaction; never commits. Returns the
    hold and whether a commit found it expired: the release has then been written, and the
    caller should commit it and refuse (as :func:`commit_hold` does with ``hold_expired``)."""
    at = now or utcnow()
    o = loyalty_operations.c
    first = conn.execute(select(o.member_id, o.store_id, o.kind).where(o.id == hold_id)
                         ).first()
    if first is None or first.kind != "hold" or (
            actor.store_ids is not None and first.store_id not in actor.store_ids):
        raise NotFound("hold_not_found")
    member_id = int(first.member_id)
    locked = persist.lock_members(conn, [member_id])
    op = dict(conn.execute(select(loyalty_operations).where(o.id == hold_id)
                           ).mappings().one())
    done = {"commit": "committed", "release": "released"}[action]
    if op["status"] == done or (action == "release" and op["status"] == "expired"):
        return op_out(conn, op, replay=True), False
    if op["status"] != "held":
        raise Conflict("hold_not_open", params={"status": op["status"]})
    keys = persist.temp_keys()
    wallets, expired = persist.catch_up(conn, locked, now=at, keys=keys)
    w = wallets[member_id]
    program_of = {member_id: int(locked[member_id]["program_id"])}
    if hold_id in expired:
        persist.save(conn, [w], program_of=program_of, actor=actor.name, now=at)
        persist.finish_expired_holds(conn, expired, at)
        if action == "commit":
            audit.record(conn, actor, "loyalty.hold_expired", entity="loyalty_member",
                         entity_id=member_id, details={"operation_id": hold_id})
            return op_out(conn, dict(conn.execute(select(loyalty_operations).where(
                o.id == hold_id)).mappings().one())), True
        return op_out(conn, dict(conn.execute(select(loyalty_operations).where(
            o.id == hold_id)).mappings().one()), replay=True), False
    cause = ("operation", str(hold_id))
    if action == "commit":
        w.commit(int(op["points"]), cause=cause, store_id=op["store_id"])
    else:
        taken = persist.held_moves(conn, [hold_id]).get(hold_id, {})
        missing = [lot for lot in taken if lot not in w.lots]
        if missing:
            w.lots.update({lt.ref: lt for lt in persist.open_lots(
                conn, [member_id], missing)[member_id] if lt.ref in missing})
        w.release(taken, cause=cause, now=at, store_id=op["store_id"])
        w.expire_due(at)  # points back in a lot that expired meanwhile expire now
    persist.save(conn, [w], program_of=program_of, actor=actor.name, now=at)
    persist.finish_expired_holds(conn, expired, at)
    conn.execute(update(loyalty_operations).where(o.id == hold_id)
                 .values(status=done, finished_at=at))
    audit.record(conn, actor, f"loyalty.hold_{done}", entity="loyalty_member",
                 entity_id=member_id, details={"operation_id": hold_id,
                                               "points": int(op["points"])})
    return op_out(conn, dict(conn.execute(select(loyalty_operations).where(
        o.id == hold_id)).mappings().one())), False


def commit_hold(*, uow: UnitOfWork, actor: Actor, hold_id: int,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """Turn held points into a redemption. Committing again returns the same result; a hold
    that expired or was released cannot be committed (409)."""
    return _finish_hold(uow=uow, actor=actor, hold_id=hold_id, action="commit", now=now)


def release_hold(*, uow: UnitOfWork, actor: Actor, hold_id: int,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """Give held points back to their lots. Releasing again, or a hold that expired, returns
    the hold as it is; a committed hold cannot be released (409)."""
    return _finish_hold(uow=uow, actor=actor, hold_id=hold_id, action="release", now=now)


def grant_tier(*, uow: UnitOfWork, actor: Actor, member_id: int, body: TierGrantIn,
               now: dt.datetime | None = None) -> dict[str, Any]:
    """Give a member a tier by hand until a date. It is no floor after that date: the daily
    job (``patron loyalty expire``) then sets the tier the member's figures qualify for."""
    need(actor, "loyalty.manage")
    at = now or utcnow()
    conn = uow.c
    member = _member(conn, actor, member_id, lock=True)
    if body.until.tzinfo is None:
        raise invalid("until", "timezone_required")
    if body.until <= at:
        raise invalid("until", "until_in_past")
    tier = conn.execute(select(loyalty_tiers).where(
        loyalty_tiers.c.program_id == member["program_id"], loyalty_tiers.c.code == body.tier)
    ).mappings().first()
    if tier is None:
        raise invalid("tier", "tier_not_found", code=body.tier)
    program = _program_by_id(conn, int(member["program_id"]))
    defs = load_tiers(conn, [int(program["id"])])[int(program["id"])]
    earned = qualifying_tier(defs, basis=program["tier_basis"],
                             growth=int(member["growth_value"]),
                             spend=spend_12m(conn, [member_id], at)[member_id])
    if earned is not None and int(tier["rank"]) <= earned.rank:
        raise invalid("tier", "tier_not_above_qualification", code=earned.code)
    write_changes(conn, [TierChange(member_id, member["tier_id"], int(tier["id"]),
                                    "manual_grant", growth_value=int(member["growth_value"]),
                                    manual_until=body.until, note=body.reason)],
                  now=at, actor=actor.name)
    audit.record(conn, actor, "loyalty.tier_granted", entity="loyalty_member",
                 entity_id=member_id, details={"tier": body.tier, "until": body.until.isoformat(),
                                               "reason": body.reason})
    out = member_out(conn, _member(conn, actor, member_id))
    uow.commit()
    return out


def qualification(conn: Connection, member: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The member's qualifying figures and the next tier's threshold."""
    program = _program_by_id(conn, int(member["program_id"]))
    tiers = load_tiers(conn, [int(program["id"])])[int(program["id"])]
    spend = spend_12m(conn, [int(member["id"])], now)[int(member["id"])]
    current = next((t for t in tiers if t.id == member["tier_id"]), None)
    nxt = next((t for t in tiers if current is None or t.rank > current.rank), None)
    return {"basis": program["tier_basis"], "growth_value": int(member["growth_value"]),
            "spend_12m": spend,
            "next_tier": None if nxt is None else {
                "code": nxt.code, "min_growth": nxt.min_growth, "min_spend": nxt.min_spend}}
