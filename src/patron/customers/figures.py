"""Per-customer figures, kept current incrementally and rebuilt from the orders on demand.

One ``customer_figures`` row per customer holds the totals (orders, purchase days, spend,
refunds, first and last purchase) and, in ``counters``, the running counters behind the
favourites: per dimension (store, channel, category, local hour, ISO weekday) and key, how many
orders and how much spend in fen::

    {"store": {"BEAN-SH-01": [3, 8400]}, "hour": {"08": [2, 5600]}, "weekday": {"1": [1, 2800]},
     "channel": {...}, "category": {...}}

A chunk of orders updates each of its customers' rows once, read-modify-write: the rows are
locked in customer id order (PostgreSQL ``FOR UPDATE``; SQLite has one writer), read, the
chunk's deltas added in Python, and written back in one statement. Distinct purchase days are
counted from the orders themselves: a day of the chunk is new for a customer unless one of the
customer's earlier orders has the same local date (each order in its own store's time zone),
which an index range on ``(customer_id, purchased_at)`` answers; the row keeps the customer's
first and last local purchase dates, so that only a day between them needs that look. Returns
subtract refunds with an additive update (``orders.returns``), which a read-modify-write here
never overwrites. A merge rebuilds the survivor from its orders. ``rebuild`` recomputes
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

import orjson
from sqlalchemy import Connection, delete, select, text

from patron.config import get_settings
from patron.customers.tables import customer_figures
from patron.db import UTCDateTime, sqlite_executemany, sqlite_fetchall
from patron.orders.tables import order_lines, orders
from patron.org.tables import channels, stores

DIMENSIONS = ("store", "channel", "category", "hour", "weekday")
Counters = dict[str, dict[str, list[int]]]  # dimension -> key -> [orders, spend in fen]

# Any local date, in any time zone (UTC-12 to UTC+14), lies within this margin of its UTC day.
_TZ_MARGIN = dt.timedelta(hours=14)


@dataclass
class FigureDelta:
    order_count: int = 0
    total_spend: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    first_order_at: dt.datetime | None = None
    last_order_at: dt.datetime | None = None
    days: set[dt.date] = field(default_factory=set)
    counters: Counters = field(default_factory=dict)

    def add_order(self, *, purchased_at: dt.datetime, local_time: dt.datetime, total: Decimal,
                  store_code: str | None, channel_code: str,
                  category_amounts: dict[str, Decimal]) -> None:
        self.order_count += 1
        self.total_spend += total
        if self.first_order_at is None or purchased_at < self.first_order_at:
            self.first_order_at = purchased_at
        if self.last_order_at is None or purchased_at > self.last_order_at:
            self.last_order_at = purchased_at
        self.days.add(local_time.date())
        spend = _fen(total)
        c = self.counters
        _bump(c, "channel", channel_code, spend)
        _bump(c, "hour", f"{local_time.hour:02d}", spend)
        _bump(c, "weekday", str(local_time.isoweekday()), spend)
        if store_code:
            _bump(c, "store", store_code, spend)
        for category, amount in category_amounts.items():
            _bump(c, "category", category, _fen(amount))


class RecordedFigures:
    """What a chunk's newly recorded orders add to one customer's figures. The totals are
    kept as the orders come; each order's counter keys are kept as they are and added to the
    customer's stored counters once (:func:`apply_deltas`), instead of building the chunk's
    own counters first and merging them into the stored ones after. The amounts are in fen
    and the purchase times in the form the driver stores them (:func:`patron.db.driver_datetime`: on
    SQLite the UTC text, which sorts as the times do), so nothing is converted per customer.
    """

    __slots__ = ("order_count", "spend_fen", "first_at", "last_at", "days", "orders")

    def __init__(self) -> None:
        self.order_count = 0
        self.spend_fen = 0
        self.first_at: Any = None
        self.last_at: Any = None
        self.days: set[dt.date] = set()
        # (channel, hour key, weekday key, store or None, total in fen, {category: fen})
        self.orders: list[tuple[str, str, str, str | None, int, dict[str, int]]] = []

    def add(self, stored_at: Any, local_time: dt.datetime, total_fen: int,
            store_code: str | None, channel_code: str, category_fen: dict[str, int]) -> None:
        self.order_count += 1
        self.spend_fen += total_fen
        first = self.first_at
        if first is None or stored_at < first:
            self.first_at = stored_at
        last = self.last_at
        if last is None or stored_at > last:
            self.last_at = stored_at
        self.days.add(local_time.date())
        self.orders.append((channel_code, _HOURS[local_time.hour],
                            _WEEKDAYS[local_time.isoweekday()], store_code, total_fen,
                            category_fen))

    def counted_into(self, counters: Counters) -> Counters:
        """``counters`` with this chunk's orders counted in (changed and returned): what
        adding the counters :meth:`FigureDelta.add_order` would count for the same orders
        gives."""
        if not self.orders:
            return counters
        # Every order counts a channel, an hour and a weekday: those three dimensions are
        # looked up once (created in the order the orders' own counting creates them).
        by_channel = counters.setdefault("channel", {})
        by_hour = counters.setdefault("hour", {})
        by_weekday = counters.setdefault("weekday", {})
        for channel, hour, weekday, store, spend, categories in self.orders:
            for table, key in ((by_channel, channel), (by_hour, hour), (by_weekday, weekday)):
                slot = table.get(key)
                if slot is None:
                    table[key] = [1, spend]
                else:
                    slot[0] += 1
                    slot[1] += spend
            if store:
                _bump(counters, "store", store, spend)
            for category, amount in categories.items():
                _bump(counters, "category", category, amount)
        return counters


_HOURS = tuple(f"{h:02d}" for h in range(24))  # the counters' keys: "08", "1" (Monday)
_WEEKDAYS = tuple(str(d) for d in range(8))


def _bump(counters: Counters, dim: str, key: str, spend: int, count: int = 1) -> None:
    keys = counters.get(dim)
    if keys is None:
        keys = counters[dim] = {}
    slot = keys.get(key)
    if slot is None:
        keys[key] = [count, spend]
    else:
        slot[0] += count
        slot[1] += spend


def _fen(value: Decimal) -> int:
    return int(value * 100)


def _yuan(fen: int) -> Decimal:
    return (Decimal(int(fen)) / 100).quantize(Decimal("0.01"))


def ranked(counters: Counters, dim: str) -> list[tuple[str, int, Decimal]]:
    """(key, orders, spend) of one dimension, favourite first: the most orders, then more
    spend, then the smaller key."""
    rows = [(k, int(c), int(s)) for k, (c, s) in counters.get(dim, {}).items()]
    rows.sort(key=lambda r: (-r[1], -r[2], r[0]))
    return [(k, c, _yuan(s)) for k, c, s in rows]


def read_counters(conn: Connection, customer_ids: list[int]) -> dict[int, Counters]:
    """The stored counters of these customers (customers without figures are left out)."""
    out: dict[int, Counters] = {}
    f = customer_figures.c
    for part in _chunks(sorted(set(customer_ids)), 5000):
        for cid, counters in conn.execute(select(f.customer_id, f.counters)
                                          .where(f.customer_id.in_(part))):
            out[int(cid)] = _loads(counters)
    return out


def _loads(value: Any) -> Counters:
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        return orjson.loads(value)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


# --- the incremental path -------------------------------------------------------------------

@dataclass
class _Stored:
    order_count: int
    purchase_days: int
    total_spend: int  # fen
    # On SQLite the stored text as it is ('YYYY-MM-DD HH:MM:SS.ffffff' in UTC, which sorts as
    # the times do): compared and written back as text, never parsed.
    first_order_at: dt.datetime | str | None
    last_order_at: dt.datetime | str | None
    first_day: dt.date | None  # the earliest and latest local purchase dates
    last_day: dt.date | None
    counters: Counters


def apply_deltas(conn: Connection, deltas: dict[int, RecordedFigures], *,
                 new_customer_ids: set[int] | frozenset[int] = frozenset(),
                 chunk_order_ids: set[int] | frozenset[int] = frozenset()) -> None:
    """Add a chunk's recorded orders to the stored figures, one read-modify-write per customer.

    Call it after the chunk's orders are inserted: ``chunk_order_ids`` are those orders (left
    out when telling whether a purchase day is new) and ``new_customer_ids`` the customers the
    chunk created (no row to read, no earlier order). On PostgreSQL the other customers' rows
    are locked in id order before they are read, so a concurrent chunk for the same customer
    waits here and then reads what this one wrote.
    """
    if not deltas:
        return
    ids = sorted(deltas)
    old_ids = [cid for cid in ids if cid not in new_customer_ids]
    stored = _lock_and_read(conn, old_ids)
    # Purchase days. A day of the chunk before the customer's first purchase day or after the
    # last is new, one equal to either is not; only days strictly between them (a late
    # order) need a look at the customer's orders. Imports and tills mostly bring later days.
    wanted: dict[int, set[dt.date]] = {}
    new_days: dict[int, int] = {}
    for cid in ids:
        s = stored.get(cid)
        days = deltas[cid].days
        if s is None or s.order_count == 0:
            new_days[cid] = len(days)
            continue
        if s.first_day is None or s.last_day is None:  # not kept yet: look at every day
            new_days[cid] = 0
            wanted[cid] = set(days)
            continue
        first, last = s.first_day, s.last_day
        new_days[cid] = sum(1 for day in days if day < first or day > last)
        between = {day for day in days if first < day < last}
        if between:
            wanted[cid] = between
    known = _earlier_days(conn, wanted, chunk_order_ids)
    for cid, between in wanted.items():
        new_days[cid] += len(between - known.get(cid, set()))
    # The times are in the driver's form already (on SQLite the stored text, compared with
    # the stored text as it is read).
    rows = []
    for cid in ids:
        d = deltas[cid]
        s = stored.get(cid)
        first_day, last_day = min(d.days), max(d.days)
        if s is None:
            rows.append((cid, d.order_count, new_days[cid], d.spend_fen,
                         d.first_at, d.last_at, first_day, last_day, d.counted_into({})))
            continue
        rows.append((cid, s.order_count + d.order_count, s.purchase_days + new_days[cid],
                     s.total_spend + d.spend_fen,
                     _earliest(s.first_order_at, d.first_at),
                     _latest(s.last_order_at, d.last_at),
                     _earliest(s.first_day, first_day), _latest(s.last_day, last_day),
                     d.counted_into(s.counters)))
    _write(conn, rows)


def _window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC times at which it is ``day`` somewhere on Earth."""
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return start - _TZ_MARGIN, start + dt.timedelta(days=1) + _TZ_MARGIN


def _earliest(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


def _lock_and_read(conn: Connection, ids: list[int]) -> dict[int, _Stored]:
    if not ids:
        return {}
    if conn.dialect.name == "postgresql":
        rows = list(conn.execute(_PG_READ_LOCKED, {"ids": ids}))
        missing = sorted(set(ids) - {int(r[0]) for r in rows})
        if missing:
            # Customers without figures yet (a profile made by enrolment, say): give them an
            # empty row to lock, so that two chunks cannot both write a first one.
            conn.execute(_PG_EMPTY_ROWS, {"ids": missing})
            rows.extend(conn.execute(_PG_READ_LOCKED, {"ids": missing}))
        return {int(r[0]): _Stored(int(r[1]), int(r[2]), int(r[3]), r[4], r[5], r[6], r[7],
                                   _loads(r[8]))
                for r in rows}
    # Through the driver: every column is stored as the value used here (integers, the times
    # kept as their text, the dates parsed below, the counters as JSON text).
    date = dt.date.fromisoformat
    loads = orjson.loads
    return {cid: _Stored(n, days, spend, first_at, last_at,
                         None if first_day is None else date(first_day),
                         None if last_day is None else date(last_day),
                         {} if counters is None else loads(counters))
            for cid, n, days, spend, first_at, last_at, first_day, last_day, counters
            in sqlite_fetchall(conn, _SQLITE_READ, (orjson.dumps(ids).decode(),))}


def _sqlite_time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def _earlier_days(conn: Connection, wanted: dict[int, set[dt.date]],
                  chunk_order_ids: set[int] | frozenset[int]) -> dict[int, set[dt.date]]:
    """Of each customer's dates in ``wanted``, those on which one of the customer's orders
    outside this chunk was bought (local date in the order's store's time zone)."""
    windows = []
    for cid, days in wanted.items():
        lo = hi = None
        for day in sorted(days):
            start, end = _window(day)
            if hi is not None and start <= hi:
                hi = end  # consecutive days: one window
                continue
            if lo is not None:
                windows.append((cid, lo, hi))
            lo, hi = start, end
        if lo is not None:
            windows.append((cid, lo, hi))
    if not windows:
        return {}
    default_tz = get_settings().default_timezone
    zones: dict[str, ZoneInfo] = {}
    found: dict[int, set[dt.date]] = defaultdict(set)
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_PG_EARLIER_ORDERS, {"w": orjson.dumps(windows).decode()})
    else:
        stamp = UTCDateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
        assert stamp is not None
        rows = conn.execute(_SQLITE_EARLIER_ORDERS, {"w": orjson.dumps(
            [(cid, stamp(lo), stamp(hi)) for cid, lo, hi in windows]).decode()})
    seen: set[int] = set()
    for oid, cid, at, tz in rows:
        if oid in chunk_order_ids or oid in seen:
            continue
        seen.add(oid)
        if isinstance(at, str):
            at = _sqlite_time(at)
        name = tz or default_tz
        zone = zones.get(name) or zones.setdefault(name, ZoneInfo(name))
        day = at.astimezone(zone).date()
        if day in wanted[int(cid)]:
            found[int(cid)].add(day)
    return found


def _write(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    if conn.dialect.name == "postgresql":
        # orjson writes aware datetimes as ISO 8601, which the statement casts back. The
        # counters go apart, one JSON document per line (orjson never writes a raw newline):
        # every ``->>`` of a json element parses the whole element again, and with the
        # counters inside it that was about half of the statement's time.
        conn.execute(_PG_WRITE, {
            "rows": orjson.dumps([r[:8] for r in rows]).decode(),
            "counters": "\n".join([orjson.dumps(r[8]).decode() for r in rows])})
        return
    # The times are text already (apply_deltas): what UTCDateTime binds on SQLite.
    sqlite_executemany(conn, _SQLITE_WRITE, [
        (cid, n, days, spend, first, last, first_day.isoformat(),
         last_day.isoformat(), orjson.dumps(counters).decode())
        for cid, n, days, spend, first, last, first_day, last_day, counters in rows])


# One statement text whatever the number of customers, so the driver can prepare it once.
_PG_READ_LOCKED = text("""
SELECT customer_id, order_count, purchase_days, total_spend, first_order_at, last_order_at,
       first_purchase_day, last_purchase_day, counters::text
FROM customer_figures WHERE customer_id = ANY(CAST(:ids AS bigint[]))
ORDER BY customer_id FOR UPDATE
""")

_PG_EMPTY_ROWS = text("""
INSERT INTO customer_figures (customer_id, counters)
SELECT unnest(CAST(:ids AS bigint[])), CAST('{}' AS json)
ON CONFLICT (customer_id) DO NOTHING
""")

# One range probe of (customer_id, purchased_at) per window. As a plain join the planner,
# not knowing how many windows the JSON holds, hashed them and scanned the whole orders table
# (35 ms at 18,000 orders, growing with the table, for a single late order of one till);
# OFFSET 0 keeps the lateral subquery from being flattened back into that join.
_PG_EARLIER_ORDERS = text("""
SELECT o.id, o.customer_id, o.purchased_at, s.timezone
FROM json_array_elements(CAST(:w AS json)) AS e
CROSS JOIN LATERAL (
  SELECT o.id, o.customer_id, o.purchased_at, o.store_id
  FROM orders o
  WHERE o.customer_id = (e->>0)::bigint
    AND o.purchased_at >= (e->>1)::timestamptz AND o.purchased_at < (e->>2)::timestamptz
  OFFSET 0) AS o
LEFT JOIN stores s ON s.id = o.store_id
""")

# The rows are locked: totals and counters are written as computed; the n-th line of
# :counters goes with the n-th element of :rows (ROWS FROM pairs them by position). Refunds
# are the returns' (an additive update elsewhere), so net spend is derived from the stored
# refunds.
_PG_WRITE = text("""
INSERT INTO customer_figures (customer_id, order_count, purchase_days, total_spend, refunded,
                              net_spend, first_order_at, last_order_at, first_purchase_day,
                              last_purchase_day, counters)
SELECT (e->>0)::bigint, (e->>1)::int, (e->>2)::int, (e->>3)::bigint, 0, (e->>3)::bigint,
       (e->>4)::timestamptz, (e->>5)::timestamptz, (e->>6)::date, (e->>7)::date, CAST(c AS json)
FROM ROWS FROM (json_array_elements(CAST(:rows AS json)),
                string_to_table(CAST(:counters AS text), E'\\n')) AS r(e, c)
ON CONFLICT (customer_id) DO UPDATE SET
  order_count = excluded.order_count,
  purchase_days = excluded.purchase_days,
  total_spend = excluded.total_spend,
  net_spend = excluded.total_spend - customer_figures.refunded,
  first_order_at = excluded.first_order_at,
  last_order_at = excluded.last_order_at,
  first_purchase_day = excluded.first_purchase_day,
  last_purchase_day = excluded.last_purchase_day,
  counters = excluded.counters
""")

_SQLITE_READ = """
SELECT f.customer_id, f.order_count, f.purchase_days, f.total_spend, f.first_order_at,
       f.last_order_at, f.first_purchase_day, f.last_purchase_day, f.counters
FROM json_each(?) AS k JOIN customer_figures f ON f.customer_id = k.value
"""

_SQLITE_EARLIER_ORDERS = text("""
SELECT o.id, o.customer_id, o.purchased_at, s.timezone
FROM json_each(:w) AS k
JOIN orders o ON o.customer_id = json_extract(k.value, '$[0]')
 AND o.purchased_at >= json_extract(k.value, '$[1]')
 AND o.purchased_at < json_extract(k.value, '$[2]')
LEFT JOIN stores s ON s.id = o.store_id
""")

_SQLITE_WRITE = """
INSERT INTO customer_figures (customer_id, order_count, purchase_days, total_spend, refunded,
                              net_spend, first_order_at, last_order_at, first_purchase_day,
                              last_purchase_day, counters)
VALUES (?1, ?2, ?3, ?4, 0, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (customer_id) DO UPDATE SET
  order_count = excluded.order_count,
  purchase_days = excluded.purchase_days,
  total_spend = excluded.total_spend,
  net_spend = excluded.total_spend - refunded,
  first_order_at = excluded.first_order_at,
  last_order_at = excluded.last_order_at,
  first_purchase_day = excluded.first_purchase_day,
  last_purchase_day = excluded.last_purchase_day,
  counters = excluded.counters
"""


def _chunks(rows: list[Any], size: int) -> Any:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


# --- the certain path: from the orders ------------------------------------------------------

Figures = dict[int, dict[str, Any]]
Affinities = dict[tuple[int, str, str], tuple[int, Decimal]]


def _recompute(conn: Connection, customer_ids: list[int] | None
               ) -> dict[int, FigureDelta]:
    store_rows = {r.id: (r.code, r.timezone) for r in conn.execute(
        select(stores.c.id, stores.c.code, stores.c.timezone))}
    channel_codes = {r.id: r.code for r in conn.execute(select(channels.c.id, channels.c.code))}
    default_tz = get_settings().default_timezone
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
    zones: dict[str, ZoneInfo] = {}
    for r in conn.execute(q.order_by(orders.c.id)):
        code, tz = store_rows.get(r.store_id, (None, default_tz))
        zone = zones.get(tz) or zones.setdefault(tz, ZoneInfo(tz))
        d = deltas[int(r.customer_id)]
        d.add_order(purchased_at=r.purchased_at, local_time=r.purchased_at.astimezone(zone),
                    total=r.total_amount, store_code=code, channel_code=channel_codes[r.channel_id],
                    category_amounts=cats.get(r.id, {}))
        d.refunded += r.refunded_amount
    return deltas


def _figures_of(d: FigureDelta) -> dict[str, Any]:
    return {"order_count": d.order_count, "purchase_days": len(d.days),
            "total_spend": d.total_spend, "refunded": d.refunded,
            "net_spend": d.total_spend - d.refunded,
            "first_order_at": d.first_order_at, "last_order_at": d.last_order_at,
            "first_purchase_day": min(d.days, default=None),
            "last_purchase_day": max(d.days, default=None)}


def _flatten(cid: int, counters: Counters, into: Affinities) -> None:
    for dim, keys in counters.items():
        for key, (count, spend) in keys.items():
            into[(cid, dim, key)] = (int(count), _yuan(spend))


def compute_from_orders(conn: Connection, customer_ids: list[int] | None = None
                        ) -> tuple[Figures, Affinities]:
    """Figures and counters as the orders say they should be (the slow, certain path);
    counters keyed by (customer, dimension, key) as (orders, spend)."""
    figures: Figures = {}
    affinities: Affinities = {}
    for cid, d in _recompute(conn, customer_ids).items():
        figures[cid] = _figures_of(d)
        _flatten(cid, d.counters, affinities)
    return figures, affinities


def stored(conn: Connection, customer_ids: list[int] | None = None
           ) -> tuple[Figures, Affinities]:
    fq = select(customer_figures)
    if customer_ids is not None:
        fq = fq.where(customer_figures.c.customer_id.in_(customer_ids))
    figures = {}
    affinities: Affinities = {}
    for r in conn.execute(fq).mappings():
        row = dict(r)
        cid = int(row.pop("customer_id"))
        counters = _loads(row.pop("counters"))
        _flatten(cid, counters, affinities)
        if row["order_count"] == 0 and row["refunded"] == 0:
            continue
        figures[cid] = row
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
    want = _recompute(conn, customer_ids)
    fdel = delete(customer_figures)
    if customer_ids is not None:
        fdel = fdel.where(customer_figures.c.customer_id.in_(customer_ids))
    conn.execute(fdel)
    frows = [{"customer_id": cid, **_figures_of(d), "counters": d.counters}
             for cid, d in sorted(want.items())]
    for chunk in _chunks(frows, 2000):
        conn.execute(customer_figures.insert(), chunk)
