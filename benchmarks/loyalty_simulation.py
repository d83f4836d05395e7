"""How long the loyalty simulation takes on the demo data (docs/loyalty-reports.md).

    python -m benchmarks.loyalty_simulation [--customers 3000] [--months 12] [--postgres URL]

Loads the demo dataset (``--customers`` people, about 6-7 orders each over 18 months) into a
fresh database, launches a program for every demo brand at the start of the data and makes every
customer who bought at a brand's stores a member from that day (rows written directly: setup
only, as if they had enrolled then; their orders have earned nothing, which is the "before
launch" question the simulation answers), then simulates doubling the points on coffee and a
lower GOLD threshold over the last ``--months`` months, and prints the simulation's own timing
next to an anchor measured on the same data: one plain ``SELECT`` of the replayed orders' lines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text

from patron import migrate
from patron.db import UnitOfWork, dispose_engines, get_engine
from patron.demo.seed import seed_organisation
from patron.demo.service import demo_config, load_generated
from patron.loyalty import service as loyalty
from patron.loyalty import simulation
from patron.loyalty.model import luhn_check_digit
from patron.loyalty.schemas import ProgramIn
from patron.loyalty.tables import loyalty_members, loyalty_programs
from patron.orders.tables import order_lines, orders
from patron.org.service import ensure_default_channels
from patron.org.tables import brands, stores
from patron.security.model import SYSTEM

TIERS = [{"code": "SILVER", "name": "银卡", "rank": 0},
         {"code": "GOLD", "name": "金卡", "rank": 1, "min_growth": 2000,
          "points_multiplier": "1.5"},
         {"code": "PLATINUM", "name": "白金卡", "rank": 2, "min_growth": 8000,
          "points_multiplier": "2"}]
PROPOSAL = {"rules": {"points_per_yuan": "1", "multipliers": {"category": {"coffee": "2"}}},
            "tiers": [{**TIERS[0]}, {**TIERS[1], "min_growth": 1000}, {**TIERS[2]}]}


def _database(postgres: str | None) -> tuple[str, object]:
    if postgres is None:
        path = Path(tempfile.mkdtemp()) / "loyalty-sim.sqlite3"
        return f"sqlite:///{path}", None
    name = f"patron_simbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return postgres.rsplit("/", 1)[0] + f"/{name}", (admin, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--postgres", default=None, help="admin URL of a PostgreSQL server")
    args = ap.parse_args()
    url, cleanup = _database(args.postgres)
    try:
        print(json.dumps(run(url, args.customers, args.months), indent=1, default=str))
    finally:
        dispose_engines()
        if cleanup is not None:
            admin, name = cleanup  # type: ignore[misc]
            with admin.connect() as conn:  # type: ignore[attr-defined]
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(url: str, customers: int, months: int) -> dict[str, object]:
    migrate.upgrade(url)
    engine = get_engine(url)
    config = demo_config(customers=customers)
    launch = config.start - dt.timedelta(days=1)
    t0 = time.perf_counter()
    with UnitOfWork(engine) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
        seed_organisation(uow=uow, actor=SYSTEM)
        uow.commit()
        report = load_generated(uow=uow, actor=SYSTEM, config=config)
    loaded = time.perf_counter() - t0
    with UnitOfWork(engine) as uow:
        conn = uow.c
        for code in [r for r in conn.execute(select(brands.c.code).order_by(brands.c.code))
                     .scalars()]:
            loyalty.create_program(uow=uow, actor=SYSTEM, now=launch, data=ProgramIn.model_validate(
                {"code": code, "brand": code, "name": code, "privacy_version": "v1",
                 "tiers": TIERS}))
        members = []
        for pid, brand_id in conn.execute(select(loyalty_programs.c.id,
                                                 loyalty_programs.c.brand_id)):
            buyers = conn.execute(
                select(orders.c.customer_id).distinct()
                .join(stores, stores.c.id == orders.c.store_id)
                .where(stores.c.brand_id == brand_id, orders.c.customer_id.is_not(None))
            ).scalars()
            for cid in buyers:
                body = f"{int(pid):02d}{int(cid):09d}"
                members.append({"program_id": pid, "customer_id": cid,
                                "member_code": body + luhn_check_digit(body),
                                "status": "active", "enrolled_at": launch,
                                "enrolled_channel": "pos", "updated_at": launch})
        conn.execute(insert(loyalty_members), members)
        uow.commit()
    results = []
    with UnitOfWork(engine, readonly=True) as uow:
        for code in uow.c.execute(select(loyalty_programs.c.code).order_by(
                loyalty_programs.c.code)).scalars():
            out = simulation.simulate(uow.c, actor=SYSTEM, program=code,
                                      body=simulation.SimulationIn.model_validate(
                                          {"months": months, **PROPOSAL}))
            # Anchor: one plain SELECT of the same window's lines, no Python work on them.
            a0 = time.perf_counter()
            uow.c.execute(select(order_lines.c.order_id, order_lines.c.line_no,
                                 order_lines.c.sku, order_lines.c.category,
                                 order_lines.c.amount)
                          .join(orders, orders.c.id == order_lines.c.order_id)
                          .where(orders.c.purchased_at >= out["from"],
                                 orders.c.purchased_at < out["to"])).all()
            anchor = round((time.perf_counter() - a0) * 1000)
            results.append({"program": code, "orders": out["orders"],
                            "members": out["members"],
                            "members_with_orders": out["members_with_orders"],
                            "current_net_points": out["current"]["net_points"],
                            "proposed_net_points": out["proposed"]["net_points"],
                            "timing_ms": out["timing_ms"],
                            "anchor_select_lines_ms": anchor})
        total_orders = uow.c.execute(select(func.count()).select_from(orders)).scalar_one()
    return {"database": engine.dialect.name, "customers": customers, "months": months,
            "orders_loaded": report.created, "orders_in_database": total_orders,
            "members": len(members), "load_seconds": round(loaded, 1), "programs": results}


if __name__ == "__main__":
    main()
