"""Lift of an automation's or a campaign's arms against its control group.

Each customer assigned to an arm (``experiment_assignments``) is followed for ``days`` days
from the moment of assignment: did they buy (conversion), how many orders, how much revenue
(order totals). Only customers whose whole window has passed are counted, so that a late arm
is not compared on a shorter window. Per arm against control, by
:mod:`patron.experiments.stats`: the difference in conversion with Newcombe's interval and the
pooled z-test; the differences in revenue and orders per customer by Welch's t-test and
interval.

The database does the counting: one grouped query joins the assignments to the orders of
their windows and returns one row per customer (orders, revenue, the day of the first order);
Python only adds those rows up per arm. Money stays ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection, Integer, and_, cast, func, select, type_coerce

from patron.analytics.service import _floor_days
from patron.automations.tables import experiment_assignments
from patron.db import Money, utcnow
from patron.errors import FieldError, ValidationFailed
from patron.experiments import stats
from patron.loyalty.service import need
from patron.orders.tables import orders
from patron.security.model import Actor

CONFIDENCE = 0.95
CONTROL = "control"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Source:
    """What assigned the customers: an automation or a campaign, by id."""

    kind: str  # automation | campaign
    id: int


def money(value: Decimal | float | int) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _comparison(c: stats.Comparison | None, digits: int = 4) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"arm": round(c.arm, digits), "control": round(c.control, digits),
            "difference": round(c.difference, digits), "ci_low": round(c.low, digits),
            "ci_high": round(c.high, digits), "p_value": round(c.p_value, 6),
            "significant": c.significant,
            "relative": None if c.relative is None else round(c.relative, digits)}


def _money_comparison(c: stats.Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"arm": money(c.arm), "control": money(c.control), "difference": money(c.difference),
            "ci_low": money(c.low), "ci_high": money(c.high), "p_value": round(c.p_value, 6),
            "significant": c.significant,
            "relative": None if c.relative is None else round(c.relative, 4)}


def day_number(conn: Connection, at: Any, since: Any) -> Any:
    """The day since assignment a moment falls on: 1 for (since, since + 1 day], 2 for the
    next day... (whole days rounded up, exact to the microsecond on either database)."""
    return -_floor_days(conn, since, at)


def _assigned(source: Source, now: dt.datetime, days: int) -> Any:
    x = experiment_assignments.c
    return (select(x.customer_id, x.arm, x.assigned_at)
            .where(x.source == source.kind, x.source_id == source.id,
                   x.assigned_at <= now - dt.timedelta(days=days))
            .subquery("assigned"))


def _in_window(conn: Connection, at: Any, since: Any, days: int) -> Any:
    return and_(at > since, day_number(conn, at, since) <= days)


def per_customer(conn: Connection, source: Source, *, days: int, now: dt.datetime) -> Any:
    """One row per assigned customer whose window is over: arm, orders and revenue in the
    window, and the day of the first order (None without one). One grouped query."""
    a = _assigned(source, now, days)
    o = orders.c
    day = day_number(conn, o.purchased_at, a.c.assigned_at)
    return conn.execute(
        select(a.c.customer_id, a.c.arm, func.count(o.id).label("orders"),
               type_coerce(func.coalesce(func.sum(o.total_amount), 0), Money).label("revenue"),
               func.min(day).label("first_day"))
        .select_from(a.outerjoin(orders, and_(
            o.customer_id == a.c.customer_id,
            _in_window(conn, o.purchased_at, a.c.assigned_at, days))))
        .group_by(a.c.customer_id, a.c.arm))


def revenue_by_day(conn: Connection, source: Source, *, days: int, now: dt.datetime
                   ) -> dict[str, dict[int, Decimal]]:
    """Revenue per arm and day since assignment (only days with orders)."""
    a = _assigned(source, now, days)
    o = orders.c
    day = cast(day_number(conn, o.purchased_at, a.c.assigned_at), Integer).label("day")
    out: dict[str, dict[int, Decimal]] = defaultdict(dict)
    for arm, d, revenue in conn.execute(
            select(a.c.arm, day, type_coerce(func.sum(o.total_amount), Money))
            .select_from(a.join(orders, and_(
                o.customer_id == a.c.customer_id,
                _in_window(conn, o.purchased_at, a.c.assigned_at, days))))
            .group_by(a.c.arm, day)):
        out[arm][int(d)] = Decimal(revenue)
    return out


@dataclass
class _Arm:
    customers: int = 0
    converted: int = 0
    orders: int = 0
    orders_sq: int = 0
    revenue: Decimal = Decimal(0)
    revenue_sq: Decimal = Decimal(0)
    first_days: dict[int, int] | None = None


def report(conn: Connection, *, source: Source, days: int, now: dt.datetime
           ) -> dict[str, Any]:
    """Per arm: customers, converted, conversion, orders, revenue, revenue per customer; and
    each arm against control."""
    arms: dict[str, _Arm] = defaultdict(_Arm)
    for row in per_customer(conn, source, days=days, now=now):
        arm = arms[row.arm]
        n_orders, revenue = int(row.orders), Decimal(row.revenue)
        arm.customers += 1
        arm.orders += n_orders
        arm.orders_sq += n_orders * n_orders
        arm.revenue += revenue
        arm.revenue_sq += revenue * revenue
        if n_orders:
            arm.converted += 1
            if arm.first_days is None:
                arm.first_days = {}
            first = int(row.first_day)
            arm.first_days[first] = arm.first_days.get(first, 0) + 1
    x = experiment_assignments.c
    pending = int(conn.execute(select(func.count()).select_from(experiment_assignments).where(
        x.source == source.kind, x.source_id == source.id,
        x.assigned_at > now - dt.timedelta(days=days))).scalar_one())
    out_arms: dict[str, dict[str, Any]] = {}
    for code in sorted(arms):
        a = arms[code]
        n = a.customers
        out_arms[code] = {
            "customers": n, "converted": a.converted,
            "conversion": round(a.converted / n, 4) if n else None,
            "orders": a.orders, "revenue": money(a.revenue),
            "revenue_per_customer": money(a.revenue / n) if n else None}
    versus: dict[str, Any] = {}
    control = arms.get(CONTROL)
    for code, a in sorted(arms.items()):
        if code == CONTROL or control is None:
            continue
        n1, n0 = a.customers, control.customers
        conv = (stats.compare_proportions(a.converted, n1, control.converted, n0,
                                          confidence=CONFIDENCE) if n1 and n0 else None)
        rev = orders_per = None
        if n1 >= 2 and n0 >= 2:
            rev = stats.compare_means(float(a.revenue), float(a.revenue_sq), n1,
                                      float(control.revenue), float(control.revenue_sq), n0,
                                      confidence=CONFIDENCE)
            orders_per = stats.compare_means(a.orders, a.orders_sq, n1, control.orders,
                                             control.orders_sq, n0, confidence=CONFIDENCE)
        versus[code] = {"conversion": _comparison(conv),
                        "revenue_per_customer": _money_comparison(rev),
                        "orders_per_customer": _comparison(orders_per),
                        "incremental_revenue": (
                            money((a.revenue / n1 - control.revenue / n0) * n1)
                            if rev is not None else None)}
    return {"source": source.kind, "days": days, "as_of": now, "confidence": CONFIDENCE,
            "arms": out_arms, "versus_control": versus, "window_not_over": pending}


def lift(conn: Connection, *, actor: Actor, permission: str, kind: str,
         source_id: Callable[[], int], days: int = 30, now: dt.datetime | None = None
         ) -> dict[str, Any]:
    """The report of an automation or a campaign (``kind``) for an actor holding
    ``permission``: checked first, then ``days`` (1 to 365), then ``source_id()`` finds the
    source (NotFound for an unknown code)."""
    need(actor, permission)
    if not 1 <= days <= 365:
        raise ValidationFailed("validation_failed", fields=[FieldError(
            "days", "less_than_equal", {"le": 365})])
    return report(conn, source=Source(kind, source_id()), days=days, now=now or utcnow())
