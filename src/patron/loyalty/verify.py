"""``patron ledger verify``: recompute every member's figures, every lot and every tier from the
entries and report each difference. Each check is one set-based query that returns only the
rows that differ, so a clean ledger of any size costs a few scans and no Python loops."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
)

from patron.loyalty.model import qualifying_tier
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_lot_moves,
    loyalty_lots,
    loyalty_members,
    loyalty_operations,
    loyalty_order_earnings,
    loyalty_programs,
    loyalty_tier_history,
)
from patron.loyalty.tiering import load_tiers, spend_12m

LIMIT = 1000  # differences reported per check


def _bucket_sum(bucket: str, kinds: tuple[str, ...] | None = None) -> Any:
    e = loyalty_entries.c
    cond = e.bucket == bucket if kinds is None else and_(e.bucket == bucket, e.kind.in_(kinds))
    return func.coalesce(func.sum(case((cond, e.points), else_=0)), 0)


def check_member_figures(conn: Connection) -> list[dict[str, Any]]:
    """Each figure on the member row equals the sum of its bucket's entries."""
    e = loyalty_entries.c
    sums = (select(e.member_id, _bucket_sum("available").label("available"),
                   _bucket_sum("pending").label("pending"), _bucket_sum("held").label("held"),
                   _bucket_sum("growth").label("growth"))
            .group_by(e.member_id).subquery())
    m = loyalty_members.c
    a, p, h, g = (func.coalesce(sums.c.available, 0), func.coalesce(sums.c.pending, 0),
                  func.coalesce(sums.c.held, 0), func.coalesce(sums.c.growth, 0))
    rows = conn.execute(
        select(m.id, m.points_available, m.points_owed, m.points_pending, m.points_held,
               m.growth_value, a.label("a"), p.label("p"), h.label("h"), g.label("g"))
        .select_from(loyalty_members.outerjoin(sums, sums.c.member_id == m.id))
        .where(or_(m.points_available - m.points_owed != a, m.points_pending != p,
                   m.points_held != h, m.growth_value != g))
        .order_by(m.id).limit(LIMIT))
    return [{"check": "member_figures", "member_id": int(r.id),
             "stored": {"available_minus_owed": int(r.points_available - r.points_owed),
                        "pending": int(r.points_pending), "held": int(r.points_held),
                        "growth": int(r.growth_value)},
             "from_entries": {"available_minus_owed": int(r.a), "pending": int(r.p),
                              "held": int(r.h), "growth": int(r.g)}} for r in rows]


def check_lots(conn: Connection) -> list[dict[str, Any]]:
    """Each lot's remaining points = its points + the moves of every entry that touched it."""
    mv = loyalty_lot_moves.c
    sums = select(mv.lot_id, func.sum(mv.points).label("moved")).group_by(mv.lot_id).subquery()
    lt = loyalty_lots.c
    moved = func.coalesce(sums.c.moved, 0)
    rows = conn.execute(select(lt.id, lt.points, lt.remaining, moved.label("moved"))
                        .select_from(loyalty_lots.outerjoin(sums, sums.c.lot_id == lt.id))
                        .where(lt.remaining != lt.points + moved).order_by(lt.id).limit(LIMIT))
    return [{"check": "lot_remaining", "lot_id": int(r.id), "stored": int(r.remaining),
             "from_entries": int(r.points + r.moved)} for r in rows]


def check_lots_cover_figures(conn: Connection) -> list[dict[str, Any]]:
    """A member's available points are exactly what its activated lots still hold, and its
    pending points what its pending lots hold."""
    lt = loyalty_lots.c
    sums = (select(lt.member_id,
                   func.sum(case((lt.activated.is_(True), lt.remaining), else_=0)).label("act"),
                   func.sum(case((lt.activated.is_(False), lt.remaining), else_=0)).label("pen"))
            .group_by(lt.member_id).subquery())
    m = loyalty_members.c
    act, pen = func.coalesce(sums.c.act, 0), func.coalesce(sums.c.pen, 0)
    rows = conn.execute(select(m.id, m.points_available, m.points_pending, act.label("act"),
                               pen.label("pen"))
                        .select_from(loyalty_members.outerjoin(sums, sums.c.member_id == m.id))
                        .where(or_(m.points_available != act, m.points_pending != pen))
                        .order_by(m.id).limit(LIMIT))
    return [{"check": "lots_cover_figures", "member_id": int(r.id),
             "stored": {"available": int(r.points_available), "pending": int(r.points_pending)},
             "in_lots": {"available": int(r.act), "pending": int(r.pen)}} for r in rows]


def check_lot_sources(conn: Connection) -> list[dict[str, Any]]:
    """Entries that create lots created exactly their points in lots."""
    e, lt = loyalty_entries.c, loyalty_lots.c
    created = select(lt.entry_id, func.sum(lt.points).label("pts")).group_by(
        lt.entry_id).subquery()
    makers = or_(and_(e.kind == "earn", e.bucket.in_(("available", "pending"))),
                 and_(e.kind.in_(("adjust", "transfer")), e.bucket == "available", e.points > 0))
    got = func.coalesce(created.c.pts, 0)
    rows = conn.execute(select(e.id, e.points, got.label("got"))
                        .select_from(loyalty_entries.outerjoin(created,
                                                               created.c.entry_id == e.id))
                        .where(makers, e.points != got).order_by(e.id).limit(LIMIT))
    return [{"check": "lot_source", "entry_id": int(r.id), "entry_points": int(r.points),
             "lot_points": int(r.got)} for r in rows]


def check_consumption(conn: Connection) -> list[dict[str, Any]]:
    """Redemptions, holds and expiries took exactly their points from lots."""
    e, mv = loyalty_entries.c, loyalty_lot_moves.c
    sums = select(mv.entry_id, func.sum(mv.points).label("moved")).group_by(
        mv.entry_id).subquery()
    moved = func.coalesce(sums.c.moved, 0)
    takers = and_(e.bucket == "available", e.kind.in_(("redeem", "hold", "expire")))
    rows = conn.execute(select(e.id, e.kind, e.points, moved.label("moved"))
                        .select_from(loyalty_entries.outerjoin(sums, sums.c.entry_id == e.id))
                        .where(takers, e.points != moved).order_by(e.id).limit(LIMIT))
    return [{"check": "lot_consumption", "entry_id": int(r.id), "kind": r.kind,
             "entry_points": int(r.points), "moved": int(r.moved)} for r in rows]


def check_holds(conn: Connection) -> list[dict[str, Any]]:
    """Held points = the open holds' points."""
    o, m = loyalty_operations.c, loyalty_members.c
    sums = (select(o.member_id, func.sum(o.points).label("pts"))
            .where(o.kind == "hold", o.status == "held").group_by(o.member_id).subquery())
    held = func.coalesce(sums.c.pts, 0)
    rows = conn.execute(select(m.id, m.points_held, held.label("held"))
                        .select_from(loyalty_members.outerjoin(sums, sums.c.member_id == m.id))
                        .where(m.points_held != held).order_by(m.id).limit(LIMIT))
    return [{"check": "open_holds", "member_id": int(r.id), "stored": int(r.points_held),
             "open_holds": int(r.held)} for r in rows]


def check_order_earnings(conn: Connection) -> list[dict[str, Any]]:
    """What each order earned and had clawed back, as recorded per order, matches its entries
    (an order that earned twice would show here, had the unique keys let it)."""
    e, oe = loyalty_entries.c, loyalty_order_earnings.c
    points_buckets = e.bucket.in_(("available", "pending"))
    sums = (select(
        e.order_id,
        func.sum(case((and_(e.kind == "earn", points_buckets), e.points), else_=0)).label("pe"),
        func.sum(case((and_(e.kind == "earn", e.bucket == "growth"), e.points), else_=0)
                 ).label("ge"),
        func.sum(case((and_(e.kind == "clawback", points_buckets), e.points), else_=0)
                 ).label("pc"),
        func.sum(case((and_(e.kind == "clawback", e.bucket == "growth"), e.points), else_=0)
                 ).label("gc"),
    ).where(e.cause_type.in_(("order", "return"))).group_by(e.order_id).subquery())
    pe, ge = func.coalesce(sums.c.pe, 0), func.coalesce(sums.c.ge, 0)
    pc, gc = func.coalesce(sums.c.pc, 0), func.coalesce(sums.c.gc, 0)
    rows = conn.execute(
        select(oe.order_id, oe.points, oe.growth, oe.points_clawed, oe.growth_clawed,
               pe.label("pe"), ge.label("ge"), pc.label("pc"), gc.label("gc"))
        .select_from(loyalty_order_earnings.outerjoin(sums, sums.c.order_id == oe.order_id))
        .where(or_(oe.points != pe, oe.growth != ge, oe.points_clawed != -pc,
                   oe.growth_clawed != -gc))
        .order_by(oe.order_id).limit(LIMIT))
    return [{"check": "order_earning", "order_id": int(r.order_id),
             "stored": {"points": int(r.points), "growth": int(r.growth),
                        "points_clawed": int(r.points_clawed),
                        "growth_clawed": int(r.growth_clawed)},
             "from_entries": {"points": int(r.pe), "growth": int(r.ge),
                              "points_clawed": -int(r.pc), "growth_clawed": -int(r.gc)}}
            for r in rows]


def check_tiers(conn: Connection) -> list[dict[str, Any]]:
    """Each member's tier is the last one its history records, and never below the tier its
    growth value or 12-month spend qualifies for (an upgrade is never missed)."""
    h, m = loyalty_tier_history.c, loyalty_members.c
    last = (select(h.member_id, func.max(h.id).label("hid")).group_by(h.member_id).subquery())
    hist = loyalty_tier_history.alias("last_row")
    rows = conn.execute(
        select(m.id, m.tier_id, hist.c.to_tier_id, hist.c.id.label("hid"))
        .select_from(loyalty_members.outerjoin(last, last.c.member_id == m.id)
                     .outerjoin(hist, hist.c.id == last.c.hid))
        .where(or_(and_(hist.c.id.is_(None), m.tier_id.is_not(None)),
                   and_(hist.c.id.is_not(None),
                        func.coalesce(type_coerce(m.tier_id, BigInteger), literal(-1))
                        != func.coalesce(type_coerce(hist.c.to_tier_id, BigInteger),
                                         literal(-1)))))
        .order_by(m.id).limit(LIMIT))
    out: list[dict[str, Any]] = [
        {"check": "tier_history", "member_id": int(r.id), "stored": r.tier_id,
         "from_history": r.to_tier_id} for r in rows]
    for program in conn.execute(select(loyalty_programs)).mappings():
        defs = load_tiers(conn, [int(program["id"])])[int(program["id"])]
        if not defs:
            continue
        ranks = {t.id: t.rank for t in defs}
        after = 0
        while len(out) < LIMIT:
            members = conn.execute(select(m.id, m.tier_id, m.growth_value).where(
                m.program_id == program["id"], m.id > after).order_by(m.id).limit(5000)).all()
            if not members:
                break
            spend = (spend_12m(conn, [int(r.id) for r in members], _now())
                     if program["tier_basis"] == "spend_12m" else {})
            for r in members:
                q = qualifying_tier(defs, basis=program["tier_basis"],
                                    growth=int(r.growth_value), spend=spend.get(int(r.id), 0))
                if q is not None and ranks.get(r.tier_id, -1) < q.rank:
                    out.append({"check": "tier_below_qualification", "member_id": int(r.id),
                                "stored": r.tier_id, "qualifies_for": q.id})
            after = int(members[-1].id)
    return out


def _now() -> Any:
    from patron.db import utcnow

    return utcnow()


CHECKS = (check_member_figures, check_lots, check_lots_cover_figures, check_lot_sources,
          check_consumption, check_holds, check_order_earnings, check_tiers)


def verify(conn: Connection) -> dict[str, Any]:
    """Every difference between the stored figures and what the entries say."""
    differences: list[dict[str, Any]] = []
    for check in CHECKS:
        differences.extend(check(conn))
    counts = {
        "members": conn.execute(select(func.count()).select_from(loyalty_members)).scalar_one(),
        "entries": conn.execute(select(func.count()).select_from(loyalty_entries)).scalar_one(),
        "lots": conn.execute(select(func.count()).select_from(loyalty_lots)).scalar_one(),
    }
    return {"checked": counts, "checks": [c.__name__.removeprefix("check_") for c in CHECKS],
            "differences": differences}
