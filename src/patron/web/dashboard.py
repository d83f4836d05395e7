"""The home dashboard's figures: set-based queries over ``orders`` and ``customer_figures``.

Every query is bounded by a UTC range on ``orders.purchased_at`` (indexed), so its cost grows
with the period's orders, not the history. Days are the store-local calendar days of Patron's
default time zone (Asia/Shanghai).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Date, case, cast, distinct, func, literal, select, type_coerce

from patron.customers.tables import customer_figures, customers
from patron.db import Money
from patron.orders.tables import orders
from patron.security.model import Actor

ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class Summary:
    start: dt.date
    end: dt.date
    sales: Decimal  # net of refunds
    orders: int
    buyers: int  # distinct identified customers who bought
    member_orders: int
    customer_orders: int  # identified customers who are not members
    guest_orders: int  # no customer attached
    new_customers: int  # first order ever falls in the period
    returning_customers: int

    @property
    def member_share(self) -> Decimal | None:
        if not self.orders:
            return None
        return Decimal(self.member_orders) / Decimal(self.orders)


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: dt.date
    sales: Decimal
    orders: int


def utc_bounds(start: dt.date, end: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start 00:00 local, the day after end 00:00 local) in UTC."""
    lo = dt.datetime.combine(start, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.UTC)
    return lo, hi


def _scoped(query: Any, actor: Actor, lo: dt.datetime, hi: dt.datetime) -> Any:
    query = query.where(orders.c.purchased_at >= lo, orders.c.purchased_at < hi)
    if actor.store_ids is not None:
        # A store manager sees their stores' orders; online orders without a store are not theirs.
        query = query.where(orders.c.store_id.in_(sorted(actor.store_ids) or [-1]))
    return query


def summary(conn: Connection, *, actor: Actor, start: dt.date, end: dt.date,
            tz: ZoneInfo) -> Summary:
    lo, hi = utc_bounds(start, end, tz)
    net = type_coerce(func.coalesce(func.sum(orders.c.total_amount - orders.c.refunded_amount),
                                    0), Money)
    is_member = customers.c.is_member.is_(True)
    totals = conn.execute(_scoped(
        select(func.count(orders.c.id), net, func.count(distinct(orders.c.customer_id)),
               func.coalesce(func.sum(case((is_member, 1), else_=0)), 0),
               func.coalesce(func.sum(case((orders.c.customer_id.is_(None), 1), else_=0)), 0))
        .select_from(orders.outerjoin(customers, customers.c.id == orders.c.customer_id)),
        actor, lo, hi)).one()
    order_count, sales, buyers, member_orders, guest_orders = (int(totals[0]), totals[1],
                                                               int(totals[2]), int(totals[3]),
                                                               int(totals[4]))
    new = conn.execute(_scoped(
        select(func.count(distinct(orders.c.customer_id)))
        .select_from(orders.join(customer_figures,
                                 customer_figures.c.customer_id == orders.c.customer_id))
        .where(customer_figures.c.first_order_at >= lo), actor, lo, hi)).scalar_one()
    return Summary(start=start, end=end, sales=sales if sales is not None else ZERO,
                   orders=order_count, buyers=buyers, member_orders=member_orders,
                   customer_orders=order_count - member_orders - guest_orders,
                   guest_orders=guest_orders, new_customers=int(new),
                   returning_customers=buyers - int(new))


def _local_day(conn: Connection, tz: ZoneInfo, at: dt.datetime) -> Any:
    if conn.dialect.name == "postgresql":
        return cast(func.timezone(literal(tz.key), orders.c.purchased_at), Date)
    # SQLite has no time zone database: shift by the zone's current offset. Exact for zones
    # without daylight saving time, such as Asia/Shanghai.
    offset = at.astimezone(tz).utcoffset() or dt.timedelta()
    return func.date(orders.c.purchased_at, f"{int(offset.total_seconds() // 60):+d} minutes")


def daily_sales(conn: Connection, *, actor: Actor, start: dt.date, end: dt.date,
                tz: ZoneInfo) -> list[DayPoint]:
    """One point per local day from ``start`` to ``end``, days without orders as zero."""
    lo, hi = utc_bounds(start, end, tz)
    day = _local_day(conn, tz, hi).label("day")
    net = type_coerce(func.sum(orders.c.total_amount - orders.c.refunded_amount), Money)
    rows = conn.execute(_scoped(select(day, net, func.count(orders.c.id)), actor, lo, hi)
                        .group_by(day))
    found: dict[dt.date, tuple[Decimal, int]] = {}
    for d, sales, count in rows:
        key = d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d))
        found[key] = (sales or ZERO, int(count))
    out = []
    for i in range((end - start).days + 1):
        d = start + dt.timedelta(days=i)
        sales, count = found.get(d, (ZERO, 0))
        out.append(DayPoint(d, sales, count))
    return out


@dataclass(frozen=True, slots=True)
class Dashboard:
    today: Summary
    month: Summary
    trend: list[DayPoint]


def dashboard(conn: Connection, *, actor: Actor, today: dt.date, tz: ZoneInfo,
              days: int = 30) -> Dashboard:
    start = today - dt.timedelta(days=days - 1)
    return Dashboard(today=summary(conn, actor=actor, start=today, end=today, tz=tz),
                     month=summary(conn, actor=actor, start=start, end=today, tz=tz),
                     trend=daily_sales(conn, actor=actor, start=start, end=today, tz=tz))
