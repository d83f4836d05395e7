"""Bulk import through the real ingestion path against a raw insert of the same rows.

The two are interleaved chunk by chunk (alternating which goes first), so that both see the
same machine load, the same cache state and tables of the same size: on a shared, noisy machine
this is what makes the ratio mean something even when the absolute rates wander.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, func, insert, select

from benchmarks.data import OrderStream, raw_rows
from benchmarks.databases import BenchDatabase, bare_copy
from patron.customers import figures as figs
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, get_engine, utcnow
from patron.orders.service import record_orders
from patron.orders.tables import order_lines, orders
from patron.security.model import SYSTEM

CHUNK = 2000
FIGURE_SAMPLE = 500


@dataclass
class BulkResult:
    orders: int
    seconds: float
    raw_seconds: float
    statuses: Counter[str]
    customers: int = 0
    identities: int = 0
    figure_differences: int = 0
    figure_sample: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0

    @property
    def raw_rate(self) -> float:
        return self.orders / self.raw_seconds if self.raw_seconds else 0.0


def run(db: BenchDatabase, stream: OrderStream, count: int, *, chunk: int = CHUNK,
        progress: bool = True) -> BulkResult:
    engine = get_engine(db.url)
    md = MetaData()
    raw_orders = bare_copy(orders, "bench_raw_orders", md)
    raw_lines = bare_copy(order_lines, "bench_raw_order_lines", md)
    raw_engine = get_engine(db.raw_url)
    md.create_all(raw_engine)

    real_s = raw_s = 0.0
    statuses: Counter[str] = Counter()
    now = utcnow()
    next_report = 0.1
    for number, start in enumerate(range(0, count, chunk)):
        bodies = [stream.order(n) for n in range(start, min(count, start + chunk))]
        order_rows, line_rows = [], []
        for i, body in enumerate(bodies):
            o, ls = raw_rows(body, order_id=start + i + 1, channel_ids=db.channel_ids,
                             store_ids=db.store_ids, now=now,
                             customer_id=stream.raw_customer_id(start + i))
            order_rows.append(o)
            line_rows.extend(ls)

        def real(bodies: list[dict[str, Any]] = bodies) -> None:
            with UnitOfWork(engine) as uow:
                out = record_orders(uow=uow, orders_in=bodies, source="import", actor=SYSTEM,
                                    audit_each=False)
            statuses.update(o.status for o in out)

        def raw(order_rows: list[dict[str, Any]] = order_rows,
                line_rows: list[dict[str, Any]] = line_rows) -> None:
            with raw_engine.begin() as conn:
                conn.execute(insert(raw_orders), order_rows)
                conn.execute(insert(raw_lines), line_rows)

        first, second = (real, raw) if number % 2 == 0 else (raw, real)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        if first is real:
            real_s += t1 - t0
            raw_s += t2 - t1
        else:
            raw_s += t1 - t0
            real_s += t2 - t1
        done = min(count, start + chunk)
        if progress and done >= next_report * count:
            print(f"  {db.kind}: {done:,}/{count:,} orders, "
                  f"{done / real_s:,.0f}/s (raw {done / raw_s:,.0f}/s)", file=sys.stderr)
            next_report += 0.1

    result = BulkResult(count, real_s, raw_s, statuses)
    if statuses.get("created", 0) != count:
        raise RuntimeError(f"the generator's orders were not all created: {dict(statuses)}")
    with engine.connect() as conn:
        result.customers = int(conn.execute(select(func.count()).select_from(customers))
                               .scalar_one())
        result.identities = int(conn.execute(select(func.count()).select_from(identities))
                                .scalar_one())
        ids = [int(i) for i in conn.execute(select(customers.c.id)).scalars()]
        sample = sorted(random.Random(7).sample(ids, min(FIGURE_SAMPLE, len(ids))))
        result.figure_sample = len(sample)
        result.figure_differences = len(figs.compare(conn, sample))
    return result


def profile_chunk(db: BenchDatabase, stream: OrderStream, start: int, out: Path,
                  *, chunk: int = CHUNK) -> str:
    """cProfile one more chunk through ``record_orders`` on the loaded database; write the
    listing to ``out`` and return the top of it."""
    engine = get_engine(db.url)
    bodies = [stream.order(n) for n in range(start, start + chunk)]
    prof = cProfile.Profile()
    statements: dict[str, list[float]] = {}
    started: list[float] = []

    def before(*_a: Any) -> None:
        started.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
        slot = statements.setdefault(" ".join(statement.split())[:90], [0, 0.0])
        slot[0] += 1
        slot[1] += time.perf_counter() - started.pop()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with UnitOfWork(engine) as uow:
            prof.enable()
            record_orders(uow=uow, orders_in=bodies, source="import", actor=SYSTEM,
                          audit_each=False)
            prof.disable()
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    buf = io.StringIO()
    buf.write(f"Statements of one chunk of {chunk} orders (driver time, under cProfile):\n")
    for sql, (calls, secs) in sorted(statements.items(), key=lambda kv: -kv[1][1]):
        buf.write(f"{secs * 1000:9.1f} ms {int(calls):4d}x  {sql}\n")
    buf.write("\n")
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buf.getvalue())
    return buf.getvalue()
