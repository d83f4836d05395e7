"""Coupon use cases: templates (versioned terms), issuing to members, evaluating coupons against a
basket, redemption in one step or two (hold, then commit or release), restoring on refund,
expiring holds, and the liability report.

Two layers, as the POS checkout needs them: inner functions taking an open connection
(``issue_coupons``, ``evaluate``, ``redeem_coupons``, ``hold_coupons``, ``commit_hold_in``,
``release_hold_in``, ``restore_for_return``) write inside the caller's transaction and never
commit; the use cases (``issue``, ``redeem``, ``hold``, ``commit_hold``, ``release_hold``,
``expire_holds``, ...) take ``uow`` and ``actor``, own the transaction, commit once and run again
after a conflict with a concurrent writer.

Locks are taken in one order everywhere: the template row (issuing), then coupon rows in id
order, then operation rows; on SQLite the unit of work's ``BEGIN IMMEDIATE`` makes one writer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)

from patron.coupons import model
from patron.coupons.model import Basket, Combination, Coupon, Refusal, Terms
from patron.coupons.schemas import IssueIn, TemplateIn, TemplateUpdate
from patron.coupons.tables import (
    coupon_issues,
    coupon_operations,
    coupon_template_versions,
    coupon_templates,
    coupon_uses,
    coupons,
)
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.loyalty.service import (
    _program,
    _program_by_id,
    _store_id,
    invalid,
    need,
    request_hash,
    retrying,
)
from patron.loyalty.tables import loyalty_members, loyalty_programs
from patron.org.service import Reference
from patron.org.tables import channels, stores
from patron.security import audit
from patron.security.model import Actor

DEFAULT_HOLD_MINUTES = 15
# Coupons are checked at the purchase time the till sends, so that a till that was offline uses
# them as they were when the customer paid; no further back than this, so that a made-up time
# cannot bring an expired coupon back.
OFFLINE_WINDOW = dt.timedelta(days=3)
CLOCK_GRACE = dt.timedelta(minutes=5)


class HoldExpired(Exception):
    """A hold was found expired while committing it; the expiry has been written."""


def _for_update(conn: Connection, query: Any) -> Any:
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


def _yuan(fen: int | None) -> Decimal | None:
    return None if fen is None else model.fen_to_yuan(fen)


# --- templates ------------------------------------------------------------------------------------

MONEY_TERMS = ("amount_off", "cap", "threshold", "reduction", "item_value", "min_spend")


def terms_out(terms: Terms) -> dict[str, Any]:
    """Terms as the API shows them: money in yuan, only what the kind uses besides the common
    settings."""
    data = terms.as_json()
    for name in MONEY_TERMS:
        data[name] = _yuan(data[name])
    unused = {"amount": ("percent_off", "cap", "threshold", "reduction", "repeat",
                         "max_repeats", "item_sku", "item_quantity", "item_value"),
              "percent": ("amount_off", "threshold", "reduction", "repeat", "max_repeats",
                          "item_sku", "item_quantity", "item_value"),
              "threshold": ("amount_off", "percent_off", "cap", "item_sku", "item_quantity",
                            "item_value"),
              "free_item": ("amount_off", "percent_off", "cap", "threshold", "reduction",
                            "repeat", "max_repeats"),
              "shipping": ("amount_off", "percent_off", "threshold", "reduction", "repeat",
                           "max_repeats", "item_sku", "item_quantity", "item_value")}
    for name in unused[terms.kind]:
        data.pop(name, None)
    return data


def _check_references(conn: Connection, terms: Terms, field: str = "terms") -> None:
    errors = []
    known_stores = set(conn.execute(select(stores.c.code)).scalars())
    known_channels = set(conn.execute(select(channels.c.code)).scalars())
    for i, code in enumerate(terms.stores):
        if code not in known_stores:
            errors.append(FieldError(f"{field}.stores.{i}", "unknown_store", {"value": code}))
    for i, code in enumerate(terms.channels):
        if code not in known_channels:
            errors.append(FieldError(f"{field}.channels.{i}", "unknown_channel",
                                     {"value": code}))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)


def _check_budget(face: int | None, budget_value: Decimal | None) -> None:
    if budget_value is not None and face is None:
        raise invalid("budget_value", "coupon_face_value_unknown")


def _template(conn: Connection, template_id: int, *, lock: bool = False) -> dict[str, Any]:
    q = select(coupon_templates).where(coupon_templates.c.id == template_id)
    row = conn.execute(_for_update(conn, q) if lock else q).mappings().first()
    if row is None:
        raise NotFound("coupon_template_not_found")
    return dict(row)


def _version(conn: Connection, template_id: int, version: int) -> dict[str, Any]:
    v = coupon_template_versions.c
    return dict(conn.execute(select(coupon_template_versions).where(
        v.template_id == template_id, v.version == version)).mappings().one())


def template_out(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    version = _version(conn, int(row["id"]), int(row["version"]))
    program = conn.execute(select(loyalty_programs.c.code).where(
        loyalty_programs.c.id == row["program_id"])).scalar()
    left_count = None if row["total_limit"] is None else int(row["total_limit"]) - int(
        row["issued_count"])
    left_value = None if row["budget_value"] is None else row["budget_value"] - row[
        "issued_value"]
    return {"id": int(row["id"]), "program": program, "code": row["code"], "name": row["name"],
            "kind": row["kind"], "status": row["status"], "version": int(row["version"]),
            "terms": terms_out(Terms.from_json(version["terms"])),
            "face_value": version["face_value"], "total_limit": row["total_limit"],
            "budget_value": row["budget_value"], "per_member_limit": row["per_member_limit"],
            "issued_count": int(row["issued_count"]), "issued_value": row["issued_value"],
            "left_count": left_count, "left_value": left_value,
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def create_template(*, uow: UnitOfWork, actor: Actor, data: TemplateIn,
                    now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "coupons.manage")
    now = now or utcnow()
    conn = uow.c
    program = _program(conn, data.program)
    terms = data.terms.terms()
    _check_references(conn, terms)
    face = model.face_value(terms)
    _check_budget(face, data.budget_value)
    t = coupon_templates.c
    if conn.execute(select(t.id).where(t.program_id == program["id"], t.code == data.code)
                    ).first():
        raise Conflict("coupon_template_exists", params={"code": data.code})
    template_id = int(conn.execute(insert(coupon_templates).values(
        program_id=program["id"], code=data.code, name=data.name, kind=terms.kind,
        status="active", version=1, total_limit=data.total_limit,
        budget_value=data.budget_value, per_member_limit=data.per_member_limit,
        created_at=now, updated_at=now).returning(t.id)).scalar_one())
    conn.execute(insert(coupon_template_versions).values(
        template_id=template_id, version=1, terms=terms.as_json(), face_value=_yuan(face),
        note="first version", created_at=now, created_by=actor.name))
    audit.record(conn, actor, "coupons.template_created", entity="coupon_template",
                 entity_id=template_id, details={"code": data.code, "program": data.program,
                                                 "kind": terms.kind})
    out = template_out(conn, _template(conn, template_id))
    uow.commit()
    return out


def update_template(*, uow: UnitOfWork, actor: Actor, template_id: int,
                    changes: TemplateUpdate, now: dt.datetime | None = None) -> dict[str, Any]:
    """Limits, name and status change in place. New terms are a new version: coupons issued
    from now on follow it, coupons already issued keep the terms of their version."""
    need(actor, "coupons.manage")
    now = now or utcnow()
    conn = uow.c

    def work() -> dict[str, Any]:
        row = _template(conn, template_id, lock=True)
        diff = changes.model_dump(exclude_unset=True, exclude={"terms", "note"})
        values: dict[str, Any] = dict(diff)
        details: dict[str, Any] = {"changes": {k: str(v) if isinstance(v, Decimal) else v
                                               for k, v in diff.items()}}
        current = _version(conn, template_id, int(row["version"]))
        face = None if current["face_value"] is None else model.to_fen(current["face_value"])
        if changes.terms is not None:
            terms = changes.terms.terms()
            if terms.kind != row["kind"]:
                raise invalid("terms.kind", "coupon_kind_unchangeable")
            _check_references(conn, terms)
            face = model.face_value(terms)
            version = int(row["version"]) + 1
            conn.execute(insert(coupon_template_versions).values(
                template_id=template_id, version=version, terms=terms.as_json(),
                face_value=_yuan(face), note=changes.note, created_at=now,
                created_by=actor.name))
            values["version"] = version
            details["version"] = version
        budget = values.get("budget_value", row["budget_value"])
        _check_budget(face, budget)
        if "total_limit" in values and values["total_limit"] is not None and \
                values["total_limit"] < int(row["issued_count"]):
            raise invalid("total_limit", "coupon_limit_below_issued",
                          issued=int(row["issued_count"]))
        if budget is not None and budget < row["issued_value"]:
            raise invalid("budget_value", "coupon_limit_below_issued",
                          issued=str(row["issued_value"]))
        if values:
            conn.execute(update(coupon_templates).where(coupon_templates.c.id == template_id)
                         .values(**values, updated_at=now))
            audit.record(conn, actor, "coupons.template_updated", entity="coupon_template",
                         entity_id=template_id, details=details)
        out = template_out(conn, _template(conn, template_id))
        uow.commit()
        return out

    return retrying(uow, work)


def list_templates(conn: Connection, *, actor: Actor, program: str | None = None
                   ) -> list[dict[str, Any]]:
    need(actor, "coupons.read")
    q = select(coupon_templates).order_by(coupon_templates.c.program_id, coupon_templates.c.code)
    if program is not None:
        q = q.where(coupon_templates.c.program_id == _program(conn, program)["id"])
    return [template_out(conn, dict(r)) for r in conn.execute(q).mappings()]


def get_template(conn: Connection, *, actor: Actor, template_id: int) -> dict[str, Any]:
    need(actor, "coupons.read")
    out = template_out(conn, _template(conn, template_id))
    v = coupon_template_versions.c
    out["versions"] = [{"version": int(r["version"]), "terms": terms_out(Terms.from_json(
        r["terms"])), "face_value": r["face_value"], "note": r["note"],
        "created_at": r["created_at"], "created_by": r["created_by"]}
        for r in conn.execute(select(coupon_template_versions).where(
            v.template_id == template_id).order_by(v.version)).mappings()]
    return out


# --- issuing --------------------------------------------------------------------------------------

def _coupon_out(row: Any) -> dict[str, Any]:
    return {"id": int(row["id"]), "code": row["code"], "display_code": model.format_code(
        row["code"]), "member_id": int(row["member_id"]), "template_id": int(row["template_id"]),
        "status": row["status"], "face_value": row["face_value"],
        "valid_from": row["valid_from"], "valid_until": row["valid_until"],
        "issued_at": row["issued_at"]}


def _issue_out(conn: Connection, issue: dict[str, Any], *, replay: bool) -> dict[str, Any]:
    rows = conn.execute(select(coupons).where(coupons.c.issue_id == issue["id"])
                        .order_by(coupons.c.id)).mappings()
    return {"id": int(issue["id"]), "template_id": int(issue["template_id"]),
            "issued": int(issue["issued"]), "skipped": issue["skipped"],
            "coupons": [_coupon_out(r) for r in rows], "replayed": replay}


def issue_coupons(conn: Connection, *, actor: Actor, template_id: int, member_ids: list[int],
                  quantity: int, idempotency_key: str, store_id: int | None,
                  now: dt.datetime) -> dict[str, Any]:
    """Issue ``quantity`` coupons of the template's current version to each member, inside the
    caller's transaction. The same key with the same request returns the first issue; with
    another a 409. Members already at the per-member limit get what is left of it (reported in
    ``skipped``); a request the budget cannot cover entirely issues nothing (409)."""
    template = _template(conn, template_id, lock=True)
    program_id = int(template["program_id"])
    digest = request_hash({"template": template_id, "members": member_ids,
                           "quantity": quantity, "store": store_id})
    i = coupon_issues.c
    prior = conn.execute(select(coupon_issues).where(
        i.program_id == program_id, i.idempotency_key == idempotency_key)).mappings().first()
    if prior is not None:
        if prior["request_hash"] != digest:
            raise Conflict("idempotency_key_reused")
        return _issue_out(conn, dict(prior), replay=True)
    program = _program_by_id(conn, program_id)
    if program["status"] != "active":
        raise Conflict("program_closed", params={"code": program["code"]})
    if template["status"] != "active":
        raise Conflict("coupon_template_not_active", params={"status": template["status"]})
    version = _version(conn, template_id, int(template["version"]))
    terms = Terms.from_json(version["terms"])
    if terms.valid_to is not None and terms.valid_to <= now:
        raise Conflict("coupon_template_expired")
    valid_from, valid_until = model.validity(terms, now)

    m = loyalty_members.c
    wanted = sorted(set(member_ids))
    found = {int(r.id): r for r in conn.execute(select(m.id, m.program_id, m.status).where(
        m.id.in_(wanted)))}
    errors = [FieldError(f"member_ids.{n}", "member_not_in_program", {"value": mid})
              for n, mid in enumerate(member_ids)
              if mid not in found or int(found[mid].program_id) != program_id]
    if errors:
        raise ValidationFailed("validation_failed", fields=errors[:50])
    c = coupons.c
    have = dict(conn.execute(select(c.member_id, func.max(c.member_seq)).where(
        c.template_id == template_id, c.member_id.in_(wanted)).group_by(c.member_id)).all())
    limit = template["per_member_limit"]
    plan: list[tuple[int, int]] = []  # (member, next slot)
    skipped: list[dict[str, Any]] = []
    for mid in wanted:
        if found[mid].status != "active":
            skipped.append({"member_id": mid, "reason": "member_closed", "issued": 0})
            continue
        start = int(have.get(mid) or 0)
        n = quantity if limit is None else max(0, min(quantity, int(limit) - start))
        if n < quantity:
            skipped.append({"member_id": mid, "reason": "coupon_member_limit_reached",
                            "issued": n})
        plan.extend((mid, start + k + 1) for k in range(n))
    count = len(plan)
    face = None if version["face_value"] is None else model.to_fen(version["face_value"])
    if template["total_limit"] is not None:
        left = int(template["total_limit"]) - int(template["issued_count"])
        if count > left:
            raise Conflict("coupon_budget_exhausted", params={"wanted": count, "left": left})
    if template["budget_value"] is not None:
        assert face is not None  # a budget in value needs a face value (checked on save)
        left_fen = model.to_fen(template["budget_value"] - template["issued_value"])
        if face * count > left_fen:
            raise Conflict("coupon_budget_exhausted",
                           params={"wanted": count, "left": left_fen // face if face else 0})
    issue_id = int(conn.execute(insert(coupon_issues).values(
        program_id=program_id, template_id=template_id, idempotency_key=idempotency_key,
        request_hash=digest, store_id=store_id, issued=count, skipped=skipped,
        actor=actor.name, created_at=now).returning(i.id)).scalar_one())
    if plan:
        conn.execute(insert(coupons), [{
            "program_id": program_id, "template_id": template_id, "version_id": version["id"],
            "member_id": mid, "issue_id": issue_id, "code": model.new_coupon_code(),
            "status": "available", "generation": 0, "face_value": version["face_value"],
            "valid_from": valid_from, "valid_until": valid_until, "issued_at": now,
            "issued_store_id": store_id, "member_seq": seq, "member_limit": limit,
            "updated_at": now} for mid, seq in plan])
        t = coupon_templates.c
        conn.execute(update(coupon_templates).where(t.id == template_id).values(
            issued_count=t.issued_count + count,
            issued_value=t.issued_value + model.fen_to_yuan((face or 0) * count),
            updated_at=now))
    audit.record(conn, actor, "coupons.issued", entity="coupon_template", entity_id=template_id,
                 details={"issue_id": issue_id, "key": idempotency_key, "issued": count,
                          "members": len(wanted), "skipped": len(skipped)})
    return _issue_out(conn, {"id": issue_id, "template_id": template_id, "issued": count,
                             "skipped": skipped}, replay=False)


def issue(*, uow: UnitOfWork, actor: Actor, template_id: int, body: IssueIn,
          now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "coupons.issue")

    def work() -> dict[str, Any]:
        conn = uow.c
        store_id = _store_id(conn, actor, body.store)
        out = issue_coupons(conn, actor=actor, template_id=template_id,
                            member_ids=body.member_ids, quantity=body.quantity,
                            idempotency_key=body.idempotency_key, store_id=store_id,
                            now=now or utcnow())
        uow.commit()
        return out

    return retrying(uow, work)


# --- loading coupons for use ----------------------------------------------------------------------

def _member(conn: Connection, member_id: int) -> dict[str, Any]:
    row = conn.execute(select(loyalty_members).where(loyalty_members.c.id == member_id)
                       ).mappings().first()
    if row is None:
        raise NotFound("member_not_found")
    return dict(row)


def _coupon_rows(conn: Connection, *, member_id: int, codes: list[str], lock: bool
                 ) -> dict[str, dict[str, Any]]:
    """The member's coupons with these codes (others' coupons are as if absent), with their
    version's terms; locked in id order when asked."""
    q = (select(coupons, coupon_template_versions.c.terms)
         .join(coupon_template_versions, coupon_template_versions.c.id == coupons.c.version_id)
         .where(coupons.c.code.in_(codes), coupons.c.member_id == member_id)
         .order_by(coupons.c.id))
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update(of=coupons)
    return {r["code"]: dict(r) for r in conn.execute(q).mappings()}


def _open_holds(conn: Connection, coupon_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The held use of each coupon, with its operation's expiry."""
    ids = list(coupon_ids)
    if not ids:
        return {}
    u, o = coupon_uses.c, coupon_operations.c
    rows = conn.execute(select(u.coupon_id, u.operation_id, o.hold_expires_at)
                        .join(coupon_operations, o.id == u.operation_id)
                        .where(u.coupon_id.in_(ids), u.status == "held"))
    return {int(r.coupon_id): {"operation_id": int(r.operation_id),
                               "hold_expires_at": r.hold_expires_at} for r in rows}


def _as_coupon(row: dict[str, Any], status: str | None = None) -> Coupon:
    return Coupon(id=int(row["id"]), code=row["code"], template_id=int(row["template_id"]),
                  member_id=int(row["member_id"]), status=status or row["status"],
                  valid_from=row["valid_from"], valid_until=row["valid_until"],
                  terms=Terms.from_json(row["terms"]))


def _end_operation(conn: Connection, op_id: int, status: str, now: dt.datetime) -> list[int]:
    """Finish a held operation (released or expired): its coupons are available again, each in
    a new generation. Returns the coupon ids. The caller holds the coupon locks."""
    u = coupon_uses.c
    ids = [int(x) for x in conn.execute(select(u.coupon_id).where(
        u.operation_id == op_id, u.status == "held")).scalars()]
    conn.execute(update(coupon_operations).where(coupon_operations.c.id == op_id,
                                                 coupon_operations.c.status == "held")
                 .values(status=status, finished_at=now))
    conn.execute(update(coupon_uses).where(u.operation_id == op_id, u.status == "held")
                 .values(status=status, finished_at=now))
    if ids:
        c = coupons.c
        conn.execute(update(coupons).where(c.id.in_(ids), c.status == "held").values(
            status="available", generation=c.generation + 1, updated_at=now))
    return ids


def _load_for_use(conn: Connection, *, member_id: int, codes: list[str], now: dt.datetime,
                  write: bool, actor: Actor | None = None
                  ) -> tuple[list[Coupon], list[Refusal]]:
    """Coupons in the order given, and refusals for codes that are not the member's. A coupon
    held by an expired hold is available: on the write path the hold is ended first (and the
    coupon rows are locked), on the read path it is only seen so."""
    normalized = [model.normalize_code(c) for c in codes]
    rows = _coupon_rows(conn, member_id=member_id, codes=normalized, lock=write)
    held = _open_holds(conn, [int(r["id"]) for r in rows.values() if r["status"] == "held"])
    expired_ops = {h["operation_id"] for h in held.values() if h["hold_expires_at"] <= now}
    if write:
        for op_id in sorted(expired_ops):
            _lock_operation(conn, op_id)
            _end_operation(conn, op_id, "expired", now)
            if actor is not None:
                audit.record(conn, actor, "coupons.hold_expired", entity="loyalty_member",
                             entity_id=member_id, details={"operation_id": op_id})
        if expired_ops:
            rows = _coupon_rows(conn, member_id=member_id, codes=normalized, lock=False)
    found: list[Coupon] = []
    refused: list[Refusal] = []
    for raw, code in zip(codes, normalized, strict=True):
        row = rows.get(code)
        if row is None:
            refused.append(Refusal(raw, "coupon_not_found"))
            continue
        status = row["status"]
        if status == "held" and held.get(int(row["id"]), {}).get("operation_id") in expired_ops:
            status = "available"
        found.append(_as_coupon(row, status))
    return found, refused


def _lock_operation(conn: Connection, op_id: int) -> dict[str, Any]:
    q = select(coupon_operations).where(coupon_operations.c.id == op_id)
    return dict(conn.execute(_for_update(conn, q)).mappings().one())


# --- evaluation -----------------------------------------------------------------------------------

def _check_basket(conn: Connection, basket: Basket) -> None:
    ref = Reference(conn)
    if basket.store is not None and ref.store(basket.store) is None:
        raise invalid("basket.store", "unknown_store", value=basket.store)
    if ref.channel(basket.channel) is None:
        raise invalid("basket.channel", "unknown_channel", value=basket.channel)


def combination_out(combo: Combination, refused_first: list[Refusal] | None = None
                    ) -> dict[str, Any]:
    refused = (refused_first or []) + combo.refused
    return {
        "subtotal": _yuan(combo.subtotal), "shipping_fee": _yuan(combo.shipping_fee),
        "tier_discount_percent": combo.tier_discount_percent,
        "tier_applied": combo.tier_applied, "tier_discount": _yuan(combo.tier_discount),
        "tier_lines": {str(k): _yuan(v) for k, v in combo.tier_lines.items() if v}
        if combo.tier_applied else {},
        "accepted": [{"code": a.coupon.code, "coupon_id": a.coupon.id,
                      "template_id": a.coupon.template_id, "kind": a.coupon.terms.kind,
                      "discount": _yuan(a.discount), "shipping": _yuan(a.shipping),
                      "lines": {str(k): _yuan(v) for k, v in a.lines.items()}}
                     for a in combo.accepted],
        "refused": [{"code": r.code, "reason": r.reason, "params": r.params} for r in refused],
        "coupon_discount": _yuan(combo.coupon_discount),
        "total_discount": _yuan(combo.total_discount), "to_pay": _yuan(combo.to_pay),
        "points_allowed": combo.points_allowed}


def evaluate(conn: Connection, *, member_id: int, basket: Basket, codes: list[str],
             tier_discount_percent: Decimal = Decimal(0), with_points: bool = False,
             now: dt.datetime | None = None) -> tuple[Combination, list[Refusal]]:
    """What the coupons would do to the basket: the accepted combination and the reason each
    other coupon is refused. Writes nothing (for the checkout's quote)."""
    _check_basket(conn, basket)
    found, unknown = _load_for_use(conn, member_id=member_id, codes=codes,
                                   now=now or utcnow(), write=False)
    combo = model.combine(basket, found, tier_discount_percent=tier_discount_percent,
                          with_points=with_points)
    return combo, unknown


def evaluate_for(conn: Connection, *, actor: Actor, member_id: int, basket: Basket,
                 codes: list[str], tier_discount_percent: Decimal, with_points: bool,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "coupons.redeem")
    _member(conn, member_id)
    combo, unknown = evaluate(conn, member_id=member_id, basket=basket, codes=codes,
                              tier_discount_percent=tier_discount_percent,
                              with_points=with_points, now=now)
    return combination_out(combo, unknown)


# --- redemption and holds -------------------------------------------------------------------------

def _uses_out(conn: Connection, op_id: int) -> list[dict[str, Any]]:
    u = coupon_uses.c
    return [{"coupon_id": int(r["coupon_id"]), "code": r["code"], "discount": r["discount"],
             "shipping": r["shipping"], "lines": r["lines"], "status": r["status"]}
            for r in conn.execute(select(coupon_uses, coupons.c.code)
                                  .join(coupons, coupons.c.id == u.coupon_id)
                                  .where(u.operation_id == op_id).order_by(u.id)).mappings()]


def operation_out(conn: Connection, op: dict[str, Any], *, replay: bool = False
                  ) -> dict[str, Any]:
    return {"id": int(op["id"]), "kind": op["kind"], "status": op["status"],
            "member_id": int(op["member_id"]), "discount": op["discount"],
            "hold_expires_at": op["hold_expires_at"], "order_id": op["order_id"],
            "created_at": op["created_at"], "finished_at": op["finished_at"],
            "coupons": _uses_out(conn, int(op["id"])), "replayed": replay}


def _order_ref(conn: Connection, ref: dict[str, Any] | None) -> dict[str, Any]:
    """The till's reference to the order, and the order's id when it is already recorded."""
    if not ref:
        return {}
    from patron.orders.tables import orders

    lookup = Reference(conn)
    channel = lookup.channel(ref["channel"])
    if channel is None:
        raise invalid("order.channel", "unknown_channel", value=ref["channel"])
    store = lookup.store(ref.get("store"))
    if ref.get("store") and store is None:
        raise invalid("order.store", "unknown_store", value=ref["store"])
    scope = int(store.id) if (channel.requires_store and store) else 0
    order_id = conn.execute(select(orders.c.id).where(
        orders.c.channel_id == channel.id, orders.c.scope_store_id == scope,
        orders.c.external_id == ref["external_id"])).scalar()
    return {"ref_channel_id": int(channel.id), "ref_scope_store_id": scope,
            "ref_external_id": ref["external_id"],
            "order_id": None if order_id is None else int(order_id)}


def use_coupons(conn: Connection, *, actor: Actor, kind: str, member_id: int, basket: Basket,
                codes: list[str], idempotency_key: str, tier_discount_percent: Decimal,
                with_points: bool, store_id: int | None, order: dict[str, Any] | None = None,
                order_id: int | None = None, hold_minutes: int | None = None,
                now: dt.datetime, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """Redeem (``kind="redeem"``) or hold (``kind="hold"``) the coupons on the basket, inside the
    caller's transaction, all or none: a refused coupon refuses the whole request (409 naming
    each code's reason). The same key with the same request returns the first result (even when
    the coupons are used by then); with another request a 409."""
    member = _member(conn, member_id)
    program_id = int(member["program_id"])
    payload = dict(request or {"member": member_id, "basket": repr(basket),
                               "tier": str(tier_discount_percent), "points": with_points,
                               "order": order, "order_id": order_id, "minutes": hold_minutes})
    # A code typed in lower case or with dashes is the same request.
    payload["codes"] = [model.normalize_code(c) for c in codes]
    digest = request_hash({"kind": kind, **payload})
    _check_basket(conn, basket)
    if basket.purchased_at > now + CLOCK_GRACE:
        raise invalid("basket.purchased_at", "coupon_purchase_in_future")
    if basket.purchased_at < now - OFFLINE_WINDOW:
        raise invalid("basket.purchased_at", "coupon_purchase_too_old",
                      days=OFFLINE_WINDOW.days)
    # The coupons are locked before the key is looked up: a concurrent request with the same
    # key that got them first has committed by then, and this one replays its result.
    found, unknown = _load_for_use(conn, member_id=member_id, codes=codes, now=now, write=True,
                                   actor=actor)
    o = coupon_operations.c
    prior = conn.execute(select(coupon_operations).where(
        o.program_id == program_id, o.idempotency_key == idempotency_key)).mappings().first()
    if prior is not None:
        if prior["request_hash"] != digest:
            raise Conflict("idempotency_key_reused")
        return operation_out(conn, dict(prior), replay=True)
    if member["status"] != "active":
        raise Conflict("member_closed")
    combo = model.combine(basket, found, tier_discount_percent=tier_discount_percent,
                          with_points=with_points)
    refused = unknown + combo.refused
    if refused:
        raise Conflict("coupon_refused", fields=[
            FieldError(f"codes.{_position(codes, r.code)}", r.reason, r.params)
            for r in refused])
    ref = _order_ref(conn, order)
    if order_id is not None:
        ref["order_id"] = order_id
    minutes = hold_minutes
    if kind == "hold" and minutes is None:
        minutes = int(_program_by_id(conn, program_id)["hold_minutes"] or DEFAULT_HOLD_MINUTES)
    op_id = int(conn.execute(insert(coupon_operations).values(
        program_id=program_id, member_id=member_id, kind=kind, idempotency_key=idempotency_key,
        request_hash=digest, status="held" if kind == "hold" else "committed",
        hold_expires_at=now + dt.timedelta(minutes=minutes) if kind == "hold" else None,
        store_id=store_id, channel=basket.channel,
        discount=model.fen_to_yuan(combo.coupon_discount), basket=_basket_json(basket),
        actor=actor.name, created_at=now, finished_at=None if kind == "hold" else now,
        **ref).returning(o.id)).scalar_one())
    generation = dict(conn.execute(select(coupons.c.id, coupons.c.generation).where(
        coupons.c.id.in_([a.coupon.id for a in combo.accepted]))).all())
    use_status = "held" if kind == "hold" else "committed"
    conn.execute(insert(coupon_uses), [{
        "operation_id": op_id, "coupon_id": a.coupon.id, "generation": generation[a.coupon.id],
        "discount": model.fen_to_yuan(a.discount), "shipping": model.fen_to_yuan(a.shipping),
        "lines": {str(k): v for k, v in a.lines.items()}, "status": use_status,
        "finished_at": None if kind == "hold" else now} for a in combo.accepted])
    c = coupons.c
    for a in combo.accepted:
        # Compare and set: a coupon changes state only from the state the rules saw.
        changed = conn.execute(update(coupons).where(
            c.id == a.coupon.id, c.status == "available",
            c.generation == generation[a.coupon.id]).values(
            status="held" if kind == "hold" else "redeemed", updated_at=now)).rowcount
        if changed != 1:
            raise Conflict("coupon_refused", fields=[FieldError(
                f"codes.{_position(codes, a.coupon.code)}", "coupon_used")])
    audit.record(conn, actor, f"coupons.{kind}", entity="loyalty_member", entity_id=member_id,
                 details={"operation_id": op_id, "key": idempotency_key,
                          "codes": [a.coupon.code for a in combo.accepted],
                          "discount": str(model.fen_to_yuan(combo.coupon_discount)),
                          "order_id": ref.get("order_id")})
    op = dict(conn.execute(select(coupon_operations).where(o.id == op_id)).mappings().one())
    out = operation_out(conn, op)
    out["combination"] = combination_out(combo)
    return out


def _position(codes: list[str], code: str) -> int:
    for i, c in enumerate(codes):
        if c == code or model.normalize_code(c) == code:
            return i
    return 0


def _basket_json(basket: Basket) -> dict[str, Any]:
    return {"store": basket.store, "channel": basket.channel,
            "purchased_at": basket.purchased_at.isoformat(), "shipping_fee": basket.shipping_fee,
            "lines": [[ln.line_no, ln.sku, ln.category, str(ln.quantity), ln.unit_price]
                      for ln in basket.lines]}


def redeem_coupons(conn: Connection, **kw: Any) -> dict[str, Any]:
    """Hold and commit at once, inside the caller's transaction (see :func:`use_coupons`)."""
    return use_coupons(conn, kind="redeem", **kw)


def hold_coupons(conn: Connection, **kw: Any) -> dict[str, Any]:
    """Reserve the coupons for a till, inside the caller's transaction; commit or release the
    hold, or it expires by itself (see :func:`use_coupons`)."""
    return use_coupons(conn, kind="hold", **kw)


def _use(*, uow: UnitOfWork, actor: Actor, kind: str, body: Any,
         now: dt.datetime | None) -> dict[str, Any]:
    need(actor, "coupons.redeem")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        basket = body.basket.basket(at)
        store_id = _store_id(conn, actor, basket.store, field="basket.store")
        out = use_coupons(
            conn, actor=actor, kind=kind, member_id=body.member_id, basket=basket,
            codes=body.codes, idempotency_key=body.idempotency_key,
            tier_discount_percent=body.tier_discount_percent, with_points=body.with_points,
            store_id=store_id, order=None if body.order is None else body.order.model_dump(),
            hold_minutes=getattr(body, "minutes", None), now=at,
            request=body.model_dump(mode="json", exclude={"idempotency_key"}))
        uow.commit()
        return out

    return retrying(uow, work)


def redeem(*, uow: UnitOfWork, actor: Actor, body: Any, now: dt.datetime | None = None
           ) -> dict[str, Any]:
    return _use(uow=uow, actor=actor, kind="redeem", body=body, now=now)


def hold(*, uow: UnitOfWork, actor: Actor, body: Any, now: dt.datetime | None = None
         ) -> dict[str, Any]:
    return _use(uow=uow, actor=actor, kind="hold", body=body, now=now)


def _lock_hold(conn: Connection, actor: Actor, op_id: int) -> dict[str, Any]:
    """The hold's coupons locked (id order), then the hold itself."""
    o = coupon_operations.c
    first = conn.execute(select(o.kind, o.store_id).where(o.id == op_id)).first()
    if first is None or first.kind != "hold" or (
            actor.store_ids is not None and first.store_id not in actor.store_ids):
        raise NotFound("coupon_hold_not_found")
    ids = sorted(int(x) for x in conn.execute(select(coupon_uses.c.coupon_id).where(
        coupon_uses.c.operation_id == op_id)).scalars())
    if ids:
        conn.execute(_for_update(conn, select(coupons.c.id).where(coupons.c.id.in_(ids))
                                 .order_by(coupons.c.id))).all()
    return _lock_operation(conn, op_id)


def commit_hold_in(conn: Connection, *, actor: Actor, operation_id: int, now: dt.datetime,
                   order_id: int | None = None) -> dict[str, Any]:
    """Turn a hold into a redemption inside the caller's transaction. Committing again returns
    the same result; a released hold is a 409; an expired one raises :class:`HoldExpired` after
    writing the expiry (the caller commits that, then refuses)."""
    op = _lock_hold(conn, actor, operation_id)
    if op["status"] == "committed":
        return operation_out(conn, op, replay=True)
    if op["status"] != "held":
        raise Conflict("coupon_hold_not_open", params={"status": op["status"]})
    if op["hold_expires_at"] <= now:
        _end_operation(conn, operation_id, "expired", now)
        audit.record(conn, actor, "coupons.hold_expired", entity="loyalty_member",
                     entity_id=op["member_id"], details={"operation_id": operation_id})
        raise HoldExpired
    o, u, c = coupon_operations.c, coupon_uses.c, coupons.c
    values: dict[str, Any] = {"status": "committed", "finished_at": now}
    if order_id is not None:
        values["order_id"] = order_id
    conn.execute(update(coupon_operations).where(o.id == operation_id).values(**values))
    ids = [int(x) for x in conn.execute(select(u.coupon_id).where(
        u.operation_id == operation_id, u.status == "held")).scalars()]
    conn.execute(update(coupon_uses).where(u.operation_id == operation_id, u.status == "held")
                 .values(status="committed", finished_at=now))
    conn.execute(update(coupons).where(c.id.in_(ids), c.status == "held")
                 .values(status="redeemed", updated_at=now))
    audit.record(conn, actor, "coupons.hold_committed", entity="loyalty_member",
                 entity_id=op["member_id"], details={"operation_id": operation_id})
    return operation_out(conn, _lock_operation(conn, operation_id))


def release_hold_in(conn: Connection, *, actor: Actor, operation_id: int,
                    now: dt.datetime) -> dict[str, Any]:
    """Give the held coupons back inside the caller's transaction. Releasing again, or a hold
    that expired, returns the hold as it is; a committed hold is a 409."""
    op = _lock_hold(conn, actor, operation_id)
    if op["status"] in ("released", "expired"):
        return operation_out(conn, op, replay=True)
    if op["status"] != "held":
        raise Conflict("coupon_hold_not_open", params={"status": op["status"]})
    status = "expired" if op["hold_expires_at"] <= now else "released"
    _end_operation(conn, operation_id, status, now)
    audit.record(conn, actor, f"coupons.hold_{status}", entity="loyalty_member",
                 entity_id=op["member_id"], details={"operation_id": operation_id})
    return operation_out(conn, _lock_operation(conn, operation_id))


def commit_hold(*, uow: UnitOfWork, actor: Actor, operation_id: int,
                now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "coupons.redeem")

    def work() -> dict[str, Any]:
        try:
            out = commit_hold_in(uow.c, actor=actor, operation_id=operation_id,
                                 now=now or utcnow())
        except HoldExpired:
            uow.commit()  # the expiry is a complete write of its own; then refuse
            raise Conflict("coupon_hold_expired") from None
        uow.commit()
        return out

    return retrying(uow, work)


def release_hold(*, uow: UnitOfWork, actor: Actor, operation_id: int,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "coupons.redeem")

    def work() -> dict[str, Any]:
        out = release_hold_in(uow.c, actor=actor, operation_id=operation_id,
                              now=now or utcnow())
        uow.commit()
        return out

    return retrying(uow, work)


def expire_holds(*, uow: UnitOfWork, actor: Actor, now: dt.datetime | None = None,
                 batch: int = 500) -> dict[str, int]:
    """Release every hold past its time (the daily or minutely job; any use of a held coupon
    also ends an expired hold first). One transaction per batch."""
    at = now or utcnow()
    done = 0
    o = coupon_operations.c
    while True:
        ids = [int(x) for x in uow.c.execute(select(o.id).where(
            o.status == "held", o.hold_expires_at <= at).order_by(o.id).limit(batch)).scalars()]
        if not ids:
            uow.rollback()
            break

        def work(ids: list[int] = ids) -> int:
            n = 0
            for op_id in ids:
                op = _lock_hold(uow.c, actor, op_id)
                if op["status"] == "held" and op["hold_expires_at"] <= at:
                    _end_operation(uow.c, op_id, "expired", at)
                    n += 1
            if n:
                audit.record(uow.c, actor, "coupons.holds_expired", details={"holds": n})
            uow.commit()
            return n

        done += retrying(uow, work)
    return {"expired_holds": done}


def revoke(*, uow: UnitOfWork, actor: Actor, coupon_id: int, reason: str,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Withdraw an unused coupon (issued by mistake, a fraud case), with a reason. A coupon held
    by a till or used is a 409; revoking again returns the coupon as it is. Budgets count
    issuing: a revoked coupon does not give budget back."""
    need(actor, "coupons.manage")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        c = coupons.c
        row = conn.execute(_for_update(conn, select(coupons).where(c.id == coupon_id))
                           ).mappings().first()
        if row is None:
            raise NotFound("coupon_not_found")
        if row["status"] == "held":
            held = _open_holds(conn, [coupon_id]).get(coupon_id)
            if held is not None and held["hold_expires_at"] <= at:
                _lock_operation(conn, held["operation_id"])
                _end_operation(conn, held["operation_id"], "expired", at)
            else:
                raise Conflict("coupon_refused", fields=[FieldError("coupon_id",
                                                                    "coupon_held")])
        elif row["status"] == "redeemed":
            raise Conflict("coupon_refused", fields=[FieldError("coupon_id", "coupon_used")])
        if row["status"] != "revoked":
            conn.execute(update(coupons).where(c.id == coupon_id).values(
                status="revoked", updated_at=at))
            audit.record(conn, actor, "coupons.revoked", entity="coupon", entity_id=coupon_id,
                         details={"code": row["code"], "member_id": int(row["member_id"]),
                                  "reason": reason})
        out = _coupon_out(conn.execute(select(coupons).where(c.id == coupon_id))
                          .mappings().one())
        uow.commit()
        return out

    return retrying(uow, work)


# --- refunds --------------------------------------------------------------------------------------

def restore_for_return(conn: Connection, *, order_id: int, return_id: int, full: bool,
                       actor: Actor, now: dt.datetime) -> list[int]:
    """When the order a coupon paid for is refunded in full (at once, or by the return that
    completes a series of partial ones), the coupon comes back to the member if its template
    version says so and it is still valid. A partial return restores nothing (docs/coupons.md,
    "Refunds"). Runs inside the return's transaction; returns the restored coupon ids."""
    if not full:
        return []
    from patron.orders.tables import orders

    order = conn.execute(select(orders.c.channel_id, orders.c.scope_store_id,
                                orders.c.external_id).where(orders.c.id == order_id)).first()
    o = coupon_operations.c
    match = o.order_id == order_id
    if order is not None:
        match = or_(match, and_(o.ref_channel_id == order.channel_id,
                                o.ref_scope_store_id == order.scope_store_id,
                                o.ref_external_id == order.external_id))
    ops = [int(x) for x in conn.execute(select(o.id).where(match, o.status == "committed")
                                        .order_by(o.id)).scalars()]
    if not ops:
        return []
    u, c, v = coupon_uses.c, coupons.c, coupon_template_versions.c
    uses = conn.execute(select(u.id, u.coupon_id, u.operation_id).where(
        u.operation_id.in_(ops), u.status == "committed").order_by(u.coupon_id)).all()
    if not uses:
        return []
    ids = [int(r.coupon_id) for r in uses]
    rows = {int(r["id"]): r for r in conn.execute(_for_update(conn, select(
        c.id, c.status, c.valid_until, c.member_id, v.terms).join(
        coupon_template_versions, v.id == c.version_id).where(c.id.in_(ids))
        .order_by(c.id))).mappings()}
    restored = []
    for use in uses:
        row = rows[int(use.coupon_id)]
        terms = Terms.from_json(row["terms"])
        if row["status"] != "redeemed" or not terms.restore_on_refund or \
                row["valid_until"] <= now:
            continue
        conn.execute(update(coupon_uses).where(u.id == use.id).values(
            status="restored", restored_by_return_id=return_id, finished_at=now))
        conn.execute(update(coupons).where(c.id == use.coupon_id, c.status == "redeemed")
                     .values(status="available", generation=c.generation + 1, updated_at=now))
        # The operation stays committed (its order was paid with the coupon); it now knows
        # the order's id.
        conn.execute(update(coupon_operations).where(
            o.id == use.operation_id, o.order_id.is_(None)).values(order_id=order_id))
        restored.append(int(use.coupon_id))
    if restored:
        audit.record(conn, actor, "coupons.restored", entity="order", entity_id=order_id,
                     details={"return_id": return_id, "coupons": restored})
    return restored


# --- reading --------------------------------------------------------------------------------------

def member_coupons(conn: Connection, *, actor: Actor, member_id: int, status: str | None = None,
                   now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """A member's coupons, usable ones first (soonest to expire first)."""
    need(actor, "coupons.redeem")
    _member(conn, member_id)
    at = now or utcnow()
    c = coupons.c
    q = (select(coupons, coupon_templates.c.code.label("template_code"),
                coupon_templates.c.name.label("template_name"), coupon_template_versions.c.terms)
         .join(coupon_templates, coupon_templates.c.id == c.template_id)
         .join(coupon_template_versions, coupon_template_versions.c.id == c.version_id)
         .where(c.member_id == member_id).order_by(c.valid_until, c.id))
    out = []
    for r in conn.execute(q).mappings():
        item = _coupon_out(r)
        item["usable"] = r["status"] == "available" and r["valid_from"] <= at < r["valid_until"]
        item["expired"] = r["valid_until"] <= at
        item["template"] = {"code": r["template_code"], "name": r["template_name"]}
        item["terms"] = terms_out(Terms.from_json(r["terms"]))
        if status is None or item["status"] == status:
            out.append(item)
    out.sort(key=lambda x: (not x["usable"], x["valid_until"], x["id"]))
    return out


def coupon_by_code(conn: Connection, *, actor: Actor, code: str,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "coupons.redeem")
    normalized = model.normalize_code(code)
    if not model.code_is_well_formed(normalized):
        raise invalid("code", "coupon_code_malformed")
    row = conn.execute(select(coupons.c.member_id).where(coupons.c.code == normalized)).first()
    if row is None:
        raise NotFound("coupon_not_found")
    items = [x for x in member_coupons(conn, actor=actor, member_id=int(row.member_id), now=now)
             if x["code"] == normalized]
    return items[0]


def get_operation(conn: Connection, *, actor: Actor, operation_id: int) -> dict[str, Any]:
    need(actor, "coupons.redeem")
    op = conn.execute(select(coupon_operations).where(coupon_operations.c.id == operation_id)
                      ).mappings().first()
    if op is None or (actor.store_ids is not None and op["store_id"] not in actor.store_ids):
        raise NotFound("coupon_operation_not_found")
    return operation_out(conn, dict(op))


# --- liability ------------------------------------------------------------------------------------

def _local_month(conn: Connection, column: Any, tz: str, now: dt.datetime) -> Any:
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone(tz, column), "YYYY-MM")
    # SQLite stores naive UTC; the zone's offset now (exact for zones without daylight saving,
    # such as Asia/Shanghai).
    offset = now.astimezone(ZoneInfo(tz)).utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    return func.strftime("%Y-%m", column, f"{minutes:+d} minutes")


def liability(conn: Connection, *, actor: Actor, program: str | None = None,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """Coupons issued and not used (available or held) that are still valid: count and face
    value by template, by month of expiry (program's time zone) and by store of issue. Coupons
    without a face value (uncapped percentages, ...) are counted apart. Store-scoped actors see
    the coupons issued at their stores."""
    need(actor, "coupons.read")
    at = now or utcnow()
    c, t = coupons.c, coupon_templates.c
    where = [c.status.in_(("available", "held")), c.valid_until > at]
    tz = "Asia/Shanghai"
    if program is not None:
        prog = _program(conn, program)
        where.append(c.program_id == prog["id"])
        tz = prog["timezone"]
    if actor.store_ids is not None:
        where.append(c.issued_store_id.in_(sorted(actor.store_ids)))
    fen = type_coerce(c.face_value, BigInteger)  # summed as integer fen
    counted = (func.count().label("count"),
               func.coalesce(func.sum(fen), 0).label("face_value"),
               func.sum(case((c.face_value.is_(None), 1), else_=0)).label("no_face_value"))

    def money(v: Any) -> Decimal:
        return model.fen_to_yuan(int(v or 0))

    by_template = [{"template_id": int(r.id), "code": r.code, "name": r.name,
                    "program": r.program, "count": int(r.count),
                    "face_value": money(r.face_value),
                    "without_face_value": int(r.no_face_value or 0)}
                   for r in conn.execute(
                       select(t.id, t.code, t.name, loyalty_programs.c.code.label("program"),
                              *counted).select_from(coupons)
                       .join(coupon_templates, t.id == c.template_id)
                       .join(loyalty_programs, loyalty_programs.c.id == t.program_id)
                       .where(*where).group_by(t.id, t.code, t.name, loyalty_programs.c.code)
                       .order_by(loyalty_programs.c.code, t.code))]
    month = _local_month(conn, c.valid_until, tz, at).label("month")
    by_month = [{"month": r.month, "count": int(r.count), "face_value": money(r.face_value),
                 "without_face_value": int(r.no_face_value or 0)}
                for r in conn.execute(select(month, *counted).select_from(coupons).where(*where)
                                      .group_by(month).order_by(month))]
    by_store = [{"store": r.code, "count": int(r.count), "face_value": money(r.face_value),
                 "without_face_value": int(r.no_face_value or 0)}
                for r in conn.execute(
                    select(stores.c.code, *counted).select_from(coupons)
                    .outerjoin(stores, stores.c.id == c.issued_store_id).where(*where)
                    .group_by(stores.c.code).order_by(stores.c.code))]
    return {"as_of": at, "timezone": tz,
            "total": {"count": sum(x["count"] for x in by_template),
                      "face_value": sum((x["face_value"] for x in by_template), Decimal("0.00")),
                      "without_face_value": sum(x["without_face_value"] for x in by_template)},
            "by_template": by_template, "by_month": by_month, "by_store": by_store}
