"""Lift of an automation's or a campaign's arms against its control group.

Each customer assigned to an arm (``experiment_assignments``) is followed for ``days`` days
from the moment of assignment: did they buy (conversion), how many orders, how much revenue
(order totals). Only customers whose whole window has passed are counted, so that a late arm
is not compared on a shorter window. Per arm against control, by
:mod:`patron.experiments.stats`: the difference in conversion with Newcombe's interval and the
pooled z-test (also for the unsubscribe rate); the differences in revenue and orders per
customer by Welch's t-test and interval; the incremental revenue with its interval and the ROI
after the arm's cost (redeemed coupon discounts, points, messages). Orders are attributed by
purchase window and by coupon redemption (docs/automations.md#attribution); a daily series of
cumulative conversion and revenue per customer feeds the charts.

The database does the counting: one grouped query joins the assignments to the orders of
their windows and returns one row per customer (orders, revenue, the day of the first order);
the other figures are one grouped query each, per arm. Python only adds up per-customer rows.
Money stays ``Decimal``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection, Integer, and_, cast, func, or_, select, type_coerce

from patron.analytics.service import floor_days
from patron.automations.tables import (
    automation_entries,
    automation_step_runs,
    experiment_assignments,
)
from patron.campaigns.tables import campaign_recipients
from patron.config import get_settings
from patron.coupons.tables import coupon_operations, coupon_uses, coupons
from patron.db import Money, utcnow
from patron.errors import FieldError, ValidationFailed
from patron.experiments import stats
from patron.loyalty.model import redemption_value
from patron.loyalty.service import need
from patron.loyalty.tables import loyalty_consents, loyalty_members, loyalty_programs
from patron.messaging.tables import messages
from patron.orders.tables import orders
from patron.security.model import Actor

CONFIDENCE = 0.95
CONTROL = "control"
CENT = Decimal("0.01")
# Withdrawing one of these consents is an unsubscribe (privacy is not a marketing channel).
MARKETING_CONSENTS = ("sms", "email", "wechat", "app")


@dataclass(frozen=True)
class Source:
    """What assigned the customers: an automation or a campaign, by id; its loyalty program
    (whose consents and point value count); for a campaign, the cost of each of its messages
    (an automation's messages cost ``PATRON_MESSAGE_COSTS`` of their channel)."""

    kind: str  # automation | campaign
    id: int
    program_id: int
    message_cost: Decimal | None = None


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
    return -floor_days(conn, since, at)


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


def _done(source: Source, action: str, key: str) -> Any:
    """What the source did for its customers, as ``(customer_id, ref, at)``: the coupon issue,
    message or points of each ``issue_coupon``/``send_message``/``grant_points`` step an
    automation ran (its step's result), or of each recipient a campaign reached."""
    if source.kind == "automation":
        e, r = automation_entries.c, automation_step_runs.c
        return (select(e.customer_id.label("customer_id"),
                       r.result[key].as_integer().label("ref"), r.at.label("at"))
                .select_from(automation_step_runs.join(automation_entries, e.id == r.entry_id))
                .where(e.automation_id == source.id, r.kind == action, r.outcome == "done")
                .subquery(action))
    c = campaign_recipients.c
    column = {"issue_coupon": c.coupon_issue_id, "send_message": c.message_id}[action]
    return (select(c.customer_id.label("customer_id"), column.label("ref"),
                   c.processed_at.label("at"))
            .where(c.campaign_id == source.id, c.state == "sent", column.is_not(None))
            .subquery(action))


def _since(conn: Connection, at: Any, since: Any, days: int) -> Any:
    """From the assignment on (a step may run in the same moment) to the window's end."""
    return and_(at >= since, day_number(conn, at, since) <= days)


def _coupons(conn: Connection, source: Source, *, days: int, now: dt.datetime
             ) -> dict[str, tuple[int, int, Decimal]]:
    """Per arm: coupons the source issued to its customers, how many of them were redeemed
    within the window (a committed use: a redemption a refund gave back no longer counts), and
    their discounts."""
    a = _assigned(source, now, days)
    issued = _done(source, "issue_coupon", "coupon_issue_id")
    c, u = coupons.c, coupon_uses.c
    out: dict[str, tuple[int, int, Decimal]] = {}
    for arm, n_issued, redeemed, discount in conn.execute(
            select(a.c.arm, func.count(func.distinct(c.id)),
                   func.count(func.distinct(u.coupon_id)),
                   type_coerce(func.coalesce(func.sum(u.discount), 0), Money))
            .select_from(a.join(issued, issued.c.customer_id == a.c.customer_id)
                         .join(coupons, c.issue_id == issued.c.ref)
                         .outerjoin(coupon_uses, and_(
                             u.coupon_id == c.id, u.status == "committed",
                             _since(conn, u.finished_at, a.c.assigned_at, days))))
            .group_by(a.c.arm)):
        out[arm] = (int(n_issued), int(redeemed), Decimal(discount))
    return out


def _unsubscribed(conn: Connection, source: Source, *, days: int, now: dt.datetime
                  ) -> dict[str, int]:
    """Per arm: customers who withdrew a marketing consent (any channel) in the source's
    program within the window."""
    a = _assigned(source, now, days)
    m, k = loyalty_members.c, loyalty_consents.c
    return {arm: int(n) for arm, n in conn.execute(
        select(a.c.arm, func.count(func.distinct(a.c.customer_id)))
        .select_from(a.join(loyalty_members, and_(m.customer_id == a.c.customer_id,
                                                  m.program_id == source.program_id))
                     .join(loyalty_consents, and_(
                         k.member_id == m.id, k.granted.is_(False),
                         k.kind.in_(MARKETING_CONSENTS),
                         _since(conn, k.at, a.c.assigned_at, days))))
        .group_by(a.c.arm))}


def _costs(conn: Connection, source: Source, *, days: int, now: dt.datetime, arms: list[str],
           coupon_discounts: dict[str, Decimal]) -> dict[str, dict[str, Any]]:
    """Per arm, within the window: coupon discounts redeemed, points granted at the program's
    value of a point, messages queued (not suppressed) at their unit cost."""
    a = _assigned(source, now, days)
    out: dict[str, dict[str, Any]] = {arm: {
        "coupons": Decimal(0), "points": 0, "points_value": Decimal(0), "messages": 0,
        "messages_value": Decimal(0)} for arm in arms}
    for arm, discount in coupon_discounts.items():
        out[arm]["coupons"] = discount
    sent = _done(source, "send_message", "message_id")
    msg = messages.c
    per_channel = {k: Decimal(str(v)) for k, v in get_settings().message_costs.items()}
    for arm, channel, n in conn.execute(
            select(a.c.arm, msg.channel, func.count(msg.id))
            .select_from(a.join(sent, sent.c.customer_id == a.c.customer_id)
                         .join(messages, msg.id == sent.c.ref))
            .where(msg.state != "suppressed",
                   _since(conn, msg.created_at, a.c.assigned_at, days))
            .group_by(a.c.arm, msg.channel)):
        unit = (source.message_cost if source.message_cost is not None
                else per_channel.get(channel, Decimal(0)))
        out[arm]["messages"] += int(n)
        out[arm]["messages_value"] += unit * int(n)
    if source.kind == "automation":
        granted = _done(source, "grant_points", "points")
        rate = int(conn.execute(select(loyalty_programs.c.redeem_points_per_yuan).where(
            loyalty_programs.c.id == source.program_id)).scalar_one())
        for arm, points in conn.execute(
                select(a.c.arm, func.sum(granted.c.ref))
                .select_from(a.join(granted, granted.c.customer_id == a.c.customer_id))
                .where(_since(conn, granted.c.at, a.c.assigned_at, days))
                .group_by(a.c.arm)):
            out[arm]["points"] = int(points or 0)
            out[arm]["points_value"] = redemption_value(int(points or 0), rate)
    for cost in out.values():
        cost["total"] = money(cost["coupons"] + cost["points_value"] + cost["messages_value"])
        for key in ("coupons", "points_value", "messages_value"):
            cost[key] = money(cost[key])
    return out


def _by_coupon(conn: Connection, source: Source, *, days: int, now: dt.datetime
               ) -> dict[str, tuple[int, Decimal]]:
    """Per arm: orders that redeemed a coupon the source issued (the coupon operation names the
    order, or the till's reference to it), placed from the assignment up to ``now``; each
    order once, however many of the source's coupons it used."""
    a = _assigned(source, now, days)
    issued = _done(source, "issue_coupon", "coupon_issue_id")
    c, u, op, o = coupons.c, coupon_uses.c, coupon_operations.c, orders.c
    paid_for = or_(op.order_id == o.id, and_(op.ref_external_id == o.external_id,
                                            op.ref_channel_id == o.channel_id,
                                            op.ref_scope_store_id == o.scope_store_id))
    attributed = (select(a.c.arm, o.id, o.total_amount).distinct()
                  .select_from(a.join(issued, issued.c.customer_id == a.c.customer_id)
                               .join(coupons, c.issue_id == issued.c.ref)
                               .join(coupon_uses, and_(u.coupon_id == c.id,
                                                       u.status == "committed"))
                               .join(coupon_operations, op.id == u.operation_id)
                               .join(orders, paid_for))
                  .where(o.purchased_at > a.c.assigned_at, o.purchased_at <= now)
                  .subquery("attributed"))
    return {arm: (int(n), Decimal(total)) for arm, n, total in conn.execute(
        select(attributed.c.arm, func.count(),
               type_coerce(func.coalesce(func.sum(attributed.c.total_amount), 0), Money))
        .group_by(attributed.c.arm))}


@dataclass
class _Arm:
    customers: int = 0
    converted: int = 0
    orders: int = 0
    orders_sq: int = 0
    revenue: Decimal = Decimal(0)
    revenue_sq: Decimal = Decimal(0)
    first_days: dict[int, int] = field(default_factory=dict)


def _series(arm: _Arm, revenue_days: dict[int, Decimal], days: int) -> list[dict[str, Any]]:
    """Cumulative conversion and revenue per customer by day since assignment, day 1 to
    ``days``."""
    out = []
    converted, revenue = 0, Decimal(0)
    for day in range(1, days + 1):
        converted += arm.first_days.get(day, 0)
        revenue += revenue_days.get(day, Decimal(0))
        out.append({"day": day, "conversion": round(converted / arm.customers, 4),
                    "revenue_per_customer": money(revenue / arm.customers)})
    return out


def _rate(x: int, n: int) -> float | None:
    return round(x / n, 4) if n else None


def report(conn: Connection, *, source: Source, days: int, now: dt.datetime
           ) -> dict[str, Any]:
    """Per arm: customers, conversion, orders, revenue and revenue per customer, coupons
    issued and redeemed, unsubscribes, cost, attribution, a daily series; each arm against
    control (differences with intervals and tests, incremental revenue, ROI)."""
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
            first = int(row.first_day)
            arm.first_days[first] = arm.first_days.get(first, 0) + 1
    x = experiment_assignments.c
    pending = int(conn.execute(select(func.count()).select_from(experiment_assignments).where(
        x.source == source.kind, x.source_id == source.id,
        x.assigned_at > now - dt.timedelta(days=days))).scalar_one())
    coupon_figures = _coupons(conn, source, days=days, now=now) if arms else {}
    unsubscribed = _unsubscribed(conn, source, days=days, now=now) if arms else {}
    costs = (_costs(conn, source, days=days, now=now, arms=list(arms),
                    coupon_discounts={k: v[2] for k, v in coupon_figures.items()})
             if arms else {})
    by_coupon = _by_coupon(conn, source, days=days, now=now) if arms else {}
    by_day = revenue_by_day(conn, source, days=days, now=now) if arms else {}
    out_arms: dict[str, dict[str, Any]] = {}
    for code in sorted(arms):
        a = arms[code]
        n = a.customers
        issued, redeemed, _discount = coupon_figures.get(code, (0, 0, Decimal(0)))
        cost = costs[code]
        coupon_orders, coupon_revenue = by_coupon.get(code, (0, Decimal(0)))
        out_arms[code] = {
            "customers": n, "converted": a.converted, "conversion": _rate(a.converted, n),
            "orders": a.orders, "revenue": money(a.revenue),
            "revenue_per_customer": money(a.revenue / n),
            "coupons_issued": issued, "coupons_redeemed": redeemed,
            "coupon_redemption_rate": _rate(redeemed, issued),
            "unsubscribed": unsubscribed.get(code, 0),
            "unsubscribe_rate": _rate(unsubscribed.get(code, 0), n),
            "cost": cost,
            "attribution": {
                "purchase_window": {"orders": a.orders, "revenue": money(a.revenue)},
                "coupon": {"orders": coupon_orders, "revenue": money(coupon_revenue)}},
            "series": _series(a, by_day.get(code, {}), days)}
    versus: dict[str, Any] = {}
    control = arms.get(CONTROL)
    for code, a in sorted(arms.items()):
        if code == CONTROL or control is None:
            continue
        n1, n0 = a.customers, control.customers
        conv = stats.compare_proportions(a.converted, n1, control.converted, n0,
                                         confidence=CONFIDENCE)
        unsub = stats.compare_proportions(unsubscribed.get(code, 0), n1,
                                          unsubscribed.get(CONTROL, 0), n0,
                                          confidence=CONFIDENCE)
        rev = orders_per = None
        incremental: dict[str, Any] | None = None
        roi = None
        if n1 >= 2 and n0 >= 2:
            rev = stats.compare_means(float(a.revenue), float(a.revenue_sq), n1,
                                      float(control.revenue), float(control.revenue_sq), n0,
                                      confidence=CONFIDENCE)
            orders_per = stats.compare_means(a.orders, a.orders_sq, n1, control.orders,
                                             control.orders_sq, n0, confidence=CONFIDENCE)
            value = money((a.revenue / n1 - control.revenue / n0) * n1)
            incremental = {"value": value, "ci_low": money(Decimal(rev.low) * n1),
                           "ci_high": money(Decimal(rev.high) * n1)}
            total_cost = out_arms[code]["cost"]["total"]
            if total_cost:
                roi = round((value - total_cost) / total_cost, 4)
        versus[code] = {"conversion": _comparison(conv),
                        "unsubscribe_rate": _comparison(unsub),
                        "revenue_per_customer": _money_comparison(rev),
                        "orders_per_customer": _comparison(orders_per),
                        "incremental_revenue": incremental, "roi": roi}
    return {"source": source.kind, "days": days, "as_of": now, "confidence": CONFIDENCE,
            "arms": out_arms, "versus_control": versus, "window_not_over": pending}

def lift(conn: Connection, *, actor: Actor, permission: str, source: Callable[[], Source],
         days: int = 30, now: dt.datetime | None = None) -> dict[str, Any]:
    """The report of an automation or a campaign for an actor holding ``permission``: checked
    first, then ``days`` (1 to 365), then ``source()`` finds it (NotFound for an unknown
    code)."""
    need(actor, permission)
    if not 1 <= days <= 365:
        raise ValidationFailed("validation_failed", fields=[FieldError(
            "days", "less_than_equal", {"le": 365})])
    return report(conn, source=source(), days=days, now=now or utcnow())
