"""The demo command and generated data recorded into a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from patron.cli import app
from patron.coupons.tables import coupons
from patron.customers import figures
from patron.customers.tables import customer_merges, customers, identities
from patron.db import UnitOfWork, get_engine
from patron.demo.generator import CSV_COLUMNS, plan, window
from patron.demo.seed import seed_organisation
from patron.demo.service import DEMO_MANAGER_STORE, DEMO_PASSWORD, load_generated
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_members,
    loyalty_order_earnings,
    loyalty_programs,
    loyalty_tiers,
)
from patron.orders.tables import orders, returns
from patron.org.tables import products, stores
from patron.rewards.tables import rewards_items
from patron.security.model import SYSTEM
from patron.security.service import login
from patron.security.tables import audit_log, users
from patron.storedvalue.tables import sv_operations

runner = CliRunner()


def count(url: str, table: object, *where: object) -> int:
    with UnitOfWork(get_engine(url)) as uow:
        q = select(func.count()).select_from(table)  # type: ignore[arg-type]
        for w in where:
            q = q.where(w)  # type: ignore[arg-type]
        return int(uow.c.execute(q).scalar_one())


def test_demo_loads_consistent_data_once_and_serves_nothing_in_tests(db_url: str) -> None:
    first = runner.invoke(app, ["demo", "--no-serve", "--customers", "200"],
                          env={"PATRON_LANG": "en"})
    assert first.exit_code == 0, first.output
    assert "http://127.0.0.1:8000" in first.output
    assert "demo / patron-demo" in first.output
    recorded = count(db_url, orders)
    assert 900 < recorded < 1800  # about 6-7 orders per simulated customer
    assert count(db_url, returns) > 0
    assert count(db_url, stores) >= 20 and count(db_url, products) >= 60
    with UnitOfWork(get_engine(db_url)) as uow:
        assert figures.compare(uow.c) == []
        roles = dict(uow.c.execute(select(users.c.username, users.c.role)).all())
        assert roles == {"demo": "owner", "analyst": "analyst", "manager": "manager",
                         "cashier": "cashier"}
        _token, manager = login(uow=uow, username="manager", password=DEMO_PASSWORD, ip=None)
        store_id = uow.c.execute(select(stores.c.id).where(
            stores.c.code == DEMO_MANAGER_STORE)).scalar_one()
        assert manager.store_ids == frozenset({store_id})
        # The orders are the last 18 months', none in the future.
        last = uow.c.execute(select(func.max(orders.c.purchased_at))).scalar_one()
        assert last <= dt.datetime.now(dt.UTC)
    _check_demo_loyalty(db_url, first.output)
    # One audit entry for the generated orders, not one per chunk or order.
    assert count(db_url, audit_log, audit_log.c.action == "demo.generated") == 1
    assert count(db_url, audit_log, audit_log.c.action == "orders.recorded") == 0

    again = runner.invoke(app, ["demo", "--no-serve", "--customers", "200"],
                          env={"PATRON_LANG": "en"})
    assert again.exit_code == 0, again.output
    assert "already holds data" in again.output
    assert count(db_url, orders) == recorded
    assert count(db_url, users) == 4


def _check_demo_loyalty(db_url: str, output: str) -> None:
    """The demo's members earned through the order hook, hold coupons and stored value, and
    every ledger recomputes to what the database holds."""
    assert count(db_url, loyalty_programs) == 3
    assert count(db_url, loyalty_tiers) == 9
    members = count(db_url, loyalty_members)
    profiles = count(db_url, customers, customers.c.merged_into_id.is_(None))
    assert 0.2 * profiles < members < 0.5 * profiles
    assert count(db_url, loyalty_consents, loyalty_consents.c.kind == "privacy") == members
    # Enrolled before their first order there, so their orders earned points.
    assert count(db_url, loyalty_order_earnings) > members
    assert count(db_url, coupons) > 0
    assert count(db_url, sv_operations, sv_operations.c.kind == "topup") > 0
    with UnitOfWork(get_engine(db_url)) as uow:
        phone = uow.c.execute(
            select(identities.c.value)
            .join(loyalty_members, loyalty_members.c.customer_id == identities.c.customer_id)
            .where(identities.c.kind == "phone").order_by(loyalty_members.c.id)).scalars().first()
    assert phone and f"/m/login with phone {phone}" in " ".join(output.split())
    verified = runner.invoke(app, ["ledger", "verify"])
    assert verified.exit_code == 0, verified.output
    assert '"differences": 0' in verified.output
    stored = runner.invoke(app, ["stored-value", "verify"])
    assert stored.exit_code == 0, stored.output
    assert count(db_url, rewards_items) == 6
    mall = runner.invoke(app, ["rewards", "verify"])
    assert mall.exit_code == 0, mall.output


def test_generated_orders_resolve_identities_and_merge_profiles(db_url: str) -> None:
    start, end = window(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    config = plan(start=start, end=end, customers=200, seed=11)
    with UnitOfWork(get_engine(db_url)) as uow:
        seed_organisation(uow=uow, actor=SYSTEM)
        report = load_generated(uow=uow, actor=SYSTEM, config=config, chunk_size=500)
        assert report.rejected == 0 and report.conflicts == 0, report.problems
        assert report.returns_skipped == 0, report.problems
        assert report.created > 500
        # Guests stay anonymous; identified people become profiles; linking an openid or a
        # platform id to a member's phone merges the two profiles that had been seen apart.
        assert count(db_url, orders, orders.c.customer_id.is_(None)) > 0
        assert count(db_url, customers) > 50
        assert count(db_url, customer_merges) > 0
        assert figures.compare(uow.c) == []

        again = load_generated(uow=uow, actor=SYSTEM, config=config, chunk_size=500)
        assert again.created == 0 and again.duplicates == report.created
        assert again.returns == 0
        assert figures.compare(uow.c) == []
    assert count(db_url, returns) == report.returns


def test_generate_to_db_and_to_csv_from_the_command_line(db_url: str, tmp_path: Path) -> None:
    env = {"PATRON_LANG": "en"}
    args = ["generate", "--customers", "60", "--start", "2025-01-01", "--end", "2025-03-31",
            "--seed", "3"]
    made = runner.invoke(app, [*args, "--to-db"], env=env)
    assert made.exit_code == 0, made.output
    recorded = count(db_url, orders)
    assert recorded > 0
    rerun = runner.invoke(app, [*args, "--to-db"], env=env)
    assert rerun.exit_code == 0, rerun.output
    assert f"({recorded} already there)" in rerun.output
    assert count(db_url, orders) == recorded

    out = tmp_path / "orders.csv"
    written = runner.invoke(app, [*args, "--out", str(out)], env=env)
    assert written.exit_code == 0, written.output
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len({r["order_id"] for r in rows}) == recorded
    assert (tmp_path / "returns.csv").exists()


def test_generate_refuses_unclear_options_without_a_stack_trace(db_url: str) -> None:
    env = {"PATRON_LANG": "en"}
    neither = runner.invoke(app, ["generate", "--customers", "5"], env=env)
    assert neither.exit_code == 2 and "--out" in neither.output
    bad_day = runner.invoke(app, ["generate", "--to-db", "--start", "2025-13-01"], env=env)
    assert bad_day.exit_code == 2 and "2025-13-01" in bad_day.output
    backwards = runner.invoke(app, ["generate", "--to-db", "--start", "2025-03-01", "--end",
                                    "2025-01-01"], env=env)
    assert backwards.exit_code == 2 and "--start" in backwards.output
    assert not any(r.exception and not isinstance(r.exception, SystemExit)
                   for r in (neither, bad_day, backwards))
