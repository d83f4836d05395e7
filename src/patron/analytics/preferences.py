"""What a customer tends to buy, when, where and how: read from the running counters kept
with the figures (``customer_figures.counters``) and the order lines, for any number of
customers.

- **hour slots** and **weekdays**: shares of orders, from the ``hour`` and ``weekday``
  counters, which count each order at the *store's* local hour and ISO weekday (the default
  time zone, Asia/Shanghai, without a store);
- **favourite categories, store, channel**: the keys with the most orders (more spend, then the
  smaller key, break ties), as on the customer page;
- **favourite SKUs**: the SKUs on the most orders (then the larger quantity, then the SKU);
- **price sensitivity**: spend at a discount over gross spend. A line is at a discount when it
  has a line discount, or when its order has an order-level discount (the order's discount
  beyond its lines' discounts). Gross is before any discount; returns are not subtracted;
- **basket size**: the median number of items (sum of line quantities) per order with lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    case,
    cast,
    distinct,
    func,
    or_,
    select,
    type_coerce,
)

from patron.customers import figures as figs
from patron.customers.queries import visible_customer
from patron.db import Money
from patron.errors import Forbidden
from patron.orders.tables import order_lines, orders
from patron.org.tables import channels, stores
from patron.security.model import Actor

# (slot, first hour, end hour): local hours [first, end); every other hour is "night".
HOUR_SLOTS: tuple[tuple[str, int, int], ...] = (
    ("morning", 6, 11), ("lunch", 11, 14), ("afternoon", 14, 17), ("evening", 17, 22))
SLOTS = (*(s for s, _a, _b in HOUR_SLOTS), "night")
WEEKDAYS = (1, 2, 3, 4, 5, 6, 7)  # ISO: Monday = 1
TOP = 5
# IN lists stay well under every driver's bind-parameter limit.
CHUNK = 5_000


# --- rules (plain Python) -------------------------------------------------------------------

def hour_slot(hour: int) -> str:
    """The slot of a local hour (0-23)."""
    if not 0 <= hour <= 23:
        raise ValueError(f"hour out of range: {hour}")
    for slot, first, end in HOUR_SLOTS:
        if first <= hour < end:
            return slot
    return "night"


def price_sensitivity(discounted: Decimal, gross: Decimal) -> float | None:
    """Share of gross spend bought at a discount, 0..1 to four places; ``None`` without spend."""
    if gross <= 0:
        return None
    share = min(max(Decimal(discounted) / Decimal(gross), Decimal(0)), Decimal(1))
    return float(share.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def median(values: Sequence[Decimal]) -> Decimal | None:
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def shares(counts: dict[Any, int], keys: Iterable[Any]) -> list[tuple[Any, int, float]]:
    """(key, count, share) for every key in order, shares of the total to four places."""
    total = sum(counts.values())
    return [(k, counts.get(k, 0), round(counts.get(k, 0) / total, 4) if total else 0.0)
            for k in keys]


@dataclass
class _Acc:
    categories: list[dict[str, Any]] = field(default_factory=list)
    skus: list[dict[str, Any]] = field(default_factory=list)
    slots: dict[str, int] = field(default_factory=dict)
    weekdays: dict[int, int] = field(default_factory=dict)
    store: dict[str, Any] | None = None
    channel: dict[str, Any] | None = None
    discounted: Decimal = Decimal("0.00")
    gross: Decimal = Decimal("0.00")
    basket: list[Decimal] = field(default_factory=list)


# --- SQL ------------------------------------------------------------------------------------

def _read_counters(conn: Connection, ids: list[int], acc: dict[int, _Acc]) -> None:
    store_names = dict(conn.execute(select(stores.c.code, stores.c.name)).all())
    channel_names = dict(conn.execute(select(channels.c.code, channels.c.name)).all())
    for cid, counters in figs.read_counters(conn, ids).items():
        one = acc[cid]
        one.categories = [{"category": key, "orders": n, "spend": spend}
                          for key, n, spend in figs.ranked(counters, "category")[:TOP]]
        store = next(iter(figs.ranked(counters, "store")), None)
        if store is not None:
            one.store = {"code": store[0], "name": store_names.get(store[0]),
                         "orders": store[1]}
        channel = next(iter(figs.ranked(counters, "channel")), None)
        if channel is not None:
            one.channel = {"code": channel[0], "name": channel_names.get(channel[0]),
                           "orders": channel[1]}
        for hour, (n, _spend) in counters.get("hour", {}).items():
            slot = hour_slot(int(hour))
            one.slots[slot] = one.slots.get(slot, 0) + int(n)
        for day, (n, _spend) in counters.get("weekday", {}).items():
            one.weekdays[int(day)] = int(n)


def _read_skus(conn: Connection, ids: list[int], acc: dict[int, _Acc]) -> None:
    o, ln = orders.c, order_lines.c
    n_orders = func.count(distinct(o.id))
    qty = func.sum(ln.quantity)
    per_sku = (select(o.customer_id, ln.sku, func.max(ln.name).label("name"),
                      n_orders.label("orders"), qty.label("quantity"),
                      func.row_number().over(partition_by=o.customer_id,
                                             order_by=(n_orders.desc(), qty.desc(), ln.sku))
                      .label("rn"))
               .join(orders, o.id == ln.order_id)
               .where(o.customer_id.in_(ids))
               .group_by(o.customer_id, ln.sku).subquery())
    for r in conn.execute(select(per_sku).where(per_sku.c.rn <= TOP)
                          .order_by(per_sku.c.customer_id, per_sku.c.rn)).mappings():
        acc[int(r["customer_id"])].skus.append({
            "sku": r["sku"], "name": r["name"], "orders": int(r["orders"]),
            "quantity": r["quantity"]})


def _read_discounts_and_baskets(conn: Connection, ids: list[int], acc: dict[int, _Acc]
                                ) -> None:
    o, ln = orders.c, order_lines.c
    per_order = (select(
        ln.order_id,
        func.sum(ln.discount).label("line_discount"),
        func.sum(case((ln.discount > 0, ln.amount + ln.discount), else_=0))
        .label("discounted_lines"),
        func.sum(ln.quantity).label("item_count"))
        .join(orders, o.id == ln.order_id)
        .where(o.customer_id.in_(ids))
        .group_by(ln.order_id).subquery())
    # Money columns hold integer fen: sums stay exact and are read back as yuan.
    line_discount = func.coalesce(per_order.c.line_discount, 0)
    order_level = o.discount_amount > line_discount
    discounted = case((order_level, o.gross_amount),
                      else_=func.coalesce(per_order.c.discounted_lines, 0))
    for cid, disc, gross in conn.execute(
            select(o.customer_id, type_coerce(func.sum(discounted), Money),
                   type_coerce(func.sum(o.gross_amount), Money))
            .select_from(orders.outerjoin(per_order, per_order.c.order_id == o.id))
            .where(o.customer_id.in_(ids)).group_by(o.customer_id)):
        acc[int(cid)].discounted = disc or Decimal("0.00")
        acc[int(cid)].gross = gross or Decimal("0.00")
    # The median needs only the middle one or two orders of each customer.
    items = cast(per_order.c.item_count, BigInteger)
    ranked = (select(o.customer_id, items.label("item_count"),
                     func.row_number().over(partition_by=o.customer_id,
                                            order_by=(items, per_order.c.order_id)).label("rn"),
                     func.count().over(partition_by=o.customer_id).label("n"))
              .join(per_order, per_order.c.order_id == o.id).subquery())
    middle = or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == (ranked.c.n + 2) // 2)
    for cid, milli in conn.execute(select(ranked.c.customer_id, ranked.c.item_count)
                                   .where(middle)):
        acc[int(cid)].basket.append(Decimal(int(milli)) / 1000)


def _result(customer_id: int, one: _Acc) -> dict[str, Any]:
    basket = median(one.basket)
    return {
        "customer_id": customer_id,
        "orders": sum(one.slots.values()),
        "favourite_categories": one.categories,
        "favourite_skus": one.skus,
        "favourite_store": one.store,
        "favourite_channel": one.channel,
        "hour_slots": [{"slot": s, "orders": n, "share": share}
                       for s, n, share in shares(one.slots, SLOTS)],
        "weekdays": [{"weekday": d, "orders": n, "share": share}
                     for d, n, share in shares(one.weekdays, WEEKDAYS)],
        "price_sensitivity": price_sensitivity(one.discounted, one.gross),
        "discounted_spend": one.discounted,
        "gross_spend": one.gross,
        "basket_size": None if basket is None else basket.normalize(),
    }


def preferences_for(conn: Connection, customer_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Preferences of many customers at once (a fixed number of statements per 5,000
    customers), keyed by customer id. No scope check: callers decide who may see whom."""
    ids = sorted({int(i) for i in customer_ids})
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        acc = {cid: _Acc() for cid in chunk}
        _read_counters(conn, chunk, acc)
        _read_skus(conn, chunk, acc)
        _read_discounts_and_baskets(conn, chunk, acc)
        out.update((cid, _result(cid, acc[cid])) for cid in chunk)
    return out


def customer_preferences(conn: Connection, *, actor: Actor, customer_id: int
                         ) -> dict[str, Any]:
    """One customer's preferences; ``NotFound`` outside the actor's scope."""
    if not actor.can("customers.read"):
        raise Forbidden("forbidden", params={"permission": "customers.read"})
    visible_customer(conn, actor, customer_id)
    return preferences_for(conn, [customer_id])[customer_id]
