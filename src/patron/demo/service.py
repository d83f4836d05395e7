"""Loading generated data into the database, and the one-command demo.

Generated orders go through :func:`patron.orders.service.record_orders` like any till's, in
chunks, so the demo exercises identity resolution, merges and figures for real; refunds go
through :func:`patron.orders.returns.record_return`. The run leaves one audit entry for all its
orders (each refund is audited by the returns service itself).
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from patron import migrate
from patron.db import UnitOfWork, get_engine, utcnow
from patron.demo import loyalty as demo_loyalty
from patron.demo.catalogue import STORES
from patron.demo.generator import (
    CSV_COLUMNS,
    RETURN_CSV_COLUMNS,
    GeneratorConfig,
    generate,
    order_csv_rows,
    plan,
    return_csv_rows,
    window,
)
from patron.demo.seed import seed_organisation
from patron.errors import PatronError
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.orders.tables import orders
from patron.org.service import ensure_default_channels
from patron.org.tables import stores
from patron.security import audit
from patron.security.model import SYSTEM, Actor
from patron.security.service import create_user
from patron.security.tables import users

CHUNK = 2000
DEMO_PASSWORD = "patron-demo"  # noqa: S105 - printed on purpose, for the demo only
DEMO_CUSTOMERS = 3000
DEMO_ORDERS_PER_CUSTOMER = 20000 / 3000
DEMO_MONTHS = 18
DEMO_MANAGER_STORE = STORES[0].code
# (username, role, display name, scoped to the manager's store)
DEMO_USERS = (
    ("demo", "owner", "演示店主 Demo owner", False),
    ("analyst", "analyst", "数据分析师 Analyst", False),
    ("manager", "manager", "店长 Store manager", True),
    ("cashier", "cashier", "收银员 Cashier", True),
)


@dataclass
class LoadReport:
    created: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    returns: int = 0
    returns_skipped: int = 0
    seconds: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)  # the first few, for a message

    @property
    def received(self) -> int:
        return self.created + self.duplicates + self.conflicts + self.rejected


def load_generated(*, uow: UnitOfWork, actor: Actor, config: GeneratorConfig,
                   chunk_size: int = CHUNK,
                   progress: Callable[[LoadReport], None] | None = None,
                   before_order: Callable[[dict[str, Any]], None] | None = None) -> LoadReport:
    """Generate and record orders (and their refunds) chunk by chunk; each chunk is its own
    transaction, so an interrupted run keeps what it wrote and a rerun with the same seed and
    window finds those orders as duplicates. ``before_order`` sees each order before its chunk
    is recorded (the demo enrols loyalty members there)."""
    report = LoadReport()
    started = time.perf_counter()
    chunk: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if chunk:
            for out in record_orders(uow=uow, orders_in=chunk, source="demo", actor=actor,
                                     audit_each=False):
                if out.status == "created":
                    report.created += 1
                elif out.status == "duplicate":
                    report.duplicates += 1
                else:
                    if out.status == "conflict":
                        report.conflicts += 1
                    else:
                        report.rejected += 1
                    if len(report.problems) < 5:
                        report.problems.append({"external_id": out.external_id,
                                                "status": out.status, "errors": out.errors,
                                                "differences": out.differences})
            chunk.clear()
        for ret in pending:  # every order a refund refers to precedes it in the stream
            try:
                outcome = record_return(uow=uow, ret=ReturnIn.model_validate(ret), actor=actor)
            except PatronError as exc:
                uow.rollback()
                report.returns_skipped += 1  # its order was refused, or a rerun differs
                if len(report.problems) < 10:
                    report.problems.append({"external_id": ret["external_id"],
                                            "status": "return_refused", "errors": [
                                                exc.message, *(f.as_dict() for f in exc.fields)]})
                continue
            if outcome["status"] == "created":
                report.returns += 1
        pending.clear()
        if progress is not None:
            report.seconds = time.perf_counter() - started
            progress(report)

    for kind, payload in generate(config):
        if kind == "order":
            if before_order is not None:
                before_order(payload)
            chunk.append(payload)
            if len(chunk) >= chunk_size:
                flush()
        else:
            pending.append(payload)
    flush()
    audit.record(uow.c, actor, "demo.generated", entity="orders", details={
        "seed": config.seed, "customers": config.customers,
        "start": config.start.isoformat(), "end": config.end.isoformat(),
        "created": report.created, "duplicates": report.duplicates,
        "conflicts": report.conflicts, "rejected": report.rejected,
        "returns": report.returns})
    uow.commit()
    report.seconds = time.perf_counter() - started
    return report


def database_has_data(conn: Connection) -> bool:
    """Anything an owner may have set up: the demo never writes into such a database."""
    for table in (orders, stores, users):
        if conn.execute(select(func.count()).select_from(table)).scalar_one():
            return True
    return False


def create_demo_users(*, uow: UnitOfWork, actor: Actor, store_ids: dict[str, int]
                      ) -> list[tuple[str, str]]:
    made = []
    for username, role, display, scoped in DEMO_USERS:
        create_user(uow=uow, actor=actor, username=username, password=DEMO_PASSWORD, role=role,
                    display_name=display,
                    store_ids=[store_ids[DEMO_MANAGER_STORE]] if scoped else None)
        made.append((username, role))
    return made


def demo_config(*, customers: int = DEMO_CUSTOMERS, seed: int = 42,
                now: dt.datetime | None = None) -> GeneratorConfig:
    """About 6-7 orders per customer over the last 18 months, ending now."""
    now = now or utcnow()
    today = now.astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    first = months_before(today, DEMO_MONTHS)
    start, end = window(first, today, now=now)
    return plan(start=start, end=end, customers=customers,
                orders=round(customers * DEMO_ORDERS_PER_CUSTOMER), seed=seed)


def months_before(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 - months
    year = day.year + month // 12
    return dt.date(year, month % 12 + 1, min(day.day, 28))


def write_csv(config: GeneratorConfig, orders_path: Path, returns_path: Path
              ) -> tuple[int, int, int]:
    """The canonical order file, and refunds in a file of their own (the order format has no
    place for them). UTF-8 with a BOM, so that Excel shows the Chinese names. Returns
    (orders, rows, refunds)."""
    counts = [0, 0, 0]
    orders_path.parent.mkdir(parents=True, exist_ok=True)
    with (orders_path.open("w", newline="", encoding="utf-8-sig") as of,
          returns_path.open("w", newline="", encoding="utf-8-sig") as rf):
        order_writer = csv.DictWriter(of, fieldnames=CSV_COLUMNS)
        return_writer = csv.DictWriter(rf, fieldnames=RETURN_CSV_COLUMNS)
        order_writer.writeheader()
        return_writer.writeheader()
        for kind, payload in generate(config):
            if kind == "order":
                rows = order_csv_rows(payload)
                order_writer.writerows(rows)
                counts[0] += 1
                counts[1] += len(rows)
            else:
                return_writer.writerows(return_csv_rows(payload))
                counts[2] += 1
    return counts[0], counts[1], counts[2]


@dataclass
class DemoResult:
    loaded: bool
    report: LoadReport | None = None
    seconds: float = 0.0
    users: list[tuple[str, str]] = field(default_factory=list)
    members: int = 0
    coupons: int = 0
    topups: int = 0
    member_phone: str | None = None


def prepare_database(url: str) -> None:
    migrate.upgrade(url)
    with UnitOfWork(get_engine(url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()


def run_demo(*, url: str, customers: int = DEMO_CUSTOMERS, seed: int = 42,
             now: dt.datetime | None = None,
             progress: Callable[[LoadReport], None] | None = None) -> DemoResult:
    """Migrate; on an empty database seed the organisation, the demo users and the data."""
    started = time.perf_counter()
    prepare_database(url)
    engine = get_engine(url)
    with UnitOfWork(engine) as uow:
        if database_has_data(uow.c):
            return DemoResult(loaded=False)
        seeded = seed_organisation(uow=uow, actor=SYSTEM)
        made = create_demo_users(uow=uow, actor=SYSTEM, store_ids=seeded.store_ids)
        config = demo_config(customers=customers, seed=seed, now=now)
        demo_loyalty.setup_programs(uow=uow, actor=SYSTEM,
                                    at=config.start - dt.timedelta(days=1))
        enroller = demo_loyalty.Enroller(uow=uow, actor=SYSTEM, seed=seed)
        report = load_generated(uow=uow, actor=SYSTEM, config=config, progress=progress,
                                before_order=enroller.before)
        extras = demo_loyalty.coupons_and_topups(uow=uow, actor=SYSTEM, seed=seed, now=now)
        phone = demo_loyalty.member_phone(uow)
    return DemoResult(loaded=True, report=report, seconds=time.perf_counter() - started,
                      users=made, members=enroller.enrolled, coupons=extras.coupons,
                      topups=extras.topups, member_phone=phone)
