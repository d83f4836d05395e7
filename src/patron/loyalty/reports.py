"""Points liability, breakage and inter-store settlement (清分), read from the ledger.

Every figure is defined in docs/loyalty-reports.md. Each report is a handful of grouped queries
over lots, lot moves, entries and operations (no loop over members or lots in Python), scoped to
one program; store-scoped actors see only the rows of their stores. Nothing here writes.

Months are the program's local calendar months: their boundaries are computed in Python in the
program's time zone and compared with the stored UTC times in SQL (a ``CASE`` over at most a few
hundred boundaries), so SQLite and PostgreSQL group exactly alike.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
)

from patron.db import utcnow
from patron.loyalty.model import redemption_value
from patron.loyalty.service import _program, invalid, need
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_lot_moves,
    loyalty_lots,
    loyalty_members,
    loyalty_operations,
)
from patron.org.tables import stores
from patron.security.model import Actor

MAX_MONTHS = 600  # months one report may span (50 years: far beyond any lot's lifetime)
RATE_PLACES = Decimal("0.0001")


# --- months -------------------------------------------------------------------------------------

def parse_month(value: str | None, field: str) -> tuple[int, int] | None:
    """'YYYY-MM' to (year, month); a 422 naming the field otherwise."""
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value.strip() + "-01")
    except ValueError as exc:
        raise invalid(field, "month_format", value=value) from exc
    return day.year, day.month


def _month_start(year: int, month: int, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime(year, month, 1, tzinfo=tz).astimezone(dt.UTC)


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_of(at: dt.datetime, tz: ZoneInfo) -> tuple[int, int]:
    local = at.astimezone(tz)
    return local.year, local.month


def month_bucket(column: Any, first: tuple[int, int], last: tuple[int, int],
                 tz: ZoneInfo) -> Any:
    """A SQL expression giving 'YYYY-MM' (local month in ``tz``) for a UTC time column whose
    values lie between the starts of months ``first`` and after ``last``."""
    whens = []
    ym = _next(*first)
    count = 0
    while ym <= _next(*last):
        whens.append((column < _month_start(*ym, tz), literal(_label(*_prev(*ym)))))
        ym = _next(*ym)
        count += 1
        if count > MAX_MONTHS:
            raise invalid("from", "report_span_too_long", months=MAX_MONTHS)
    return case(*whens, else_=literal(_label(*last)))


def _prev(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _label(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


# --- shared -------------------------------------------------------------------------------------

def _store_codes(conn: Connection) -> dict[int, str]:
    return {int(r.id): r.code for r in conn.execute(select(stores.c.id, stores.c.code))}


def _scope(actor: Actor, column: Any) -> Any:
    """Rows of the actor's stores only (a store-scoped actor never sees rows without a store)."""
    if actor.store_ids is None:
        return literal(True)
    return column.in_(sorted(actor.store_ids))


def scope_codes(conn: Connection, actor: Actor) -> list[str] | None:
    """The store codes a store-scoped actor's figures are limited to (None: every store)."""
    if actor.store_ids is None:
        return None
    codes = _store_codes(conn)
    return sorted(codes.get(s, str(s)) for s in actor.store_ids)


def _sees(actor: Actor, store_id: int | None) -> bool:
    return actor.store_ids is None or (store_id is not None and store_id in actor.store_ids)


def _value(points: int, rate: int) -> Decimal:
    """Cash value of points at the program's redeem rate, rounded down to the fen, as a
    redemption of that many points would pay (model.redemption_value)."""
    return redemption_value(points, rate) if points >= 0 else -redemption_value(-points, rate)


def _program_for(conn: Connection, actor: Actor, code: str) -> dict[str, Any]:
    need(actor, "loyalty.read")
    return _program(conn, code)


# --- liability ----------------------------------------------------------------------------------

def liability(conn: Connection, *, actor: Actor, program: str,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """Outstanding points as of ``now`` (available, pending, held), by local month of expiry
    and by store of issue, with their cash value at the program's redeem rate; owed points;
    points past their expiry that the daily job has not expired yet."""
    now = now or utcnow()
    p = _program_for(conn, actor, program)
    pid, rate, tz = int(p["id"]), int(p["redeem_points_per_yuan"]), ZoneInfo(p["timezone"])
    lt, mv, e, o = loyalty_lots.c, loyalty_lot_moves.c, loyalty_entries.c, loyalty_operations.c
    span = conn.execute(select(func.min(lt.expires_at), func.max(lt.expires_at))
                        .where(lt.program_id == pid)).one()
    codes = _store_codes(conn)
    by_month: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_store: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    if span[0] is not None:
        bucket = month_bucket(lt.expires_at, month_of(span[0], tz), month_of(span[1], tz), tz)
        state = case((and_(lt.activated.is_(False), lt.available_at > now), "pending"),
                     (lt.expires_at <= now, "awaiting_expiry"), else_="available")
        rows = conn.execute(
            select(lt.store_id, bucket.label("month"), state.label("state"),
                   func.sum(lt.remaining).label("points"))
            .where(lt.program_id == pid, lt.remaining > 0, _scope(actor, lt.store_id))
            .group_by(lt.store_id, bucket, state))
        # Open holds took their points out of lots: they are outstanding until committed or
        # released, attributed to the lots (store, expiry) they came from.
        held = conn.execute(
            select(lt.store_id, bucket.label("month"),
                   func.sum(-mv.points).label("points"))
            .select_from(loyalty_operations
                         .join(loyalty_entries, and_(
                             e.cause_type == "operation",
                             e.cause_id == cast(o.id, String), e.kind == "hold",
                             e.bucket == "available"))
                         .join(loyalty_lot_moves, mv.entry_id == e.id)
                         .join(loyalty_lots, lt.id == mv.lot_id))
            .where(o.program_id == pid, o.kind == "hold", o.status == "held",
                   _scope(actor, lt.store_id))
            .group_by(lt.store_id, bucket))
        for store_id, month, st, pts in [*rows, *((s, m, "held", n) for s, m, n in held)]:
            n = int(pts or 0)
            totals[st] += n
            if st == "awaiting_expiry":
                continue
            by_month[month][st] += n
            by_store[store_id][st] += n
    owed = None
    if actor.store_ids is None:
        owed = int(conn.execute(select(func.coalesce(func.sum(loyalty_members.c.points_owed), 0))
                                .where(loyalty_members.c.program_id == pid)).scalar_one())

    def row(parts: dict[str, int]) -> dict[str, Any]:
        pts = parts["available"] + parts["pending"] + parts["held"]
        return {"available": parts["available"], "pending": parts["pending"],
                "held": parts["held"], "points": pts, "value": _value(pts, rate)}

    outstanding = totals["available"] + totals["pending"] + totals["held"]
    return {
        "program": p["code"], "as_of": now, "timezone": p["timezone"],
        "redeem_points_per_yuan": rate,
        "scope": scope_codes(conn, actor),
        "totals": {"available": totals["available"], "pending": totals["pending"],
                   "held": totals["held"], "outstanding": outstanding,
                   "liability": _value(outstanding, rate),
                   "available_value": _value(totals["available"], rate),
                   "pending_value": _value(totals["pending"], rate),
                   "held_value": _value(totals["held"], rate),
                   "awaiting_expiry": totals["awaiting_expiry"], "owed": owed},
        "by_expiry_month": [{"month": m, **row(v)} for m, v in sorted(by_month.items())],
        "by_store": [{"store": codes.get(s) if s is not None else None, **row(v)}
                     for s, v in sorted(by_store.items(),
                                        key=lambda kv: (kv[0] is None,
                                                        codes.get(kv[0] or 0, "")))],
    }


# --- breakage -----------------------------------------------------------------------------------

def breakage(conn: Connection, *, actor: Actor, program: str, by: str = "issue",
             month_from: str | None = None, month_to: str | None = None,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """Per cohort of lots (local month of issue or of expiry): points issued, clawed back by
    returns, expired (including points past expiry the daily job has not expired yet), still
    open, used, and the breakage rate = expired / (issued - clawed back)."""
    if by not in ("issue", "expiry"):
        raise invalid("by", "breakage_by", value=by)
    first, last = parse_month(month_from, "from"), parse_month(month_to, "to")
    if first and last and first > last:
        raise invalid("to", "month_range_reversed")
    now = now or utcnow()
    p = _program_for(conn, actor, program)
    pid, tz = int(p["id"]), ZoneInfo(p["timezone"])
    lt, mv, e = loyalty_lots.c, loyalty_lot_moves.c, loyalty_entries.c
    column = lt.earned_at if by == "issue" else lt.expires_at
    span = conn.execute(select(func.min(column), func.max(column))
                        .where(lt.program_id == pid)).one()
    cohorts: dict[str, dict[str, Any]] = {}
    received: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if span[0] is not None:
        lo, hi = month_of(span[0], tz), month_of(span[1], tz)
        bucket = month_bucket(column, lo, hi, tz)
        conds = [lt.program_id == pid, _scope(actor, lt.store_id)]
        if first:
            conds.append(column >= _month_start(*first, tz))
        if last:
            conds.append(column < _month_start(*_next(*last), tz))
        src = loyalty_entries.alias("source")
        is_transfer = (src.c.kind == "transfer").label("transfer")
        lots = conn.execute(
            select(bucket.label("month"), is_transfer,
                   func.sum(lt.points).label("issued"),
                   func.sum(case((lt.expires_at <= now, lt.remaining), else_=0)).label("late"),
                   func.sum(case((lt.expires_at > now, lt.remaining), else_=0)).label("open"),
                   func.max(lt.expires_at).label("last_expiry"))
            .select_from(loyalty_lots.join(src, src.c.id == lt.entry_id))
            .where(*conds).group_by(bucket, is_transfer))
        moves = conn.execute(
            select(bucket.label("month"), is_transfer, e.kind,
                   func.sum(mv.points).label("moved"))
            .select_from(loyalty_lot_moves.join(loyalty_lots, lt.id == mv.lot_id)
                         .join(src, src.c.id == lt.entry_id)
                         .join(loyalty_entries, e.id == mv.entry_id))
            .where(*conds, e.kind.in_(("expire", "clawback")))
            .group_by(bucket, is_transfer, e.kind))
        moved: dict[tuple[str, bool, str], int] = {
            (m, bool(t), k): -int(n or 0) for m, t, k, n in moves}
        for m, transfer, issued, late, open_, last_expiry in lots:
            if transfer:
                received[m]["points"] += int(issued)
                received[m]["expired"] += moved.get((m, True, "expire"), 0) + int(late or 0)
                continue
            c = cohorts.setdefault(m, {"issued": 0, "clawed_back": 0, "expired": 0, "open": 0,
                                       "last_expiry": last_expiry})
            c["issued"] += int(issued)
            c["clawed_back"] += moved.get((m, False, "clawback"), 0)
            c["expired"] += moved.get((m, False, "expire"), 0) + int(late or 0)
            c["open"] += int(open_ or 0)
    out = []
    tot = {"issued": 0, "clawed_back": 0, "expired": 0, "open": 0}
    for m in sorted(set(cohorts) | set(received)):
        c = cohorts.get(m, {"issued": 0, "clawed_back": 0, "expired": 0, "open": 0,
                            "last_expiry": None})
        for k in tot:
            tot[k] += c[k]
        out.append({"month": m, **_breakage_row(c),
                    "final": c["last_expiry"] is not None and c["last_expiry"] <= now,
                    "received_by_transfer": {"points": received[m]["points"],
                                             "expired": received[m]["expired"]}})
    return {"program": p["code"], "by": by, "as_of": now, "timezone": p["timezone"],
            "from": month_from, "to": month_to,
            "scope": scope_codes(conn, actor),
            "cohorts": out, "totals": _breakage_row(tot)}


def _breakage_row(c: dict[str, Any]) -> dict[str, Any]:
    net = c["issued"] - c["clawed_back"]
    return {"issued": c["issued"], "clawed_back": c["clawed_back"], "net_issued": net,
            "expired": c["expired"], "open": c["open"],
            "used": net - c["expired"] - c["open"],
            "breakage_rate": None if net <= 0 else
            (Decimal(c["expired"]) / Decimal(net)).quantize(RATE_PLACES, ROUND_HALF_UP)}


# --- settlement ---------------------------------------------------------------------------------

def settlement(conn: Connection, *, actor: Actor, program: str, date_from: dt.date,
               date_to: dt.date) -> dict[str, Any]:
    """Points redeemed in a period (local days ``date_from`` to ``date_to`` inclusive), by
    store of issue (the lot's store) x store of redemption, with what each store owes the
    others at the program's redeem rate (docs/loyalty-reports.md, "Settlement")."""
    if date_to < date_from:
        raise invalid("to", "date_range_reversed")
    if (date_to - date_from).days > 366 * 5:
        raise invalid("to", "report_span_too_long", months=60)
    p = _program_for(conn, actor, program)
    pid, rate, tz = int(p["id"]), int(p["redeem_points_per_yuan"]), ZoneInfo(p["timezone"])
    start = dt.datetime.combine(date_from, dt.time(), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    o, e, mv, lt = loyalty_operations.c, loyalty_entries.c, loyalty_lot_moves.c, loyalty_lots.c
    redeemed = or_(and_(o.kind == "redeem", o.status == "done", e.kind == "redeem"),
                   and_(o.kind == "hold", o.status == "committed", e.kind == "hold"))
    rows = conn.execute(
        select(lt.store_id.label("issued"), o.store_id.label("redeemed"),
               func.sum(-mv.points).label("points"),
               func.count(func.distinct(o.id)).label("redemptions"))
        .select_from(loyalty_operations
                     .join(loyalty_entries, and_(e.cause_type == "operation",
                                                 e.cause_id == cast(o.id, String),
                                                 e.bucket == "available"))
                     .join(loyalty_lot_moves, mv.entry_id == e.id)
                     .join(loyalty_lots, lt.id == mv.lot_id))
        .where(o.program_id == pid, redeemed, o.finished_at >= start, o.finished_at < end)
        .group_by(lt.store_id, o.store_id)).all()
    codes = _store_codes(conn)
    cells = [(r.issued, r.redeemed, int(r.points), int(r.redemptions)) for r in rows
             if _sees(actor, r.issued) or _sees(actor, r.redeemed)]
    matrix: dict[tuple[int | None, int | None], int] = {(i, r): n for i, r, n, _ in cells}

    def code(store_id: int | None) -> str | None:
        return None if store_id is None else codes.get(store_id, str(store_id))

    pairs = sorted({tuple(sorted((i, r))) for i, r, _, _ in cells
                    if i is not None and r is not None and i != r})
    settlements = []
    for a, b in pairs:
        net = matrix.get((a, b), 0) - matrix.get((b, a), 0)  # points A issued, spent at B
        if net == 0:
            continue
        payer, payee = (a, b) if net > 0 else (b, a)
        settlements.append({"payer": code(payer), "payee": code(payee), "points": abs(net),
                            "value": _value(abs(net), rate)})
    stores_seen = sorted({s for i, r, _, _ in cells for s in (i, r) if s is not None
                          and _sees(actor, s)}, key=lambda s: code(s) or "")
    by_store = []
    for s in stores_seen:
        c = code(s)
        pays = sum((x["value"] for x in settlements if x["payer"] == c), Decimal("0.00"))
        gets = sum((x["value"] for x in settlements if x["payee"] == c), Decimal("0.00"))
        by_store.append({
            "store": c,
            "redeemed_here": sum(n for _, r, n, _ in cells if r == s),
            "issued_here_redeemed_here": matrix.get((s, s), 0),
            "issued_here_redeemed_elsewhere": sum(n for i, r, n, _ in cells
                                                  if i == s and r is not None and r != s),
            "issued_elsewhere_redeemed_here": sum(n for i, r, n, _ in cells
                                                  if r == s and i is not None and i != s),
            "pays": pays, "receives": gets, "net": gets - pays})
    total = sum(n for _, _, n, _ in cells)
    cross = sum(n for i, r, n, _ in cells if i is not None and r is not None and i != r)
    unattributed = sum(n for i, r, n, _ in cells if i is None or r is None)
    return {
        "program": p["code"], "from": date_from, "to": date_to, "timezone": p["timezone"],
        "redeem_points_per_yuan": rate,
        "scope": scope_codes(conn, actor),
        "cells": [{"issued_at": code(i), "redeemed_at": code(r), "points": n,
                   "value": _value(n, rate), "redemptions": k}
                  for i, r, n, k in sorted(cells, key=lambda c: (code(c[0]) or "~",
                                                                  code(c[1]) or "~"))],
        "settlements": settlements, "by_store": by_store,
        "totals": {"points": total, "value": _value(total, rate), "cross_store_points": cross,
                   "cross_store_value": _value(cross, rate),
                   "unattributed_points": unattributed},
    }


