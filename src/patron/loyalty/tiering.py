"""Tiers: definitions, the qualifying figures (growth value, rolling 12-month spend), immediate
upgrades and the writing of tier changes with their history. Set-based for many members."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Connection, func, select, type_coerce

from patron.db import UTCDateTime, bulk_insert, sqlite_executemany
from patron.loyalty.model import TierDef, qualifying_tier
from patron.loyalty.persist import ids_in
from patron.loyalty.tables import loyalty_order_earnings, loyalty_tier_history, loyalty_tiers

SPEND_WINDOW = dt.timedelta(days=365)


def load_tiers(conn: Connection, program_ids: Iterable[int]) -> dict[int, list[TierDef]]:
    ids = sorted(set(program_ids))
    out: dict[int, list[TierDef]] = {p: [] for p in ids}
    if not ids:
        return out
    t = loyalty_tiers.c
    for r in conn.execute(select(loyalty_tiers).where(t.program_id.in_(ids))
                          .order_by(t.program_id, t.rank)).mappings():
        out[int(r["program_id"])].append(TierDef(int(r["id"]), r["code"], int(r["rank"]),
                                                 int(r["min_growth"]), r["min_spend"],
                                                 r["points_multiplier"]))
    return out


def spend_12m(conn: Connection, member_ids: Sequence[int], as_of: dt.datetime
              ) -> dict[int, Decimal]:
    """Net spend (orders less refunds) of each member's orders in the 12 months up to
    ``as_of``, as recorded while a member."""
    out: dict[int, Decimal] = {m: Decimal("0.00") for m in member_ids}
    e = loyalty_order_earnings.c
    for i in range(0, len(member_ids), 2000):
        part = list(member_ids[i:i + 2000])
        net = func.sum(type_coerce(e.spend, BigInteger) - type_coerce(e.returned, BigInteger))
        rows = conn.execute(select(e.member_id, net)
                            .where(ids_in(conn, e.member_id, part),
                                   e.purchased_at > as_of - SPEND_WINDOW,
                                   e.purchased_at <= as_of)
                            .group_by(e.member_id))
        for member_id, net in rows:
            out[int(member_id)] = (Decimal(int(net or 0)) / 100).quantize(Decimal("0.01"))
    return out


@dataclass(frozen=True, slots=True)
class TierChange:
    member_id: int
    from_tier_id: int | None
    to_tier_id: int | None
    reason: str  # enrol | upgrade | downgrade | manual_grant | manual_end
    growth_value: int | None = None
    spend: Decimal | None = None
    manual_until: dt.datetime | None = None
    note: str | None = None


def write_changes(conn: Connection, changes: Sequence[TierChange], *, now: dt.datetime,
                  actor: str) -> None:
    """Record tier changes in the history and set the members' current tier (the history's
    last row is always the member's tier: ``patron ledger verify`` checks it)."""
    if not changes:
        return
    bulk_insert(conn, loyalty_tier_history, [{
        "member_id": c.member_id, "from_tier_id": c.from_tier_id, "to_tier_id": c.to_tier_id,
        "reason": c.reason, "effective_at": now, "manual_until": c.manual_until,
        "growth_value": c.growth_value, "spend_12m": c.spend, "note": c.note, "actor": actor,
    } for c in changes])
    bind = UTCDateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
    assert bind is not None
    sqlite_or_pg_rows = [(c.to_tier_id, bind(now), None if c.manual_until is None
                          else bind(c.manual_until), bind(now), c.member_id) for c in changes]
    sql = ("UPDATE loyalty_members SET tier_id = {p}, tier_since = {p}, "
           "tier_manual_until = {p}, updated_at = {p} WHERE id = {p}")
    if conn.dialect.name == "postgresql":
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(sql.format(p="%s"), sqlite_or_pg_rows)
        finally:
            cur.close()
    else:
        sqlite_executemany(conn, sql.format(p="?"), sqlite_or_pg_rows)


def upgrades(conn: Connection, *, programs: dict[int, dict[str, Any]],
             members: dict[int, dict[str, Any]], growth: dict[int, int], now: dt.datetime,
             tiers: dict[int, list[TierDef]] | None = None) -> list[TierChange]:
    """Members whose figures now reach a higher tier than theirs: upgraded at once (a manual
    grant below it gives way)."""
    program_ids = {int(m["program_id"]) for m in members.values()}
    tiers = tiers if tiers is not None else load_tiers(conn, program_ids)
    with_tiers = [mid for mid, m in members.items() if tiers.get(int(m["program_id"]))]
    if not with_tiers:
        return []
    by_spend = [mid for mid in with_tiers
                if programs[int(members[mid]["program_id"])]["tier_basis"] == "spend_12m"]
    spend = spend_12m(conn, sorted(by_spend), now) if by_spend else {}
    changes = []
    for mid in sorted(with_tiers):
        m = members[mid]
        defs = tiers[int(m["program_id"])]
        basis = programs[int(m["program_id"])]["tier_basis"]
        g = growth.get(mid, int(m["growth_value"]))
        s = spend.get(mid, Decimal(0))
        q = qualifying_tier(defs, basis=basis, growth=g, spend=s)
        current = next((t for t in defs if t.id == m["tier_id"]), None)
        if q is not None and (current is None or q.rank > current.rank):
            changes.append(TierChange(mid, current.id if current else None, q.id, "upgrade",
                                      growth_value=g, spend=s if basis == "spend_12m" else None))
    return changes
