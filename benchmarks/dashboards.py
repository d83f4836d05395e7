"""Dashboard queries on whatever database they are pointed at, each against a primary-key
``SELECT`` on the same connection, and the rollup refresh against one pass over the orders.

``measure(url, label=...)`` is what ``benchmarks/analytics.py`` calls at the end of its
million-customer run (``make bench-full``); ``python -m benchmarks.dashboards URL`` runs it on
any Patron database and prints the table. Nothing here writes anything but the dashboard
rollups (and only when ``refresh`` asks for it): it is safe on a copy of production.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text

from benchmarks.results import Figure, percentile, print_table
from patron.db import UnitOfWork, get_engine
from patron.security.model import SYSTEM, Actor

SAMPLES = 20
PK_SAMPLES = 200
QUERY_TARGET_MS = 500.0


def _timed(fn: Callable[[], Any], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _refresh_figures(url: str, label: str, refresh: str) -> list[Figure]:
    """The full rebuild (and a refresh with nothing changed) against one aggregate pass over
    every order: the least any rebuild from the orders has to do."""
    from patron.analytics.dashboards_service import refresh_dashboards

    engine = get_engine(url)
    out: list[Figure] = []
    with engine.connect() as conn:
        started = time.perf_counter()
        conn.execute(text("SELECT store_id, COUNT(*), SUM(total_amount) FROM orders "
                          "GROUP BY store_id")).all()
        scan_ms = (time.perf_counter() - started) * 1000
        conn.rollback()
    if refresh == "full":
        with UnitOfWork(engine) as uow:
            started = time.perf_counter()
            result = refresh_dashboards(uow=uow, actor=SYSTEM, full=True)
            full_ms = (time.perf_counter() - started) * 1000
        out.append(Figure(f"dashboard rollups full rebuild ({label})", full_ms, "ms",
                          "one GROUP BY pass over the orders", scan_ms,
                          higher_is_better=False, notes={"customers": result["customers"]}))
    with UnitOfWork(engine) as uow:
        started = time.perf_counter()
        result = refresh_dashboards(uow=uow, actor=SYSTEM)
        next_ms = (time.perf_counter() - started) * 1000
    out.append(Figure(f"dashboard rollups refresh, nothing changed ({label})", next_ms, "ms",
                      "one GROUP BY pass over the orders", scan_ms, higher_is_better=False,
                      notes={"mode": result["mode"], "customers": result["customers"]}))
    return out


def _queries(conn: Any, last_day: dt.date, as_of: dt.datetime, manager: Actor | None
             ) -> dict[str, Callable[[], Any]]:
    from patron.analytics import dashboards_service as ds

    def days(n: int) -> tuple[dt.date, dt.date]:
        return last_day - dt.timedelta(days=n - 1), last_day

    def breakdown(by: str, period: tuple[dt.date, dt.date], actor: Actor = SYSTEM,
                  **kw: Any) -> Callable[[], Any]:
        return lambda: ds.breakdown(conn, actor=actor, by=by, date_from=period[0],
                                    date_to=period[1], as_of=as_of, **kw)

    month = last_day.replace(day=1)
    year_ago = (month - dt.timedelta(days=330)).replace(day=1)
    queries: dict[str, Callable[[], Any]] = {
        "dashboard by store, 30 days": breakdown("store", days(30)),
        "dashboard by store, 365 days": breakdown("store", days(365)),
        "dashboard by region, 90 days": breakdown("region", days(90)),
        "dashboard by channel, 90 days": breakdown("channel", days(90)),
        "dashboard by category, 30 days": breakdown("category", days(30)),
        "dashboard by day, 90 days": breakdown("day", days(90)),
        "dashboard by week, 52 weeks": breakdown("week", days(364)),
        "dashboard by month, 12 months": breakdown("month", (year_ago, last_day)),
        "dashboard members vs non-members, 90 days": lambda: ds.members_report(
            conn, actor=SYSTEM, date_from=days(90)[0], date_to=last_day, as_of=as_of),
        "dashboard cohorts, 12 months": lambda: ds.cohorts(conn, actor=SYSTEM, as_of=as_of),
        "dashboard RFM x lifecycle": lambda: ds.structure(conn, actor=SYSTEM),
        "dashboard drill-down, repeat customers of 30 days, page 1": lambda: ds.drill_customers(
            conn, actor=SYSTEM, as_of=as_of, params={
                "by": "total", "from": days(30)[0].isoformat(),
                "to": last_day.isoformat(), "metric": "repeat_customers"}),
    }
    if manager is not None:
        queries["dashboard by channel, 30 days, one store's manager"] = breakdown(
            "channel", days(30), actor=manager)
        queries["dashboard by day, 90 days, one store's manager"] = breakdown(
            "day", days(90), actor=manager)
    return queries


def measure(url: str, *, label: str | None = None, samples: int = SAMPLES,
            refresh: str = "full", log: Callable[[str], None] | None = None) -> list[Figure]:
    """Time every dashboard query on the database at ``url`` and return the figures.

    ``refresh``: ``"full"`` (default) rebuilds the rollups first and reports that time, then a
    refresh with nothing changed; ``"incremental"`` only the latter (the rollups must have
    been built before, or it is a first, full run); ``"none"`` measures the queries on the
    rollups as they are. Periods end on the last day with a sale ("today" for the readers), so
    the figures do not depend on when the benchmark runs.

    Each query (breakdowns by store over 30 and 365 days, by region, channel, category, day,
    week and month, members against non-members, cohorts, the RFM x lifecycle matrix, a
    drill-down page, and a one-store manager's breakdowns answered by the per-customer path)
    runs ``samples`` times after one warm-up; the figures are p50 and p99 in milliseconds
    against the p50 / p99 of a primary-key ``SELECT`` of a customer on the same connection.
    The p99 figures carry the target (< 500 ms) and pass or fail against it.
    """
    from patron.analytics.dashboards import day_of
    from patron.analytics.dashboards_tables import dashboard_sales_daily
    from patron.config import get_settings
    from patron.customers.tables import customers
    from patron.org.tables import stores

    engine = get_engine(url)
    label = label or engine.dialect.name
    figures: list[Figure] = []
    if refresh != "none":
        if log:
            log(f"  dashboard rollups ({label}) ...")
        figures += _refresh_figures(url, label, refresh)
    with engine.connect() as conn:
        conn = conn.execution_options(patron_readonly=True)
        last = conn.execute(select(func.max(dashboard_sales_daily.c.day))).scalar()
        if last is None:
            return figures
        last_day = day_of(int(last))
        zone = ZoneInfo(get_settings().default_timezone)
        as_of = dt.datetime.combine(last_day, dt.time(23, 59), zone)
        store_id = conn.execute(select(stores.c.id).order_by(stores.c.id).limit(1)).scalar()
        manager = None if store_id is None else Actor(
            type="user", id=None, name="bench-manager", role="manager",
            store_ids=frozenset({int(store_id)}))
        top = int(conn.execute(select(func.max(customers.c.id))).scalar() or 1)
        conn.rollback()
        queries = _queries(conn, last_day, as_of, manager)
        for fn in queries.values():
            fn()
            conn.rollback()
        pk = select(customers.c.id, customers.c.name).where(customers.c.id == text(":cid"))
        pk_samples = []
        for i in range(PK_SAMPLES):
            started = time.perf_counter()
            conn.execute(pk, {"cid": 1 + (i * 7919) % top}).first()
            pk_samples.append((time.perf_counter() - started) * 1000)
        conn.rollback()
        pk50, pk99 = percentile(pk_samples, 50), percentile(pk_samples, 99)
        for name, fn in queries.items():
            if log:
                log(f"  {name} ...")
            times = _timed(fn, samples)
            conn.rollback()
            p50, p99 = percentile(times, 50), percentile(times, 99)
            figures += [
                Figure(f"{name} p50 ({label})", p50, "ms", "PK SELECT p50 (same conn)", pk50,
                       higher_is_better=False, notes={"samples": samples}),
                Figure(f"{name} p99 ({label})", p99, "ms", "PK SELECT p99 (same conn)", pk99,
                       higher_is_better=False, target=f"< {QUERY_TARGET_MS:.0f} ms",
                       passed=p99 < QUERY_TARGET_MS,
                       notes={"samples": samples, "max": max(times),
                              "last_day": last_day.isoformat()}),
            ]
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dashboards", description=__doc__)
    p.add_argument("url", help="a Patron database URL")
    p.add_argument("--samples", type=int, default=SAMPLES)
    p.add_argument("--refresh", choices=("full", "incremental", "none"), default="full")
    args = p.parse_args(argv)
    figures = measure(args.url, samples=args.samples, refresh=args.refresh,
                      log=lambda m: print(m, flush=True))
    print_table(figures)
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
