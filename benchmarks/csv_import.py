"""A CSV file imported end to end through ``patron.imports.service`` (read, group rows into
orders, record), against the raw insert of the same orders' rows.

The raw insert of each chunk runs in the importer's progress callback, right after the chunk
committed, and its time is taken out of the import's: the two are interleaved as in the bulk
benchmark.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, insert

from benchmarks.data import OrderStream, raw_rows
from benchmarks.databases import BenchDatabase, bare_copy
from patron.db import UnitOfWork, get_engine, utcnow
from patron.orders.tables import order_lines, orders
from patron.security.model import SYSTEM

COLUMNS = ("order_id", "channel", "store", "purchased_at", "payment_method", "phone",
           "member_code", "wechat_openid", "platform_buyer_id", "customer_name", "sku",
           "product_name", "category", "quantity", "unit_price", "line_discount")


def available() -> bool:
    try:
        from patron.imports import service  # noqa: F401
    except ImportError:
        return False
    return hasattr(service, "start_import") and hasattr(service, "run_import")


def write_csv(stream: OrderStream, start: int, count: int, path: Path, prefix: str) -> None:
    """The orders as the canonical import file: one row per line, order columns repeated."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for n in range(start, start + count):
            o = stream.order(n, prefix=prefix)
            ids = o["identifiers"]
            head = [o["external_id"], o["channel"], o["store"], o["purchased_at"],
                    o["payments"][0]["method"], ids.get("phone", ""), ids.get("member_code", ""),
                    ids.get("wechat_openid", ""), ids.get("platform_buyer_id", ""),
                    (o.get("customer") or {}).get("name", "")]
            for ln in o["lines"]:
                w.writerow(head + [ln["sku"], ln["name"], ln["category"], ln["quantity"],
                                   ln["unit_price"], ln.get("discount", "")])


def run(db: BenchDatabase, stream: OrderStream, start: int, count: int, workdir: Path,
        *, raw_id_base: int) -> dict[str, Any]:
    from patron.imports import service as imports

    prefix = "F"
    path = workdir / f"orders-{db.kind}.csv"
    write_csv(stream, start, count, path, prefix)
    engine = get_engine(db.url)
    md = MetaData()
    raw_orders = bare_copy(orders, "bench_raw_orders", md)
    raw_lines = bare_copy(order_lines, "bench_raw_order_lines", md)
    raw_engine = get_engine(db.raw_url)
    md.create_all(raw_engine)
    now = utcnow()
    state = {"done": 0, "raw_s": 0.0}

    def raw_insert_up_to(created: int) -> None:
        # The orders the importer has recorded so far, inserted raw into the bare tables.
        lo, hi = state["done"], created
        if hi <= lo:
            return
        order_rows, line_rows = [], []
        for n in range(int(lo), int(hi)):
            body = stream.order(start + n, prefix=prefix)
            o, ls = raw_rows(body, order_id=raw_id_base + n + 1, channel_ids=db.channel_ids,
                             store_ids=db.store_ids, now=now,
                             customer_id=stream.raw_customer_id(start + n))
            order_rows.append(o)
            line_rows.extend(ls)
        t0 = time.perf_counter()
        with raw_engine.begin() as conn:
            conn.execute(insert(raw_orders), order_rows)
            conn.execute(insert(raw_lines), line_rows)
        state["raw_s"] += time.perf_counter() - t0
        state["done"] = hi

    def progress(p: Any) -> None:
        # Building the raw rows is not counted for either side: pause the import's clock.
        before = time.perf_counter()
        raw_before = state["raw_s"]
        raw_insert_up_to(p.orders_created)
        state["pause"] = state.get("pause", 0.0) + (time.perf_counter() - before) - (
            state["raw_s"] - raw_before)

    t0 = time.perf_counter()
    with UnitOfWork(engine) as uow:
        job_id = imports.start_import(uow=uow, actor=SYSTEM, path=path, filename=path.name)
        job = imports.run_import(uow=uow, actor=SYSTEM, job_id=job_id, path=path,
                                 progress=progress)
    elapsed = time.perf_counter() - t0 - state["raw_s"] - state.get("pause", 0.0)
    if job.orders_created != count:
        raise RuntimeError(f"the CSV import did not create every order: {job}")
    return {"orders": count, "seconds": elapsed, "raw_seconds": state["raw_s"],
            "rate": count / elapsed, "raw_rate": count / state["raw_s"],
            "rows": job.rows_read, "file_bytes": path.stat().st_size}
