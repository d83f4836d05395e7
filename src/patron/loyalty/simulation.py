"""Rule and tier simulation: replay the last N months of a program's member orders against
proposed earning rules and/or a proposed tier structure, next to today's rules, writing nothing.

The orders, their lines, payments and returns are read with a few set-based queries; each order
is then evaluated by the same pure functions that earn points when an order is recorded
(``model.earn_for_order``, ``points_for_returned``, ``growth_for_returned``,
``qualifying_tier``): the simulation cannot drift from the engine. What the replay models and
what it leaves out (reviews and downgrades, manual grants, redemptions) is in
docs/loyalty-reports.md, "Simulation".
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection, and_, func, or_, select

from patron.config import get_settings
from patron.customers.tables import customers
from patron.db import utcnow
from patron.loyalty.earning import rule_versions, version_at
from patron.loyalty.model import (
    EarningRules,
    LineFacts,
    OrderFacts,
    TierDef,
    add_months,
    earn_for_order,
    growth_for_returned,
    points_for_returned,
    qualifying_tier,
)
from patron.loyalty.reports import _value, liability, scope_codes
from patron.loyalty.schemas import EarningRulesIn, Strict, TierIn
from patron.loyalty.service import _check_tier_ladder, _program, invalid, need
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_members,
    loyalty_order_earnings,
)
from patron.loyalty.tiering import SPEND_WINDOW, load_tiers
from patron.orders.tables import order_lines, order_payments, orders, return_lines, returns
from patron.org.tables import channels, stores
from patron.security.model import Actor

MAX_MONTHS = 36
TICK = 2000  # orders between two progress reports of a replay
# What share of a run each step stands for, for a progress bar (loading is about as long as one
# replay: docs/loyalty-reports.md, "How long it takes").
STEP_SHARES = {"load": 0.3, "replay_current": 0.3, "replay_proposed": 0.3, "compare": 0.1}


class SimulationIn(Strict):
    months: int = Field(default=12, ge=1, le=MAX_MONTHS)
    # The proposed earning rules (the shape of a rule version's rules); None: today's rules.
    rules: EarningRulesIn | None = None
    # The proposed tier structure (the shape of a program's tiers); None: today's tiers.
    tiers: list[TierIn] | None = Field(default=None, max_length=50)

    @model_validator(mode="after")
    def _something_proposed(self) -> SimulationIn:
        if self.rules is None and self.tiers is None:
            raise PydanticCustomError("simulation_nothing_proposed",
                                      "propose earning rules, tiers or both")
        return self


@dataclass(frozen=True, slots=True)
class ReplayOrder:
    order_id: int
    member_id: int
    purchased_at: dt.datetime
    facts: OrderFacts
    returned: Decimal  # refunded up to the end of the replay
    returned_lines: Mapping[int, Decimal]  # line_no -> refunded amount


@dataclass
class Outcome:
    """What one set of rules and tiers gives for the replayed orders."""

    points: int = 0
    clawed_back: int = 0
    growth: int = 0
    orders_earning: int = 0
    upgrades: int = 0
    by_month: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tiers: dict[int, TierDef | None] = field(default_factory=dict)


def replay(orders_: Sequence[ReplayOrder], *, rules: EarningRules, tiers: Sequence[TierDef],
           basis: str, members: Iterable[int], opening_growth: Mapping[int, int],
           prior_spend: Mapping[int, Sequence[tuple[dt.datetime, Decimal]]],
           month_of: Any, tick: Callable[[int], None] | None = None) -> Outcome:
    """Evaluate ``orders_`` (in purchase order) as the engine would have with ``rules`` and
    ``tiers``: each order earns by the tier its member held just before it (starting from the
    tier its figures at the start qualified for, upgraded at once as the figures rise, never
    lowered: reviews are not replayed), within the daily cap of its local day, and returns
    take back in proportion what the returned lines earned. ``tick(done)`` is called every
    ``TICK`` orders (a background run's progress)."""
    out = Outcome()
    by_spend = basis == "spend_12m"
    growth = defaultdict(int, opening_growth)
    windows: dict[int, deque[tuple[dt.datetime, Decimal]]] = {
        m: deque(prior_spend.get(m, ())) for m in members}
    spend = {m: sum((s for _, s in w), Decimal(0)) for m, w in windows.items()}
    for m in windows:
        out.tiers[m] = qualifying_tier(tiers, basis=basis, growth=growth[m], spend=spend[m])
    earned_day: dict[tuple[int, dt.date], int] = defaultdict(int)
    for done, o in enumerate(orders_):
        if tick is not None and done and done % TICK == 0:
            tick(done)
        m = o.member_id
        tier = out.tiers.get(m)
        day = o.facts.local_time.date()
        e = earn_for_order(o.facts, rules,
                           tier_multiplier=tier.multiplier if tier else Decimal(1),
                           earned_today=earned_day[(m, day)])
        earned_day[(m, day)] += e.points
        if o.returned >= o.facts.total and o.returned > 0:
            clawed, growth_back = e.points, e.growth
        else:
            clawed = min(e.points, points_for_returned(e.lines, o.returned_lines))
            growth_back = growth_for_returned(e.growth, o.facts.total, o.returned)
        out.points += e.points
        out.clawed_back += clawed
        out.growth += e.growth - growth_back
        out.orders_earning += e.points > 0
        out.by_month[month_of(o.purchased_at)] += e.points - clawed
        growth[m] += e.growth - growth_back
        if by_spend:
            w = windows.setdefault(m, deque())
            w.append((o.purchased_at, o.facts.total - o.returned))
            spend[m] = spend.get(m, Decimal(0)) + o.facts.total - o.returned
            while w and w[0][0] <= o.purchased_at - SPEND_WINDOW:
                spend[m] -= w.popleft()[1]
        q = qualifying_tier(tiers, basis=basis, growth=growth[m],
                            spend=spend.get(m, Decimal(0)))
        if q is not None and (tier is None or q.rank > tier.rank):
            out.tiers[m] = q
            out.upgrades += 1
    return out


# --- loading ------------------------------------------------------------------------------------

@dataclass
class Replayable:
    orders: list[ReplayOrder]
    members: list[int]
    opening_growth: dict[int, int]
    prior_spend: dict[int, list[tuple[dt.datetime, Decimal]]]


def _member_orders(conn: Connection, program: dict[str, Any], actor: Actor,
                   start: dt.datetime, end: dt.datetime) -> Any:
    """The program's member orders purchased in [start, end): at the brand's stores (or through
    its storeless channels), by an active member (or the profile it was merged into),
    purchased at or after enrolment."""
    m, c, o = loyalty_members.c, customers.c, orders.c
    member_customers = (
        select(m.id.label("member_id"), m.customer_id.label("own"),
               func.coalesce(c.merged_into_id, m.customer_id).label("customer_id"),
               m.enrolled_at)
        .select_from(loyalty_members.join(customers, c.id == m.customer_id))
        .where(m.program_id == program["id"], m.status == "active").subquery())
    brand_stores = select(stores.c.id).where(stores.c.brand_id == program["brand_id"])
    where = [o.purchased_at >= start, o.purchased_at < end,
             o.purchased_at >= member_customers.c.enrolled_at]
    storeless = list(program["storeless_channels"] or [])
    at_brand = o.store_id.in_(brand_stores)
    if storeless:
        at_brand = or_(at_brand, and_(o.store_id.is_(None), o.channel_id.in_(
            select(channels.c.id).where(channels.c.code.in_(storeless)))))
    where.append(at_brand)
    if actor.store_ids is not None:
        where.append(o.store_id.in_(sorted(actor.store_ids)))
    return (orders.join(member_customers, member_customers.c.customer_id == o.customer_id),
            and_(*where), member_customers)


def load(conn: Connection, program: dict[str, Any], actor: Actor, start: dt.datetime,
         end: dt.datetime) -> Replayable:
    src, where, mc = _member_orders(conn, program, actor, start, end)
    o = orders.c
    store_info = {int(r.id): (r.code, r.timezone) for r in conn.execute(
        select(stores.c.id, stores.c.code, stores.c.timezone))}
    channel_codes = {int(r.id): r.code for r in conn.execute(select(channels.c.id,
                                                                    channels.c.code))}
    default_tz = get_settings().default_timezone
    heads: dict[int, tuple[Any, ...]] = {}
    for r in conn.execute(select(o.id, mc.c.member_id, mc.c.own, o.customer_id, o.store_id,
                                 o.channel_id, o.purchased_at, o.total_amount)
                          .select_from(src).where(where)):
        # A customer with a membership of its own and one merged into it: its own wins.
        prior = heads.get(int(r.id))
        if prior is None or int(r.own) == int(r.customer_id):
            heads[int(r.id)] = tuple(r)
    ids = select(o.id).select_from(src).where(where).scalar_subquery()
    lines: dict[int, list[LineFacts]] = defaultdict(list)
    ol = order_lines.c
    for r in conn.execute(select(ol.order_id, ol.line_no, ol.sku, ol.category, ol.amount)
                          .where(ol.order_id.in_(ids)).order_by(ol.order_id, ol.line_no)):
        lines[int(r.order_id)].append(LineFacts(int(r.line_no), r.sku, r.category, r.amount))
    payments: dict[int, list[tuple[str, Decimal]]] = defaultdict(list)
    op = order_payments.c
    for r in conn.execute(select(op.order_id, op.method, op.amount)
                          .where(op.order_id.in_(ids)).order_by(op.order_id, op.id)):
        payments[int(r.order_id)].append((r.method, r.amount))
    returned_lines: dict[int, dict[int, Decimal]] = defaultdict(dict)
    rl, rt = return_lines.c, returns.c
    for order_id, line_no, amount in conn.execute(
            select(ol.order_id, ol.line_no, func.sum(rl.amount))
            .select_from(return_lines.join(returns, rt.id == rl.return_id)
                         .join(order_lines, ol.id == rl.order_line_id))
            .where(ol.order_id.in_(ids), rt.returned_at < end)
            .group_by(ol.order_id, ol.line_no)):
        returned_lines[int(order_id)][int(line_no)] = amount  # Money: Decimal yuan
    returned_total: dict[int, Decimal] = {}
    for order_id, amount in conn.execute(
            select(rt.order_id, func.sum(rt.amount)).where(rt.order_id.in_(ids),
                                                           rt.returned_at < end)
            .group_by(rt.order_id)):
        returned_total[int(order_id)] = amount
    out = []
    for oid, member_id, _own, _cust, store_id, channel_id, purchased_at, total in heads.values():
        code, tz = store_info.get(store_id, (None, default_tz)) if store_id else (None,
                                                                                    default_tz)
        facts = OrderFacts(total=total, lines=tuple(lines.get(oid, ())),
                           payments=tuple(payments.get(oid, ())), store_code=code,
                           channel_code=channel_codes.get(int(channel_id), ""),
                           local_time=purchased_at.astimezone(ZoneInfo(tz)))
        out.append(ReplayOrder(oid, int(member_id), purchased_at, facts,
                               returned_total.get(oid, Decimal(0)),
                               returned_lines.get(oid, {})))
    out.sort(key=lambda x: (x.purchased_at, x.order_id))
    m = loyalty_members.c
    if actor.store_ids is None:
        members = [int(i) for i in conn.execute(select(m.id).where(
            m.program_id == program["id"], m.status == "active")).scalars()]
    else:  # a store-scoped actor: the members with orders at its stores
        members = sorted({x.member_id for x in out})
    e = loyalty_entries.c
    opening = {int(mid): int(g) for mid, g in conn.execute(
        select(e.member_id, func.sum(e.points)).where(
            e.program_id == program["id"], e.bucket == "growth", e.created_at < start)
        .group_by(e.member_id))}
    # 12-month spend before the replay starts (net of returns), for a spend basis.
    prior: dict[int, list[tuple[dt.datetime, Decimal]]] = defaultdict(list)
    if program["tier_basis"] == "spend_12m":
        psrc, pwhere, pmc = _member_orders(conn, program, actor, start - SPEND_WINDOW, start)
        for member_id, purchased_at, total, refunded in conn.execute(
                select(pmc.c.member_id, o.purchased_at, o.total_amount, o.refunded_amount)
                .select_from(psrc).where(pwhere).order_by(o.purchased_at, o.id)):
            prior[int(member_id)].append((purchased_at, total - refunded))
    return Replayable(out, members, opening, dict(prior))


# --- the use case -------------------------------------------------------------------------------

def _tier_defs(tiers: Sequence[TierIn]) -> list[TierDef]:
    _check_tier_ladder([t.model_dump() for t in tiers], field="tiers")
    return [TierDef(-(i + 1), t.code, t.rank, t.min_growth, t.min_spend, t.points_multiplier)
            for i, t in enumerate(sorted(tiers, key=lambda x: x.rank))]


def _distribution(outcome: Outcome, tiers: Sequence[TierDef]) -> list[dict[str, Any]]:
    counts: dict[str | None, int] = defaultdict(int)
    for t in outcome.tiers.values():
        counts[t.code if t else None] += 1
    rows = [{"tier": t.code, "rank": t.rank, "members": counts.get(t.code, 0)}
            for t in sorted(tiers, key=lambda x: x.rank)]
    if counts.get(None):
        rows.insert(0, {"tier": None, "rank": None, "members": counts[None]})
    return rows


def _scenario_out(outcome: Outcome, tiers: Sequence[TierDef], rate: int) -> dict[str, Any]:
    net = outcome.points - outcome.clawed_back
    return {"points": outcome.points, "clawed_back": outcome.clawed_back, "net_points": net,
            "value": _value(net, rate), "growth": outcome.growth,
            "orders_earning": outcome.orders_earning, "upgrades": outcome.upgrades,
            "tier_distribution": _distribution(outcome, tiers)}


def simulate(conn: Connection, *, actor: Actor, program: str, body: SimulationIn,
             as_of: dt.datetime | None = None,
             progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """The replay of the last ``body.months`` months up to ``as_of`` under today's rules and
    tiers and under the proposal, with what the ledger actually recorded for the same orders
    (docs/loyalty-reports.md, "Simulation"). Reads only. ``progress(step, share done)`` is
    told where a run stands (``simulation_runs`` shows it)."""
    need(actor, "loyalty.read")
    report = progress or (lambda step, share: None)
    report("load", 0.0)
    started = time.perf_counter()
    end = as_of or utcnow()
    p = _program(conn, program)
    pid, rate, tz = int(p["id"]), int(p["redeem_points_per_yuan"]), ZoneInfo(p["timezone"])
    start = add_months(end.astimezone(tz), -body.months).astimezone(dt.UTC)
    today = version_at(rule_versions(conn, [pid]).get(pid, []), end)
    if today is None:
        raise invalid("rules", "simulation_no_rules")
    today_version_id, today_rules = today
    current_tiers = load_tiers(conn, [pid])[pid]
    proposed_rules = (EarningRules.from_json(body.rules.as_json()) if body.rules is not None
                      else today_rules)
    proposed_tiers = _tier_defs(body.tiers) if body.tiers is not None else current_tiers
    data = load(conn, p, actor, start, end)
    loaded = time.perf_counter()

    months_of: dict[dt.datetime, str] = {}

    def month_of(at: dt.datetime) -> str:
        label = months_of.get(at)
        if label is None:
            local = at.astimezone(tz)
            label = months_of[at] = f"{local.year:04d}-{local.month:02d}"
        return label

    common = {"basis": p["tier_basis"], "members": data.members,
              "opening_growth": data.opening_growth, "prior_spend": data.prior_spend,
              "month_of": month_of}
    n = max(len(data.orders), 1)

    def ticker(step: str, before: float) -> Callable[[int], None]:
        return lambda done: report(step, before + STEP_SHARES[step] * done / n)

    at = STEP_SHARES["load"]
    report("replay_current", at)
    current = replay(data.orders, rules=today_rules, tiers=current_tiers,
                     tick=ticker("replay_current", at), **common)
    at += STEP_SHARES["replay_current"]
    report("replay_proposed", at)
    proposed = replay(data.orders, rules=proposed_rules, tiers=proposed_tiers,
                      tick=ticker("replay_proposed", at), **common)
    report("compare", at + STEP_SHARES["replay_proposed"])
    replayed = time.perf_counter()
    oe = loyalty_order_earnings.c
    ids = [x.order_id for x in data.orders]
    rec_points = rec_clawed = 0
    for i in range(0, len(ids), 5000):
        pts, clawed = conn.execute(
            select(func.coalesce(func.sum(oe.points), 0),
                   func.coalesce(func.sum(oe.points_clawed), 0))
            .where(oe.program_id == pid, oe.purchased_at >= start, oe.purchased_at < end,
                   oe.order_id.in_(ids[i:i + 5000]))).one()
        rec_points += int(pts)
        rec_clawed += int(clawed)
    now_liability = liability(conn, actor=actor, program=program, now=end)["totals"]
    cur, prop = (_scenario_out(current, current_tiers, rate),
                 _scenario_out(proposed, proposed_tiers, rate))
    recorded_net = rec_points - rec_clawed
    months = sorted(set(current.by_month) | set(proposed.by_month))
    return {
        "program": p["code"], "from": start, "to": end, "months": body.months,
        "timezone": p["timezone"], "redeem_points_per_yuan": rate,
        "tier_basis": p["tier_basis"],
        "scope": scope_codes(conn, actor),
        "orders": len(data.orders), "members": len(data.members),
        "members_with_orders": len({x.member_id for x in data.orders}),
        "today": {"rules_version_id": today_version_id, "rules": today_rules.to_json(),
                  "tiers": [_tier_json(t) for t in current_tiers]},
        "proposal": {"rules": proposed_rules.to_json(),
                     "tiers": [_tier_json(t) for t in proposed_tiers]},
        "recorded": {"points": rec_points, "clawed_back": rec_clawed,
                     "net_points": recorded_net, "value": _value(recorded_net, rate)},
        "current": cur, "proposed": prop,
        "difference": {"points": prop["points"] - cur["points"],
                       "net_points": prop["net_points"] - cur["net_points"],
                       "value": prop["value"] - cur["value"],
                       "growth": prop["growth"] - cur["growth"]},
        "liability": {
            "outstanding_now": now_liability["outstanding"],
            "value_now": now_liability["liability"],
            "projected": now_liability["outstanding"] + prop["net_points"] - recorded_net,
            "projected_value": _value(now_liability["outstanding"] + prop["net_points"]
                                      - recorded_net, rate)},
        "by_month": [{"month": mo, "current": current.by_month.get(mo, 0),
                      "proposed": proposed.by_month.get(mo, 0)} for mo in months],
        "timing_ms": {"load": round((loaded - started) * 1000),
                      "replay": round((replayed - loaded) * 1000),
                      "total": round((time.perf_counter() - started) * 1000)},
    }


def _tier_json(t: TierDef) -> dict[str, Any]:
    return {"code": t.code, "rank": t.rank, "min_growth": t.min_growth,
            "min_spend": t.min_spend, "points_multiplier": t.multiplier}
