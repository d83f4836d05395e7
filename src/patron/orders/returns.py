"""Returns and refunds, full or partial, against the original order's lines."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select, update

from patron.customers.tables import customer_figures
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.orders import hooks
from patron.orders.model import content_hash, fen, to_utc
from patron.orders.schemas import ReturnIn
from patron.orders.tables import order_lines, orders, return_lines, returns
from patron.org.service import Reference
from patron.security import audit
from patron.security.model import Actor
from patron.webhooks import service as webhooks


def _lock_order(conn: Connection, channel_id: int, scope: int, external_id: str) -> Any:
    q = select(orders).where(orders.c.channel_id == channel_id,
                             orders.c.scope_store_id == scope,
                             orders.c.external_id == external_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return conn.execute(q).mappings().first()


def record_return(*, uow: UnitOfWork, ret: ReturnIn, actor: Actor) -> dict[str, Any]:
    """Record a refund. Idempotent on (order, return id): the same return again is a
    duplicate, the same id with other content a 409. Quantities and amounts can never exceed
    what is left on the order."""
    out = record_return_in(uow.c, ret=ret, actor=actor)
    uow.commit()
    return out


def record_return_in(conn: Connection, *, ret: ReturnIn, actor: Actor,
                     now: dt.datetime | None = None,
                     settles_points_in_money: bool = False) -> dict[str, Any]:
    """:func:`record_return` inside the caller's open transaction (the POS checkout's refund
    gives back stored value and coupons in the same transaction): never commits.
    ``settles_points_in_money``: the caller deducts from the refund's money the points the
    return cannot take back, when the program's clawback policy says so (the loyalty area
    leaves them to it, written off until it settles them in the same transaction)."""
    ref = Reference(conn)
    channel = ref.channel(ret.channel)
    store = ref.store(ret.store)
    if channel is None:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("channel", "unknown_channel", {"value": ret.channel})])
    if ret.store and store is None:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("store", "unknown_store", {"value": ret.store})])
    scope = store.id if (channel.requires_store and store) else 0
    order = _lock_order(conn, channel.id, scope, ret.order_external_id)
    if order is None:
        raise NotFound("unknown_order")
    if actor.store_ids is not None and order["store_id"] not in actor.store_ids:
        raise NotFound("unknown_order")  # outside the caller's scope is as if absent
    tz = store.timezone if store else "Asia/Shanghai"
    returned_at = to_utc(ret.returned_at, tz)
    if returned_at < order["purchased_at"]:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("returned_at", "return_before_order")])

    lines = {int(r["line_no"]): dict(r) for r in conn.execute(
        select(order_lines).where(order_lines.c.order_id == order["id"])
        .order_by(order_lines.c.line_no)).mappings()}
    by_sku: dict[str, int] = {}
    for no, ln in lines.items():
        by_sku.setdefault(ln["sku"], no)
    # What each line was really paid: an order-level discount is spread over the lines.
    paid = dict(zip(lines, allocate(order["total_amount"], [ln["amount"] for ln in
                                                            lines.values()]), strict=True))
    for no, ln in lines.items():
        ln["amount"] = paid[no]

    wanted: list[tuple[int, Decimal, Decimal]] = []  # (line_no, quantity, amount)
    errors: list[FieldError] = []
    if ret.full:
        for no, ln in lines.items():
            left = ln["quantity"] - ln["returned_quantity"]
            if left > 0:
                wanted.append((no, left, _share(ln, left)))
        if not lines:
            left_amount = order["total_amount"] - order["refunded_amount"]
            wanted.append((0, Decimal(0), left_amount))
    elif not ret.lines:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("lines", "return_needs_lines")])
    for i, rl in enumerate(ret.lines):
        no = rl.line_no if rl.line_no is not None else by_sku.get(rl.sku or "")
        if no is None or no not in lines:
            errors.append(FieldError(f"lines.{i}", "unknown_line"))
            continue
        ln = lines[no]
        left = ln["quantity"] - ln["returned_quantity"]
        if rl.quantity > left:
            errors.append(FieldError(f"lines.{i}.quantity", "return_exceeds_quantity",
                                     {"left": str(left)}))
            continue
        amount = fen(rl.amount) if rl.amount is not None else _share(ln, rl.quantity)
        if amount > ln["amount"]:
            errors.append(FieldError(f"lines.{i}.amount", "return_exceeds_amount",
                                     {"left": str(ln["amount"])}))
            continue
        wanted.append((no, rl.quantity, amount))
    total = sum((a for _, _, a in wanted), Decimal(0))
    left_amount = order["total_amount"] - order["refunded_amount"]
    if not errors and total > left_amount:
        errors.append(FieldError("lines", "return_exceeds_amount", {"left": str(left_amount)}))

    canonical = {"order": ret.order_external_id, "channel": ret.channel,
                 "returned_at": returned_at.isoformat(timespec="seconds"), "full": ret.full,
                 "lines": [[ln.line_no, ln.sku, str(ln.quantity),
                            None if ln.amount is None else str(fen(ln.amount))]
                           for ln in ret.lines]}
    digest = content_hash(canonical)
    prior = conn.execute(select(returns).where(returns.c.order_id == order["id"],
                                               returns.c.external_id == ret.external_id)
                         ).mappings().first()
    if prior is not None:
        if prior["content_hash"] != digest:
            raise Conflict("return_conflict")
        return {"status": "duplicate", "return_id": int(prior["id"]),
                "order_id": int(order["id"]), "amount": str(prior["amount"])}
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)

    now = now or utcnow()
    return_id = conn.execute(insert(returns).values(
        order_id=order["id"], external_id=ret.external_id, returned_at=returned_at,
        amount=total, reason=ret.reason, content_hash=digest, created_at=now,
    ).returning(returns.c.id)).scalar_one()
    rows = [{"return_id": return_id, "order_line_id": lines[no]["id"], "quantity": q,
             "amount": a} for no, q, a in wanted if no in lines]
    if rows:
        conn.execute(insert(return_lines), rows)
    for no, q, _a in wanted:
        if no in lines:
            conn.execute(update(order_lines).where(order_lines.c.id == lines[no]["id"])
                         .values(returned_quantity=order_lines.c.returned_quantity + q))
    conn.execute(update(orders).where(orders.c.id == order["id"])
                 .values(refunded_amount=orders.c.refunded_amount + total))
    if order["customer_id"] is not None:
        f = customer_figures.c
        conn.execute(update(customer_figures)
                     .where(f.customer_id == order["customer_id"])
                     .values(refunded=f.refunded + total, net_spend=f.net_spend - total))
    hooks.return_recorded(conn, hooks.RecordedReturn(
        return_id=int(return_id), order_id=int(order["id"]),
        customer_id=None if order["customer_id"] is None else int(order["customer_id"]),
        returned_at=returned_at, amount=total, order_total=order["total_amount"],
        full=order["refunded_amount"] + total >= order["total_amount"],
        settles_points_in_money=settles_points_in_money,
        lines=tuple(hooks.ReturnedLine(int(lines[no]["id"]), no, q, a)
                    for no, q, a in wanted if no in lines)), actor=actor, now=now)
    audit.record(conn, actor, "return.recorded", entity="order", entity_id=order["id"],
                 details={"return_id": int(return_id), "amount": str(total),
                          "external_id": ret.external_id})
    webhooks.enqueue(conn, "return.recorded", [{"order_id": int(order["id"]),
                                               "return_id": int(return_id),
                                               "amount": str(total)}])
    return {"status": "created", "return_id": int(return_id), "order_id": int(order["id"]),
            "amount": str(total)}


def allocate(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split ``total`` over ``weights`` in proportion, to the fen, summing exactly to ``total``
    (largest remainders get the odd fen)."""
    base = sum(weights, Decimal(0))
    if not weights:
        return []
    if base == 0:
        return [Decimal("0.00")] * (len(weights) - 1) + [total]
    raw = [total * w / base for w in weights]
    floored = [r.quantize(Decimal("0.01"), rounding="ROUND_FLOOR") for r in raw]
    left = int((total - sum(floored, Decimal(0))) * 100)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - floored[i], reverse=True)
    for i in order[:left]:
        floored[i] += Decimal("0.01")
    return floored


def _share(line: dict[str, Any], quantity: Decimal) -> Decimal:
    """The paid amount of ``quantity`` units of a line, in proportion; the last units returned
    take whatever fen remain, so a line refunded in parts never refunds more than it cost."""
    left_qty = line["quantity"] - line["returned_quantity"]
    if quantity >= left_qty:
        already = fen(line["amount"] * line["returned_quantity"] / line["quantity"])
        return line["amount"] - already
    return fen(line["amount"] * quantity / line["quantity"])


__all__ = ["record_return", "dt"]
