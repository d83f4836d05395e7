"""Rewards catalog use cases: items of a program, and redemptions that hold a member's points
(a loyalty hold) and reserve the item's stock in one transaction, then are fulfilled (the hold
committed, the units sold) or cancelled / expired (the hold released, the units back in stock).

Lock order, everywhere: members (loyalty, id order), then items (id order), then redemption rows.
Each public use case owns its transaction and retries it after a conflict with a concurrent
writer; the ``*_in`` functions work inside a caller's open transaction and never commit, for
the checkout to compose them with its own writes.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from patron.customers.queries import visible_customer
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.loyalty import persist
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import HoldIn
from patron.loyalty.service import _program, retrying
from patron.loyalty.tables import loyalty_members, loyalty_operations, loyalty_programs
from patron.org.tables import stores
from patron.rewards.model import (
    limit_breach,
    period_start,
    price,
    unavailable_reason,
    units_left,
)
from patron.rewards.schemas import ItemIn, ItemUpdate, RedemptionIn
from patron.rewards.tables import rewards_items, rewards_redemptions
from patron.security import audit
from patron.security.model import SYSTEM, Actor

need = loyalty.need
invalid = loyalty.invalid
request_hash = loyalty.request_hash
HOLD_KEY_PREFIX = "rewards:"
BATCH = 500


# --- reading ------------------------------------------------------------------------------------

def _item(conn: Connection, item_id: int, *, lock: bool = False) -> dict[str, Any]:
    q = select(rewards_items).where(rewards_items.c.id == item_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("reward_not_found")
    return dict(row)


def lock_items(conn: Connection, item_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Item rows locked in id order (PostgreSQL; SQLite holds its single writer lock)."""
    q = select(rewards_items).where(rewards_items.c.id.in_(sorted(set(item_ids)))).order_by(
        rewards_items.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return {int(r["id"]): dict(r) for r in conn.execute(q).mappings()}


def item_out(conn: Connection, row: dict[str, Any], now: dt.datetime | None = None
             ) -> dict[str, Any]:
    now = now or utcnow()
    program = conn.execute(select(loyalty_programs.c.code).where(
        loyalty_programs.c.id == row["program_id"])).scalar()
    # Units held by redemptions past their expiry are on offer again, even before the job
    # (or the next redemption of the item) gives them back.
    lapsed = 0
    if row["stock"] is not None and row["reserved"]:
        r = rewards_redemptions.c
        lapsed = int(conn.execute(select(func.coalesce(func.sum(r.quantity), 0)).where(
            r.item_id == row["id"], r.status == "held", r.hold_expires_at <= now)).scalar_one())
    left = units_left(row["stock"], int(row["reserved"]), int(row["sold"]))
    return {
        "id": int(row["id"]), "program": program, "code": row["code"], "name": row["name"],
        "description": row["description"], "points_price": int(row["points_price"]),
        "cash_price": row["cash_price"], "stock": row["stock"],
        "reserved": int(row["reserved"]), "sold": int(row["sold"]),
        "available": None if left is None else left + lapsed,
        "limit_per_member": row["limit_per_member"], "limit_per_period": row["limit_per_period"],
        "limit_period": row["limit_period"], "valid_from": row["valid_from"],
        "valid_until": row["valid_until"], "active": bool(row["active"]),
        "redeemable_now": unavailable_reason(active=bool(row["active"]),
                                             valid_from=row["valid_from"],
                                             valid_until=row["valid_until"], now=now) is None,
        "hold_minutes": row["hold_minutes"], "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def list_items(conn: Connection, *, actor: Actor, program_code: str,
               redeemable_only: bool = False, now: dt.datetime | None = None
               ) -> list[dict[str, Any]]:
    need(actor, "rewards.read")
    now = now or utcnow()
    program = _program(conn, program_code)
    i = rewards_items.c
    q = select(rewards_items).where(i.program_id == program["id"]).order_by(i.code)
    if redeemable_only:
        q = q.where(i.active.is_(True), i.valid_from <= now,
                    or_(i.valid_until.is_(None), i.valid_until > now))
    return [item_out(conn, dict(r), now) for r in conn.execute(q).mappings()]


def get_item(conn: Connection, *, actor: Actor, item_id: int,
             now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "rewards.read")
    return item_out(conn, _item(conn, item_id), now)


def redemption_out(conn: Connection, r: dict[str, Any], *, replay: bool = False
                   ) -> dict[str, Any]:
    item = conn.execute(select(rewards_items.c.code, rewards_items.c.name).where(
        rewards_items.c.id == r["item_id"])).one()
    member = conn.execute(select(loyalty_members).where(
        loyalty_members.c.id == r["member_id"])).mappings().one()
    store = None
    if r["store_id"] is not None:
        store = conn.execute(select(stores.c.code).where(stores.c.id == r["store_id"])).scalar()
    return {
        "id": int(r["id"]), "item_id": int(r["item_id"]), "item_code": item.code,
        "item_name": item.name, "member_id": int(r["member_id"]), "quantity": r["quantity"],
        "points": int(r["points"]), "cash": r["cash"], "status": r["status"],
        "hold_id": int(r["hold_id"]), "hold_expires_at": r["hold_expires_at"],
        "idempotency_key": r["idempotency_key"], "store": store, "reference": r["reference"],
        "created_at": r["created_at"], "finished_at": r["finished_at"], "replayed": replay,
        "balance": {"available": int(member["points_available"]),
                    "held": int(member["points_held"])},
    }


def _redemption(conn: Connection, redemption_id: int) -> dict[str, Any]:
    row = conn.execute(select(rewards_redemptions).where(
        rewards_redemptions.c.id == redemption_id)).mappings().first()
    if row is None:
        raise NotFound("redemption_not_found")
    return dict(row)


def _visible_member(conn: Connection, actor: Actor, member_id: int) -> dict[str, Any]:
    row = conn.execute(select(loyalty_members).where(loyalty_members.c.id == member_id)
                       ).mappings().first()
    if row is None:
        raise NotFound("member_not_found")
    if actor.store_ids is not None:
        try:
            visible_customer(conn, actor, int(row["customer_id"]))
        except NotFound as exc:
            raise NotFound("member_not_found") from exc
    return dict(row)


def get_redemption(conn: Connection, *, actor: Actor, redemption_id: int) -> dict[str, Any]:
    need(actor, "rewards.read")
    r = _redemption(conn, redemption_id)
    if actor.store_ids is not None and r["store_id"] not in actor.store_ids:
        raise NotFound("redemption_not_found")
    return redemption_out(conn, r)


def member_redemptions(conn: Connection, *, actor: Actor, member_id: int,
                       limit: int = 200) -> list[dict[str, Any]]:
    need(actor, "rewards.read")
    _visible_member(conn, actor, member_id)
    r = rewards_redemptions.c
    return [redemption_out(conn, dict(row)) for row in conn.execute(
        select(rewards_redemptions).where(r.member_id == member_id)
        .order_by(r.id.desc()).limit(limit)).mappings()]


# --- the catalog --------------------------------------------------------------------------------

def create_item(*, uow: UnitOfWork, actor: Actor, program_code: str, data: ItemIn,
                now: dt.datetime | None = None) -> dict[str, Any]:
    need(actor, "rewards.manage")
    return retrying(uow, lambda: _create_item(uow, actor, program_code, data, now))


def _create_item(uow: UnitOfWork, actor: Actor, program_code: str, data: ItemIn,
                 now: dt.datetime | None) -> dict[str, Any]:
    at = now or utcnow()
    conn = uow.c
    program = _program(conn, program_code)
    i = rewards_items.c
    if conn.execute(select(i.id).where(i.program_id == program["id"], i.code == data.code)
                    ).first():
        raise Conflict("reward_exists", params={"code": data.code})
    values = data.model_dump()
    values["valid_from"] = values["valid_from"] or at
    if values["valid_until"] is not None and values["valid_until"] <= values["valid_from"]:
        raise invalid("valid_until", "validity_reversed")
    item_id = int(conn.execute(insert(rewards_items).values(
        **values, program_id=program["id"], reserved=0, sold=0, created_at=at, updated_at=at,
    ).returning(i.id)).scalar_one())
    audit.record(conn, actor, "rewards.item_created", entity="rewards_item", entity_id=item_id,
                 details={"program": program_code, "code": data.code,
                          "points_price": data.points_price, "cash_price": str(data.cash_price),
                          "stock": data.stock})
    out = item_out(conn, _item(conn, item_id), at)
    uow.commit()
    return out


def update_item(*, uow: UnitOfWork, actor: Actor, item_id: int, changes: ItemUpdate,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """Prices, stock, limits, validity and the active flag. A new price applies to redemptions
    made from now on; the stock cannot go below the units held and sold."""
    need(actor, "rewards.manage")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        item = _item(conn, item_id, lock=True)
        diff = changes.model_dump(exclude_unset=True)
        nullable = {"description", "stock", "limit_per_member", "limit_per_period",
                    "limit_period", "valid_until", "hold_minutes"}
        for key in [k for k, v in diff.items() if v is None and k not in nullable]:
            raise invalid(key, "value_required")
        merged = {**item, **diff}
        errors = []
        if (merged["limit_per_period"] is None) != (merged["limit_period"] is None):
            errors.append(FieldError("limit_period", "limit_period_pair"))
        if merged["valid_until"] is not None and merged["valid_until"] <= merged["valid_from"]:
            errors.append(FieldError("valid_until", "validity_reversed"))
        committed = int(item["reserved"]) + int(item["sold"])
        if merged["stock"] is not None and merged["stock"] < committed:
            errors.append(FieldError("stock", "stock_below_committed", {"committed": committed}))
        if errors:
            raise ValidationFailed("validation_failed", fields=errors)
        if diff:
            conn.execute(update(rewards_items).where(rewards_items.c.id == item_id)
                         .values(**diff, updated_at=at))
            audit.record(conn, actor, "rewards.item_updated", entity="rewards_item",
                         entity_id=item_id, details={"code": item["code"], "changes": {
                             k: str(v) if isinstance(v, Decimal | dt.datetime) else v
                             for k, v in diff.items()}})
        out = item_out(conn, _item(conn, item_id), at)
        uow.commit()
        return out

    return retrying(uow, work)


# --- redemptions --------------------------------------------------------------------------------

def _reclaim_lapsed(conn: Connection, item: dict[str, Any], at: dt.datetime) -> int:
    """Give back the units of this (locked) item's redemptions whose hold expired. Their points
    come back by the loyalty hold's own expiry, which falls at the same moment."""
    r = rewards_redemptions.c
    rows = conn.execute(select(r.id, r.quantity).where(
        r.item_id == item["id"], r.status == "held", r.hold_expires_at <= at)).all()
    if not rows:
        return 0
    units = sum(int(x.quantity) for x in rows)
    conn.execute(update(rewards_redemptions).where(r.id.in_([int(x.id) for x in rows]),
                                                   r.status == "held")
                 .values(status="expired", finished_at=at, finished_by="system"))
    conn.execute(update(rewards_items).where(rewards_items.c.id == item["id"])
                 .values(reserved=rewards_items.c.reserved - units))
    item["reserved"] = int(item["reserved"]) - units
    audit.record(conn, SYSTEM, "rewards.expired", entity="rewards_item", entity_id=item["id"],
                 details={"redemptions": [int(x.id) for x in rows], "units": units,
                          "points": "released by the loyalty hold's own expiry"})
    return units


def _used(conn: Connection, *, member_id: int, item_id: int, at: dt.datetime,
          since: dt.datetime | None = None) -> int:
    r = rewards_redemptions.c
    q = select(func.coalesce(func.sum(r.quantity), 0)).where(
        r.member_id == member_id, r.item_id == item_id,
        or_(r.status == "fulfilled", and_(r.status == "held", r.hold_expires_at > at)))
    if since is not None:
        q = q.where(r.created_at >= since)
    return int(conn.execute(q).scalar_one())


def redeem(*, uow: UnitOfWork, actor: Actor, item_id: int, body: RedemptionIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Hold the member's points and reserve the item's units together. The same idempotency
    key with the same request returns the first redemption; with another request a 409."""
    need(actor, "rewards.redeem")

    def work() -> dict[str, Any]:
        out = redeem_in(uow.c, actor=actor, item_id=item_id, body=body, now=now)
        uow.commit()
        return out

    return retrying(uow, work)


def redeem_in(conn: Connection, *, actor: Actor, item_id: int, body: RedemptionIn,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`redeem` inside the caller's transaction; never commits."""
    at = now or utcnow()
    item = _item(conn, item_id)
    program_id = int(item["program_id"])
    # Membership is chain-wide: a till redeems for a member of any store (as loyalty holds do).
    member = persist.lock_members(conn, [body.member_id]).get(body.member_id)
    if member is None:
        raise NotFound("member_not_found")
    digest = request_hash({"item": item_id, "member": body.member_id,
                           "quantity": body.quantity, "store": body.store,
                           "reference": body.reference})
    r = rewards_redemptions.c
    prior = conn.execute(select(rewards_redemptions).where(
        r.program_id == program_id, r.idempotency_key == body.idempotency_key)
    ).mappings().first()
    if prior is not None:
        if prior["request_hash"] != digest:
            raise Conflict("idempotency_key_reused")
        return redemption_out(conn, dict(prior), replay=True)
    if int(member["program_id"]) != program_id:
        raise invalid("member_id", "member_not_in_program")
    if member["status"] != "active":
        raise Conflict("member_closed")
    item = lock_items(conn, [item_id])[item_id]
    reason = unavailable_reason(active=bool(item["active"]), valid_from=item["valid_from"],
                                valid_until=item["valid_until"], now=at)
    if reason is not None:
        raise Conflict(reason, params={"code": item["code"]})
    _reclaim_lapsed(conn, item, at)
    program = loyalty._program_by_id(conn, program_id)
    since = (period_start(at, item["limit_period"], program["timezone"])
             if item["limit_period"] else None)
    breach = limit_breach(
        quantity=body.quantity, limit_per_member=item["limit_per_member"],
        used_ever=(_used(conn, member_id=body.member_id, item_id=item_id, at=at)
                   if item["limit_per_member"] is not None else 0),
        limit_per_period=item["limit_per_period"],
        used_in_period=(_used(conn, member_id=body.member_id, item_id=item_id, at=at,
                              since=since) if since is not None else 0))
    if breach is not None:
        raise Conflict("reward_limit_reached" if breach.kind == "member"
                       else "reward_period_limit_reached",
                       params={"limit": breach.limit, "used": breach.used,
                               "period": item["limit_period"]})
    left = units_left(item["stock"], int(item["reserved"]), int(item["sold"]))
    if left is not None and left < body.quantity:
        raise Conflict("reward_out_of_stock", params={"wanted": body.quantity,
                                                      "available": max(left, 0)})
    points, cash = price(int(item["points_price"]), item["cash_price"], body.quantity)
    held = loyalty.hold_in(conn, actor=actor, member_id=body.member_id, now=at, body=HoldIn(
        idempotency_key=HOLD_KEY_PREFIX + body.idempotency_key, points=points,
        store=body.store, reference=body.reference, minutes=item["hold_minutes"]))
    if held["replayed"]:  # the hold's key was taken outside the catalog
        raise Conflict("idempotency_key_reused")
    # The CHECK on the item refuses this if the units are gone, whatever any lock did.
    conn.execute(update(rewards_items).where(rewards_items.c.id == item_id)
                 .values(reserved=rewards_items.c.reserved + body.quantity))
    store_id = conn.execute(select(loyalty_operations.c.store_id).where(
        loyalty_operations.c.id == held["id"])).scalar()
    redemption_id = int(conn.execute(insert(rewards_redemptions).values(
        program_id=program_id, item_id=item_id, member_id=body.member_id,
        quantity=body.quantity, points=points, cash=cash, status="held", hold_id=held["id"],
        hold_expires_at=held["hold_expires_at"], idempotency_key=body.idempotency_key,
        request_hash=digest, store_id=store_id, reference=body.reference, actor=actor.name,
        created_at=at).returning(r.id)).scalar_one())
    audit.record(conn, actor, "rewards.redeemed", entity="rewards_redemption",
                 entity_id=redemption_id, details={
                     "item": item["code"], "member_id": body.member_id,
                     "quantity": body.quantity, "points": points, "cash": str(cash),
                     "hold_id": held["id"], "key": body.idempotency_key})
    return redemption_out(conn, _redemption(conn, redemption_id))


def _open(conn: Connection, actor: Actor, redemption_id: int
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The redemption and its item, member then item locked, the redemption read after."""
    first = _redemption(conn, redemption_id)
    if actor.store_ids is not None and first["store_id"] not in actor.store_ids:
        raise NotFound("redemption_not_found")
    persist.lock_members(conn, [int(first["member_id"])])
    item = lock_items(conn, [int(first["item_id"])])[int(first["item_id"])]
    return _redemption(conn, redemption_id), item


def _hold_status(conn: Connection, hold_id: int) -> str:
    return str(conn.execute(select(loyalty_operations.c.status).where(
        loyalty_operations.c.id == hold_id)).scalar_one())


def _close(conn: Connection, actor: Actor, r: dict[str, Any], status: str,
           at: dt.datetime) -> str:
    """End an open redemption: its hold released (if the loyalty hold was committed outside
    the catalog, the points are spent and the units count as sold) and its units given back.
    Returns the status written."""
    if _hold_status(conn, int(r["hold_id"])) == "committed":
        status = "fulfilled"
        units = {"reserved": rewards_items.c.reserved - r["quantity"],
                 "sold": rewards_items.c.sold + r["quantity"]}
    else:
        loyalty.finish_hold_in(conn, actor=actor, hold_id=int(r["hold_id"]), action="release",
                               now=at)
        units = {"reserved": rewards_items.c.reserved - r["quantity"]}
    conn.execute(update(rewards_items).where(rewards_items.c.id == r["item_id"]).values(**units))
    conn.execute(update(rewards_redemptions).where(rewards_redemptions.c.id == r["id"])
                 .values(status=status, finished_at=at, finished_by=actor.name))
    audit.record(conn, actor, f"rewards.{status}", entity="rewards_redemption",
                 entity_id=r["id"], details={"item_id": int(r["item_id"]),
                                             "member_id": int(r["member_id"]),
                                             "quantity": r["quantity"],
                                             "points": int(r["points"])})
    return status


def _release_points_of_closed(conn: Connection, actor: Actor, r: dict[str, Any],
                              at: dt.datetime) -> None:
    """A redemption expired by another member's redemption of the item gave its units back
    but not its points (that member was not locked); give them back now if still held."""
    if _hold_status(conn, int(r["hold_id"])) == "held":
        loyalty.finish_hold_in(conn, actor=actor, hold_id=int(r["hold_id"]), action="release",
                               now=at)


def fulfil(*, uow: UnitOfWork, actor: Actor, redemption_id: int,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Hand the reward over: the points are spent and the units sold. Fulfilling again returns
    the same result; a redemption that expired or was cancelled cannot be fulfilled (409), and
    an expiry found here is written before the refusal."""
    need(actor, "rewards.redeem")

    def work() -> dict[str, Any]:
        out, refused = fulfil_in(uow.c, actor=actor, redemption_id=redemption_id, now=now)
        uow.commit()
        if refused:
            raise Conflict(refused, params={"status": out["status"]})
        return out

    return retrying(uow, work)


def fulfil_in(conn: Connection, *, actor: Actor, redemption_id: int,
              now: dt.datetime | None = None) -> tuple[dict[str, Any], str | None]:
    """:func:`fulfil` inside the caller's transaction; never commits. Returns the redemption
    and, when it cannot be fulfilled, the refusal's code (what was written to close it, if
    anything, should be committed before refusing)."""
    at = now or utcnow()
    r, _item_row = _open(conn, actor, redemption_id)
    if r["status"] == "fulfilled":
        return redemption_out(conn, r, replay=True), None
    if r["status"] != "held":
        _release_points_of_closed(conn, actor, r, at)
        return redemption_out(conn, _redemption(conn, redemption_id)), "redemption_not_open"
    if r["hold_expires_at"] <= at:
        _close(conn, actor, r, "expired", at)
        return redemption_out(conn, _redemption(conn, redemption_id)), "redemption_expired"
    hold = _hold_status(conn, int(r["hold_id"]))
    if hold == "held":
        _out, expired = loyalty.finish_hold_in(conn, actor=actor, hold_id=int(r["hold_id"]),
                                               action="commit", now=at)
        if expired:  # cannot happen before hold_expires_at; kept for safety
            _close(conn, actor, r, "expired", at)
            return redemption_out(conn, _redemption(conn, redemption_id)), "redemption_expired"
    elif hold != "committed":  # released outside the catalog: the points are gone
        _close(conn, actor, r, "cancelled", at)
        return redemption_out(conn, _redemption(conn, redemption_id)), "redemption_not_open"
    conn.execute(update(rewards_items).where(rewards_items.c.id == r["item_id"]).values(
        reserved=rewards_items.c.reserved - r["quantity"],
        sold=rewards_items.c.sold + r["quantity"]))
    conn.execute(update(rewards_redemptions).where(rewards_redemptions.c.id == r["id"])
                 .values(status="fulfilled", finished_at=at, finished_by=actor.name))
    audit.record(conn, actor, "rewards.fulfilled", entity="rewards_redemption",
                 entity_id=r["id"], details={"item_id": int(r["item_id"]),
                                             "member_id": int(r["member_id"]),
                                             "quantity": r["quantity"],
                                             "points": int(r["points"])})
    return redemption_out(conn, _redemption(conn, redemption_id)), None


def cancel(*, uow: UnitOfWork, actor: Actor, redemption_id: int,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Give the points and the units back. Cancelling again (or a redemption that expired)
    returns it as it is; a fulfilled redemption cannot be cancelled (409)."""
    need(actor, "rewards.redeem")

    def work() -> dict[str, Any]:
        out = cancel_in(uow.c, actor=actor, redemption_id=redemption_id, now=now)
        uow.commit()
        return out

    return retrying(uow, work)


def cancel_in(conn: Connection, *, actor: Actor, redemption_id: int,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`cancel` inside the caller's transaction; never commits."""
    at = now or utcnow()
    r, _item_row = _open(conn, actor, redemption_id)
    if r["status"] == "fulfilled":
        raise Conflict("redemption_fulfilled")
    if r["status"] != "held":
        _release_points_of_closed(conn, actor, r, at)
        return redemption_out(conn, _redemption(conn, redemption_id), replay=True)
    status = _close(conn, actor, r, "expired" if r["hold_expires_at"] <= at else "cancelled",
                    at)
    if status == "fulfilled":
        raise Conflict("redemption_fulfilled")
    return redemption_out(conn, _redemption(conn, redemption_id))


def expire_due(*, uow: UnitOfWork, actor: Actor, now: dt.datetime | None = None,
               batch: int = BATCH) -> dict[str, int]:
    """Scheduled job: every redemption whose hold time passed gives its points and units back.
    Safe to run in several processes at once (rows are re-read under their locks)."""
    at = now or utcnow()
    conn = uow.c
    stats = {"redemptions_expired": 0, "units_returned": 0}
    r = rewards_redemptions.c
    after = 0
    while True:
        rows = conn.execute(select(r.id, r.member_id, r.item_id).where(
            r.status == "held", r.hold_expires_at <= at, r.id > after)
            .order_by(r.id).limit(batch)).all()
        if not rows:
            break
        persist.lock_members(conn, [int(x.member_id) for x in rows])
        lock_items(conn, [int(x.item_id) for x in rows])
        for x in rows:
            current = _redemption(conn, int(x.id))
            if current["status"] != "held":
                continue
            if _close(conn, actor, current, "expired", at) == "expired":
                stats["redemptions_expired"] += 1
                stats["units_returned"] += int(current["quantity"])
        uow.commit()
        after = int(rows[-1].id)
    # Redemptions whose units an item's later redemption already took back: their points.
    o = loyalty_operations.c
    stale = conn.execute(select(r.id, r.member_id).select_from(rewards_redemptions.join(
        loyalty_operations, loyalty_operations.c.id == r.hold_id)).where(
        r.status.in_(("expired", "cancelled")), o.status == "held").order_by(r.id)).all()
    for x in stale:
        persist.lock_members(conn, [int(x.member_id)])
        _release_points_of_closed(conn, actor, _redemption(conn, int(x.id)), at)
        uow.commit()
    audit.record(conn, actor, "rewards.due_run", details={"now": at.isoformat(), **stats})
    uow.commit()
    return stats


def verify_stock(conn: Connection, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every item's reserved and sold units against its redemptions, every redemption against
    its loyalty hold. Returns the differences (empty when all agree)."""
    at = now or utcnow()
    r, i, o = rewards_redemptions.c, rewards_items.c, loyalty_operations.c
    diffs: list[dict[str, Any]] = []
    sums = {(int(x.item_id), x.status): int(x.units) for x in conn.execute(
        select(r.item_id, r.status, func.sum(r.quantity).label("units"))
        .group_by(r.item_id, r.status))}
    for item in conn.execute(select(i.id, i.code, i.stock, i.reserved, i.sold)):
        held, sold = sums.get((int(item.id), "held"), 0), sums.get((int(item.id), "fulfilled"), 0)
        if int(item.reserved) != held or int(item.sold) != sold:
            diffs.append({"item": item.code, "reserved": int(item.reserved), "held": held,
                          "sold": int(item.sold), "fulfilled": sold})
        if item.stock is not None and int(item.reserved) + int(item.sold) > int(item.stock):
            diffs.append({"item": item.code, "oversold": True})
    allowed = {"held": ("held", "expired", "released"), "fulfilled": ("committed",),
               "cancelled": ("released", "expired", "held"),
               "expired": ("released", "expired", "held")}
    for x in conn.execute(select(r.id, r.status, r.hold_expires_at, o.status.label("hold"),
                                 o.points, r.points.label("r_points"))
                          .select_from(rewards_redemptions.join(
                              loyalty_operations, loyalty_operations.c.id == r.hold_id))):
        ok = x.hold in allowed[x.status] and int(x.points) == int(x.r_points)
        if x.status == "held" and x.hold != "held" and x.hold_expires_at > at:
            ok = False
        if x.status in ("cancelled", "expired") and x.hold == "held" and x.hold_expires_at > at:
            ok = False
        if not ok:
            diffs.append({"redemption": int(x.id), "status": x.status, "hold": x.hold})
    return diffs

