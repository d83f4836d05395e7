# ruff: noqa: S608 - every SQL text here is built from this module's own names; values are bound
"""Building the dashboard rollups from the orders, set-based (docs/dashboards.md#refresh).

Per identified customer, ``dashboard_activity`` holds a row per local day, store and channel
(and ``dashboard_category_activity`` per category), with the previous purchase days needed to
count distinct customers of any period. Every other rollup (daily sales, bucket and monthly
reach cells, cohorts) is a sum of per-customer contributions, so an incremental refresh
subtracts the contributions of the customers whose orders, refunds or profile changed since
the last refresh, rebuilds their rows from their orders, and adds the new contributions back.
Guest orders have no customer: their daily sales are recomputed for the days they touched.
A full rebuild is the same statements over every customer.

All SQL here is written by hand because it is mostly window functions and upserts; table and
column names come from this module, values are bound parameters.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, text

from patron.analytics.dashboards import EPOCH

# Kinds of key on dashboard_activity: (key SQL, prefix of the mark columns).
ACTIVITY_KINDS = (
    ("all", "''"),
    ("store", "CAST(store_id AS TEXT)"),
    ("region", "CAST(region_id AS TEXT)"),
    ("brand", "CAST(brand_id AS TEXT)"),
    ("channel", "CAST(channel_id AS TEXT)"),
)
CATEGORY_KIND = ("category", "category")

ALL_CUSTOMERS = "1 = 1"

Timings = dict[str, float]


@contextmanager
def timed(timings: Timings | None, name: str) -> Iterator[None]:
    """Seconds spent per step, added up under ``name`` (what a slow refresh is asked first)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
TOUCHED = "customer_id IN (SELECT id FROM dash_touched)"


# --- local days -----------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _sqlite_local_day(stamp: str | None, tz: str) -> int | None:
    """SQLite has no time zone database: the local day of a stored UTC time, per row, for
    zones whose offset changes (daylight saving time)."""
    if stamp is None:
        return None
    utc = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
    return (utc.astimezone(_zone(tz)).date() - EPOCH).days


def _fixed_offsets(conn: Connection, default_tz: str) -> dict[str, int] | None:
    """Each time zone in use and its UTC offset in seconds when none of them changes offset
    over the span of the orders (China and most of Asia); None otherwise."""
    first, last = conn.execute(text(
        "SELECT MIN(purchased_at), MAX(purchased_at) FROM orders")).one()
    names = {default_tz} | {str(z) for (z,) in conn.execute(
        text("SELECT DISTINCT timezone FROM stores")) if z}
    if first is None:
        return {name: 0 for name in names}
    if isinstance(first, str):
        first = dt.datetime.fromisoformat(first).replace(tzinfo=dt.UTC)
        last = dt.datetime.fromisoformat(last).replace(tzinfo=dt.UTC)
    offsets: dict[str, int] = {}
    days = (last - first).days + 2
    for name in names:
        zone = _zone(name)
        seen = {zone.utcoffset(first + dt.timedelta(days=d)) for d in range(-1, days)}
        if len(seen) != 1:
            return None
        offset = seen.pop()
        offsets[name] = int(offset.total_seconds()) if offset is not None else 0
    return offsets


def local_day_sql(conn: Connection, default_tz: str) -> tuple[str, dict[str, Any]]:
    """SQL for the local day number of order ``o`` bought at store ``s`` (LEFT JOINed; orders
    without a store use the default time zone), and its parameters."""
    if conn.dialect.name == "postgresql":
        return ("(CAST(o.purchased_at AT TIME ZONE COALESCE(s.timezone, :tz) AS date)"
                " - DATE '1970-01-01')"), {"tz": default_tz}
    offsets = _fixed_offsets(conn, default_tz)
    if offsets is not None:
        # Whole seconds, so that a purchase at local midnight falls on its day exactly.
        cases = " ".join(f"WHEN :zone_{i} THEN :offset_{i}" for i in range(len(offsets)))
        params: dict[str, Any] = {"tz": default_tz}
        for i, (name, seconds) in enumerate(sorted(offsets.items())):
            params[f"zone_{i}"], params[f"offset_{i}"] = name, seconds
        return (f"((CAST(strftime('%s', o.purchased_at) AS INTEGER)"
                f" + CASE COALESCE(s.timezone, :tz) {cases} ELSE 0 END) / 86400)"), params
    conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
        "patron_dash_local_day", 2, _sqlite_local_day, deterministic=True)
    return "patron_dash_local_day(o.purchased_at, COALESCE(s.timezone, :tz))", {"tz": default_tz}


def month_sql(conn: Connection, day: str) -> str:
    """The month index (year * 12 + month - 1) of a day number."""
    if conn.dialect.name == "postgresql":
        date = f"(DATE '1970-01-01' + {day})"
        return (f"(CAST(EXTRACT(YEAR FROM {date}) AS INTEGER) * 12"
                f" + CAST(EXTRACT(MONTH FROM {date}) AS INTEGER) - 1)")
    return (f"(CAST(strftime('%Y', {day} * 86400, 'unixepoch') AS INTEGER) * 12"
            f" + CAST(strftime('%m', {day} * 86400, 'unixepoch') AS INTEGER) - 1)")


def month_start_sql(conn: Connection, day: str) -> str:
    """The day number of the first day of a day number's month."""
    if conn.dialect.name == "postgresql":
        return f"({day} - CAST(EXTRACT(DAY FROM DATE '1970-01-01' + {day}) AS INTEGER) + 1)"
    return f"({day} - CAST(strftime('%d', {day} * 86400, 'unixepoch') AS INTEGER) + 1)"


def _capped(amount: str, cap: str) -> str:
    """A refund counts at most what was paid, and never below zero."""
    return f"CASE WHEN {amount} > {cap} THEN {cap} WHEN {amount} < 0 THEN 0 ELSE {amount} END"


# --- temporary tables -----------------------------------------------------------------------

def create_temp_tables(conn: Connection) -> None:
    suffix = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    for target, source in zip((*TOUCHED_ROWS, *NEW_ROWS), (*ROWS, *ROWS), strict=True):
        conn.execute(text(f"DROP TABLE IF EXISTS {target}"))
        as_select = f"AS SELECT * FROM {source} WHERE 1 = 0"
        conn.execute(text(f"CREATE TEMPORARY TABLE {target}{suffix} {as_select}"))
    for name, columns in (
        ("dash_touched", "id BIGINT PRIMARY KEY"),
        ("dash_touched_days", "day INTEGER PRIMARY KEY"),
        ("dash_fine", "kind VARCHAR(8), key VARCHAR(64), month INTEGER, member SMALLINT, "
                      "ref VARCHAR(2), ref_day INTEGER, n INTEGER"),
    ):
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(text(f"CREATE TEMPORARY TABLE {name} ({columns}){suffix}"))


def drop_temp_tables(conn: Connection) -> None:
    for name in ("dash_touched", "dash_touched_days", "dash_fine", *TOUCHED_ROWS, *NEW_ROWS):
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))


# --- what changed ---------------------------------------------------------------------------

def mark_touched(conn: Connection, since: dt.datetime, default_tz: str) -> tuple[int, int]:
    """Customers whose orders, refunds or profile (membership, merges) changed since
    ``since``, and the local days of guest orders that did; into the temporary tables."""
    stamp = _bind_time(conn, since)
    conn.execute(text("""
INSERT INTO dash_touched (id)
SELECT customer_id FROM orders WHERE created_at >= :since AND customer_id IS NOT NULL
UNION
SELECT o.customer_id FROM returns r JOIN orders o ON o.id = r.order_id
WHERE r.created_at >= :since AND o.customer_id IS NOT NULL
UNION
SELECT id FROM customers WHERE updated_at >= :since
"""), {"since": stamp})
    day, params = local_day_sql(conn, default_tz)
    conn.execute(text(f"""
INSERT INTO dash_touched_days (day)
SELECT DISTINCT {day} FROM orders o LEFT JOIN stores s ON s.id = o.store_id
WHERE o.customer_id IS NULL AND (o.created_at >= :since OR o.id IN (
  SELECT order_id FROM returns WHERE created_at >= :since))
"""), {**params, "since": stamp})
    if conn.dialect.name == "postgresql":
        # Temporary tables get no statistics of their own: without them the planner guesses
        # and scans every customer's rows instead of looking the changed ones up by key.
        conn.execute(text("ANALYZE dash_touched"))
        conn.execute(text("ANALYZE dash_touched_days"))
    customers = conn.execute(text("SELECT COUNT(*) FROM dash_touched")).scalar_one()
    days = conn.execute(text("SELECT COUNT(*) FROM dash_touched_days")).scalar_one()
    return int(customers), int(days)


def _bind_time(conn: Connection, moment: dt.datetime) -> Any:
    """A UTC time as the UTCDateTime column stores it (naive text on SQLite)."""
    from patron.db import UTCDateTime

    bind = UTCDateTime().dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return bind(moment) if bind else moment


# --- per-customer rows ----------------------------------------------------------------------

def _marks_sql(kinds: tuple[tuple[str, str, str], ...]) -> tuple[str, str, str, str]:
    """Window SQL for each kind (name, partition columns within a customer, order within a
    day): row numbers within a day, previous purchase day, the one before, first month."""
    rn, p1, p2, final = [], [], [], []
    windows_p, windows_q = [], []
    for name, part, within in kinds:
        by_day = f"cid, d{', ' + part if part else ''}"
        rn.append(f"ROW_NUMBER() OVER (PARTITION BY {by_day} ORDER BY {within}) AS rn_{name}")
        win = (f"w_{name} AS (PARTITION BY cid{', ' + part if part else ''} "
               f"ORDER BY d, rn_{name} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)")
        first = (f"f_{name} AS (PARTITION BY cid{', ' + part if part else ''} "
                 f"ORDER BY d, rn_{name} ROWS BETWEEN UNBOUNDED PRECEDING "
                 "AND UNBOUNDED FOLLOWING)")
        windows_p += [win, first]
        windows_q.append(win)
        p1.append(f"MAX(CASE WHEN rn_{name} = 1 THEN d END) OVER w_{name} AS {name}_p1, "
                  f"MIN(mon) OVER f_{name} AS {name}_c")
        p2.append(f"MAX(CASE WHEN rn_{name} = 1 THEN {name}_p1 END) OVER w_{name} AS {name}_p2")
        final.append(f"CASE WHEN rn_{name} = 1 THEN COALESCE({name}_p1, -1) ELSE d END, "
                     f"CASE WHEN rn_{name} = 1 THEN COALESCE({name}_p2, -1) ELSE d END, "
                     f"{name}_c")
    return (", ".join(rn), ", ".join(p1) + " FROM m WINDOW " + ", ".join(windows_p),
            ", ".join(p2) + " FROM p WINDOW " + ", ".join(windows_q), ", ".join(final))


_ACTIVITY_MARKS = _marks_sql((("all", "", "sid, ch"), ("store", "sid", "ch"),
                              ("region", "rid", "sid, ch"), ("brand", "bid", "sid, ch"),
                              ("channel", "ch", "sid")))
_CATEGORY_MARKS = _marks_sql((("category", "cat", "sid, ch"),))


def insert_activity(conn: Connection, where: str, default_tz: str,
                    target: str = "dashboard_activity") -> None:
    day, params = local_day_sql(conn, default_tz)
    customers_filter = "" if where == ALL_CUSTOMERS else f"AND o.{where}"
    rn, p1, p2, final = _ACTIVITY_MARKS
    mark_columns = ", ".join(f"{k}_{m}" for k, _ in ACTIVITY_KINDS for m in ("p1", "p2", "c"))
    conn.execute(text(f"""
INSERT INTO {target} (customer_id, day, store_id, channel_id, month, mstart, region_id,
  brand_id, member, orders, sales, refunds, {mark_columns})
WITH o AS (
  SELECT o.customer_id AS cid, {day} AS d, COALESCE(o.store_id, 0) AS sid, o.channel_id AS ch,
         COALESCE(s.region_id, 0) AS rid, COALESCE(s.brand_id, 0) AS bid,
         o.total_amount AS t, {_capped("o.refunded_amount", "o.total_amount")} AS r
  FROM orders o LEFT JOIN stores s ON s.id = o.store_id
  WHERE o.customer_id IS NOT NULL {customers_filter}
), g AS (
  SELECT cid, d, sid, ch, rid, bid, COUNT(*) AS n, SUM(t) AS sales, SUM(r) AS refunds
  FROM o GROUP BY cid, d, sid, ch, rid, bid
), m AS (
  SELECT g.*, {month_sql(conn, "d")} AS mon, {month_start_sql(conn, "d")} AS ms, {rn} FROM g
), p AS (
  SELECT m.*, {p1}
), q AS (
  SELECT p.*, {p2}
)
SELECT q.cid, q.d, q.sid, q.ch, q.mon, q.ms, q.rid, q.bid,
       CASE WHEN c.is_member THEN 1 ELSE 0 END, q.n, q.sales, q.refunds, {final}
FROM q JOIN customers c ON c.id = q.cid
ORDER BY q.d
"""), params)


def insert_category_activity(conn: Connection, where: str, default_tz: str,
                             target: str = "dashboard_category_activity") -> None:
    day, params = local_day_sql(conn, default_tz)
    customers_filter = "" if where == ALL_CUSTOMERS else f"AND o.{where}"
    rn, p1, p2, final = _CATEGORY_MARKS
    conn.execute(text(f"""
INSERT INTO {target} (customer_id, day, category, store_id, channel_id,
  month, mstart, region_id, brand_id, member, orders, quantity, amount, refunds, category_p1,
  category_p2, category_c)
WITH l AS (
  SELECT o.customer_id AS cid, {day} AS d, COALESCE(ol.category, '') AS cat,
         COALESCE(o.store_id, 0) AS sid, o.channel_id AS ch, COALESCE(s.region_id, 0) AS rid,
         COALESCE(s.brand_id, 0) AS bid, o.id AS oid, ol.quantity AS qty, ol.amount AS a,
         {_capped("COALESCE(rl.amount, 0)", "ol.amount")} AS r
  FROM order_lines ol JOIN orders o ON o.id = ol.order_id
  LEFT JOIN stores s ON s.id = o.store_id
  LEFT JOIN (SELECT order_line_id, SUM(amount) AS amount FROM return_lines
             GROUP BY order_line_id) rl ON rl.order_line_id = ol.id
  WHERE o.customer_id IS NOT NULL {customers_filter}
), g AS (
  SELECT cid, d, cat, sid, ch, rid, bid, COUNT(DISTINCT oid) AS n, SUM(qty) AS qty,
         SUM(a) AS amount, SUM(r) AS refunds
  FROM l GROUP BY cid, d, cat, sid, ch, rid, bid
), m AS (
  SELECT g.*, {month_sql(conn, "d")} AS mon, {month_start_sql(conn, "d")} AS ms, {rn} FROM g
), p AS (
  SELECT m.*, {p1}
), q AS (
  SELECT p.*, {p2}
)
SELECT q.cid, q.d, q.cat, q.sid, q.ch, q.mon, q.ms, q.rid, q.bid,
       CASE WHEN c.is_member THEN 1 ELSE 0 END, q.n, q.qty, q.amount, q.refunds, {final}
FROM q JOIN customers c ON c.id = q.cid
ORDER BY q.d
"""), params)


def delete_rows(conn: Connection, where: str) -> None:
    for table in ("dashboard_activity", "dashboard_category_activity"):
        conn.execute(text(f"DELETE FROM {table} WHERE {where}"))


# --- contributions --------------------------------------------------------------------------

def _upsert(table: str, keys: str, values: str, select_sql: str, extra: str = "") -> str:
    """INSERT ... SELECT that adds ``values`` onto existing rows with the same ``keys``;
    ``extra`` columns are written on insert only (they follow from the keys)."""
    sets = ", ".join(f"{v} = {table}.{v} + excluded.{v}" for v in values.split(", "))
    columns = ", ".join(c for c in (keys, extra, values) if c)
    return (f"INSERT INTO {table} ({columns}) {select_sql} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {sets}")


ROWS = ("dashboard_activity", "dashboard_category_activity")
TOUCHED_ROWS = ("dash_rows", "dash_category_rows")
NEW_ROWS = ("dash_new_rows", "dash_new_category_rows")


def _lookups_by_key(conn: Connection, on: bool) -> None:
    """On PostgreSQL, join the candidates to the orders (and rows) by index only: a few
    thousand candidates against millions of orders, where the planner's estimate of a hash
    join over every order is close enough to the lookups' to pick it, and takes 3-4x longer."""
    if conn.dialect.name == "postgresql":
        value = "off" if on else "on"
        conn.execute(text(f"SET LOCAL enable_hashjoin = {value}"))
        conn.execute(text(f"SET LOCAL enable_mergejoin = {value}"))


def compute_new_rows(conn: Connection, default_tz: str) -> None:
    """The candidate customers' rows as their orders make them now, into temporary tables,
    and their stored rows beside them (``copy_touched_rows``)."""
    _lookups_by_key(conn, True)
    for target in NEW_ROWS:
        conn.execute(text(f"DELETE FROM {target}"))
    insert_activity(conn, TOUCHED, default_tz, target=NEW_ROWS[0])
    insert_category_activity(conn, TOUCHED, default_tz, target=NEW_ROWS[1])
    copy_touched_rows(conn)
    _lookups_by_key(conn, False)
    if conn.dialect.name == "postgresql":
        for target in NEW_ROWS:
            conn.execute(text(f"ANALYZE {target}"))


def keep_changed(conn: Connection) -> int:
    """Narrow the candidates to the customers whose rows differ from the stored ones.

    The candidates are found by time with a margin (orders committed late), so most of them
    are usually already counted as they are: their contributions would be taken away and
    added back unchanged. Comparing every column of their rows, stored against new, leaves
    only the customers whose rows really change (in ``dash_touched`` and in the copies of
    their stored and new rows); returns how many."""
    differing = []
    for old, new in zip(TOUCHED_ROWS, NEW_ROWS, strict=True):
        differing.append(f"SELECT customer_id FROM (SELECT * FROM {new} "
                         f"EXCEPT SELECT * FROM {old}) a")
        differing.append(f"SELECT customer_id FROM (SELECT * FROM {old} "
                         f"EXCEPT SELECT * FROM {new}) b")
    conn.execute(text(f"DELETE FROM dash_touched WHERE id NOT IN ("
                      f"{' UNION '.join(differing)})"))
    for table in (*TOUCHED_ROWS, *NEW_ROWS):
        conn.execute(text(f"DELETE FROM {table} WHERE customer_id NOT IN "
                          "(SELECT id FROM dash_touched)"))
    if conn.dialect.name == "postgresql":
        for table in ("dash_touched", *TOUCHED_ROWS, *NEW_ROWS):
            conn.execute(text(f"ANALYZE {table}"))
    return int(conn.execute(text("SELECT COUNT(*) FROM dash_touched")).scalar_one())


def store_new_rows(conn: Connection) -> None:
    """The changed customers' stored rows replaced with their new ones, in the rollup's own
    tables and in the copies the contributions read."""
    _lookups_by_key(conn, True)
    delete_rows(conn, TOUCHED)
    _lookups_by_key(conn, False)
    for stored, old, new in zip(ROWS, TOUCHED_ROWS, NEW_ROWS, strict=True):
        conn.execute(text(f"INSERT INTO {stored} SELECT * FROM {new} ORDER BY day"))
        conn.execute(text(f"DELETE FROM {old}"))
        conn.execute(text(f"INSERT INTO {old} SELECT * FROM {new}"))
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ANALYZE {old}"))


def copy_touched_rows(conn: Connection) -> None:
    """The changed customers' rows, copied once into small temporary tables, so that the
    many contribution statements read them there instead of searching the big tables again
    and again."""
    for source, target in zip(ROWS, TOUCHED_ROWS, strict=True):
        conn.execute(text(f"DELETE FROM {target}"))
        conn.execute(text(f"INSERT INTO {target} SELECT * FROM {source} WHERE {TOUCHED}"))
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ANALYZE {target}"))


def add_contributions(conn: Connection, where: str, sign: int,
                      timings: Timings | None = None, sources: tuple[str, str] = ROWS
                      ) -> None:
    """Add (sign 1) or take away (sign -1) the contributions of the chosen customers' rows
    (in ``sources``: the rollup's own tables, or the copies of the changed customers' rows)
    to every rollup built from them."""
    p = {"s": sign}
    with timed(timings, "daily sums"):
        _daily_contributions(conn, where, p, sources)
    for table, kinds in ((sources[0], ACTIVITY_KINDS), (sources[1], (CATEGORY_KIND,))):
        for kind, key in kinds:
            with timed(timings, "reach cells"):
                _reach_contributions(conn, table, kind, key, where, sign)
            if table == sources[0]:
                with timed(timings, "cohorts"):
                    _cohort_contributions(conn, table, kind, key, where, sign)
    with timed(timings, "monthly cells"):
        _apply_fine(conn, sign)


def _daily_contributions(conn: Connection, where: str, p: dict[str, Any],
                         sources: tuple[str, str]) -> None:
    conn.execute(text(_upsert(
        "dashboard_sales_daily", "day, store_id, channel_id, buyer", "orders, sales, refunds",
        f"""SELECT day, store_id, channel_id, CASE WHEN member = 1 THEN 'm' ELSE 'n' END,
               MIN(month), :s * SUM(orders), :s * SUM(sales), :s * SUM(refunds)
        FROM {sources[0]} WHERE {where}
        GROUP BY day, store_id, channel_id, member""", extra="month")), p)
    conn.execute(text(_upsert(
        "dashboard_category_daily", "day, store_id, channel_id, buyer, category",
        "orders, quantity, amount, refunds",
        f"""SELECT day, store_id, channel_id, CASE WHEN member = 1 THEN 'm' ELSE 'n' END,
               category, MIN(month), :s * SUM(orders), :s * SUM(quantity), :s * SUM(amount),
               :s * SUM(refunds)
        FROM {sources[1]} WHERE {where}
        GROUP BY day, store_id, channel_id, member, category""", extra="month")), p)


def _reach_contributions(conn: Connection, table: str, kind: str, key: str, where: str,
                         sign: int) -> None:
    p1, p2 = f"{kind}_p1", f"{kind}_p2"
    week = "(day - (day + 3) % 7)"
    grains = []
    for grain, bucket, start in (("d", "day", "day"), ("w", week, week),
                                 ("m", "month", "mstart")):
        repeat = ("0" if grain == "d" else
                  f"CASE WHEN {p1} >= {start} AND {p1} < day AND {p2} < {start} THEN 1 ELSE 0 "
                  "END")
        grains.append(f"""SELECT '{grain}' AS grain, {bucket} AS bucket, {key} AS key, member,
            CASE WHEN {p1} < {start} THEN 1 ELSE 0 END AS c,
            CASE WHEN {p1} = -1 THEN 1 ELSE 0 END AS nw, {repeat} AS rp
          FROM {table} WHERE {where}""")
    union = " UNION ALL ".join(grains)
    conn.execute(text(_upsert(
        "dashboard_reach_buckets", "kind, grain, bucket, key, member",
        "customers, new_customers, repeat_customers",
        f"""SELECT '{kind}', grain, bucket, key, member, :s * SUM(c), :s * SUM(nw), :s * SUM(rp)
        FROM ({union}) x WHERE 1 = 1 GROUP BY grain, bucket, key, member""")), {"s": sign})
    # Monthly cells, first by reference day into the temporary table.
    conn.execute(text(f"""
INSERT INTO dash_fine (kind, key, month, member, ref, ref_day, n)
SELECT '{kind}', key, month, member, ref, ref_day, COUNT(*) FROM (
  SELECT {key} AS key, month, member, 'p1' AS ref, {p1} AS ref_day
  FROM {table} WHERE {where} AND {p1} < mstart
  UNION ALL
  SELECT {key}, month, member, 'p2', {p2} FROM {table} WHERE {where} AND {p1} < mstart
  UNION ALL
  SELECT {key}, month, member, 'm', {p2} FROM {table}
  WHERE {where} AND {p1} >= mstart AND {p1} < day AND {p2} < mstart
) x WHERE 1 = 1 GROUP BY key, month, member, ref, ref_day
"""))


def _apply_fine(conn: Connection, sign: int) -> None:
    ref_month = (f"CASE WHEN ref_day < 0 THEN -1 ELSE {month_sql(conn, 'ref_day')} END")
    conn.execute(text(_upsert(
        "dashboard_reach_month_days", "kind, ref_day, month, key, member, ref", "customers",
        """SELECT kind, ref_day, month, key, member, ref, :s * SUM(n) FROM dash_fine
        WHERE ref_day >= 0 GROUP BY kind, ref_day, month, key, member, ref""")), {"s": sign})
    conn.execute(text(_upsert(
        "dashboard_reach_months", "kind, month, key, member, ref, ref_month", "customers",
        f"""SELECT kind, month, key, member, ref, rm, :s * SUM(n) FROM (
              SELECT kind, month, key, member, ref, {ref_month} AS rm, n FROM dash_fine) x
        WHERE 1 = 1 GROUP BY kind, month, key, member, ref, rm""")), {"s": sign})
    conn.execute(text("DELETE FROM dash_fine"))


def _cohort_contributions(conn: Connection, table: str, kind: str, key: str, where: str,
                          sign: int) -> None:
    p1, c = f"{kind}_p1", f"{kind}_c"
    conn.execute(text(_upsert(
        "dashboard_cohorts", "kind, key, cohort, member, k", "customers",
        f"""SELECT '{kind}', key, cohort, member, k, :s * COUNT(*) FROM (
              SELECT {key} AS key, {c} AS cohort, member, month - {c} AS k
              FROM {table} WHERE {where} AND {p1} < mstart) x
        WHERE 1 = 1 GROUP BY key, cohort, member, k""")), {"s": sign})


ROLLUPS = (("dashboard_reach_buckets", "customers = 0 AND new_customers = 0 "
            "AND repeat_customers = 0"),
           ("dashboard_reach_months", "customers = 0"),
           ("dashboard_reach_month_days", "customers = 0"),
           ("dashboard_cohorts", "customers = 0"),
           ("dashboard_sales_daily", "orders = 0 AND sales = 0 AND refunds = 0"),
           ("dashboard_category_daily", "orders = 0 AND amount = 0 AND refunds = 0"))


def drop_empty_cells(conn: Connection) -> None:
    for table, empty in ROLLUPS:
        conn.execute(text(f"DELETE FROM {table} WHERE {empty}"))


def analyze(conn: Connection) -> None:
    """Fresh statistics after a full rebuild, so that readers get good plans at once."""
    for table in (*ROWS, *(t for t, _ in ROLLUPS)):
        conn.execute(text(f"ANALYZE {table}"))


def clear_all(conn: Connection) -> None:
    for table in ("dashboard_activity", "dashboard_category_activity",
                  *(t for t, _ in ROLLUPS)):
        conn.execute(text(f"DELETE FROM {table}"))


# --- guests ---------------------------------------------------------------------------------

def rebuild_guest_days(conn: Connection, default_tz: str, *, every_day: bool) -> None:
    """Guest orders' daily sales, for the touched days (or every day)."""
    day, params = local_day_sql(conn, default_tz)
    if every_day:
        day_filter = ""
    else:
        conn.execute(text("DELETE FROM dashboard_sales_daily WHERE buyer = 'g' "
                          "AND day IN (SELECT day FROM dash_touched_days)"))
        conn.execute(text("DELETE FROM dashboard_category_daily WHERE buyer = 'g' "
                          "AND day IN (SELECT day FROM dash_touched_days)"))
        lo, hi = conn.execute(text("SELECT MIN(day), MAX(day) FROM dash_touched_days")).one()
        if lo is None:
            return
        # The purchase times that can fall on those days in any zone (UTC-12 to UTC+14).
        params["t_lo"] = _bind_time(conn, dt.datetime.combine(
            EPOCH + dt.timedelta(days=int(lo) - 1), dt.time(0), dt.UTC))
        params["t_hi"] = _bind_time(conn, dt.datetime.combine(
            EPOCH + dt.timedelta(days=int(hi) + 2), dt.time(0), dt.UTC))
        day_filter = (f"AND o.purchased_at >= :t_lo AND o.purchased_at < :t_hi "
                      f"AND {day} IN (SELECT day FROM dash_touched_days)")
    conn.execute(text(f"""
INSERT INTO dashboard_sales_daily (day, store_id, channel_id, buyer, month, orders, sales,
                                   refunds)
SELECT d, sid, ch, 'g', {month_sql(conn, "d")}, n, t, r FROM (
  SELECT {day} AS d, COALESCE(o.store_id, 0) AS sid, o.channel_id AS ch, COUNT(*) AS n,
         SUM(o.total_amount) AS t, SUM({_capped("o.refunded_amount", "o.total_amount")}) AS r
  FROM orders o LEFT JOIN stores s ON s.id = o.store_id
  WHERE o.customer_id IS NULL {day_filter}
  GROUP BY 1, 2, 3) x
"""), params)
    conn.execute(text(f"""
INSERT INTO dashboard_category_daily (day, store_id, channel_id, buyer, category, month, orders,
                                      quantity, amount, refunds)
SELECT d, sid, ch, 'g', cat, {month_sql(conn, "d")}, n, q, a, r FROM (
  SELECT {day} AS d, COALESCE(o.store_id, 0) AS sid, o.channel_id AS ch,
         COALESCE(ol.category, '') AS cat, COUNT(DISTINCT o.id) AS n, SUM(ol.quantity) AS q,
         SUM(ol.amount) AS a, SUM({_capped("COALESCE(rl.amount, 0)", "ol.amount")}) AS r
  FROM order_lines ol JOIN orders o ON o.id = ol.order_id
  LEFT JOIN stores s ON s.id = o.store_id
  LEFT JOIN (SELECT order_line_id, SUM(amount) AS amount FROM return_lines
             GROUP BY order_line_id) rl ON rl.order_line_id = ol.id
  WHERE o.customer_id IS NULL {day_filter}
  GROUP BY 1, 2, 3, 4) x
"""), params)


# --- RFM x lifecycle ------------------------------------------------------------------------

def structure_signature(conn: Connection) -> int:
    """The last RFM or lifecycle refresh (its audit entry): the matrix is rebuilt after one."""
    found = conn.execute(text(
        "SELECT MAX(id) FROM audit_log WHERE entity IN ('rfm_scores', 'lifecycle_stages')"
    )).scalar()
    return int(found or 0)


def rebuild_structure(conn: Connection) -> None:
    """Customers per scope, segment (computed from each scope's cut points:
    ``patron.analytics.rfm_read``), stage and membership."""
    from sqlalchemy import case, func, insert, select

    from patron.analytics import rfm_read
    from patron.analytics.dashboards_tables import dashboard_structure
    from patron.analytics.tables import lifecycle_stages
    from patron.customers.tables import customers

    conn.execute(text("DELETE FROM dashboard_structure"))
    r = rfm_read.scored()
    stage = func.coalesce(lifecycle_stages.c.stage, "none")
    member = case((customers.c.is_member, 1), else_=0)
    conn.execute(insert(dashboard_structure).from_select(
        ["scope", "segment", "stage", "member", "customers"],
        select(r.c.scope, r.c.segment, stage, member, func.count())
        .select_from(r.join(customers, customers.c.id == r.c.customer_id)
                     .outerjoin(lifecycle_stages,
                                lifecycle_stages.c.customer_id == r.c.customer_id))
        .group_by(r.c.scope, r.c.segment, stage, member)))


def store_signature(conn: Connection, default_tz: str) -> list[Any]:
    """What the rows depend on besides orders: each store's region, brand and time zone."""
    rows = conn.execute(text(
        "SELECT id, region_id, brand_id, timezone FROM stores ORDER BY id")).all()
    return [default_tz, *[[int(r[0]), r[1], r[2], r[3]] for r in rows]]
