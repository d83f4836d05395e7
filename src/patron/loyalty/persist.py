"""Loading members' wallets and writing back what the rules decided, set-based.

Every change to points goes through here: members are locked (PostgreSQL: ``FOR UPDATE`` in id
order; SQLite: the writer lock ``BEGIN IMMEDIATE`` holds), their lots loaded into
:class:`patron.loyalty.model.Wallet`, operations applied in Python, and the resulting entries,
lots, lot moves and figure changes written with a handful of statements for the whole set.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import BigInteger, Connection, and_, any_, bindparam, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY

from patron.db import UTCDateTime, allocate_ids, bulk_insert, sqlite_executemany
from patron.loyalty.model import Lot, Wallet
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_lot_moves,
    loyalty_lots,
    loyalty_members,
    loyalty_operations,
)


def temp_keys() -> Iterator[int]:
    """Temporary keys for entries and lots planned in one transaction (negative: never an id)."""
    return itertools.count(-1, -1)


def ids_in(conn: Connection, column: Any, ids: Iterable[int]) -> Any:
    """``column IN ids``. On PostgreSQL one array parameter: the statement has the same text
    for 20 ids or 2,000, and a list of thousands of parameters costs more to parse and plan
    than the query takes to run."""
    values = [int(i) for i in ids]
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(BigInteger)))
    return column.in_(values)


def lock_members(conn: Connection, member_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Member rows, locked in id order on PostgreSQL so that two writers never deadlock."""
    ids = sorted(set(member_ids))
    if not ids:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for part in _chunks(ids, 5000):
        q = select(loyalty_members).where(ids_in(conn, loyalty_members.c.id, part)).order_by(
            loyalty_members.c.id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        out.update({int(r["id"]): dict(r) for r in conn.execute(q).mappings()})
    return out


def lot_from_row(r: Any) -> Lot:
    return Lot(int(r["id"]), int(r["points"]), int(r["remaining"]), r["earned_at"],
               r["available_at"], r["expires_at"], bool(r["activated"]),
               order_id=r["order_id"], store_id=r["store_id"])


def new_wallet(member: dict[str, Any], keys: Iterator[int], lots: Iterable[Lot] = ()) -> Wallet:
    return Wallet(int(member["id"]), keys=keys, available=int(member["points_available"]),
                  owed=int(member["points_owed"]), pending=int(member["points_pending"]),
                  held=int(member["points_held"]), growth=int(member["growth_value"]),
                  lots=lots)


def open_lots(conn: Connection, member_ids: Sequence[int], extra_lot_ids: Iterable[int] = ()
              ) -> dict[int, list[Lot]]:
    """Lots that can still change: with points left, or pending; plus any lots asked for."""
    out: dict[int, list[Lot]] = {m: [] for m in member_ids}
    extra = sorted(set(extra_lot_ids))
    for part in _chunks(list(member_ids), 2000):
        cond = and_(ids_in(conn, loyalty_lots.c.member_id, part),
                    or_(loyalty_lots.c.remaining > 0, loyalty_lots.c.activated.is_(False)))
        if extra:
            cond = or_(cond, ids_in(conn, loyalty_lots.c.id, extra))
        for r in conn.execute(select(loyalty_lots).where(cond)).mappings():
            if int(r["member_id"]) in out:
                out[int(r["member_id"])].append(lot_from_row(r))
    return out


def held_moves(conn: Connection, op_ids: Sequence[int]) -> dict[int, dict[int, int]]:
    """For open holds: which lots each took points from, and how many."""
    if not op_ids:
        return {}
    e, m = loyalty_entries.c, loyalty_lot_moves.c
    rows = conn.execute(
        select(e.cause_id, m.lot_id, m.points)
        .select_from(loyalty_lot_moves.join(loyalty_entries, loyalty_entries.c.id == m.entry_id))
        .where(e.cause_type == "operation", e.cause_id.in_([str(i) for i in op_ids]),
               e.kind == "hold", e.bucket == "available"))
    out: dict[int, dict[int, int]] = {}
    for cause_id, lot_id, points in rows:
        out.setdefault(int(cause_id), {})[int(lot_id)] = -int(points)
    return out


def catch_up(conn: Connection, members: dict[int, dict[str, Any]], *, now: dt.datetime,
             keys: Iterator[int], extra_lot_ids: Iterable[int] = ()
             ) -> tuple[dict[int, Wallet], list[int]]:
    """Wallets for locked members, brought up to ``now``: holds past their expiry released,
    pending lots past their return window activated, lots past their expiry expired.

    Returns the wallets (not yet saved) and the ids of the holds that expired, whose status the
    caller sets with :func:`finish_expired_holds` after saving."""
    ids = sorted(members)
    o = loyalty_operations.c
    expired: list[tuple[int, int, int | None]] = []
    for part in _chunks(ids, 2000):
        expired.extend((int(r.id), int(r.member_id), r.store_id) for r in conn.execute(
            select(o.id, o.member_id, o.store_id).where(
                ids_in(conn, o.member_id, part), o.status == "held", o.hold_expires_at <= now)
            .order_by(o.id)))
    moves = held_moves(conn, [op for op, _, _ in expired])
    lot_ids = {lot for taken in moves.values() for lot in taken} | set(extra_lot_ids)
    lots = open_lots(conn, ids, lot_ids)
    wallets = {m: new_wallet(members[m], keys, lots[m]) for m in ids}
    for op_id, member_id, store_id in expired:
        wallets[member_id].release(moves.get(op_id, {}), cause=("operation", str(op_id)),
                                   now=now, store_id=store_id)
    for w in wallets.values():
        w.activate_due(now)
        w.expire_due(now)
    return wallets, [op for op, _, _ in expired]


def finish_expired_holds(conn: Connection, op_ids: Sequence[int], now: dt.datetime) -> None:
    for part in _chunks(list(op_ids), 2000):
        conn.execute(update(loyalty_operations).where(
            loyalty_operations.c.id.in_(part), loyalty_operations.c.status == "held")
            .values(status="expired", finished_at=now))


def save(conn: Connection, wallets: Iterable[Wallet], *, program_of: dict[int, int], actor: str,
         now: dt.datetime) -> dict[int, int]:
    """Write the wallets' new entries, lots and lot moves, the changed lots and the members'
    figure changes. Returns the ids given to temporary keys (entries and new lots)."""
    wallets = list(wallets)
    entries = [e for w in wallets for e in w.entries]
    new_lots = [lt for w in wallets for lt in w.lots.values() if lt.ref < 0]
    ids: dict[int, int] = {}
    ids.update(zip([e.key for e in entries], allocate_ids(conn, loyalty_entries, len(entries)),
                   strict=True))
    ids.update(zip([lt.ref for lt in new_lots], allocate_ids(conn, loyalty_lots, len(new_lots)),
                   strict=True))

    def real(ref: int) -> int:
        return ids[ref] if ref < 0 else ref

    lot_member = {lt.ref: w.member_id for w in wallets for lt in w.lots.values()}
    bulk_insert(conn, loyalty_entries, [{
        "id": ids[e.key], "program_id": program_of[e.member_id], "member_id": e.member_id,
        "kind": e.kind, "bucket": e.bucket, "points": e.points, "cause_type": e.cause_type,
        "cause_id": str(real(e.cause_lot)) if e.cause_lot is not None else e.cause_id,
        "order_id": e.order_id, "store_id": e.store_id, "rule_version_id": e.rule_version_id,
        "reason": e.reason, "actor": actor, "created_at": now} for e in entries])
    bulk_insert(conn, loyalty_lots, [{
        "id": ids[lt.ref], "program_id": program_of[lot_member[lt.ref]],
        "member_id": lot_member[lt.ref], "entry_id": ids[lt.created_by],  # type: ignore[index]
        "points": lt.points, "remaining": lt.remaining, "earned_at": lt.earned_at,
        "available_at": lt.available_at, "expires_at": lt.expires_at,
        "activated": lt.activated, "order_id": lt.order_id, "store_id": lt.store_id,
    } for lt in new_lots])
    bulk_insert(conn, loyalty_lot_moves, [
        {"entry_id": ids[e.key], "lot_id": real(ref), "points": n}
        for e in entries for ref, n in sorted(e.moves.items()) if n != 0])
    changed = [(lt.ref, lt.remaining - lt.orig_remaining, lt.activated)
               for w in wallets for lt in w.lots.values()
               if lt.ref > 0 and (lt.remaining != lt.orig_remaining
                                  or lt.activated != lt.orig_activated)]
    _update_lots(conn, changed)
    deltas = {w.member_id: w.deltas() for w in wallets}
    apply_member_deltas(conn, {m: d for m, d in deltas.items() if any(d)}, now)
    return ids


def _update_lots(conn: Connection, changed: list[tuple[int, int, bool]]) -> None:
    if not changed:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_LOTS, {"rows": json.dumps(changed)})
        return
    sqlite_executemany(conn, "UPDATE loyalty_lots SET remaining = remaining + ?, activated = ? "
                             "WHERE id = ?", [(d, 1 if a else 0, ref) for ref, d, a in changed])


def apply_member_deltas(conn: Connection, deltas: dict[int, tuple[int, int, int, int, int]],
                        now: dt.datetime) -> None:
    """Add (available, owed, pending, held, growth) changes to members' figures. The CHECK
    constraints refuse any figure that would go negative."""
    if not deltas:
        return
    rows = [[m, *d] for m, d in sorted(deltas.items())]
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_MEMBERS, {"rows": json.dumps(rows), "now": now})
        return
    bind = UTCDateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
    stamp = bind(now) if bind else now
    sqlite_executemany(conn, """
        UPDATE loyalty_members SET points_available = points_available + ?,
          points_owed = points_owed + ?, points_pending = points_pending + ?,
          points_held = points_held + ?, growth_value = growth_value + ?, updated_at = ?
        WHERE id = ?""", [(a, o, p, h, g, stamp, m) for m, a, o, p, h, g in rows])


# One statement for the whole set, rows as one JSON parameter (see customers.figures).
_PG_LOTS = text("""
UPDATE loyalty_lots l SET remaining = l.remaining + (e->>1)::bigint, activated = (e->>2)::boolean
FROM json_array_elements(CAST(:rows AS json)) AS e WHERE l.id = (e->>0)::bigint
""")

_PG_MEMBERS = text("""
UPDATE loyalty_members m SET
  points_available = m.points_available + (e->>1)::bigint,
  points_owed = m.points_owed + (e->>2)::bigint,
  points_pending = m.points_pending + (e->>3)::bigint,
  points_held = m.points_held + (e->>4)::bigint,
  growth_value = m.growth_value + (e->>5)::bigint,
  updated_at = :now
FROM json_array_elements(CAST(:rows AS json)) AS e WHERE m.id = (e->>0)::bigint
""")


def _chunks(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
