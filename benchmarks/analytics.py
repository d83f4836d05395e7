"""Customer analytics at scale: the full RFM + lifecycle refresh, the BG/NBD fit and the
segment queries, each against an anchor measured in the same run on the same data.

Data. ``generate`` draws ``customers`` customers (default 50k; ``make bench-full`` a million)
with a BG/NBD purchase process over two years ending ``END_DAY``: each customer is acquired at
a uniform moment, buys at a Poisson rate drawn from a gamma distribution (one order in ~36
days on average) and drops out after each purchase with a probability drawn from a beta
distribution; about four orders per customer, a third buy once. Each has a home store (some
stores far busier than others) where 85 % of their orders are; 70 % of orders come through the
store POS, the rest through the mini-program and a delivery platform; local hours follow a
coffee-and-grocery day; 1-4 lines from the catalogue of ``benchmarks/data.py``; 2 % of orders
refunded in full. Guests add 8 % anonymous orders. Deterministic by seed.

Loading goes around ``record_orders`` (four million orders through it take ~25 minutes):
customers, orders and lines are written set-based (``COPY`` on PostgreSQL, ``executemany`` on
SQLite) with the values ``record_orders`` would store, then the per-customer figures are built
by Patron's own rebuild (``patron.customers.figures.rebuild``, in slices of customers), and
``ANALYZE`` runs as autovacuum would. Nothing of the loading is timed as a figure.

Figures:

* ``RFM + lifecycle full refresh``: ``refresh_rfm(scope="all")`` (overall from the figures,
  every store, region and brand from the orders) and ``refresh_lifecycle``, as of the end of
  ``END_DAY``, each in its transaction, as a refresh job runs them (on PostgreSQL at once on
  two connections, ``service.Alongside``; the figure is the wall time of both, the notes
  give each one's own), writing every score and stage: first on empty tables
  (cold), then the next night's (as of a day later, continuing from the first: only the
  customers whose figures changed, those whose quantile moved and those whose stage is due
  are read and written; ``rfm_mode``/``lifecycle_mode`` in the notes say ``changes``).
  Anchor: DuckDB (in-process, in-memory, every core) computing the same per-customer
  aggregates (recency, frequency, monetary, first and last purchase, purchase
  days and the usual interval; overall and per store, region and brand) from the raw orders
  into tables. The orders are exported from the benchmark database into DuckDB first, and that
  is **not** timed: DuckDB gets its data handed to it in memory, Patron reads its own tables.
* ``BG/NBD fit``: Patron's ``clv.fit_bgnbd`` on the purchase summary (from
  ``clv_service.purchase_summary``, timed separately in the notes) against
  ``lifetimes.BetaGeoFitter`` on the very same arrays; a second figure checks that both found
  the same parameters to three significant digits.
* ``segment queries``: ``rfm_summary``, ``segment_customers`` (page 1 of the largest segment),
  ``lifecycle_summary`` and ``lifecycle_flows`` (the last 30 days), p50 and p99 of ``SAMPLES``
  calls each, against a primary-key ``SELECT`` on the same connection; target under 500 ms.
* ``dashboard queries``: ``benchmarks.dashboards.measure`` when that module exists.
"""

from __future__ import annotations

import datetime as dt
import importlib
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Connection, select, text

from benchmarks.data import CATALOG
from benchmarks.databases import BenchDatabase
from benchmarks.results import Figure, percentile
from patron.analytics import clv, clv_service, service
from patron.customers.figures import rebuild
from patron.customers.protect import identity_index
from patron.customers.tables import customers as customers_table
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.org import service as org
from patron.org.tables import stores
from patron.protection.fields import binding_text, encrypt
from patron.security.model import SYSTEM

CUSTOMERS = 50_000
SEED = 20260630
END_DAY = dt.date(2026, 6, 30)
SPAN_DAYS = 730
TZ = ZoneInfo("Asia/Shanghai")
OFFSET = 8 * 3600  # Asia/Shanghai has no daylight saving: local day = (epoch + OFFSET) // 86400
SAMPLES = 30
PK_SAMPLES = 300
QUERY_TARGET_MS = 500.0
SIG3_PPM = 500.0
FIT_SPEEDUP_TARGET = 5.0
# The purchase process (days): rate ~ Gamma(R, 1/ALPHA), dropout after a purchase ~ Beta(A, B).
R, ALPHA, A, B = 1.0, 36.0, 2.0, 8.0
GUEST_SHARE = 0.08
REFUND_SHARE = 0.02
HOME_SHARE = 0.85
# Local opening hours 07-22 and how busy each is (coffee mornings, lunch, evening groceries).
HOURS = np.arange(7, 23)
HOUR_WEIGHTS = np.array([6, 10, 8, 5, 7, 9, 6, 4, 4, 5, 7, 8, 6, 4, 2, 1], dtype=float)
FIGURE_SLICE = 10_000
DATA_VERSION = 1  # of what generate + load write (see template_name)


def end_of_day(day: dt.date) -> dt.datetime:
    """The last moment of a local day (what ``--as-of DATE`` means on the command line)."""
    return dt.datetime.combine(day, dt.time(23, 59, 59), TZ)


# --- data -----------------------------------------------------------------------------------

@dataclass
class Dataset:
    customers: int
    home_store: np.ndarray  # per customer, index into the store list
    first_at: np.ndarray  # per customer, epoch seconds of the first purchase
    # per order, sorted by time; customer index or -1 for a guest
    order_customer: np.ndarray
    order_at: np.ndarray  # epoch seconds (UTC)
    order_store: np.ndarray
    order_channel: np.ndarray  # 0 pos, 1 mini_program, 2 meituan
    order_gross: np.ndarray  # fen
    order_discount: np.ndarray
    order_total: np.ndarray
    order_refunded: np.ndarray
    order_lines: np.ndarray  # line count
    line_order: np.ndarray  # per line, order index
    line_no: np.ndarray
    line_item: np.ndarray  # index into CATALOG
    line_qty: np.ndarray  # thousandths
    line_price: np.ndarray  # fen
    line_discount: np.ndarray
    line_amount: np.ndarray
    line_returned: np.ndarray  # thousandths

    @property
    def orders(self) -> int:
        return int(self.order_at.size)


def _local_midnight_epoch(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(0), TZ).timestamp())


def generate(customers: int, stores: int, *, seed: int = SEED) -> Dataset:
    """Customers and their orders (see the module's docstring), vectorised."""
    rng = np.random.default_rng(seed)
    n = customers
    weights = 1 / np.sqrt(np.arange(1, stores + 1))
    home = rng.choice(stores, n, p=weights / weights.sum())
    first = rng.uniform(0, SPAN_DAYS, n)
    rate = rng.gamma(R, 1 / ALPHA, n)
    drop = rng.beta(A, B, n)
    buyers, days = [np.arange(n)], [first]
    t = first.copy()
    active = rng.random(n) >= drop
    while active.any():
        idx = np.flatnonzero(active)
        t[idx] += rng.exponential(1 / np.maximum(rate[idx], 1e-9))
        bought = idx[t[idx] < SPAN_DAYS]
        buyers.append(bought)
        days.append(t[bought])
        active[:] = False
        active[bought[rng.random(bought.size) >= drop[bought]]] = True
    who = np.concatenate(buyers)
    day = np.concatenate(days)
    guests = int(round(GUEST_SHARE * who.size))
    who = np.concatenate([who, np.full(guests, -1)])
    day = np.concatenate([day, rng.uniform(0, SPAN_DAYS, guests)])
    m = who.size
    start = _local_midnight_epoch(END_DAY - dt.timedelta(days=SPAN_DAYS - 1))
    hour = rng.choice(HOURS, m, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    seconds = (np.floor(day).astype(np.int64) * 86400 + hour * 3600
               + rng.integers(0, 3600, m))
    at = start + seconds
    order = np.argsort(at, kind="stable")
    who, at = who[order], at[order]
    first_at = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_at, who[who >= 0], at[who >= 0])
    away = rng.random(m) >= HOME_SHARE
    store = np.where(who >= 0, home[np.maximum(who, 0)], rng.integers(0, stores, m))
    store = np.where(away, rng.integers(0, stores, m), store)
    roll = rng.random(m)
    channel = np.where(roll < 0.7, 0, np.where(roll < 0.9, 1, 2))
    channel = np.where(who < 0, 0, channel)
    # lines
    counts = rng.choice([1, 2, 3, 4], m, p=[0.35, 0.35, 0.2, 0.1])
    line_order = np.repeat(np.arange(m), counts)
    k = line_order.size
    starts = np.cumsum(counts) - counts
    line_no = np.arange(k) - np.repeat(starts, counts) + 1
    item = rng.integers(0, len(CATALOG), k)
    price = np.array([round(float(c[3]) * 100) for c in CATALOG], dtype=np.int64)[item]
    by_weight = np.array([c[4] for c in CATALOG])[item]
    qty = np.where(by_weight, rng.choice([350, 500, 820, 1200], k),
                   rng.choice([1000, 1000, 1000, 2000, 3000], k)).astype(np.int64)
    before = (qty * price + 500) // 1000
    discount = np.where((rng.random(k) < 0.15) & (price > 1000), 200, 0).astype(np.int64)
    amount = before - discount
    gross = np.bincount(line_order, before, minlength=m).astype(np.int64)
    disc = np.bincount(line_order, discount, minlength=m).astype(np.int64)
    total = gross - disc
    refunded_order = (rng.random(m) < REFUND_SHARE) & (who >= 0)
    refunded = np.where(refunded_order, total, 0)
    returned = np.where(refunded_order[line_order], qty, 0)
    return Dataset(n, home, first_at, who, at, store, channel, gross, disc, total, refunded,
                   counts, line_order, line_no, item, qty, price, discount, amount, returned)


# --- loading --------------------------------------------------------------------------------

CHANNELS = ("pos", "mini_program", "meituan")
_CUSTOMER_COLS = ("id", "name", "phone", "member_code", "is_member", "registration_store_id",
                  "registration_channel_id", "custom_fields", "created_at", "updated_at")
_ORDER_COLS = ("id", "channel_id", "scope_store_id", "external_id", "store_id", "customer_id",
               "purchased_at", "gross_amount", "discount_amount", "total_amount",
               "refunded_amount", "line_count", "identifiers", "content_hash", "source",
               "created_at")
_IDENTITY_COLS = ("id", "customer_id", "kind", "namespace", "value", "value_index",
                  "created_at")
_LINE_COLS = ("id", "order_id", "line_no", "sku", "name", "category", "quantity", "unit_price",
              "discount", "amount", "returned_quantity")
CHUNK = 100_000


def _stamps(epoch: np.ndarray, kind: str) -> list[str]:
    text_ = np.datetime_as_string(epoch.astype("datetime64[s]"), unit="s")
    text_ = np.char.replace(text_, "T", " ")
    suffix = ".000000" if kind == "sqlite" else "+00"
    return [s + suffix for s in text_.tolist()]


def _customer_rows(db: BenchDatabase, data: Dataset, lo: int, hi: int) -> list[tuple[Any, ...]]:
    store_ids = [db.store_ids[c] for c in db.store_codes]
    pos = db.channel_ids["pos"]
    stamps = _stamps(data.first_at[lo:hi], db.kind)
    member = db.kind == "sqlite"
    rows = []
    for i, stamp in zip(range(lo, hi), stamps, strict=True):
        cid = i + 1
        is_member = cid % 5 < 3
        # personal data as Patron stores it: encrypted, bound to the row
        rows.append((cid, None, encrypt(_phone(cid), where="customers.phone", binding=str(cid)),
                     f"M{cid:08d}" if is_member else None,
                     int(is_member) if member else is_member,
                     store_ids[int(data.home_store[i])], pos, "{}", stamp, stamp))
    return rows


def _order_rows(db: BenchDatabase, data: Dataset, lo: int, hi: int) -> list[tuple[Any, ...]]:
    store_ids = [db.store_ids[c] for c in db.store_codes]
    channel_ids = [db.channel_ids[c] for c in CHANNELS]
    stamps = _stamps(data.order_at[lo:hi], db.kind)
    cols = [a[lo:hi].tolist() for a in (data.order_customer, data.order_store,
                                        data.order_channel, data.order_gross,
                                        data.order_discount, data.order_total,
                                        data.order_refunded, data.order_lines)]
    rows = []
    for j, (cust, store, chan, gross, disc, total, refunded, lines) in enumerate(zip(
            *cols, strict=True)):
        oid = lo + j + 1
        sid = store_ids[store]
        rows.append((oid, channel_ids[chan], sid if chan == 0 else 0, f"A{oid:09d}", sid,
                     cust + 1 if cust >= 0 else None, stamps[j], gross, disc, total, refunded,
                     lines, encrypt("[]", where="orders.identifiers", binding=str(oid)),
                     f"{oid:064x}", "import", stamps[j]))
    return rows


def _identity_rows(db: BenchDatabase, data: Dataset, lo: int, hi: int
                   ) -> list[tuple[Any, ...]]:
    stamps = _stamps(data.first_at[lo:hi], db.kind)
    rows = []
    for i, stamp in zip(range(lo, hi), stamps, strict=True):
        index = identity_index(_phone(i + 1))
        rows.append((i + 1, i + 1, "phone", "",
                     encrypt(_phone(i + 1), where="identities.value",
                             binding=binding_text(("phone", "", index))), index, stamp))
    return rows


def _phone(customer_id: int) -> str:
    return f"+86139{customer_id:08d}"


def _line_rows(data: Dataset, lo: int, hi: int) -> list[tuple[Any, ...]]:
    cols = [a[lo:hi].tolist() for a in (data.line_order, data.line_no, data.line_item,
                                        data.line_qty, data.line_price, data.line_discount,
                                        data.line_amount, data.line_returned)]
    rows = []
    for j, (order, no, item, qty, price, disc, amount, returned) in enumerate(zip(
            *cols, strict=True)):
        sku, name, category, _price, _w = CATALOG[item]
        rows.append((lo + j + 1, order + 1, no, sku, name, category, qty, price, disc, amount,
                     returned))
    return rows


def _write(conn: Connection, kind: str, table: str, cols: tuple[str, ...],
           rows: list[tuple[Any, ...]]) -> None:
    conn.execute(text("SELECT 1"))  # begins the transaction the unit of work commits
    raw = conn.connection.driver_connection
    if kind == "postgresql":
        with raw.cursor() as cur, cur.copy(  # type: ignore[union-attr]
                f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" * len(cols))
        raw.executemany(  # type: ignore[union-attr]
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)  # noqa: S608


def load(db: BenchDatabase, data: Dataset, *, orders: int | None = None,
         log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Customers (with their phone as identity), the first ``orders`` orders (default all)
    and their lines straight into the tables, then the figures by Patron's rebuild; returns
    the seconds of each part."""
    engine = get_engine(db.url)
    seconds: dict[str, float] = {}
    orders = data.orders if orders is None else orders
    lines = int(np.searchsorted(data.line_order, orders))
    started = time.perf_counter()
    for table, cols, total, rows_of in (
            ("customers", _CUSTOMER_COLS, data.customers,
             lambda lo, hi: _customer_rows(db, data, lo, hi)),
            ("identities", _IDENTITY_COLS, data.customers,
             lambda lo, hi: _identity_rows(db, data, lo, hi)),
            ("orders", _ORDER_COLS, orders,
             lambda lo, hi: _order_rows(db, data, lo, hi)),
            ("order_lines", _LINE_COLS, lines,
             lambda lo, hi: _line_rows(data, lo, hi))):
        for lo in range(0, total, CHUNK):
            with UnitOfWork(engine) as uow:
                _write(uow.c, db.kind, table, cols, rows_of(lo, min(total, lo + CHUNK)))
                uow.commit()
        if db.kind == "postgresql":
            with UnitOfWork(engine) as uow:
                sql = (f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                       f"(SELECT max(id) FROM {table}))")
                uow.c.execute(text(sql))
                uow.commit()
        if log:
            log(f"  {table}: {total:,} rows")
    seconds["rows"] = time.perf_counter() - started
    started = time.perf_counter()

    for lo in range(1, data.customers + 1, FIGURE_SLICE):
        with UnitOfWork(engine) as uow:
            rebuild(uow.c, list(range(lo, min(data.customers + 1, lo + FIGURE_SLICE))))
            uow.commit()
    seconds["figures"] = time.perf_counter() - started
    if log:
        log(f"  figures rebuilt in {seconds['figures']:.0f} s")
    _analyze(db)
    return seconds


def order_body(db: BenchDatabase, data: Dataset, n: int) -> dict[str, Any]:
    """Order ``n`` (0-based) as a till sends it: what ``record_orders`` takes."""
    codes = db.store_codes
    lo = int(np.searchsorted(data.line_order, n))
    hi = int(np.searchsorted(data.line_order, n + 1))
    lines = []
    for j in range(lo, hi):
        sku, name, category, _price, _w = CATALOG[int(data.line_item[j])]
        line: dict[str, Any] = {
            "sku": sku, "name": name, "category": category,
            "quantity": str(Decimal(int(data.line_qty[j])) / 1000),
            "unit_price": str(Decimal(int(data.line_price[j])) / 100)}
        if data.line_discount[j]:
            line["discount"] = str(Decimal(int(data.line_discount[j])) / 100)
        lines.append(line)
    at = dt.datetime.fromtimestamp(int(data.order_at[n]), dt.UTC)
    body: dict[str, Any] = {
        "external_id": f"A{n + 1:09d}", "channel": CHANNELS[int(data.order_channel[n])],
        "store": codes[int(data.order_store[n])], "purchased_at": at.isoformat(),
        "identifiers": {}, "lines": lines}
    cust = int(data.order_customer[n])
    if cust >= 0:
        body["identifiers"] = {"phone": _phone(cust + 1)[3:]}  # as a till types it
    return body


def record_day(db: BenchDatabase, data: Dataset, lo: int, hi: int, *, chunk: int = 2000
               ) -> dict[str, Any]:
    """Orders ``lo``..``hi`` through Patron's ingestion (figures kept incrementally, as in
    production); returns their count, the seconds and the outcomes."""

    engine = get_engine(db.url)
    outcomes: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(lo, hi, chunk):
        bodies = [order_body(db, data, n) for n in range(start, min(hi, start + chunk))]
        with UnitOfWork(engine) as uow:
            for out in record_orders(uow=uow, orders_in=bodies, source="import", actor=SYSTEM,
                                     audit_each=False):
                outcomes[out.status] = outcomes.get(out.status, 0) + 1
    return {"orders": hi - lo, "seconds": round(time.perf_counter() - started, 2),
            "statuses": outcomes}


def _analyze(db: BenchDatabase) -> None:
    with get_engine(db.url).connect() as conn:
        if db.kind == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def add_regions_and_brands(db: BenchDatabase) -> None:
    """Four regions and two brands over the stores, so that every kind of RFM scope exists."""

    engine = get_engine(db.url)
    with UnitOfWork(engine) as uow:
        regions = [org.create_region(uow=uow, actor=SYSTEM, code=f"R{i}", name=f"Region {i}")
                   for i in range(4)]
    with UnitOfWork(engine) as uow:
        brands = [org.create_brand(uow=uow, actor=SYSTEM, code=f"BR{i}", name=f"Brand {i}")
                  for i in range(2)]
    with UnitOfWork(engine) as uow:
        for i, code in enumerate(db.store_codes):
            uow.c.execute(stores.update().where(stores.c.code == code).values(
                region_id=regions[i % 4], brand_id=brands[i % 2]))
        uow.commit()


# --- the DuckDB anchor ------------------------------------------------------------------------

def _export_orders(db: BenchDatabase) -> Any:
    """customer_id, store_id, region_id, brand_id, epoch seconds, net amount (fen) of every
    order, as a pandas frame (not timed)."""
    import pandas as pd

    epoch = ("CAST(EXTRACT(EPOCH FROM o.purchased_at) AS BIGINT)" if db.kind == "postgresql"
             else "CAST(strftime('%s', o.purchased_at) AS INTEGER)")
    sql = text(f"""SELECT o.customer_id, o.store_id, COALESCE(s.region_id, 0),
                          COALESCE(s.brand_id, 0), {epoch}, o.total_amount - o.refunded_amount
                   FROM orders o LEFT JOIN stores s ON s.id = o.store_id""")  # noqa: S608
    parts = []
    with get_engine(db.url).connect() as conn:
        result = conn.execution_options(stream_results=True).execute(sql)
        for part in result.partitions(200_000):
            parts.append(np.array([tuple(-1 if v is None else v for v in r) for r in part],
                                  dtype=np.int64))
    data = np.concatenate(parts) if parts else np.zeros((0, 6), dtype=np.int64)
    return pd.DataFrame(data, columns=["customer_id", "store_id", "region_id", "brand_id",
                                       "ts", "net"])


DUCKDB_SQL = """
CREATE OR REPLACE TABLE overall AS
SELECT customer_id, COUNT(*) AS frequency, SUM(net) AS monetary,
       MIN(ts) AS first_at, MAX(ts) AS last_at,
       COUNT(DISTINCT (ts + {offset}) // 86400) AS purchase_days,
       GREATEST(({end} - MAX(ts)) // 86400, 0) AS recency_days,
       CASE WHEN COUNT(DISTINCT (ts + {offset}) // 86400) > 1
            THEN (MAX(ts) - MIN(ts)) / 86400.0 / (COUNT(DISTINCT (ts + {offset}) // 86400) - 1)
       END AS interval_days
FROM orders WHERE customer_id >= 0 GROUP BY customer_id;
CREATE OR REPLACE TABLE per_scope AS
SELECT kind, scope_id, customer_id, COUNT(*) AS frequency, SUM(net) AS monetary,
       MAX(ts) AS last_at, GREATEST(({end} - MAX(ts)) // 86400, 0) AS recency_days
FROM (SELECT 'store' AS kind, store_id AS scope_id, customer_id, ts, net FROM orders
      WHERE customer_id >= 0
      UNION ALL SELECT 'region', region_id, customer_id, ts, net FROM orders
      WHERE customer_id >= 0 AND region_id > 0
      UNION ALL SELECT 'brand', brand_id, customer_id, ts, net FROM orders
      WHERE customer_id >= 0 AND brand_id > 0)
GROUP BY kind, scope_id, customer_id;
"""


def _export_figures(db: BenchDatabase) -> Any:
    """Patron's per-customer figures, to check DuckDB's aggregates against (not timed)."""
    import pandas as pd

    epoch = ("CAST(EXTRACT(EPOCH FROM {c}) AS BIGINT)" if db.kind == "postgresql"
             else "CAST(strftime('%s', {c}) AS INTEGER)")
    sql = text(f"""SELECT customer_id, order_count, net_spend, purchase_days,
                          {epoch.format(c='first_order_at')}, {epoch.format(c='last_order_at')}
                   FROM customer_figures WHERE order_count > 0""")  # noqa: S608
    with get_engine(db.url).connect() as conn:
        rows = conn.execute(sql).all()
    return pd.DataFrame(np.array(rows, dtype=np.int64).reshape(-1, 6),
                        columns=["customer_id", "frequency", "monetary", "purchase_days",
                                 "first_at", "last_at"])


def duckdb_aggregates(frame: Any, as_of: dt.datetime, *, figures: Any = None,
                      repeats: int = 3) -> dict[str, Any]:
    """Best of ``repeats`` of DuckDB computing the aggregates into tables (milliseconds), the
    number of customers, and how many differ from Patron's figures when given."""
    import duckdb

    end = int(as_of.timestamp()) + 1
    con = duckdb.connect()
    con.register("frame", frame)
    con.execute("CREATE TABLE orders AS SELECT * FROM frame")
    con.unregister("frame")
    sql = DUCKDB_SQL.format(offset=OFFSET, end=end)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        con.execute(sql).fetchall()
        best = min(best, (time.perf_counter() - started) * 1000)
    def one(query: str) -> Any:
        return con.execute(query).fetchall()[0][0]

    out: dict[str, Any] = {"ms": best, "threads": int(one("SELECT current_setting('threads')")),
                           "customers": int(one("SELECT COUNT(*) FROM overall")),
                           "scope_rows": int(one("SELECT COUNT(*) FROM per_scope"))}
    if figures is not None:
        con.register("figures", figures)
        out["differing_from_figures"] = int(one("""
            SELECT COUNT(*) FROM overall o FULL JOIN figures f USING (customer_id)
            WHERE o.customer_id IS NULL OR f.customer_id IS NULL
               OR o.frequency <> f.frequency OR o.monetary <> f.monetary
               OR o.purchase_days <> f.purchase_days OR o.first_at <> f.first_at
               OR o.last_at <> f.last_at"""))
    con.close()
    return out


# --- Patron's refresh ------------------------------------------------------------------------

def patron_refresh(url: str, as_of: dt.datetime) -> dict[str, Any]:
    """What a refresh job's first two steps do: every RFM scope and the lifecycle stages, each
    its own transaction, on PostgreSQL at once on two connections
    (``service.refresh_rfm_and_lifecycle``). ``ms`` is the wall time of both."""
    engine = get_engine(url)
    started = time.perf_counter()
    life = service.Alongside(engine, SYSTEM, as_of)
    life.start()
    with UnitOfWork(engine) as uow:
        rfm = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=as_of, scope="all")
    rfm_ms = (time.perf_counter() - started) * 1000
    lifecycle = life.result()
    ms = (time.perf_counter() - started) * 1000
    return {"ms": ms, "rfm_ms": rfm_ms, "lifecycle_ms": life.seconds * 1000,
            "concurrent": engine.dialect.name == "postgresql",
            "scopes": len(rfm["scopes"]), "scored_rows": sum(rfm["scopes"].values()),
            "rows_written": sum(rfm.get("written", rfm["scopes"]).values()),
            "overall": rfm["scopes"]["overall"], "stage_changes": lifecycle["changed"],
            "stages": lifecycle["stages"], "rfm_mode": rfm.get("mode"),
            "lifecycle_mode": lifecycle.get("mode")}


# --- BG/NBD ---------------------------------------------------------------------------------

def bgnbd_figures(url: str, label: str, *, repeats: int = 3,
                  log: Callable[[str], None] | None = None) -> list[Figure]:

    started = time.perf_counter()
    with UnitOfWork(get_engine(url), readonly=True) as uow:
        summary = clv_service.purchase_summary(uow=uow, calibration_end=END_DAY,
                                               holdout_end=END_DAY)
    summary_ms = (time.perf_counter() - started) * 1000
    x, t_x, age = summary.model_inputs("week")
    best, ours = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        ours = clv.fit_bgnbd(x, t_x, age)
        best = min(best, (time.perf_counter() - started) * 1000)
    assert ours is not None
    if log:
        log(f"  BG/NBD: Patron {best:,.0f} ms; the reference implementation on "
            f"{x.size:,} customers ...")
    import pandas as pd
    from lifetimes import BetaGeoFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        ref = BetaGeoFitter().fit(pd.Series(x), pd.Series(t_x), pd.Series(age))
        ref_ms = (time.perf_counter() - started) * 1000
    theirs = {k: float(ref.params_[k]) for k in ("r", "alpha", "a", "b")}
    mine = ours.as_dict()
    ppm = max(abs(mine[k] - theirs[k]) / abs(theirs[k]) for k in theirs) * 1e6
    sig3 = {k: (f"{mine[k]:.3g}", f"{theirs[k]:.3g}") for k in theirs}
    notes = {"customers": int(x.size), "repeat_customers": int((x > 0).sum()),
             "summary_sql_ms": round(summary_ms, 1), "patron": mine, "reference": theirs,
             "three_significant_digits": sig3, "period": "week"}
    speedup = ref_ms / best if best else 0.0
    return [
        Figure(f"BG/NBD fit ({label})", best, "ms",
               "lifetimes BetaGeoFitter, same summary", ref_ms, higher_is_better=False,
               target=f"ratio <= {1 / FIT_SPEEDUP_TARGET:.2f} ({FIT_SPEEDUP_TARGET:.0f}x faster)",
               passed=speedup >= FIT_SPEEDUP_TARGET, notes=notes),
        Figure(f"BG/NBD parameters vs lifetimes, max relative difference ({label})", ppm, "ppm",
               "half a unit in the third significant digit", SIG3_PPM, higher_is_better=False,
               target=f"< {SIG3_PPM:.0f} ppm", passed=ppm < SIG3_PPM, notes={"params": sig3}),
    ]


# --- segment queries ------------------------------------------------------------------------

def _timed(fn: Callable[[], Any], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def query_figures(url: str, label: str, customers: int, *, samples: int = SAMPLES
                  ) -> list[Figure]:

    engine = get_engine(url)
    rng = random.Random(SEED)
    with engine.connect() as conn:
        conn = conn.execution_options(patron_readonly=True)
        summary = service.rfm_summary(conn, actor=SYSTEM)
        largest = max(summary["segments"], key=lambda s: s["customers"])["segment"]
        day = service.local_date(end_of_day(END_DAY))
        pk = select(customers_table.c.id, customers_table.c.name).where(
            customers_table.c.id == text(":cid"))
        queries: dict[str, Callable[[], Any]] = {
            "rfm_summary": lambda: service.rfm_summary(conn, actor=SYSTEM),
            f"segment_customers {largest} p1": lambda: service.segment_customers(
                conn, actor=SYSTEM, segment=largest),
            "lifecycle_summary": lambda: service.lifecycle_summary(conn, actor=SYSTEM),
            "lifecycle_flows 30 days": lambda: service.lifecycle_flows(
                conn, actor=SYSTEM, date_from=day - dt.timedelta(days=29), date_to=day),
        }
        for fn in queries.values():  # warm
            fn()
            conn.rollback()
        pk_samples = []
        for _ in range(PK_SAMPLES):
            cid = rng.randint(1, customers)
            started = time.perf_counter()
            conn.execute(pk, {"cid": cid}).first()
            pk_samples.append((time.perf_counter() - started) * 1000)
        conn.rollback()
        pk50, pk99 = percentile(pk_samples, 50), percentile(pk_samples, 99)
        figures = []
        for name, fn in queries.items():
            times = _timed(fn, samples)
            conn.rollback()
            p50, p99 = percentile(times, 50), percentile(times, 99)
            figures += [
                Figure(f"{name} p50 ({label})", p50, "ms", "PK SELECT p50 (same conn)", pk50,
                       higher_is_better=False, notes={"samples": samples}),
                Figure(f"{name} p99 ({label})", p99, "ms", "PK SELECT p99 (same conn)", pk99,
                       higher_is_better=False, target=f"< {QUERY_TARGET_MS:.0f} ms",
                       passed=p99 < QUERY_TARGET_MS, notes={"samples": samples,
                                                            "max": max(times)}),
            ]
    return figures


def dashboard_figures(url: str, label: str, samples: int,
                      log: Callable[[str], None] | None) -> list[Figure]:
    """The dashboards' own measurement, when that module exists."""
    try:
        module = importlib.import_module("benchmarks.dashboards")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.dashboards":
            raise
        return []
    measure = getattr(module, "measure", None)
    if measure is None:
        return []
    if log:
        log(f"  dashboard queries ({label}) ...")
    try:
        return list(measure(url, label=label, samples=samples, log=log))
    except Exception as exc:  # another area's module: report it, keep this run's figures
        if log:
            log(f"  dashboard queries failed: {exc!r}")
        return [Figure(f"dashboard queries ({label})", 0, "ms", "-", 0, passed=False,
                       target="measured", notes={"error": repr(exc)[:500]})]


# --- the run ----------------------------------------------------------------------------------

def held_back(data: Dataset) -> int:
    """The first order of the last day: the orders before it are loaded, the last day's are
    recorded through Patron's own ingestion between the first refresh and the next night's,
    as a day of trading would be."""
    last_day = (END_DAY - dt.date(1970, 1, 1)).days
    return int(np.searchsorted((data.order_at + OFFSET) // 86400, last_day))


def prepare(db: BenchDatabase, *, customers: int = CUSTOMERS, seed: int = SEED,
            log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Regions and brands, then everything but the last day loaded (not timed as a figure):
    what ``run`` starts from, and what ``--analytics-reuse`` keeps as a template."""
    add_regions_and_brands(db)
    data = generate(customers, len(db.store_codes), seed=seed)
    if log:
        log(f"analytics data: {customers:,} customers, {data.orders:,} orders, "
            f"{data.line_order.size:,} lines; loading ...")
    return load(db, data, orders=held_back(data), log=log)


def template_name(customers: int, seed: int = SEED) -> str:
    """The kept PostgreSQL database ``--analytics-reuse`` copies; bump ``DATA_VERSION`` when
    ``generate`` or ``load`` change what they write."""
    return f"patron_bench_template_analytics_{customers}_{seed}_v{DATA_VERSION}"


def run(db: BenchDatabase, *, customers: int = CUSTOMERS, seed: int = SEED,
        samples: int = SAMPLES, fit_repeats: int = 3, prepared: bool = False,
        log: Callable[[str], None] | None = None) -> list[Figure]:
    """Generate, load (unless ``prepared``: the database is a copy of a template ``prepare``
    built), then every figure on this database."""
    label_db = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[db.kind]
    loaded: dict[str, Any] = {"template": "copied"}
    if not prepared:
        loaded = prepare(db, customers=customers, seed=seed, log=log)
    data = generate(customers, len(db.store_codes), seed=seed)
    cut = held_back(data)
    label = f"{label_db}, {customers:,} customers"
    if log:
        log(f"{label_db}: RFM + lifecycle refresh, cold ...")
    cold = patron_refresh(db.url, end_of_day(END_DAY - dt.timedelta(days=1)))
    if log:
        log(f"{label_db}: the last day's {data.orders - cut:,} orders through record_orders ...")
    day = record_day(db, data, cut, data.orders)
    if log:
        log(f"{label_db}: RFM + lifecycle refresh, the next night ...")
    as_of = end_of_day(END_DAY)
    nightly = patron_refresh(db.url, as_of)
    if log:
        log(f"{label_db}: RFM + lifecycle refresh, a quiet night (nothing recorded) ...")
    quiet = patron_refresh(db.url, end_of_day(END_DAY + dt.timedelta(days=1)))
    if log:
        log(f"{label_db}: DuckDB anchor ...")
    frame = _export_orders(db)
    duck = duckdb_aggregates(frame, as_of, figures=_export_figures(db))
    duck_ms = duck["ms"]
    del frame
    notes_common = {"orders": data.orders, "customers": customers,
                    "lines": int(data.line_order.size), "duckdb": duck,
                    "load_seconds": {k: round(v, 1) if isinstance(v, float) else v
                                     for k, v in loaded.items()},
                    "last_day_recorded": day}
    anchor = "DuckDB: same per-customer aggregates from the raw orders (in memory)"
    figures = [
        Figure(f"RFM + lifecycle full refresh, cold ({label})", cold["ms"], "ms", anchor,
               duck_ms, higher_is_better=False, target="ratio <= 1 (no slower than DuckDB)",
               passed=cold["ms"] <= duck_ms,
               notes={**notes_common, **cold, "as_of": "the day before the last"}),
        Figure(f"RFM + lifecycle full refresh, next night ({label})", nightly["ms"], "ms",
               anchor, duck_ms, higher_is_better=False,
               target="ratio <= 1 (no slower than DuckDB)", passed=nightly["ms"] <= duck_ms,
               notes={**notes_common, **nightly,
                      "as_of": "the last day, after its orders were recorded"}),
        Figure(f"RFM + lifecycle full refresh, a quiet night ({label})", quiet["ms"], "ms",
               anchor, duck_ms, higher_is_better=False,
               target="ratio <= 1 (no slower than DuckDB)", passed=quiet["ms"] <= duck_ms,
               notes={**notes_common, **quiet,
                      "as_of": "the day after the last, nothing recorded since"}),
    ]
    differing = duck["differing_from_figures"]
    figures.append(Figure(
        f"customer figures differing from DuckDB's aggregates ({label})", differing, "count",
        "customers", customers, target="0", passed=differing == 0,
        notes={"compared": "order count, net spend, purchase days, first and last purchase"}))
    if log:
        log(f"{label_db}: cold {cold['ms']:,.0f} ms, next night {nightly['ms']:,.0f} ms, "
            f"quiet night {quiet['ms']:,.0f} ms, DuckDB {duck_ms:,.0f} ms; BG/NBD fit ...")
    figures += bgnbd_figures(db.url, label, repeats=fit_repeats, log=log)
    if log:
        log(f"{label_db}: segment queries ...")
    figures += query_figures(db.url, label, customers, samples=samples)
    figures += dashboard_figures(db.url, label, samples, log)
    return figures

