"""Stored value reports: the liability (money on members' cards, principal and bonus, by store
of top-up) and inter-store settlement (清分: principal taken in at one store and spent at
another, and what each store owes another). Both are grouped sums over the entries, which carry
their lot (hence the store of top-up) and the store where the money was used."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from patron.db import utcnow
from patron.loyalty.service import invalid, need
from patron.org.tables import stores
from patron.security.model import Actor
from patron.storedvalue.model import fen, net_settlement, yuan
from patron.storedvalue.service import _program
from patron.storedvalue.tables import sv_entries, sv_lots

PRINCIPAL = ("principal", "principal_held")


def _codes(conn: Connection) -> dict[int, str]:
    return {int(i): c for i, c in conn.execute(select(stores.c.id, stores.c.code))}


def _program_filter(conn: Connection, program: str | None) -> Any:
    if program is None:
        return None
    return sv_entries.c.program_id == int(_program(conn, program)["id"])


def liability(conn: Connection, *, actor: Actor, as_of: dt.datetime | None = None,
              program: str | None = None) -> dict[str, Any]:
    """Outstanding principal and bonus (held money included: it is the member's until a hold is
    committed) by store of top-up, as of a time (now by default), and the total. Store-scoped
    actors see their stores' rows and their total."""
    need(actor, "stored_value.read")
    at = as_of or utcnow()
    e, lt = sv_entries.c, sv_lots.c
    q = (select(lt.store_id, e.bucket, func.sum(e.amount))
         .select_from(sv_entries.join(sv_lots, lt.id == e.lot_id))
         .where(e.created_at <= at).group_by(lt.store_id, e.bucket))
    where = _program_filter(conn, program)
    if where is not None:
        q = q.where(where)
    by_store: dict[int | None, list[int]] = {}
    for store_id, bucket, amount in conn.execute(q):
        if not actor.sees_store(store_id):
            continue
        row = by_store.setdefault(store_id, [0, 0])
        row[0 if bucket in PRINCIPAL else 1] += fen(amount)
    codes = _codes(conn)
    rows = [{"store": None if s is None else codes.get(s), "principal": yuan(p),
             "bonus": yuan(b), "total": yuan(p + b)}
            for s, (p, b) in sorted(by_store.items(), key=lambda kv: (
                kv[0] is not None, codes.get(kv[0] or 0, "")))
            if p or b]
    p_all = sum(p for p, _ in by_store.values())
    b_all = sum(b for _, b in by_store.values())
    return {"as_of": at, "program": program, "stores": rows,
            "total": {"principal": yuan(p_all), "bonus": yuan(b_all),
                      "total": yuan(p_all + b_all)}}


def day_bounds(start: dt.date, end: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """Local days ``start`` to ``end`` inclusive as a UTC half-open interval."""
    if end < start:
        raise invalid("to", "date_range_reversed")
    zone = ZoneInfo(tz)
    lo = dt.datetime.combine(start, dt.time(), zone).astimezone(dt.UTC)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
    return lo, hi


def settlement(conn: Connection, *, actor: Actor, start: dt.datetime, end: dt.datetime,
               program: str | None = None) -> dict[str, Any]:
    """Principal taken in at store A (A holds the cash) and spent at store B (B gave the goods)
    between ``start`` and ``end``, net of refunds to the card, as a matrix; and for each pair of
    stores the net amount one owes the other. Bonus is shown alongside but never settles: no
    store was paid for it. ``None`` stands for head office (top-ups or spends without a
    store). Store-scoped actors see the pairs their stores are part of."""
    need(actor, "stored_value.read")
    e, lt = sv_entries.c, sv_lots.c
    q = (select(lt.store_id, e.store_id, e.bucket, func.sum(e.amount))
         .select_from(sv_entries.join(sv_lots, lt.id == e.lot_id))
         .where(e.kind.in_(("spend", "refund")), e.created_at >= start, e.created_at < end)
         .group_by(lt.store_id, e.store_id, e.bucket))
    where = _program_filter(conn, program)
    if where is not None:
        q = q.where(where)
    codes = _codes(conn)
    principal: dict[tuple[Any, Any], int] = {}
    bonus: dict[tuple[Any, Any], int] = {}
    for source, used_at, bucket, amount in conn.execute(q):
        if actor.store_ids is not None and not (
                actor.sees_store(source) or actor.sees_store(used_at)):
            continue
        key = (None if source is None else codes.get(source),
               None if used_at is None else codes.get(used_at))
        target = principal if bucket in PRINCIPAL else bonus
        target[key] = target.get(key, 0) - fen(amount)  # spends are negative entries
    matrix: dict[Any, dict[Any, dict[str, Any]]] = {}
    for key in sorted(set(principal) | set(bonus), key=lambda k: (
            k[0] is not None, k[0] or "", k[1] is not None, k[1] or "")):
        p, b = principal.get(key, 0), bonus.get(key, 0)
        if p or b:
            matrix.setdefault(key[0], {})[key[1]] = {"principal": yuan(p), "bonus": yuan(b)}
    owed = [{**r, "amount": yuan(r["amount"])} for r in net_settlement(principal)]
    return {"from": start, "to": end, "program": program,
            "matrix": [{"topped_up_at": src, "spent_at": [
                {"store": dst, **cell} for dst, cell in row.items()]}
                for src, row in matrix.items()],
            "owed": owed}
