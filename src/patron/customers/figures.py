"""Per-customer figures, kept current incrementally and rebuilt from the orders on demand.

Orders change figures by deltas (one additive upsert per customer and chunk, rows locked in key
order); returns subtract; a merge rebuilds the survivor from its orders. ``rebuild`` recomputes
everything from the orders and reports what differed, which is how the incremental path is
checked.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, func, select, text, update

from patron.customers.tables import customer_affinities, customer_figures
from patron.db import UTCDateTime, sqlite_executemany
from patron.orders.tables import order_lines, orders
from patron.org.tables import channels, stores

DIMENSIONS = ("store", "channel", "category", "hour", "day")


@dataclass
class FigureDelta:
    order_count: int = 0
    total_spend: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    first_order_at: dt.datetime | None = None
    last_order_at: dt.datetime | None = None
    affinities: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def add_order(self, *, purchased_at: dt.datetime, local_time: dt.datetime, total: Decimal,
                  store_code: str | None, channel_code: str,
                  category_amounts: dict[str, Decimal]) -> None:
        self.order_count += 1
        self.total_spend += total
        if self.first_order_at is None or purchased_at < self.first_order_at:
            self.first_order_at = purchased_at
        if self.last_order_at is None or purchased_at > self.last_order_at:
            self.last_order_at = purchased_at
        keys: list[tuple[str, str, Decimal]] = [("channel", channel_code, total),
                                                 ("hour", f"{local_time.hour:02d}", total),
                                                 ("day", local_time.date().isoformat(), total)]
        if store_code:
            keys.append(("store", store_code, total))
        keys.extend(("category", c, a) for c, a in category_amounts.items())
        for dim, key, amount in keys:
            slot = self.affinities.setdefault((dim, key), [0, Decimal(0)])
            slot[0] += 1
            slot[1] += amount


def apply_deltas(conn: Connection, deltas: dict[int, FigureDelta]) -> None:
    """Add the deltas to the stored figures.

    PostgreSQL: one upsert per table for the whole chunk (rows as one JSON parameter).
    SQLite: single-row upserts run by the driver's executemany. Then the distinct purchase days
    are recounted from the ``day`` rows. The figures rows are written
    first, customers in id order: on PostgreSQL that takes their row locks in a fixed order, so a
    concurrent chunk for the same customer waits here, and the purchase days it counts include
    this chunk's rows.
    """
    if not deltas:
        return
    ids = sorted(deltas)
    fig_rows = []
    aff_rows = []
    for cid in ids:
        d = deltas[cid]
        fig_rows.append({
            "customer_id": cid,
            "order_count": d.order_count,
            "total_spend": d.total_spend,
            "refunded": d.refunded,
            "net_spend": d.total_spend - d.refunded,
            "first_order_at": d.first_order_at,
            "last_order_at": d.last_order_at,
        })
        for (dim, key), (count, spend) in sorted(d.affinities.items()):
            aff_rows.append({"customer_id": cid, "dimension": dim, "key": key,
                             "order_count": count, "spend": spend})
    if conn.dialect.name == "postgresql":
        _pg_upserts(conn, fig_rows, aff_rows)
        conn.execute(_PG_PURCHASE_DAYS, {"ids": ids})
        return
    stamp = UTCDateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
    assert stamp is not None
    sqlite_executemany(conn, _SQLITE_FIGURES, [
        (r["customer_id"], r["order_count"], _fen(r["total_spend"]), _fen(r["refunded"]),
         _fen(r["net_spend"]), stamp(r["first_order_at"]), stamp(r["last_order_at"]))
        for r in fig_rows])
    sqlite_executemany(conn, _SQLITE_AFFINITIES, [
        (r["customer_id"], r["dimension"], r["key"], r["order_count"], _fen(r["spend"]))
        for r in aff_rows])
    a = customer_affinities.c
    days = (select(func.count()).where(a.customer_id == customer_figures.c.customer_id,
                                       a.dimension == "day").scalar_subquery())
    for part in _chunks(ids, 1000):
        conn.execute(update(customer_figures)
                     .where(customer_figures.c.customer_id.in_(part))
                     .values(purchase_days=days))


def _fen(value: Decimal) -> int:
    return int(value * 100)


# PostgreSQL: one statement per table for the whole chunk, its rows passed as one JSON array
# (the server parses JSON several times faster than the driver dumps Python lists as arrays).
_PG_FIGURES = text("""
INSERT INTO customer_figures (customer_id, order_count, purchase_days, total_spend, refunded,
                              net_spend, first_order_at, last_order_at)
SELECT (e->>0)::bigint, (e->>1)::int, 0, (e->>2)::bigint, (e->>3)::bigint,
       (e->>2)::bigint - (e->>3)::bigint, (e->>4)::timestamptz, (e->>5)::timestamptz
FROM json_array_elements(CAST(:rows AS json)) AS e
ON CONFLICT (customer_id) DO UPDATE SET
  order_count = customer_figures.order_count + excluded.order_count,
  total_spend = customer_figures.total_spend + excluded.total_spend,
  refunded = customer_figures.refunded + excluded.refunded,
  net_spend = customer_figures.net_spend + excluded.net_spend,
  first_order_at = LEAST(customer_figures.first_order_at, excluded.first_order_at),
  last_order_at = GREATEST(customer_figures.last_order_at, excluded.last_order_at)
""")

_PG_AFFINITIES = text("""
INSERT INTO customer_affinities (customer_id, dimension, key, order_count, spend)
SELECT (e->>0)::bigint, e->>1, e->>2, (e->>3)::int, (e->>4)::bigint
FROM json_array_elements(CAST(:rows AS json)) AS e
ON CONFLICT (customer_id, dimension, key) DO UPDATE SET
  order_count = customer_affinities.order_count + excluded.order_count,
  spend = customer_affinities.spend + excluded.spend
""")

# One statement text whatever the number of customers, so the driver can prepare it once.
_PG_PURCHASE_DAYS = text("""
UPDATE customer_figures f SET purchase_days = (
  SELECT count(*) FROM customer_affinities a
  WHERE a.customer_id = f.customer_id AND a.dimension = 'day')
WHERE f.customer_id = ANY(CAST(:ids AS bigint[]))
""")


def _pg_upserts(conn: Connection, fig_rows: list[dict[str, Any]],
                aff_rows: list[dict[str, Any]]) -> None:
    conn.execute(_PG_FIGURES, {"rows": json.dumps([
        [r["customer_id"], r["order_count"], _fen(r["total_spend"]), _fen(r["refunded"]),
         _iso(r["first_order_at"]), _iso(r["last_order_at"])] for r in fig_rows])})
    conn.execute(_PG_AFFINITIES, {"rows": json.dumps([
        [r["customer_id"], r["dimension"], r["key"], r["order_count"], _fen(r["spend"])]
        for r in aff_rows])})


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# SQLite: the same upserts as plain statements run by the driver's executemany; SQLAlchemy's
# per-row parameter handling cost more than the statements.
_SQLITE_FIGURES = """
INSERT INTO customer_figures (customer_id, order_count, purchase_days, total_spend, refunded,
                              net_spend, first_order_at, last_order_at)
VALUES (?, ?, 0, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id) DO UPDATE SET
  order_count = order_count + excluded.order_count,
  total_spend = total_spend + excluded.total_spend,
  refunded = refunded + excluded.refunded,
  net_spend = net_spend + excluded.net_spend,
  first_order_at = coalesce(min(first_order_at, excluded.first_order_at), first_order_at,
                            excluded.first_order_at),
  last_order_at = coalesce(max(last_order_at, excluded.last_order_at), last_order_at,
                           excluded.last_order_at)
"""

_SQLITE_AFFINITIES = """
INSERT INTO customer_affinities (customer_id, dimension, key, order_count, spend)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, dimension, key) DO UPDATE SET
  order_count = order_count + excluded.order_count,
  spend = spend + excluded.spend
"""


def _chunks(rows: list[Any], size: int) -> Any:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


Figures = dict[int, dict[str, Any]]
Affinities = dict[tuple[int, str, str], tuple[int, Decimal]]


def compute_from_orders(conn: Connection, customer_ids: list[int] | None = None
                        ) -> tuple[Figures, Affinities]:
    """Figures and affinities as the orders say they should be (the slow, certain path)."""
    store_rows = {r.id: (r.code, r.timezone) for r in conn.execute(
        select(stores.c.id, stores.c.code, stores.c.timezone))}
    channel_codes = {r.id: r.code for r in conn.execute(select(channels.c.id, channels.c.code))}
    q = select(orders.c.id, orders.c.customer_id, orders.c.store_id, orders.c.channel_id,
               orders.c.purchased_at, orders.c.total_amount, orders.c.refunded_amount
               ).where(orders.c.customer_id.is_not(None))
    lq = select(order_lines.c.order_id, order_lines.c.category, order_lines.c.amount
                ).join(orders, orders.c.id == order_lines.c.order_id
                       ).where(orders.c.customer_id.is_not(None))
    if customer_ids is not None:
        q = q.where(orders.c.customer_id.in_(customer_ids))
        lq = lq.where(orders.c.customer_id.in_(customer_ids))
    cats: dict[int, dict[str, Decimal]] = defaultdict(dict)
    for r in conn.execute(lq):
        if r.category:
            cats[r.order_id][r.category] = cats[r.order_id].get(r.category, Decimal(0)) + r.amount
    deltas: dict[int, FigureDelta] = defaultdict(FigureDelta)
    for r in conn.execute(q.order_by(orders.c.id)):
        code, tz = store_rows.get(r.store_id, (None, "Asia/Shanghai"))
        d = deltas[int(r.customer_id)]
        d.add_order(purchased_at=r.purchased_at, local_time=r.purchased_at.astimezone(ZoneInfo(tz)),
                    total=r.total_amount, store_code=code, channel_code=channel_codes[r.channel_id],
                    category_amounts=cats.get(r.id, {}))
        d.refunded += r.refunded_amount
    figures = {}
    affinities = {}
    for cid, d in deltas.items():
        days = sum(1 for (dim, _k) in d.affinities if dim == "day")
        figures[cid] = {"order_count": d.order_count, "purchase_days": days,
                        "total_spend": d.total_spend, "refunded": d.refunded,
                        "net_spend": d.total_spend - d.refunded,
                        "first_order_at": d.first_order_at, "last_order_at": d.last_order_at}
        for (dim, key), (count, spend) in d.affinities.items():
            affinities[(cid, dim, key)] = (count, spend)
    return figures, affinities


def stored(conn: Connection, customer_ids: list[int] | None = None
           ) -> tuple[Figures, Affinities]:
    fq = select(customer_figures)
    aq = select(customer_affinities)
    if customer_ids is not None:
        fq = fq.where(customer_figures.c.customer_id.in_(customer_ids))
        aq = aq.where(customer_affinities.c.customer_id.in_(customer_ids))
    figures = {}
    for r in conn.execute(fq).mappings():
        row = dict(r)
        cid = int(row.pop("customer_id"))
        if row["order_count"] == 0 and row["refunded"] == 0:
            continue
        figures[cid] = row
    affinities = {
        (int(r.customer_id), r.dimension, r.key): (r.order_count, r.spend)
        for r in conn.execute(aq)
    }
    return figures, affinities


def compare(conn: Connection, customer_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Every difference between the stored figures and what the orders say."""
    want_f, want_a = compute_from_orders(conn, customer_ids)
    have_f, have_a = stored(conn, customer_ids)
    diffs: list[dict[str, Any]] = []
    for cid in sorted(set(want_f) | set(have_f)):
        w, h = want_f.get(cid), have_f.get(cid)
        if w is None or h is None:
            diffs.append({"customer_id": cid, "field": "*", "stored": h, "expected": w})
            continue
        for k, v in w.items():
            if h.get(k) != v:
                diffs.append({"customer_id": cid, "field": k, "stored": h.get(k), "expected": v})
    for key in sorted(set(want_a) | set(have_a)):
        w, h = want_a.get(key), have_a.get(key)
        if w != h:
            diffs.append({"customer_id": key[0], "field": f"{key[1]}:{key[2]}",
                          "stored": h, "expected": w})
    return diffs


def rebuild(conn: Connection, customer_ids: list[int] | None = None) -> None:
    """Replace the stored figures with those computed from the orders."""
    want_f, want_a = compute_from_orders(conn, customer_ids)
    fdel = delete(customer_figures)
    adel = delete(customer_affinities)
    if customer_ids is not None:
        fdel = fdel.where(customer_figures.c.customer_id.in_(customer_ids))
        adel = adel.where(customer_affinities.c.customer_id.in_(customer_ids))
    conn.execute(adel)
    conn.execute(fdel)
    frows = [{"customer_id": cid, **vals} for cid, vals in sorted(want_f.items())]
    arows = [{"customer_id": cid, "dimension": dim, "key": key, "order_count": c, "spend": s}
             for (cid, dim, key), (c, s) in sorted(want_a.items())]
    for chunk in _chunks(frows, 2000):
        conn.execute(customer_figures.insert(), chunk)
    for chunk in _chunks(arows, 2000):
        conn.execute(customer_affinities.insert(), chunk)
