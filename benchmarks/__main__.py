"""``python -m benchmarks``: generate orders, measure, print every figure next to its anchor.

See docs/benchmarks.md for the method and how to read the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import analytics as analytics_bench
from benchmarks import api_ingest, bulk_import, csv_import, lookup
from benchmarks import checkout as checkout_bench
from benchmarks import clv as clv_bench
from benchmarks.data import OrderStream
from benchmarks.databases import (
    DEFAULT_PG_ADMIN_URL,
    postgres_database,
    postgres_from_template,
    sqlite_database,
)
from benchmarks.results import Figure, print_table, write_json
from patron.db import dispose_engines

IMPORT_TARGET = 0.5
API_RATE_TARGET = api_ingest.RATE_TARGET
API_P99_TARGET_MS = api_ingest.P99_TARGET_MS
DB_LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--orders", type=int, default=200_000, help="orders to import (default 200k)")
    p.add_argument("--chunk", type=int, default=bulk_import.CHUNK, help="orders per transaction")
    p.add_argument("--skip-sqlite", action="store_true")
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--skip-api", action="store_true")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds of load per API measurement (default 20)")
    p.add_argument("--connections", "--clients", default="8,16,32,64",
                   help="concurrent API connections to try (default 8,16,32,64); the figure is "
                        "the fastest level meeting both targets, else the best rate with every "
                        "response 201")
    p.add_argument("--workers", default="1,2", help="server worker counts to try, e.g. 1,2")
    p.add_argument("--postgres-url", default=DEFAULT_PG_ADMIN_URL,
                   help="an admin URL; a fresh patron_bench_* database is created and dropped")
    p.add_argument("--csv-orders", type=int, default=None,
                   help="orders in the CSV file import (default: a quarter of --orders)")
    p.add_argument("--lookups", type=int, default=lookup.SAMPLES,
                   help="lookups (and as many anchor SELECTs) per database")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile of one chunk")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--clv-customers", type=int, default=clv_bench.CUSTOMERS,
                   help="synthetic customers for the CLV benchmark (0: CDNOW only)")
    p.add_argument("--skip-clv", action="store_true")
    p.add_argument("--analytics-customers", type=int, default=analytics_bench.CUSTOMERS,
                   help="customers (~4 orders each) of the analytics benchmark, loaded "
                        "directly into a fresh database per engine (0: skip it)")
    p.add_argument("--analytics-samples", type=int, default=analytics_bench.SAMPLES,
                   help="calls per segment query in the analytics benchmark")
    p.add_argument("--analytics-only", action="store_true",
                   help="only the analytics benchmark (no import, lookup, API or CLV figures)")
    p.add_argument("--analytics-reuse", action="store_true",
                   help="PostgreSQL: copy the analytics database from a kept template "
                        "(patron_bench_template_analytics_<customers>_...), building it the "
                        "first time, instead of loading it afresh (~50 minutes at 1M)")
    p.add_argument("--skip-checkout", action="store_true",
                   help="no POS checkout figures (they come with the API figures)")
    p.add_argument("--checkout-only", action="store_true",
                   help="only the POS checkout figures on PostgreSQL, with their single-order "
                        "API anchor")
    p.add_argument("--checkout-members", type=int, default=checkout_bench.MEMBERS,
                   help="members the checkout load spreads over")
    return p.parse_args(argv)


def import_figures(label: str, res: bulk_import.BulkResult) -> list[Figure]:
    ratio = res.rate / res.raw_rate if res.raw_rate else 0.0
    notes = {"orders": res.orders, "customers": res.customers, "identities": res.identities,
             "statuses": dict(res.statuses), "seconds": round(res.seconds, 2),
             "raw_seconds": round(res.raw_seconds, 2)}
    return [
        Figure(f"import orders/s ({label})", res.rate, "orders/s",
               f"raw INSERT orders+lines ({label})", res.raw_rate,
               target=f"ratio >= {IMPORT_TARGET:.2f}", passed=ratio >= IMPORT_TARGET, notes=notes),
        Figure(f"figures differing ({label}, sampled)", res.figure_differences, "count",
               "customers sampled", res.figure_sample, target="0",
               passed=res.figure_differences == 0),
    ]


def lookup_figures(label: str, res: dict[str, Any]) -> list[Figure]:
    notes = {"query": res["label"], "samples": res["samples"], "found": res["found"]}
    out = [
        Figure(f"lookup p50 ({label}, service)", res["p50"], "ms",
               "PK SELECT p50 (same conn)", res["pk_p50"], higher_is_better=False, notes=notes),
        Figure(f"lookup p99 ({label}, service)", res["p99"], "ms",
               "PK SELECT p99 (same conn)", res["pk_p99"], higher_is_better=False, notes=notes,
               passed=None if res["found"] == res["samples"] else False,
               target="" if res["found"] == res["samples"] else "every phone found"),
    ]
    if "search_p50" in res:
        ok = res["search_found"] == res["samples"]
        out += [
            Figure(f"search_customers p50 ({label}, phone)", res["search_p50"], "ms",
                   "PK SELECT p50 (same conn)", res["pk_p50"], higher_is_better=False),
            Figure(f"search_customers p99 ({label}, phone)", res["search_p99"], "ms",
                   "PK SELECT p99 (same conn)", res["pk_p99"], higher_is_better=False,
                   target="" if ok else "every phone found", passed=None if ok else False),
        ]
    return out


def api_figures(res: dict[str, Any]) -> list[Figure]:
    w, best = res["workers"], res["best"]
    gen = "wrk" if res["generator"] == "wrk" else "in-process httpx"
    tag = (f"PG, {w} worker{'s' if w > 1 else ''}, {best['connections']} conns, "
           f"{res['server']}")
    anchor = f"GET /healthz, same {gen} load"
    orders: api_ingest.LoadResult = best["orders"]
    health: api_ingest.LoadResult = best["healthz"]
    ok = orders.only(201)
    notes = {"load": best["load"], "server": res["server"], "best_all_201": res["best_ok"],
             "reported_connections": best["connections"],
             "targets_met_at_connections": res.get("targets_met_at", []),
             "server_cpu_us_per_order": orders.summary()["server_cpu_us_per_request"],
             "db_cpu_us_per_order": orders.summary()["db_cpu_us_per_request"],
             "server_cpu_us_per_healthz": health.summary()["server_cpu_us_per_request"],
             "settings": [{"connections": s["connections"], "orders": s["orders"].summary(),
                           "healthz": s["healthz"].summary(), "orders_in_db": s["orders_in_db"],
                           "cut_off_written": s["cut_off_written"],
                           "db_matches": s["db_matches"]} for s in res["settings"]]}
    created = orders.statuses.get(201, 0)
    mismatch = best["orders_in_db"] - best["cut_off_written"] - created
    out = [
        Figure(f"API orders/s ({tag})", orders.rate, "orders/s", f"{anchor} (req/s)",
               health.rate, target=f">= {API_RATE_TARGET:,.0f}/s, all 201",
               passed=orders.rate >= API_RATE_TARGET and ok, notes=notes, anchor_unit="req/s"),
        Figure(f"API order p50 ({tag})", orders.p50, "ms", f"{anchor} p50", health.p50,
               higher_is_better=False),
        Figure(f"API order p99 ({tag})", orders.p99, "ms", f"{anchor} p99", health.p99,
               higher_is_better=False, target=f"< {API_P99_TARGET_MS:.0f} ms",
               passed=orders.p99 < API_P99_TARGET_MS),
        Figure(f"API orders in DB - 201s ({tag})", abs(mismatch), "count",
               "201 responses", created, target="0 (none lost or doubled)",
               passed=mismatch == 0,
               notes={"orders_in_db": best["orders_in_db"],
                      "cut_off_at_end": len(orders.inflight),
                      "cut_off_written": best["cut_off_written"]}),
    ]
    if "lookup" in res:
        lk: api_ingest.LoadResult = res["lookup"]
        lh: api_ingest.LoadResult = res["lookup_healthz"]
        lk_ok = lk.only(200)
        c = res["lookup_connections"]
        out += [
            Figure(f"API lookup p50 (PG, {w}w, {c} conns)", lk.p50, "ms", f"{anchor} p50",
                   lh.p50, higher_is_better=False,
                   notes={"lookup": lk.summary(), "healthz": lh.summary()}),
            Figure(f"API lookup p99 (PG, {w}w, {c} conns)", lk.p99, "ms", f"{anchor} p99",
                   lh.p99, higher_is_better=False, target="" if lk_ok else "all 200",
                   passed=None if lk_ok else False),
        ]
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,  # noqa: S607
                              text=True, check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _csv_figure(db: Any, stream: OrderStream, args: argparse.Namespace, count: int,
                meta: dict[str, Any], log: Any) -> Figure:
    label = DB_LABEL[db.kind]
    name, anchor = f"CSV file import orders/s ({label})", f"raw INSERT orders+lines ({label})"
    target = f"ratio >= {IMPORT_TARGET:.2f}"
    try:
        with tempfile.TemporaryDirectory(prefix="patron-bench-csv-") as tmp:
            res = csv_import.run(db, stream, args.orders, count, Path(tmp),
                                 raw_id_base=args.orders)
    except Exception as exc:  # the importer is young: report it, keep the other figures
        log(f"{label}: CSV file import failed: {exc!r}")
        meta.setdefault("errors", []).append(f"CSV file import ({label}): {exc!r}")
        return Figure(name, 0, "orders/s", anchor, 0, target=target, passed=False,
                      notes={"error": repr(exc)})
    return Figure(name, res["rate"], "orders/s", anchor, res["raw_rate"], target=target,
                  passed=res["rate"] / res["raw_rate"] >= IMPORT_TARGET,
                  notes={k: v for k, v in res.items() if k not in ("rate", "raw_rate")})


def _measure_database(db: Any, args: argparse.Namespace, figures: list[Figure],
                      meta: dict[str, Any], log: Any) -> None:
    label = DB_LABEL[db.kind]
    stream = OrderStream.for_orders(args.orders, db.store_codes)
    log(f"{label}: importing {args.orders:,} orders in chunks of {args.chunk:,} ...")
    res = bulk_import.run(db, stream, args.orders, chunk=args.chunk, progress=not args.quiet)
    figures.extend(import_figures(label, res))
    log(f"{label}: customer lookups ...")
    figures.extend(lookup_figures(label, lookup.run(db.url, stream, args.orders, args.lookups)))
    csv_orders = args.csv_orders if args.csv_orders is not None else max(1, args.orders // 4)
    if csv_orders and csv_import.available():
        log(f"{label}: CSV file import of {csv_orders:,} orders ...")
        figures.append(_csv_figure(db, stream, args, csv_orders, meta, log))
    elif csv_orders:
        meta.setdefault("skipped", []).append("CSV file import: patron.imports.service absent")
    if not args.no_profile:
        path = args.out / f"profile-{db.kind}.txt"
        bulk_import.profile_chunk(db, stream, args.orders, path, chunk=args.chunk)
        meta.setdefault("profiles", []).append(str(path))
    if db.kind == "postgresql" and not args.skip_api:
        phones = lookup.phones(stream, args.orders, args.lookups)
        connections = [int(c) for c in args.connections.split(",") if c.strip()]
        generator = api_ingest.load_generator(db.url, stream, stores=len(db.store_codes),
                                              log=log)
        meta["load_generator"] = (
            "wrk (benchmarks/wrk/*.lua), a separate process" if isinstance(
                generator, api_ingest.Wrk)
            else "in-process asyncio + httpx (wrk unavailable), sharing the cores with the "
                 "server")
        for run_no, workers in enumerate(int(w) for w in args.workers.split(",") if w.strip()):
            log(f"{label}: API load, {workers} worker(s), connections {connections}, "
                f"{args.duration:g} s per measurement ...")
            try:
                res_api = api_ingest.run(db.url, generator, workers=workers,
                                         connections=connections, duration=args.duration,
                                         phones=phones, run_no=run_no, log=log)
            except Exception as exc:  # a server that does not start: say so, keep the rest
                log(f"{label}: API load failed: {str(exc)[-1500:]}")
                meta.setdefault("errors", []).append(f"API load ({workers} workers): "
                                                     f"{str(exc)[-500:]}")
                figures.append(Figure(f"API orders/s (PG, {workers} workers)", 0, "orders/s",
                                      "GET /healthz, same load (req/s)", 0, passed=False,
                                      target=f">= {API_RATE_TARGET:,.0f}/s, all 201",
                                      notes={"error": str(exc)[-500:]}))
                continue
            figures.extend(api_figures(res_api))
        if not args.skip_checkout:
            _measure_checkout(db, generator, args, figures, meta, log)


def _measure_checkout(db: Any, generator: Any, args: argparse.Namespace,
                      figures: list[Figure], meta: dict[str, Any], log: Any) -> None:
    """Checkout commits/s and p99 next to the single-order API on the same server and load,
    with the most workers asked for."""
    workers = max(int(w) for w in args.workers.split(",") if w.strip())
    connections = [int(c) for c in args.connections.split(",") if c.strip()]
    log(f"PostgreSQL: checkout load, {workers} worker(s), connections {connections}, "
        f"{args.duration:g} s per measurement ...")
    try:
        res = checkout_bench.run(db.url, generator, workers=workers, connections=connections,
                                 duration=args.duration, members=args.checkout_members,
                                 log=log)
    except Exception as exc:  # a server that does not start: say so, keep the rest
        log(f"PostgreSQL: checkout load failed: {str(exc)[-1500:]}")
        meta.setdefault("errors", []).append(f"checkout load: {str(exc)[-500:]}")
        figures.append(Figure(f"checkout commits/s (PG, {workers} workers)", 0, "commits/s",
                              "single-order API POST /orders, same load (orders/s)", 0,
                              passed=False, target="all 201",
                              notes={"error": str(exc)[-500:]}))
        return
    figures.extend(checkout_bench.figures(res))


def _checkout_only(args: argparse.Namespace, figures: list[Figure], meta: dict[str, Any],
                   log: Any) -> None:
    with postgres_database(args.postgres_url) as db:
        stream = OrderStream.for_orders(args.orders, db.store_codes)
        generator = api_ingest.load_generator(db.url, stream, stores=len(db.store_codes),
                                              log=log)
        meta["load_generator"] = "wrk" if isinstance(generator, api_ingest.Wrk) else "httpx"
        _measure_checkout(db, generator, args, figures, meta, log)


def _measure_analytics(args: argparse.Namespace, figures: list[Figure], log: Any) -> None:
    """Each engine gets a fresh database of its own for the analytics data."""
    kwargs = {"customers": args.analytics_customers, "samples": args.analytics_samples,
              "log": log, "fit_repeats": 1 if args.analytics_customers > 200_000 else 3}
    if not args.skip_postgres and args.analytics_reuse:
        template = analytics_bench.template_name(args.analytics_customers)
        if log:
            log(f"PostgreSQL: analytics database copied from {template} (built first if "
                "missing) ...")
        with postgres_from_template(
                template, lambda db: analytics_bench.prepare(
                    db, customers=args.analytics_customers, log=log),
                args.postgres_url) as db:
            figures.extend(analytics_bench.run(db, prepared=True, **kwargs))
    elif not args.skip_postgres:
        with postgres_database(args.postgres_url) as db:
            figures.extend(analytics_bench.run(db, **kwargs))
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="patron-bench-analytics-") as tmp, \
                sqlite_database(Path(tmp)) as db:
            figures.extend(analytics_bench.run(db, **kwargs))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    meta: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "orders": args.orders, "chunk": args.chunk, "cpus": os.cpu_count(),
        "python": platform.python_version(), "platform": platform.platform(),
        "commit": _git_commit(),
    }
    figures: list[Figure] = []
    if args.checkout_only:
        _checkout_only(args, figures, meta, log)
    elif not args.analytics_only:
        if not args.skip_sqlite:
            with tempfile.TemporaryDirectory(prefix="patron-bench-") as tmp, \
                    sqlite_database(Path(tmp)) as db:
                _measure_database(db, args, figures, meta, log)
        if not args.skip_postgres:
            with postgres_database(args.postgres_url) as db:
                _measure_database(db, args, figures, meta, log)
        if not args.skip_clv:
            figures.extend(clv_bench.run(customers=args.clv_customers, log=log))
    if args.analytics_customers and not args.checkout_only:
        meta["analytics_customers"] = args.analytics_customers
        _measure_analytics(args, figures, log)
    dispose_engines()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    print_table(figures)
    out = args.out / "latest.json"
    write_json(out, meta, figures)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
