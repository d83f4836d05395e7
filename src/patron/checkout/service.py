"""POS checkout: quote a basket for a member, commit it (the order, the member discount, points
and stored value paid, points earned) in one transaction under the till's idempotency key, hold
what pays it for a till paying in steps, refund it, and sync a till's offline queue.

The checkout owns no balance. It composes the other areas' functions that work inside an open
transaction (``*_in(conn, ...)``, never committing): orders' ``record_orders_in`` (so the order
is a normal order everywhere, and earns points through the orders hooks), loyalty's
``redeem_in`` / ``hold_in`` / ``finish_hold_in`` / ``adjust_in``, orders' ``record_return_in``
(which claws back points). Coupons and stored value plug in at the marked seams when those areas
are installed. docs/checkout.md explains every rule.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from patron.checkout.model import (
    BasketLine,
    Pricing,
    PricingError,
    TierBenefits,
    in_birthday_month,
    max_redeemable,
    points_deductible,
    points_deduction_value,
    points_value,
    price,
    refund_share,
    tier_discount,
)
from patron.checkout.schemas import BasketIn, CommitIn, HoldIn, OfflineBatchIn, RefundIn
from patron.checkout.tables import checkout_commits, checkout_holds, checkout_refunds
from patron.coupons import model as coupon_model
from patron.coupons import service as coupons
from patron.customers.model import IdentifierError, mask_name, mask_phone, normalize_identity
from patron.customers.protect import identity_is
from patron.customers.tables import customer_figures, customers, identities
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, NotFound, PatronError, ValidationFailed
from patron.loyalty import persist
from patron.loyalty import service as loyalty
from patron.loyalty.earning import preview_earning, settle_refund_deduction
from patron.loyalty.model import tier_at
from patron.loyalty.schemas import AdjustIn, RedeemIn
from patron.loyalty.schemas import HoldIn as PointsHoldIn
from patron.loyalty.tables import (
    loyalty_members,
    loyalty_order_earnings,
    loyalty_programs,
    loyalty_tier_history,
    loyalty_tiers,
)
from patron.orders import hooks
from patron.orders.model import normalize_order, to_utc
from patron.orders.returns import record_return_in
from patron.orders.schemas import OrderIn, ReturnIn
from patron.orders.service import record_orders_in
from patron.orders.tables import orders
from patron.org.service import Reference, StoreRef
from patron.org.tables import channels
from patron.security import audit
from patron.security.model import Actor
from patron.selfservice.service import check_member_card
from patron.storedvalue import schemas as sv_schemas
from patron.storedvalue import service as storedvalue

need, invalid, request_hash = loyalty.need, loyalty.invalid, loyalty.request_hash
SOURCE = "checkout"  # the orders' source
# A till's clock may run a little ahead of the server's.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass
class Discounts:
    """The member discount and the coupons' discount on each line, and what the coupons did."""

    tier_lines: list[int]
    coupon_lines: list[int]
    coupons: dict[str, Any]


def _discounts(conn: Connection, actor: Actor, basket: Basket, body: BasketIn,
               now: dt.datetime) -> Discounts:
    """Without coupons, the tier's member discount on every line. With coupons, what the
    coupons area's stacking policy makes of them and the member discount (evaluated, nothing
    written): refused coupons are listed with their reasons and take nothing off."""
    n = len(basket.lines)
    percent = basket.benefits.discount_percent
    if not body.coupons:
        return Discounts(tier_discount(basket.lines, percent), [0] * n,
                         {"accepted": [], "refused": [], "tier_applied": True})
    if basket.member is None:
        raise invalid("coupons", "member_required")
    combo, unknown = coupons.evaluate(conn, member_id=int(basket.member["id"]),
                                   basket=_coupon_basket(basket), codes=list(body.coupons),
                                   tier_discount_percent=percent,
                                   with_points=bool(body.redeem_points), now=now)
    return _from_combination(basket, coupons.combination_out(combo, unknown))


def _coupon_basket(basket: Basket) -> Any:
    return coupon_model.Basket(lines=tuple(
        coupon_model.Line(ln.line_no, ln.sku, ln.category, ln.quantity, ln.unit_price)
        for ln in basket.lines),
        store=basket.store.code, channel=basket.channel, purchased_at=basket.purchased_at)


def _fen(yuan: Any) -> int:
    return int(Decimal(str(yuan)) * 100)


def _from_combination(basket: Basket, combo: dict[str, Any]) -> Discounts:
    """The coupons area's combination (its API form) as discounts on the checkout's lines."""
    tier = combo["tier_lines"] if combo["tier_applied"] else {}
    tier_lines = [_fen(tier.get(str(ln.line_no), 0)) for ln in basket.lines]
    coupon_lines = [sum(_fen(a["lines"].get(str(ln.line_no), 0)) for a in combo["accepted"])
                    for ln in basket.lines]
    info = {"tier_applied": bool(combo["tier_applied"]),
            "points_allowed": bool(combo["points_allowed"]),
            "accepted": [{"code": a["code"], "coupon_id": a["coupon_id"], "kind": a["kind"],
                          "discount_fen": _fen(a["discount"])} for a in combo["accepted"]],
            "refused": [{"code": r["code"], "reason": r["reason"], "params": r["params"]}
                        for r in combo["refused"]]}
    return Discounts(tier_lines, coupon_lines, info)


def _use_coupons(conn: Connection, *, actor: Actor, basket: Basket, body: BasketIn,
                 kind: str, key: str, store_id: int, now: dt.datetime,
                 order_id: int | None = None, minutes: int | None = None
                 ) -> tuple[Discounts, int]:
    """Redeem (or hold) the basket's coupons through the coupons area, all or none: a refused
    coupon refuses the checkout (409 ``coupon_refused`` naming each code's reason)."""
    assert basket.member is not None
    fn = coupons.redeem_coupons if kind == "redeem" else coupons.hold_coupons
    out = fn(conn, actor=actor, member_id=int(basket.member["id"]),
             basket=_coupon_basket(basket), codes=list(body.coupons), idempotency_key=key,
             tier_discount_percent=basket.benefits.discount_percent,
             with_points=bool(body.redeem_points), store_id=store_id, order_id=order_id,
             hold_minutes=minutes, now=now)
    return _from_combination(basket, out["combination"]), int(out["id"])


def _sv_body(kind: str, **values: Any) -> Any:
    return getattr(sv_schemas, kind).model_validate(values)


def _stored_value_balance(conn: Connection, actor: Actor, member: dict[str, Any] | None,
                          now: dt.datetime) -> int | None:
    """The member's stored value spendable now, in fen (None: no stored value here)."""
    if member is None or not actor.can("stored_value.lookup"):
        return None
    out = storedvalue.balance(conn, actor=actor, member_id=int(member["id"]), now=now)
    return int(Decimal(out["spendable"]) * 100)


def _member_from_qr(conn: Connection, payload: str, now: dt.datetime) -> str:
    """The member code carried by a member's QR card, whose signature and expiry the
    self-service area checks (a card is valid for minutes: a screenshot stops working)."""
    try:
        card = check_member_card(conn, payload, now=now)
    except ValidationFailed as exc:
        reason = exc.fields[0].reason if exc.fields else "qr_invalid"
        raise invalid("member.qr", reason) from exc
    return str(card["member_code"])


# --- the basket -------------------------------------------------------------------------------

@dataclass
class Basket:
    store: StoreRef
    channel: str
    purchased_at: dt.datetime  # UTC
    local_time: dt.datetime
    lines: list[BasketLine]
    program: dict[str, Any] | None
    member: dict[str, Any] | None
    tier: dict[str, Any] | None
    benefits: TierBenefits


def _store(conn: Connection, actor: Actor, code: str) -> StoreRef:
    store = Reference(conn).store(code)
    if store is None:
        raise invalid("store", "unknown_store", value=code)
    if not actor.sees_store(store.id):
        raise invalid("store", "store_out_of_scope")
    return store


def _program_for_store(conn: Connection, store: StoreRef) -> dict[str, Any] | None:
    """The program of the store's brand (a closed one too: its points stay spendable)."""
    if store.brand_id is None:
        return None
    row = conn.execute(select(loyalty_programs).where(
        loyalty_programs.c.brand_id == store.brand_id)).mappings().first()
    return dict(row) if row else None


def _find_member(conn: Connection, program: dict[str, Any], body: BasketIn,
                 now: dt.datetime) -> dict[str, Any]:
    ident = body.member
    assert ident is not None
    m = loyalty_members.c
    if ident.qr is not None:
        code: str | None = _member_from_qr(conn, ident.qr, now)
    else:
        code = ident.member_code
    if code is not None:
        q = select(loyalty_members).where(m.program_id == program["id"],
                                          m.member_code == code.strip())
    else:
        try:
            phone = normalize_identity("phone", ident.phone or "")
        except IdentifierError as exc:
            raise invalid("member.phone", exc.reason) from exc
        q = (select(loyalty_members)
             .join(identities, identities.c.customer_id == m.customer_id)
             .where(m.program_id == program["id"], identities.c.kind == "phone",
                    identities.c.namespace == "", identity_is(phone.value)))
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("member_not_found")
    if row["status"] != "active":
        raise Conflict("member_closed")
    return dict(row)


def _tier_at(conn: Connection, member: dict[str, Any], at: dt.datetime
             ) -> dict[str, Any] | None:
    """The tier the member held at ``at`` (an offline sale gets the tier of its time)."""
    h = loyalty_tier_history.c
    history = [(r.effective_at, r.to_tier_id) for r in conn.execute(
        select(h.effective_at, h.to_tier_id).where(h.member_id == member["id"])
        .order_by(h.effective_at, h.id))]
    tier_id = tier_at(history, at) if history else member["tier_id"]
    if tier_id is None:
        return None
    row = conn.execute(select(loyalty_tiers).where(loyalty_tiers.c.id == tier_id)
                       ).mappings().first()
    return dict(row) if row else None


def _basket(conn: Connection, actor: Actor, body: BasketIn, now: dt.datetime) -> Basket:
    store = _store(conn, actor, body.store)
    if conn.execute(select(channels.c.id).where(channels.c.code == body.channel)).first() is None:
        raise invalid("channel", "unknown_channel", value=body.channel)
    purchased_at = to_utc(body.purchased_at or now, store.timezone)
    if purchased_at > now + CLOCK_SKEW:
        raise invalid("purchased_at", "in_future")
    program = _program_for_store(conn, store)
    member = None
    if body.member is not None:
        if program is None:
            raise invalid("member", "no_program_at_store")
        member = _find_member(conn, program, body, now)
    tier = _tier_at(conn, member, purchased_at) if member else None
    lines = [BasketLine(i + 1, ln.sku, ln.name, ln.category, ln.quantity, ln.unit_price_fen)
             for i, ln in enumerate(body.lines)]
    if body.redeem_points and member is None:
        raise invalid("redeem_points", "member_required")
    if body.stored_value_fen and member is None:
        raise invalid("stored_value_fen", "member_required")
    return Basket(store, body.channel, purchased_at,
                  purchased_at.astimezone(ZoneInfo(store.timezone)), lines, program, member,
                  tier, TierBenefits.from_json(tier["benefits"]) if tier else TierBenefits())


def _price(basket: Basket, body: BasketIn, discounts: Discounts, *,
           tenders: list[tuple[str, int]] | None) -> Pricing:
    rate = int(basket.program["redeem_points_per_yuan"]) if basket.program else 100
    try:
        return price(basket.lines, tier_lines=discounts.tier_lines,
                     coupon_lines=discounts.coupon_lines, points=body.redeem_points,
                     points_per_yuan=rate, stored_value=body.stored_value_fen, tenders=tenders)
    except PricingError as exc:
        raise invalid(exc.field, exc.reason, **exc.params) from exc


def _yuan(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def _order_in(basket: Basket, pricing: Pricing, *, order_number: str,
              tenders: list[tuple[str, int]]) -> OrderIn:
    """The order as the orders area records it: each line's discount holds the member's and the
    coupons' discounts on it, payments the points, stored value and tenders."""
    payments = [("points", pricing.points_value)] if pricing.points_value else []
    if pricing.stored_value:
        payments.append(("stored_value", pricing.stored_value))
    payments.extend((m, a) for m, a in tenders if a)
    return OrderIn.model_validate({
        "external_id": order_number, "channel": basket.channel, "store": basket.store.code,
        "purchased_at": basket.purchased_at,
        "identifiers": {"member_code": basket.member["member_code"]} if basket.member else {},
        "lines": [{"sku": p.line.sku, "name": p.line.name, "category": p.line.category,
                   "quantity": p.line.quantity, "unit_price": _yuan(p.line.unit_price),
                   "discount": _yuan(p.tier_discount + p.coupon_discount)}
                  for p in pricing.lines],
        "payments": [{"method": m, "amount": _yuan(a)} for m, a in payments],
    })


def _recorded_preview(basket: Basket, order_in: OrderIn) -> hooks.RecordedOrder:
    """The order as the earning hook will see it once recorded (the same normalisation)."""
    o, errors = normalize_order(order_in, store_tz=basket.store.timezone)
    if o is None:
        raise ValidationFailed("validation_failed", fields=errors)
    assert basket.member is not None
    return hooks.RecordedOrder(
        order_id=0, customer_id=int(basket.member["customer_id"]), channel_code=basket.channel,
        store_id=basket.store.id, store_code=basket.store.code, purchased_at=o.purchased_at,
        local_time=o.local_time, total=o.total, discount=o.discount,
        lines=tuple(hooks.RecordedLine(None, ln.line_no, ln.sku, ln.category, ln.quantity,
                                       ln.amount) for ln in o.lines),
        payments=tuple(o.payments), source=SOURCE)


def _spendable(conn: Connection, member: dict[str, Any], now: dt.datetime) -> int:
    """Points the member can spend now (expired holds released, due lots activated, lots past
    their expiry left out), computed without writing."""
    wallets, _ = persist.catch_up(conn, {int(member["id"]): member}, now=now,
                                  keys=persist.temp_keys())
    return wallets[int(member["id"])].available


def _member_out(conn: Connection, basket: Basket) -> dict[str, Any] | None:
    m = basket.member
    if m is None:
        return None
    person = conn.execute(select(customers.c.name, customers.c.phone, customers.c.birthday)
                          .where(customers.c.id == m["customer_id"])).first()
    tier = basket.tier
    birthday = in_birthday_month(person.birthday if person else None, basket.local_time.date())
    return {"id": int(m["id"]), "member_code": m["member_code"],
            "program": basket.program["code"] if basket.program else None,
            "name": mask_name(person.name) if person else None,
            "phone": mask_phone(person.phone) if person else None,
            "birthday_month": birthday,
            "tier": None if tier is None else {"code": tier["code"], "name": tier["name"],
                                               "rank": int(tier["rank"])}}


def _benefits_out(basket: Basket, birthday_month: bool) -> dict[str, Any] | None:
    if basket.tier is None:
        return None
    b = basket.benefits
    return {"member_discount_percent": str(b.discount_percent),
            "free_items": [dict(i) for i in b.free_items],
            "birthday_gift": dict(b.birthday_gift) if b.birthday_gift else None,
            "birthday_gift_due": bool(b.birthday_gift) and birthday_month}


def _amounts(p: Pricing) -> dict[str, int]:
    return {"gross_fen": p.gross, "tier_discount_fen": p.tier_discount,
            "coupon_discount_fen": p.coupon_discount,
            "total_fen": p.total, "points_value_fen": p.points_value,
            "stored_value_fen": p.stored_value, "payable_fen": p.payable}


def _lines_out(p: Pricing) -> list[dict[str, Any]]:
    return [{"line_no": x.line.line_no, "sku": x.line.sku, "quantity": str(x.line.quantity),
             "unit_price_fen": x.line.unit_price, "amount_fen": x.line.amount,
             "tier_discount_fen": x.tier_discount, "coupon_discount_fen": x.coupon_discount,
             "net_fen": x.amount} for x in p.lines]


# --- quote ------------------------------------------------------------------------------------

def quote(conn: Connection, *, actor: Actor, body: BasketIn,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """What the basket costs this member, what may pay it and what it will earn. Writes
    nothing: a read-only transaction."""
    need(actor, "checkout.sell")
    at = now or utcnow()
    basket = _basket(conn, actor, body, at)
    discounts = _discounts(conn, actor, basket, body, at)
    pricing = _price(basket, body, discounts, tenders=None)
    member = _member_out(conn, basket)
    points: dict[str, Any] | None = None
    if basket.member is not None and basket.program is not None:
        rate = int(basket.program["redeem_points_per_yuan"])
        spendable = _spendable(conn, basket.member, at)
        most = max_redeemable(spendable, pricing.total, rate)
        # The tenders are not known yet: the rest is counted as cash.
        order_in = _order_in(basket, pricing, order_number="QUOTE",
                             tenders=[("cash", pricing.payable)])
        earning = preview_earning(conn, _recorded_preview(basket, order_in),
                                  program=basket.program, member=basket.member)
        points = {"available": spendable, "owed": int(basket.member["points_owed"]),
                  "points_per_yuan": rate, "max_redeemable": most,
                  "max_value_fen": points_value(most, rate),
                  "redeem": pricing.points, "redeem_value_fen": pricing.points_value,
                  "will_earn": earning.points if earning else 0,
                  "growth_will_earn": earning.growth if earning else 0,
                  "pending_days": int(basket.program["pending_days"])}
    return {"as_of": at, "store": basket.store.code, "purchased_at": basket.purchased_at,
            "member": member,
            "tier_benefits": _benefits_out(basket, bool(member and member["birthday_month"])),
            "lines": _lines_out(pricing), "amounts": _amounts(pricing),
            "coupons": discounts.coupons,
            "points": points,
            "stored_value": {"balance_fen": _stored_value_balance(conn, actor, basket.member,
                                                                  at),
                             "spend_fen": pricing.stored_value}}


# --- commit -----------------------------------------------------------------------------------

def _lock_member(conn: Connection, member: dict[str, Any]) -> dict[str, Any]:
    """Lock in the order every purchase takes: the customer's figures, then the member."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(customer_figures.c.customer_id).where(
            customer_figures.c.customer_id == member["customer_id"]).with_for_update())
    row = persist.lock_members(conn, [int(member["id"])]).get(int(member["id"]))
    if row is None:
        raise NotFound("member_not_found")
    if row["status"] != "active":
        raise Conflict("member_closed")
    return row


def _prior(conn: Connection, table: Any, store_id: int, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(table).where(table.c.store_id == store_id,
                                           table.c.idempotency_key == key)).mappings().first()
    return dict(row) if row else None


def _digest(body: BasketIn) -> str:
    return request_hash(body.model_dump(mode="json", exclude_none=True))


def _open_hold(conn: Connection, basket: Basket, body: CommitIn, now: dt.datetime
               ) -> dict[str, Any]:
    q = select(checkout_holds).where(checkout_holds.c.id == body.hold_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    hold = conn.execute(q).mappings().first()
    if hold is None or int(hold["store_id"]) != basket.store.id:
        raise NotFound("checkout_hold_not_found")
    if hold["status"] != "held":
        raise Conflict("checkout_hold_not_open", params={"status": hold["status"]})
    if hold["expires_at"] <= now:
        raise Conflict("hold_expired")
    member_id = int(basket.member["id"]) if basket.member else None
    if hold["member_id"] != member_id or int(hold["points"]) != body.redeem_points or (
            _fen(hold["stored_value"]) != body.stored_value_fen) or (
            sorted(hold["parts"].get("coupon_codes", [])) != sorted(body.coupons)):
        raise invalid("hold_id", "hold_mismatch", points=int(hold["points"]),
                      stored_value_fen=_fen(hold["stored_value"]))
    return dict(hold)


def commit(*, uow: UnitOfWork, actor: Actor, body: CommitIn, now: dt.datetime | None = None,
           source: str = "online") -> dict[str, Any]:
    """Record the checkout's order with everything that pays it, at once. The same key with
    the same request returns the first result (``replayed``); with another request a 409."""
    need(actor, "checkout.sell")

    def work() -> dict[str, Any]:
        out = commit_in(uow.c, actor=actor, body=body, now=now or utcnow(), source=source)
        uow.commit()
        return out

    try:
        return _atomic(uow, work)
    except IntegrityError:
        # Every retry lost a race, the last one to a till sending the same key: that till's
        # checkout committed, and its result is the answer to this request too.
        conn = uow.c
        prior = _prior(conn, checkout_commits, _store(conn, actor, body.store).id,
                       body.idempotency_key)
        uow.rollback()
        if prior is None:
            raise
        if prior["request_hash"] != _digest(body):
            raise Conflict("idempotency_key_reused") from None
        return {**prior["result"], "replayed": True}


def commit_in(conn: Connection, *, actor: Actor, body: CommitIn, now: dt.datetime,
              source: str = "online") -> dict[str, Any]:
    """:func:`commit` inside the caller's transaction; never commits."""
    store = _store(conn, actor, body.store)
    digest = _digest(body)
    prior = _prior(conn, checkout_commits, store.id, body.idempotency_key)
    if prior is not None:
        if prior["request_hash"] != digest:
            raise Conflict("idempotency_key_reused")
        return {**prior["result"], "replayed": True}
    basket = _basket(conn, actor, body, now)
    if basket.member is not None:
        basket.member = _lock_member(conn, basket.member)
    hold = _open_hold(conn, basket, body, now) if body.hold_id is not None else None
    if hold is not None and hold["parts"].get("coupon_operation_id") is not None:
        parts = hold["parts"]
        discounts = Discounts(parts["tier_lines"], parts["coupon_lines"], parts["coupons"])
    else:
        # Coupons are evaluated here and redeemed once the order is recorded (with its id); a
        # coupon that changed in between refuses the whole checkout.
        discounts = _discounts(conn, actor, basket, body, now)
        if discounts.coupons["refused"]:
            raise Conflict("coupon_refused", fields=[
                FieldError(f"coupons.{_code_index(body, r['code'])}", r["reason"], r["params"])
                for r in discounts.coupons["refused"]])
    tenders = [(t.method, t.amount_fen) for t in body.payments]
    pricing = _price(basket, body, discounts, tenders=tenders)
    checkout_id = int(conn.execute(insert(checkout_commits).values(
        store_id=store.id, idempotency_key=body.idempotency_key, request_hash=digest,
        source=source, order_number=body.order_number,
        member_id=basket.member["id"] if basket.member else None,
        hold_id=body.hold_id, purchased_at=basket.purchased_at,
        total=_yuan(pricing.total), tier_discount=_yuan(pricing.tier_discount),
        coupon_discount=_yuan(pricing.coupon_discount), points_redeemed=pricing.points,
        points_value=_yuan(pricing.points_value), stored_value=_yuan(pricing.stored_value),
        points_earned=0, result={}, actor=actor.name, created_at=now,
    ).returning(checkout_commits.c.id)).scalar_one())

    points_op: dict[str, Any] | None = None
    if pricing.points:
        assert basket.member is not None
        if hold is not None and hold["points_operation_id"] is not None:
            points_op, expired = loyalty.finish_hold_in(
                conn, actor=actor, hold_id=int(hold["points_operation_id"]), action="commit",
                now=now)
            if expired:
                raise Conflict("hold_expired")
        else:
            points_op = loyalty.redeem_in(conn, actor=actor, member_id=int(basket.member["id"]),
                                          body=RedeemIn(idempotency_key=f"checkout-{checkout_id}",
                                                        points=pricing.points,
                                                        store=store.code,
                                                        reference=body.order_number), now=now)
    sv_op: dict[str, Any] | None = None
    if pricing.stored_value:
        assert basket.member is not None
        sv = storedvalue
        if hold is not None and hold["stored_value_operation_id"] is not None:
            sv_op = sv.commit_hold_in(conn, actor=actor,
                                      hold_id=int(hold["stored_value_operation_id"]), now=now)
        else:
            sv_op = sv.spend_in(conn, actor=actor, member_id=int(basket.member["id"]),
                                body=_sv_body("SpendIn", idempotency_key=f"checkout-{checkout_id}",
                                              amount=_yuan(pricing.stored_value),
                                              store=store.code, reference=body.order_number),
                                now=now)

    (outcome,) = record_orders_in(conn, [_order_in(basket, pricing,
                                                   order_number=body.order_number,
                                                   tenders=tenders)],
                                  source=SOURCE, actor=actor, now=now)
    if outcome.status == "rejected":
        raise ValidationFailed("validation_failed", fields=[
            FieldError(e["field"], e["reason"], e.get("params") or {}) for e in outcome.errors])
    if outcome.status != "created":
        raise Conflict("order_number_taken", params={"order_number": body.order_number})
    order_id = int(outcome.order_id)  # type: ignore[arg-type]
    if body.coupons:
        if hold is not None and hold["parts"].get("coupon_operation_id") is not None:
            try:
                coupons.commit_hold_in(conn, actor=actor,
                                       operation_id=int(hold["parts"]["coupon_operation_id"]),
                                       now=now, order_id=order_id)
            except coupons.HoldExpired as exc:
                raise Conflict("hold_expired") from exc
        else:
            used, _op = _use_coupons(conn, actor=actor, basket=basket, body=body, kind="redeem",
                                     key=f"checkout-{checkout_id}", store_id=store.id, now=now,
                                     order_id=order_id)
            if (used.tier_lines, used.coupon_lines) != (discounts.tier_lines,
                                                        discounts.coupon_lines):
                raise Conflict("coupons_changed")
            discounts = used
    earned = conn.execute(select(loyalty_order_earnings.c.points).where(
        loyalty_order_earnings.c.order_id == order_id)).scalar()
    result = _finish(conn, actor=actor, checkout_id=checkout_id, basket=basket, body=body,
                     pricing=pricing, order_id=order_id, earned=int(earned or 0),
                     points_op=points_op, sv_op=sv_op, hold=hold, coupons=discounts.coupons,
                     now=now, source=source)
    return result


def _code_index(body: BasketIn, code: str) -> int:
    return next((i for i, c in enumerate(body.coupons) if c == code), 0)


def _balance(conn: Connection, member_id: int) -> dict[str, int]:
    m = conn.execute(select(loyalty_members).where(loyalty_members.c.id == member_id)
                     ).mappings().one()
    return {"available": int(m["points_available"]), "pending": int(m["points_pending"]),
            "held": int(m["points_held"]), "owed": int(m["points_owed"])}


def _finish(conn: Connection, *, actor: Actor, checkout_id: int, basket: Basket,
            body: CommitIn, pricing: Pricing, order_id: int, earned: int,
            points_op: dict[str, Any] | None, sv_op: dict[str, Any] | None,
            hold: dict[str, Any] | None,
            coupons: dict[str, Any], now: dt.datetime, source: str) -> dict[str, Any]:
    """The last step of a commit: the checkout's row gets its result, the hold (if any) is
    committed, the audit entry written."""
    member = _member_out(conn, basket)
    result = {
        "checkout_id": checkout_id, "order_id": order_id, "order_number": body.order_number,
        "store": basket.store.code, "source": source,
        "purchased_at": basket.purchased_at.isoformat(), "member": member,
        "lines": _lines_out(pricing), "amounts": _amounts(pricing),
        "payments": [{"method": m, "amount_fen": a} for m, a in pricing.payments()],
        "points": None if basket.member is None else {
            "redeemed": pricing.points, "value_fen": pricing.points_value, "earned": earned,
            "operation_id": points_op["id"] if points_op else None,
            "balance": _balance(conn, int(basket.member["id"]))},
        "coupons": coupons,
        "stored_value": None if sv_op is None else {
            "spent_fen": pricing.stored_value, "operation_id": int(sv_op["id"]),
            "principal_fen": int(Decimal(sv_op["principal"]) * 100),
            "bonus_fen": int(Decimal(sv_op["bonus"]) * 100),
            "balance_fen": int(Decimal(sv_op["balance"]["spendable"]) * 100)},
        "hold_id": body.hold_id,
        "created_at": now.isoformat(), "replayed": False,
    }
    conn.execute(update(checkout_commits).where(checkout_commits.c.id == checkout_id).values(
        order_id=order_id, points_earned=earned, result=result,
        points_operation_id=points_op["id"] if points_op else None,
        stored_value_operation_id=sv_op["id"] if sv_op else None))
    if hold is not None:
        conn.execute(update(checkout_holds).where(checkout_holds.c.id == hold["id"]).values(
            status="committed", checkout_id=checkout_id, finished_at=now))
    audit.record(conn, actor, "checkout.committed", entity="order", entity_id=order_id,
                 details={"checkout_id": checkout_id, "key": body.idempotency_key,
                          "order_number": body.order_number, "source": source,
                          "total_fen": pricing.total, "points_redeemed": pricing.points,
                          "points_earned": earned, "hold_id": body.hold_id})
    return result


def get_checkout(conn: Connection, *, actor: Actor, checkout_id: int) -> dict[str, Any]:
    need(actor, "checkout.sell")
    row = conn.execute(select(checkout_commits).where(checkout_commits.c.id == checkout_id)
                       ).mappings().first()
    if row is None or not actor.sees_store(int(row["store_id"])):
        raise NotFound("checkout_not_found")
    refunds = [dict(r["result"]) for r in conn.execute(
        select(checkout_refunds.c.result).where(checkout_refunds.c.checkout_id == checkout_id)
        .order_by(checkout_refunds.c.id)).mappings()]
    return {**row["result"], "replayed": False, "refunds": refunds}


# --- holds ------------------------------------------------------------------------------------

def _hold_out(hold: dict[str, Any], now: dt.datetime, *, replay: bool = False,
              pricing: Pricing | None = None) -> dict[str, Any]:
    status = hold["status"]
    if status == "held" and hold["expires_at"] <= now:
        status = "expired"
    out: dict[str, Any] = {
        "id": int(hold["id"]), "status": status, "member_id": hold["member_id"],
        "points": int(hold["points"]), "points_operation_id": hold["points_operation_id"],
        "stored_value_operation_id": hold["stored_value_operation_id"],
        "stored_value_fen": int(Decimal(hold["stored_value"]) * 100),
        "coupons": hold["parts"].get("coupon_codes", []),
        "expires_at": hold["expires_at"], "checkout_id": hold["checkout_id"],
        "created_at": hold["created_at"], "finished_at": hold["finished_at"],
        "replayed": replay}
    if pricing is not None:
        out["amounts"] = _amounts(pricing)
    return out


def create_hold(*, uow: UnitOfWork, actor: Actor, body: HoldIn,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """Reserve the points (and, once installed, stored value and coupons) that will pay a
    basket, for a till paying in steps. Commit a checkout with ``hold_id``, or release it; it
    expires by itself after ``minutes`` (the program's hold time by default)."""
    need(actor, "checkout.sell")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        store = _store(conn, actor, body.store)
        digest = _digest(body)
        prior = _prior(conn, checkout_holds, store.id, body.idempotency_key)
        if prior is not None:
            if prior["request_hash"] != digest:
                raise Conflict("idempotency_key_reused")
            out = _hold_out(prior, at, replay=True)
            uow.commit()
            return out
        basket = _basket(conn, actor, body, at)
        if not (body.redeem_points or body.stored_value_fen or body.coupons):
            raise invalid("redeem_points", "nothing_to_hold")
        if basket.member is not None:
            basket.member = _lock_member(conn, basket.member)
        discounts = _discounts(conn, actor, basket, body, at)
        if discounts.coupons["refused"]:
            raise Conflict("coupon_refused", fields=[
                FieldError(f"coupons.{_code_index(body, r['code'])}", r["reason"], r["params"])
                for r in discounts.coupons["refused"]])
        sv = storedvalue if body.stored_value_fen else None
        pricing = _price(basket, body, discounts, tenders=None)
        minutes = body.minutes or (int(basket.program["hold_minutes"]) if basket.program
                                   else 15)
        expires = at + dt.timedelta(minutes=minutes)
        hold_id = int(conn.execute(insert(checkout_holds).values(
            store_id=store.id, idempotency_key=body.idempotency_key, request_hash=digest,
            member_id=basket.member["id"] if basket.member else None, points=pricing.points,
            stored_value=_yuan(pricing.stored_value),
            parts={"coupon_codes": list(body.coupons)}, status="held", expires_at=expires,
            actor=actor.name, created_at=at,
        ).returning(checkout_holds.c.id)).scalar_one())
        if pricing.points:
            assert basket.member is not None
            op = loyalty.hold_in(conn, actor=actor, member_id=int(basket.member["id"]),
                                 body=PointsHoldIn(idempotency_key=f"checkout-hold-{hold_id}",
                                                   points=pricing.points, store=store.code,
                                                   reference=f"checkout-hold-{hold_id}",
                                                   minutes=minutes), now=at)
            conn.execute(update(checkout_holds).where(checkout_holds.c.id == hold_id)
                         .values(points_operation_id=op["id"]))
        if body.coupons:
            held, coupon_op = _use_coupons(conn, actor=actor, basket=basket, body=body,
                                           kind="hold", key=f"checkout-hold-{hold_id}",
                                           store_id=store.id, now=at, minutes=minutes)
            conn.execute(update(checkout_holds).where(checkout_holds.c.id == hold_id).values(
                parts={"coupon_codes": list(body.coupons), "coupon_operation_id": coupon_op,
                       "tier_lines": held.tier_lines, "coupon_lines": held.coupon_lines,
                       "coupons": held.coupons}))
        if sv is not None:
            assert basket.member is not None
            sv_hold = sv.hold_in(conn, actor=actor, member_id=int(basket.member["id"]),
                                 body=_sv_body("HoldIn",
                                               idempotency_key=f"checkout-hold-{hold_id}",
                                               amount=_yuan(pricing.stored_value),
                                               store=store.code,
                                               reference=f"checkout-hold-{hold_id}",
                                               minutes=minutes), now=at)
            conn.execute(update(checkout_holds).where(checkout_holds.c.id == hold_id)
                         .values(stored_value_operation_id=sv_hold["id"]))
        audit.record(conn, actor, "checkout.hold_created", entity="checkout_hold",
                     entity_id=hold_id, details={"key": body.idempotency_key,
                                                 "points": pricing.points,
                                                 "expires_at": expires.isoformat()})
        row = dict(conn.execute(select(checkout_holds).where(checkout_holds.c.id == hold_id)
                                ).mappings().one())
        out = _hold_out(row, at, pricing=pricing)
        uow.commit()
        return out

    return _atomic(uow, work)


def release_hold(*, uow: UnitOfWork, actor: Actor, hold_id: int,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """Give back what a hold reserved. Releasing again, or a hold that expired, returns it as
    it is; a committed hold cannot be released (409)."""
    need(actor, "checkout.sell")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        q = select(checkout_holds).where(checkout_holds.c.id == hold_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        hold = conn.execute(q).mappings().first()
        if hold is None or not actor.sees_store(int(hold["store_id"])):
            raise NotFound("checkout_hold_not_found")
        hold = dict(hold)
        if hold["status"] == "released":
            out = _hold_out(hold, at, replay=True)
            uow.commit()
            return out
        if hold["status"] != "held":
            raise Conflict("checkout_hold_not_open", params={"status": hold["status"]})
        if hold["points_operation_id"] is not None:
            loyalty.finish_hold_in(conn, actor=actor, hold_id=int(hold["points_operation_id"]),
                                   action="release", now=at)
        if hold["parts"].get("coupon_operation_id") is not None:
            coupons.release_hold_in(conn, actor=actor,
                                    operation_id=int(hold["parts"]["coupon_operation_id"]),
                                    now=at)
        if hold["stored_value_operation_id"] is not None:
            storedvalue.release_hold_in(conn, actor=actor,
                                            hold_id=int(hold["stored_value_operation_id"]),
                                            now=at)
        conn.execute(update(checkout_holds).where(checkout_holds.c.id == hold_id)
                     .values(status="released", finished_at=at))
        audit.record(conn, actor, "checkout.hold_released", entity="checkout_hold",
                     entity_id=hold_id, details={"points": int(hold["points"])})
        out = _hold_out({**hold, "status": "released", "finished_at": at}, at)
        uow.commit()
        return out

    return _atomic(uow, work)


def get_hold(conn: Connection, *, actor: Actor, hold_id: int,
             now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "checkout.sell")
    hold = conn.execute(select(checkout_holds).where(checkout_holds.c.id == hold_id)
                        ).mappings().first()
    if hold is None or not actor.sees_store(int(hold["store_id"])):
        raise NotFound("checkout_hold_not_found")
    return _hold_out(dict(hold), now or utcnow())


# --- refunds ----------------------------------------------------------------------------------

def refund(*, uow: UnitOfWork, actor: Actor, checkout_id: int, body: RefundIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """A full or partial refund of a committed checkout, in one transaction: the return
    through the orders area (which claws back the points the returned lines earned), and the
    points that paid for them given back in proportion. The same key again returns the first
    result; with another request a 409."""
    need(actor, "checkout.refund")

    def work() -> dict[str, Any]:
        out = refund_in(uow.c, actor=actor, checkout_id=checkout_id, body=body,
                        now=now or utcnow())
        uow.commit()
        return out

    return _atomic(uow, work)


def refund_in(conn: Connection, *, actor: Actor, checkout_id: int, body: RefundIn,
              now: dt.datetime) -> dict[str, Any]:
    q = select(checkout_commits).where(checkout_commits.c.id == checkout_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None or not actor.sees_store(int(row["store_id"])) or row["order_id"] is None:
        raise NotFound("checkout_not_found")
    digest = request_hash(body.model_dump(mode="json"))
    r = checkout_refunds.c
    prior = conn.execute(select(checkout_refunds).where(
        r.checkout_id == checkout_id, r.idempotency_key == body.idempotency_key)
    ).mappings().first()
    if prior is not None:
        if prior["request_hash"] != digest:
            raise Conflict("idempotency_key_reused")
        return {**prior["result"], "replayed": True}
    order = conn.execute(select(orders.c.external_id, orders.c.purchased_at,
                                channels.c.code.label("channel"))
                         .join(channels, channels.c.id == orders.c.channel_id)
                         .where(orders.c.id == row["order_id"])).one()
    store_code = row["result"]["store"]
    returned_at = max(now, order.purchased_at)
    ret = ReturnIn.model_validate({
        "external_id": f"checkout-{body.idempotency_key}"[:64], "channel": order.channel,
        "store": store_code, "order_external_id": order.external_id,
        "returned_at": returned_at.isoformat(), "full": body.full,
        "lines": [{"line_no": ln.line_no, "quantity": ln.quantity} for ln in body.lines],
        "reason": body.reason})
    e = loyalty_order_earnings.c
    before = conn.execute(select(e.points_written_off, e.program_id).where(
        e.order_id == row["order_id"])).first()
    policy = None
    if before is not None:
        # Shared lock on PostgreSQL: the policy cannot change between this read and the
        # return's clawback (an administrator's change waits for the refund; refunds do not
        # wait for each other). SQLite has one writer.
        q = select(loyalty_programs.c.clawback_policy).where(
            loyalty_programs.c.id == before.program_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(read=True)
        policy = conn.execute(q).scalar_one()
    recorded = record_return_in(conn, ret=ret, actor=actor, now=now,
                                settles_points_in_money=True)
    if recorded["status"] != "created":
        raise Conflict("return_exists")
    unrecovered = 0
    if before is not None and policy == "deduct_from_refund":
        # The return left written off the points it could not take back; this refund settles
        # them below, after giving back the points that paid.
        unrecovered = int(conn.execute(select(e.points_written_off).where(
            e.order_id == row["order_id"])).scalar_one()) - int(before.points_written_off)
    amount = int(Decimal(recorded["amount"]) * 100)
    total = int(row["total"] * 100)
    refunded_before = int(row["refunded"] * 100)
    points_back = refund_share(int(row["points_redeemed"]), refunded_before, total, amount,
                               int(row["points_returned"]))
    stored_back = refund_share(int(row["stored_value"] * 100), refunded_before, total, amount,
                               int(row["stored_value_returned"] * 100))
    refund_id = int(conn.execute(insert(checkout_refunds).values(
        checkout_id=checkout_id, idempotency_key=body.idempotency_key, request_hash=digest,
        return_id=recorded["return_id"], amount=_yuan(amount), points_returned=points_back,
        stored_value_returned=_yuan(stored_back), reason=body.reason, result={},
        actor=actor.name, created_at=now).returning(r.id)).scalar_one())
    if points_back:
        loyalty.adjust_in(conn, actor=actor, member_id=int(row["member_id"]),
                          body=AdjustIn(idempotency_key=f"checkout-refund-{refund_id}",
                                        points=points_back, store=store_code,
                                        reason=f"points paid for checkout {checkout_id}, "
                                               "refunded"),
                          now=now, visible=False)
    if stored_back:
        storedvalue.refund_in(conn, actor=actor,
                                  spend_id=int(row["stored_value_operation_id"]),
                                  body=_sv_body("RefundIn",
                                                idempotency_key=f"checkout-refund-{refund_id}",
                                                amount=_yuan(stored_back), store=store_code,
                                                reference=order.external_id), now=now)
    rate = _rate(conn, row)
    # What the till would give back in money: the rest went back as points and stored value.
    to_tenders = max(0, amount - stored_back - (points_value(points_back, rate)
                                                if points_back else 0))
    deduction = settle_refund_deduction(
        conn, actor=actor, order_id=int(row["order_id"]), return_id=int(recorded["return_id"]),
        points=unrecovered, deductible=points_deductible(to_tenders, rate), now=now)
    deducted_fen = points_deduction_value(deduction.deducted, rate)
    conn.execute(update(checkout_commits).where(checkout_commits.c.id == checkout_id).values(
        refunded=checkout_commits.c.refunded + _yuan(amount),
        points_returned=checkout_commits.c.points_returned + points_back,
        stored_value_returned=checkout_commits.c.stored_value_returned + _yuan(stored_back)))
    clawed = conn.execute(select(loyalty_order_earnings.c.points_clawed).where(
        loyalty_order_earnings.c.order_id == row["order_id"])).scalar()
    result = {"refund_id": refund_id, "checkout_id": checkout_id,
              "return_id": recorded["return_id"], "order_id": int(row["order_id"]),
              "amount_fen": amount, "points_returned": points_back,
              "stored_value_returned_fen": stored_back,
              "points_clawed_total": int(clawed or 0),
              # The points this refund could not take back (deduct_from_refund): taken from
              # the points given back, deducted from the money, or owed when it ran out.
              "points_deduction": {"points": unrecovered,
                                   "from_points": deduction.from_points,
                                   "deducted": deduction.deducted,
                                   "deducted_fen": deducted_fen,
                                   "owed": deduction.owed,
                                   "points_per_yuan": rate},
              "refund_before_deduction_fen": to_tenders,
              # What the till gives back in money.
              "refund_to_tenders_fen": to_tenders - deducted_fen,
              "balance": None if row["member_id"] is None else _balance(conn,
                                                                       int(row["member_id"])),
              "created_at": now.isoformat(), "replayed": False}
    conn.execute(update(checkout_refunds).where(r.id == refund_id).values(result=result))
    audit.record(conn, actor, "checkout.refunded", entity="order", entity_id=row["order_id"],
                 details={"checkout_id": checkout_id, "refund_id": refund_id,
                          "key": body.idempotency_key, "amount_fen": amount,
                          "points_returned": points_back,
                          "points_deducted": deduction.deducted,
                          "deducted_fen": deducted_fen, "points_owed": deduction.owed,
                          "refund_to_tenders_fen": to_tenders - deducted_fen})
    return result


def _rate(conn: Connection, row: Any) -> int:
    program = conn.execute(select(loyalty_programs.c.redeem_points_per_yuan)
                           .join(loyalty_members,
                                 loyalty_members.c.program_id == loyalty_programs.c.id)
                           .where(loyalty_members.c.id == row["member_id"])).scalar()
    return int(program or 100)


# --- offline tills ----------------------------------------------------------------------------

# A checkout locks the member, then the stored-value card, coupons and lots it pays with; many
# tills on the same members meet in deadlocks that PostgreSQL breaks by aborting one of them.
# That one starts again after a short random wait (more attempts than a single-area write needs).
ATTEMPTS = 12


def _atomic(uow: UnitOfWork, work: Any) -> Any:
    """Run ``work`` (which commits) again from the start after a conflict with a concurrent
    writer (a unique key taken first, a deadlock, a serialization failure), waiting a little
    longer each time; anything that stops it rolls the whole unit back at once, so that the
    caller's next use of ``uow`` starts clean."""
    try:
        for attempt in range(ATTEMPTS):
            try:
                return work()
            except (IntegrityError, DBAPIError) as exc:
                uow.rollback()
                code = getattr(getattr(exc, "orig", None), "sqlstate", None)
                if attempt == ATTEMPTS - 1 or not (
                        isinstance(exc, IntegrityError) or code in ("40001", "40P01")):
                    raise
                time.sleep(random.uniform(0, 0.004 * 2 ** min(attempt, 6)))
        raise AssertionError("unreachable")
    except BaseException:
        uow.rollback()
        raise


def _error(exc: PatronError) -> dict[str, Any]:
    return {"code": exc.message, "params": exc.params,
            "fields": [f.as_dict() for f in exc.fields]}


def sync_offline(*, uow: UnitOfWork, actor: Actor, body: OfflineBatchIn,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """A till's queue of checkouts made offline, applied in purchase-time order, each in its
    own transaction (one refused entry does not hold back the others). Entries already
    applied (same key and content) are replayed; an order number already recorded otherwise
    is a duplicate and applies nothing."""
    need(actor, "checkout.sell")
    at = now or utcnow()
    conn = uow.c
    tz = {}
    for e in body.entries:
        store = Reference(conn).store(e.store)
        tz[e.store] = store.timezone if store else "Asia/Shanghai"
    uow.rollback()  # the reads above are not held across the entries

    def when(i: int) -> dt.datetime:
        e = body.entries[i]
        assert e.purchased_at is not None
        return to_utc(e.purchased_at, tz[e.store])

    results: list[dict[str, Any]] = [{} for _ in body.entries]
    for i in sorted(range(len(body.entries)), key=lambda i: (when(i), i)):
        entry = body.entries[i]
        base = {"index": i, "order_number": entry.order_number,
                "idempotency_key": entry.idempotency_key}
        try:
            out = commit(uow=uow, actor=actor, body=entry, now=at, source="offline")
            results[i] = {**base, "status": "replayed" if out.get("replayed") else "created",
                          "checkout": out}
        except PatronError as exc:
            uow.rollback()
            status = ("duplicate" if exc.message == "order_number_taken"
                      else "conflict" if exc.message == "idempotency_key_reused"
                      else "refused" if isinstance(exc, Conflict) else "rejected")
            results[i] = {**base, "status": status, "error": _error(exc)}
    summary: dict[str, int] = {}
    for r in results:
        summary[r["status"]] = summary.get(r["status"], 0) + 1
    return {"summary": summary, "results": results,
            "applied_order": sorted(range(len(body.entries)), key=lambda i: (when(i), i))}

