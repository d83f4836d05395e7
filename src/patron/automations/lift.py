"""Lift of an automation's or a campaign's arms against its control group.

Each customer assigned to an arm (``experiment_assignments``) is followed for ``days`` days
from the moment of assignment: did they buy (conversion), how many orders, how much revenue
(order totals). Only customers whose whole window has passed are counted, so that a late arm
is not compared on a shorter window. Per arm against control, by
:mod:`patron.experiments.stats`: the difference in conversion with Newcombe's interval and the
pooled z-test; the differences in revenue and orders per customer by Welch's t-test and
interval.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, func, select

from patron.automations.tables import experiment_assignments
from patron.experiments import stats
from patron.orders.tables import orders

CONFIDENCE = 0.95


def _comparison(c: stats.Comparison | None, digits: int = 4) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"arm": round(c.arm, digits), "control": round(c.control, digits),
            "difference": round(c.difference, digits), "ci_low": round(c.low, digits),
            "ci_high": round(c.high, digits), "p_value": round(c.p_value, 6),
            "significant": c.significant,
            "relative": None if c.relative is None else round(c.relative, digits)}


def report(conn: Connection, *, source: str, source_id: int, days: int,
           now: dt.datetime) -> dict[str, Any]:
    """Per arm: customers, converted, conversion, orders, revenue, revenue per customer; and
    each arm against control."""
    return _report_in_python(conn, source=source, source_id=source_id, days=days, now=now)


def _report_in_python(conn: Connection, *, source: str, source_id: int, days: int,
                      now: dt.datetime) -> dict[str, Any]:
    x, o = experiment_assignments.c, orders.c
    window = dt.timedelta(days=days)
    assigned = {int(r.customer_id): (r.arm, r.assigned_at) for r in conn.execute(
        select(x.customer_id, x.arm, x.assigned_at).where(
            x.source == source, x.source_id == source_id, x.assigned_at <= now - window))}
    revenue_of: dict[int, float] = dict.fromkeys(assigned, 0.0)
    orders_of: dict[int, int] = dict.fromkeys(assigned, 0)
    ids = sorted(assigned)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for cid, at, total in conn.execute(select(o.customer_id, o.purchased_at,
                                                  o.total_amount).where(
                o.customer_id.in_(chunk))):
            _arm, since = assigned[int(cid)]
            if since < at <= since + window:
                orders_of[int(cid)] += 1
                revenue_of[int(cid)] += float(total)
    revenue: dict[str, list[float]] = defaultdict(list)
    n_orders: dict[str, list[int]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for cid, (arm, _since) in assigned.items():
        revenue[arm].append(revenue_of[cid])
        n_orders[arm].append(orders_of[cid])
        c = counts[arm]
        c[0] += 1
        c[1] += 1 if orders_of[cid] else 0
        c[2] += orders_of[cid]
    return _summarise(conn, source, source_id, days, now, revenue, n_orders, counts)


def _summarise(conn: Connection, source: str, source_id: int, days: int, now: dt.datetime,
               revenue: dict[str, list[float]], n_orders: dict[str, list[int]],
               counts: dict[str, list[int]]) -> dict[str, Any]:
    x = experiment_assignments.c
    pending = int(conn.execute(select(func.count()).select_from(experiment_assignments).where(
        x.source == source, x.source_id == source_id,
        x.assigned_at > now - dt.timedelta(days=days))).scalar_one())
    arms: dict[str, dict[str, Any]] = {}
    for arm in sorted(counts):
        n, converted, orders_total = counts[arm]
        total = sum(revenue[arm])
        arms[arm] = {"customers": n, "converted": converted,
                     "conversion": round(converted / n, 4) if n else None,
                     "orders": orders_total, "revenue": round(total, 2),
                     "revenue_per_customer": round(total / n, 2) if n else None}
    versus: dict[str, Any] = {}
    control = counts.get("control")
    for arm in arms:
        if arm == "control" or control is None:
            continue
        n1, n0 = counts[arm][0], control[0]
        conv = (stats.compare_proportions(counts[arm][1], n1, control[1], n0,
                                          confidence=CONFIDENCE) if n1 and n0 else None)
        rev = orders_per = None
        if n1 >= 2 and n0 >= 2:
            rev = stats.compare_means(sum(revenue[arm]), sum(v * v for v in revenue[arm]), n1,
                                      sum(revenue["control"]),
                                      sum(v * v for v in revenue["control"]), n0,
                                      confidence=CONFIDENCE)
            orders_per = stats.compare_means(
                sum(n_orders[arm]), sum(v * v for v in n_orders[arm]), n1,
                sum(n_orders["control"]), sum(v * v for v in n_orders["control"]), n0,
                confidence=CONFIDENCE)
        versus[arm] = {"conversion": _comparison(conv),
                       "revenue_per_customer": _comparison(rev, 2),
                       "orders_per_customer": _comparison(orders_per),
                       "incremental_revenue": (round(rev.difference * n1, 2)
                                               if rev is not None else None)}
    return {"source": source, "days": days, "as_of": now, "confidence": CONFIDENCE,
            "arms": arms, "versus_control": versus, "window_not_over": pending}
