"""Earning on recorded orders and clawback on returns, inside the order-recording transaction.

Called by :mod:`patron.loyalty.hooks`. A chunk of orders costs a fixed handful of queries
whatever its size (programs, members, rule versions, tier history, the day's points when a daily
cap applies, then the bulk writes); per-order work happens in Python on what those queries
loaded. Nothing here commits: the orders area commits the purchase and its points together.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select, update

from patron.customers.tables import customers
from patron.db import bulk_insert
from patron.loyalty import persist
from patron.loyalty.model import (
    EarnedLine,
    Earning,
    EarningRules,
    LineFacts,
    OrderFacts,
    earn_for_order,
    growth_for_returned,
    lot_expiry,
    points_for_returned,
    tier_at,
)
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_lot_moves,
    loyalty_members,
    loyalty_order_earnings,
    loyalty_programs,
    loyalty_rule_versions,
    loyalty_tier_history,
)
from patron.loyalty.tiering import load_tiers, upgrades, write_changes
from patron.orders.hooks import RecordedOrder, RecordedReturn
from patron.org.service import Reference
from patron.security.model import Actor


def active_programs(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        select(loyalty_programs).where(loyalty_programs.c.status == "active")).mappings()]


def program_for_orders(conn: Connection, orders: Sequence[RecordedOrder],
                       programs: list[dict[str, Any]]
                       ) -> list[tuple[RecordedOrder, dict[str, Any]]]:
    """Each member-candidate order with the program it earns in: the program of its store's
    brand, or for an order without a store, the program that claims its channel."""
    by_brand = {int(p["brand_id"]): p for p in programs}
    by_channel = {ch: p for p in programs for ch in (p["storeless_channels"] or [])}
    ref = Reference(conn)
    out = []
    for o in orders:
        if o.customer_id is None:
            continue
        if o.store_code is not None:
            store = ref.store(o.store_code)
            program = by_brand.get(store.brand_id) if store and store.brand_id else None
        else:
            program = by_channel.get(o.channel_code)
        if program is not None:
            out.append((o, program))
    return out


def find_members(conn: Connection, pairs: set[tuple[int, int]]) -> dict[tuple[int, int],
                                                                          dict[str, Any]]:
    """Members for (program, customer) pairs, locked. A member whose profile was merged into
    the ordering customer is found through the merge (the survivor's own membership wins)."""
    program_ids = sorted({p for p, _ in pairs})
    customer_ids = sorted({c for _, c in pairs})
    m = loyalty_members.c
    direct: list[int] = []
    via_merge: dict[int, int] = {}
    for i in range(0, len(customer_ids), 2000):
        part = customer_ids[i:i + 2000]
        direct.extend(int(r) for r in conn.execute(select(m.id).where(
            m.program_id.in_(program_ids), persist.ids_in(conn, m.customer_id, part))).scalars())
        for member_id, survivor in conn.execute(
                select(m.id, customers.c.merged_into_id)
                .join(customers, customers.c.id == m.customer_id)
                .where(persist.ids_in(conn, customers.c.merged_into_id, part),
                       m.program_id.in_(program_ids))):
            via_merge[int(member_id)] = int(survivor)
    rows = persist.lock_members(conn, [*direct, *via_merge])
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for member_id in sorted(rows, key=lambda i: (i in via_merge, i)):
        row = rows[member_id]
        key = (int(row["program_id"]), via_merge.get(member_id, int(row["customer_id"])))
        if key in pairs and key not in out:
            out[key] = row
    return out


def rule_versions(conn: Connection, program_ids: Sequence[int]
                  ) -> dict[int, list[tuple[dt.datetime, int, EarningRules]]]:
    out: dict[int, list[tuple[dt.datetime, int, EarningRules]]] = defaultdict(list)
    v = loyalty_rule_versions.c
    for r in conn.execute(select(v.id, v.program_id, v.effective_from, v.rules)
                          .where(v.program_id.in_(sorted(program_ids)))
                          .order_by(v.program_id, v.effective_from)):
        out[int(r.program_id)].append((r.effective_from, int(r.id),
                                       EarningRules.from_json(r.rules)))
    return out


def version_at(versions: Sequence[tuple[dt.datetime, int, EarningRules]], at: dt.datetime
               ) -> tuple[int, EarningRules] | None:
    found = None
    for effective_from, version_id, rules in versions:
        if effective_from > at:
            break
        found = (version_id, rules)
    return found


def _tier_histories(conn: Connection, member_ids: Sequence[int]
                    ) -> dict[int, list[tuple[dt.datetime, int | None]]]:
    out: dict[int, list[tuple[dt.datetime, int | None]]] = defaultdict(list)
    h = loyalty_tier_history.c
    for i in range(0, len(member_ids), 2000):
        for r in conn.execute(select(h.member_id, h.effective_at, h.to_tier_id)
                              .where(persist.ids_in(conn, h.member_id, member_ids[i:i + 2000]))
                              .order_by(h.member_id, h.effective_at, h.id)):
            out[int(r.member_id)].append((r.effective_at, r.to_tier_id))
    return out


def _earned_on_days(conn: Connection, member_ids: Sequence[int], days: set[dt.date]
                    ) -> dict[tuple[int, dt.date], int]:
    e = loyalty_order_earnings.c
    out: dict[tuple[int, dt.date], int] = defaultdict(int)
    for i in range(0, len(member_ids), 2000):
        for member_id, day, points in conn.execute(
                select(e.member_id, e.local_date, func.sum(e.points))
                .where(persist.ids_in(conn, e.member_id, member_ids[i:i + 2000]),
                       e.local_date.in_(sorted(days)))
                .group_by(e.member_id, e.local_date)):
            out[(int(member_id), day)] = int(points or 0)
    return out


class EarningContext:
    """What computing orders' points needs, loaded once for a set of orders: the programs' rule
    versions and tiers, the members' tier histories and, when a daily cap applies, the points
    already earned on those days. Used by the purchase path and by the checkout's quote, so
    that a quote promises exactly what the purchase will earn."""

    def __init__(self, conn: Connection, work: Sequence[tuple[RecordedOrder, dict[str, Any],
                                                              dict[str, Any]]]) -> None:
        program_ids = sorted({int(p["id"]) for _, p, _ in work})
        member_ids = sorted({int(m["id"]) for _, _, m in work})
        self.versions = rule_versions(conn, program_ids)
        self.tiers = load_tiers(conn, program_ids)
        self.multipliers = {t.id: t.multiplier for defs in self.tiers.values() for t in defs}
        self.histories = _tier_histories(conn, member_ids) if self.multipliers else {}
        capped = any(r.cap_per_day is not None for vs in self.versions.values()
                     for _, _, r in vs)
        self.today = _earned_on_days(conn, member_ids,
                                     {o.local_time.date() for o, _, _ in work}
                                     ) if capped else defaultdict(int)

    def earn(self, o: RecordedOrder, program: dict[str, Any], member: dict[str, Any]
             ) -> tuple[int | None, Earning]:
        """The rule version in force at the purchase and what the order earns by it, counting
        it towards the member's daily cap."""
        mid = int(member["id"])
        day = o.local_time.date()
        in_force = version_at(self.versions.get(int(program["id"]), []), o.purchased_at)
        lines = tuple(LineFacts(ln.line_no, ln.sku, ln.category, ln.amount) for ln in o.lines)
        facts = OrderFacts(total=o.total, lines=lines, payments=o.payments,
                           store_code=o.store_code, channel_code=o.channel_code,
                           local_time=o.local_time)
        if in_force is None:
            version_id, rules = None, EarningRules(points_per_yuan=Decimal(0),
                                                    growth_per_yuan=Decimal(0))
        else:
            version_id, rules = in_force
        tier_id = tier_at(self.histories.get(mid, []), o.purchased_at)
        earned = earn_for_order(facts, rules,
                                tier_multiplier=self.multipliers.get(tier_id, Decimal(1))
                                if tier_id is not None else Decimal(1),
                                earned_today=self.today[(mid, day)])
        self.today[(mid, day)] += earned.points
        return version_id, earned


def earns_as_member(o: RecordedOrder, member: dict[str, Any] | None) -> bool:
    """A member earns as a member: purchases before enrolment earn nothing."""
    return (member is not None and member["status"] == "active"
            and o.purchased_at >= member["enrolled_at"])


def preview_earning(conn: Connection, o: RecordedOrder, *, program: dict[str, Any],
                    member: dict[str, Any]) -> Earning | None:
    """What ``o`` would earn if it were recorded now, without writing anything (the checkout's
    quote). None when the member would not earn on it."""
    if program["status"] != "active" or not earns_as_member(o, member):
        return None
    return EarningContext(conn, [(o, program, member)]).earn(o, program, member)[1]


def earn_for_orders(conn: Connection, recorded: Sequence[RecordedOrder], *, actor: Actor,
                    now: dt.datetime) -> int:
    """Points and growth for every member order of the chunk. Returns the points earned."""
    if not any(o.customer_id is not None for o in recorded):
        return 0
    programs = active_programs(conn)
    if not programs:
        return 0
    pairs = program_for_orders(conn, recorded, programs)
    if not pairs:
        return 0
    members = find_members(conn, {(int(p["id"]), int(o.customer_id))  # type: ignore[arg-type]
                                  for o, p in pairs})
    work = []
    for o, p in pairs:
        m = members.get((int(p["id"]), int(o.customer_id)))  # type: ignore[arg-type]
        if m is not None and earns_as_member(o, m):
            work.append((o, p, m))
    if not work:
        return 0
    work.sort(key=lambda w: (w[0].purchased_at, w[0].order_id))
    context = EarningContext(conn, work)
    keys = persist.temp_keys()
    member_rows = {int(m["id"]): m for _, _, m in work}
    wallets = {mid: persist.new_wallet(row, keys) for mid, row in member_rows.items()}
    earning_rows: list[dict[str, Any]] = []
    lot_refs: list[int | None] = []
    total = 0
    for o, p, m in work:
        mid = int(m["id"])
        version_id, earned = context.earn(o, p, m)
        total += earned.points
        lot = wallets[mid].earn(
            earned.points, earned.growth, cause=("order", str(o.order_id)),
            earned_at=o.purchased_at,
            available_at=o.purchased_at + dt.timedelta(days=int(p["pending_days"])),
            expires_at=lot_expiry(o.purchased_at, mode=p["expiry_mode"],
                                  months=p["expiry_months"], tz=p["timezone"]),
            now=now, order_id=o.order_id, store_id=o.store_id, rule_version_id=version_id)
        lot_refs.append(lot.ref if lot else None)
        earning_rows.append({
            "order_id": o.order_id, "program_id": int(p["id"]), "member_id": mid,
            "rule_version_id": version_id, "purchased_at": o.purchased_at,
            "local_date": o.local_time.date(),
            "spend": o.total, "eligible": earned.eligible, "points": earned.points,
            "growth": earned.growth,
            "lines": [[ln.line_no, _fen(ln.paid), _fen(ln.eligible), ln.points]
                      for ln in earned.lines],
            "returned": Decimal(0), "returned_lines": {}, "points_clawed": 0,
            "points_excused": 0, "points_written_off": 0, "growth_clawed": 0,
        })
    for w in wallets.values():
        w.expire_due(now)  # a late order's points may have expired before it arrived
    program_of = {mid: int(row["program_id"]) for mid, row in member_rows.items()}
    ids = persist.save(conn, wallets.values(), program_of=program_of, actor=actor.name, now=now)
    for row, ref in zip(earning_rows, lot_refs, strict=True):
        row["lot_id"] = ids[ref] if ref is not None else None
    bulk_insert(conn, loyalty_order_earnings, earning_rows)
    by_id = {int(p["id"]): p for _, p, _ in work}
    changes = upgrades(conn, programs=by_id, members=member_rows,
                       growth={mid: w.growth for mid, w in wallets.items()}, now=now,
                       tiers=context.tiers)
    write_changes(conn, changes, now=now, actor=actor.name)
    return total


def _fen(value: Decimal) -> int:
    return int((value * 100).to_integral_value())


def _expired_from_lot(conn: Connection, lot_id: int) -> int:
    e, mv = loyalty_entries.c, loyalty_lot_moves.c
    gone = conn.execute(select(func.coalesce(func.sum(mv.points), 0))
                        .select_from(loyalty_lot_moves.join(loyalty_entries,
                                                            loyalty_entries.c.id == mv.entry_id))
                        .where(mv.lot_id == lot_id, e.kind == "expire")).scalar_one()
    return -int(gone)


def _policy(program: Any, ret: RecordedReturn) -> str:
    """``deduct_from_refund`` needs a caller that refunds the money (the POS checkout): a return
    recorded on its own (``POST /returns``, an import) carries no money to deduct from, and the
    points it cannot take back are owed."""
    policy = str(program["clawback_policy"])
    if policy == "deduct_from_refund" and not ret.settles_points_in_money:
        return "owe"
    return policy


def claw_back_for_return(conn: Connection, ret: RecordedReturn, *, actor: Actor,
                         now: dt.datetime) -> int:
    """Take back the points and growth earned on the returned lines, in proportion to the
    refunded amounts (cumulative over the order's returns). Returns the points clawed."""
    row = conn.execute(select(loyalty_order_earnings).where(
        loyalty_order_earnings.c.order_id == ret.order_id)).mappings().first()
    if row is None:
        return 0
    member_id = int(row["member_id"])
    members = persist.lock_members(conn, [member_id])
    program = conn.execute(select(loyalty_programs).where(
        loyalty_programs.c.id == row["program_id"])).mappings().one()
    # Read again under the member's lock: a concurrent return of the same order went first.
    row = conn.execute(select(loyalty_order_earnings).where(
        loyalty_order_earnings.c.order_id == ret.order_id)).mappings().one()
    keys = persist.temp_keys()
    lot_id = row["lot_id"]
    wallets, expired_holds = persist.catch_up(conn, members, now=now, keys=keys,
                                              extra_lot_ids=[lot_id] if lot_id else [])
    w = wallets[member_id]
    returned_lines = {int(k): Decimal(int(v)) / 100 for k, v in (row["returned_lines"] or {}
                                                                 ).items()}
    for ln in ret.lines:
        returned_lines[ln.line_no] = returned_lines.get(ln.line_no, Decimal(0)) + ln.amount
    returned_total = row["returned"] + ret.amount
    lines = [EarnedLine(int(no), Decimal(paid) / 100, Decimal(elig) / 100, int(pts))
             for no, paid, elig, pts in row["lines"]]
    points = int(row["points"])
    whole = ret.full or returned_total >= row["spend"]
    target = points if whole else min(points, points_for_returned(lines, returned_lines))
    settled = int(row["points_clawed"]) + int(row["points_excused"]) + int(
        row["points_written_off"])
    growth = int(row["growth"])
    g_target = growth if whole else growth_for_returned(growth, row["spend"], returned_total)
    lot = w.lots.get(int(lot_id)) if lot_id else None
    out = w.clawback(max(0, target - settled), max(0, g_target - int(row["growth_clawed"])),
                     cause=("return", str(ret.return_id)), lot=lot,
                     expired_on_lot=_expired_from_lot(conn, int(lot_id)) if lot_id else 0,
                     excused_before=int(row["points_excused"]),
                     policy=_policy(program, ret), now=now, order_id=ret.order_id)
    persist.save(conn, [w], program_of={member_id: int(program["id"])}, actor=actor.name,
                 now=now)
    persist.finish_expired_holds(conn, expired_holds, now)
    conn.execute(update(loyalty_order_earnings)
                 .where(loyalty_order_earnings.c.order_id == ret.order_id)
                 .values(returned=returned_total,
                         returned_lines={str(k): _fen(v) for k, v in
                                         sorted(returned_lines.items())},
                         points_clawed=row["points_clawed"] + out.clawed,
                         points_excused=row["points_excused"] + out.excused,
                         points_written_off=row["points_written_off"] + out.written_off,
                         growth_clawed=row["growth_clawed"] + out.growth))
    return out.clawed


@dataclass(frozen=True, slots=True)
class RefundDeduction:
    """How a refund settled the points its return could not take back."""

    from_points: int  # taken from the member's points after all (the points paid, given back)
    deducted: int  # converted to money and deducted from the refund
    owed: int  # the refund's money could not cover them: a debt, as under ``owe``


def settle_refund_deduction(conn: Connection, *, actor: Actor, order_id: int, return_id: int,
                            points: int, deductible: int, now: dt.datetime) -> RefundDeduction:
    """Settle ``points`` a return of ``order_id`` could not take back under the program's
    ``deduct_from_refund`` policy (left written off on the order's earning row by
    :func:`claw_back_for_return`, in the same transaction). First from the member's available
    points (a refund gives back the points that paid before it settles), then up to
    ``deductible`` points deducted from the refund's money, the rest owed. Only the points that
    are deducted stay written off on the earning row; the others count as clawed back."""
    if points <= 0:
        return RefundDeduction(0, 0, 0)
    row = conn.execute(select(loyalty_order_earnings).where(
        loyalty_order_earnings.c.order_id == order_id)).mappings().one()
    member_id = int(row["member_id"])
    members = persist.lock_members(conn, [member_id])
    wallets, expired_holds = persist.catch_up(conn, members, now=now, keys=persist.temp_keys())
    w = wallets[member_id]
    from_points = min(points, max(0, w.available))
    deducted = min(points - from_points, max(0, deductible))
    to_ledger = points - deducted
    owed = 0
    if to_ledger:
        out = w.clawback(to_ledger, 0, cause=("return", str(return_id)), lot=None,
                         expired_on_lot=0, excused_before=0, policy="owe", now=now,
                         order_id=order_id)
        owed = out.owed
        e = loyalty_order_earnings.c
        conn.execute(update(loyalty_order_earnings).where(e.order_id == order_id).values(
            points_clawed=e.points_clawed + out.clawed,
            points_written_off=e.points_written_off - to_ledger))
    # Saved even when nothing is clawed: catching up may have expired lots or holds.
    persist.save(conn, [w], program_of={member_id: int(row["program_id"])}, actor=actor.name,
                 now=now)
    persist.finish_expired_holds(conn, expired_holds, now)
    return RefundDeduction(to_ledger - owed, deducted, owed)
