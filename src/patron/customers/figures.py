"""Per-customer figures, kept current incrementally and rebuilt from the orders on demand.

Orders change figures by deltas (one additive upsert per customer and chunk, rows locked in key
order); returns subtract; a merge rebuilds the survivor from its orders. ``rebuild`` recomputes
everything from the orders and reports what differed, which is how the incremental path is
checked.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, func, select

from patron.customers.tables import customer_affinities, customer_figures
from patron.db import upsert
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
    """Add the deltas to the stored figures, customers in id order (a fixed lock order)."""
    if not deltas:
        return
    ids = sorted(deltas)
    day_rows = []
    aff_rows = []
    for cid in ids:
        d = deltas[cid]
        for (dim, key), (count, spend) in sorted(d.affinities.items()):
            row = {"customer_id": cid, "dimension": dim, "key": key, "order_count": count,
                   "spend": spend}
            aff_rows.append(row)
            if dim == "day":
                day_rows.append(row)
    # Distinct purchase days: the day rows that did not exist yet.
    new_days: dict[int, int] = defaultdict(int)
    for chunk in _chunks(day_rows, 2000):
        stmt = upsert(conn, customer_affinities).values(
            [{**r, "order_count": 0, "spend": Decimal(0)} for r in chunk]
        ).on_conflict_do_nothing().returning(customer_affinities.c.customer_id)
        for (cid,) in conn.execute(stmt):
            new_days[int(cid)] += 1
    for chunk in _chunks(aff_rows, 2000):
        ins = upsert(conn, customer_affinities).values(chunk)
        conn.execute(ins.on_conflict_do_update(
            index_elements=["customer_id", "dimension", "key"],
            set_={
                "order_count": customer_affinities.c.order_count + ins.excluded.order_count,
                "spend": customer_affinities.c.spend + ins.excluded.spend,
            },
        ))
    fig_rows = []
    for cid in ids:
        d = deltas[cid]
        fig_rows.append({
            "customer_id": cid,
            "order_count": d.order_count,
            "purchase_days": new_days.get(cid, 0),
            "total_spend": d.total_spend,
            "refunded": d.refunded,
            "net_spend": d.total_spend - d.refunded,
            "first_order_at": d.first_order_at,
            "last_order_at": d.last_order_at,
        })
    least = func.least if conn.dialect.name == "postgresql" else func.min
    greatest = func.greatest if conn.dialect.name == "postgresql" else func.max
    f = customer_figures.c
    for chunk in _chunks(fig_rows, 2000):
        ins = upsert(conn, customer_figures).values(chunk)
        x = ins.excluded
        conn.execute(ins.on_conflict_do_update(
            index_elements=["customer_id"],
            set_={
                "order_count": f.order_count + x.order_count,
                "purchase_days": f.purchase_days + x.purchase_days,
                "total_spend": f.total_spend + x.total_spend,
                "refunded": f.refunded + x.refunded,
                "net_spend": f.net_spend + x.net_spend,
                "first_order_at": func.coalesce(least(f.first_order_at, x.first_order_at),
                                                f.first_order_at, x.first_order_at),
                "last_order_at": func.coalesce(greatest(f.last_order_at, x.last_order_at),
                                               f.last_order_at, x.last_order_at),
            },
        ))


def _chunks(rows: list[Any], size: int) -> Any:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def compute_from_orders(conn: Connection, customer_ids: list[int] | None = None
                        ) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, str, str], tuple[int, Decimal]]]:
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
           ) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, str, str], tuple[int, Decimal]]]:
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
