"""Backups (docs/backups.md) on SQLite and PostgreSQL: the restore drill (write, back up, write
more, restore, and find exactly the backed-up state with every ledger verified), a backup taken
while orders keep arriving is consistent, files are encrypted and authenticated, retention keeps
the newest N, the daily schedule takes one backup per night across processes."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from patron.backup import service as backups
from patron.backup.envelope import BackupUnreadable
from patron.backup.tables import backup_runs
from patron.customers.service import rebuild_figures
from patron.db import UnitOfWork, metadata
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn
from patron.loyalty.verify import verify as ledger_verify
from patron.orders.service import record_orders
from patron.protection.keys import KeyUnavailable, parse_keyring
from patron.rewards.service import verify_stock
from patron.security import audit
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.storedvalue.verify import verify as sv_verify
from tests.factories import order
from tests.loyalty_factories import START, buy
from tests.rewards_factories import add_item, redeem
from tests.storedvalue_factories import setup, spend, topup

pytestmark = pytest.mark.xdist_group("concurrency")
SKIP = {"backup_runs", "audit_chain_head"}  # bookkeeping around the snapshot; the head is verified


def state(engine: Any, *, audit_upto: int | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    import patron.tables  # noqa: F401 - every area's tables

    out = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            if table.name in SKIP:
                continue
            query = select(table).order_by(*table.primary_key.columns)
            if table is audit_log and audit_upto is not None:
                query = query.where(audit_log.c.id <= audit_upto)
            out[table.name] = [tuple(r) for r in conn.execute(query)]
    return out


def verified(engine: Any) -> None:
    with UnitOfWork(engine, readonly=True) as uow:
        assert ledger_verify(uow.c)["differences"] == []
        assert sv_verify(uow.c)["differences"] == []
        assert verify_stock(uow.c) == []
        report = audit.verify(uow.c)
        assert report.ok, report


def _head(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(audit_log.c.id))).scalar() or 0)


def test_restore_drill_gives_back_exactly_the_backed_up_state(engine, uow, tmp_path):
    s = setup(uow, phones=("13812345678", "13912345678"))
    member = s["member"]
    buy(uow, "O1")
    buy(uow, "O2", phone="13912345678")
    topup(uow, member, "600", "t1")
    spend(uow, member, "80", "s1")
    loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member, now=START,
                   body=AdjustIn(idempotency_key="seed", points=1000, reason="opening"))
    item = add_item(uow)
    redeem(uow, item["id"], member, "r1")
    uow.rollback()  # the fixture's connection holds no transaction during the backup
    verified(engine)
    before = state(engine)

    result = backups.take_backup(engine, actor=SYSTEM, directory=tmp_path, keep=3)
    assert result.path.exists() and result.bytes > 0

    with UnitOfWork(engine) as more:
        buy(more, "O3")
        buy(more, "O4", phone="13700000000")
        topup(more, member, "1000", "t2")
        spend(more, member, "300", "s2")
        redeem(more, item["id"], member, "r2")
    assert state(engine) != before

    backups.restore_backup(engine, actor=SYSTEM, path=result.path)
    after = state(engine, audit_upto=len(before["audit_log"]))
    assert after == before
    with engine.connect() as conn:
        extra = conn.execute(select(audit_log.c.action).where(
            audit_log.c.id > len(before["audit_log"]))).scalars().all()
    assert extra == ["backup.restored"]
    verified(engine)
    with UnitOfWork(engine) as again:  # the restored database takes writes at once
        buy(again, "O5")
    verified(engine)


def test_a_backup_taken_while_orders_arrive_is_consistent(engine, tmp_path):
    """A writer records orders (each with its audit entry, in one transaction) all through the
    backup; the restored database holds whole transactions only: as many orders as audit
    entries for them, one valid audit chain, figures that agree with the orders."""
    from tests.factories import make_org

    with UnitOfWork(engine) as uow:
        make_org(uow)
    stop = threading.Event()
    written = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                with UnitOfWork(engine) as uow:
                    record_orders(uow=uow, source="api", actor=SYSTEM, orders_in=[
                        order(f"W{n}-{k}", identifiers={"phone": f"1380000{n % 500:04d}"})
                        for k in range(5)])
                n += 1
                written[0] = n
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 5:
            time.sleep(0.05)
        result = backups.take_backup(engine, actor=SYSTEM, directory=tmp_path, keep=2)
        at_backup_end = written[0]
        while written[0] < at_backup_end + 3:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    backups.restore_backup(engine, actor=SYSTEM, path=result.path)
    from patron.orders.tables import orders

    with engine.connect() as conn:
        restored_orders = conn.execute(select(func.count()).select_from(orders)).scalar()
        audited = conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "orders.recorded")).scalar()
    assert restored_orders == audited
    assert restored_orders % 5 == 0 and 25 <= restored_orders < written[0] * 5
    verified(engine)
    with UnitOfWork(engine) as uow:
        assert rebuild_figures(uow=uow, fix=False, actor=SYSTEM) == []


def test_backup_files_are_encrypted_authenticated_and_kept_n(engine, uow, tmp_path):
    buy_setup = setup(uow, phones=("13812345678",))
    buy(uow, "O1")
    uow.rollback()
    assert buy_setup["member"]
    tmp_path = tmp_path / "backups"
    paths = [backups.take_backup(engine, actor=SYSTEM, directory=tmp_path, keep=2).path
             for _ in range(3)]
    assert backups.backup_files(tmp_path) == paths[1:]  # the oldest went
    raw = paths[-1].read_bytes()
    for clear in (b"13812345678", b"8613812345678", b"SQLite format", b"PGDMP",
                  b"audit_log", b"LATTE"):
        assert clear not in raw
    info = backups.describe(paths[-1])
    assert info["dialect"] == engine.dialect.name and info["key_id"] == "tb1"
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".pbk")]  # no plaintext

    wrong = parse_keyring("backup", "tb1:" + "A" * 43)
    with pytest.raises(KeyUnavailable, match="backup_key_wrong"):
        backups.restore_backup(engine, actor=SYSTEM, path=paths[-1], keyring=wrong)
    other = parse_keyring("backup", "tb2:" + "A" * 43)
    with pytest.raises(KeyUnavailable, match="key_missing"):
        backups.restore_backup(engine, actor=SYSTEM, path=paths[-1], keyring=other)
    damaged = tmp_path / "patron-damaged.pbk"
    data = bytearray(raw)
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises((BackupUnreadable, KeyUnavailable)):
        backups.restore_backup(engine, actor=SYSTEM, path=damaged)
    cut = tmp_path / "patron-cut.pbk"
    cut.write_bytes(raw[:-10])
    with pytest.raises(BackupUnreadable):
        backups.restore_backup(engine, actor=SYSTEM, path=cut)
    # none of the refused files touched the database
    verified(engine)


def test_patron_backup_and_restore_commands(engine, uow, tmp_path, monkeypatch):
    from patron.cli import app

    setup(uow, phones=("13812345678",))
    buy(uow, "O1")
    uow.rollback()
    monkeypatch.setenv("PATRON_BACKUP_DIR", str(tmp_path / "b"))
    from patron.config import get_settings

    get_settings.cache_clear()
    runner = CliRunner()
    result = runner.invoke(app, ["backup", "--keep", "2"])
    assert result.exit_code == 0, result.output
    (path,) = backups.backup_files(tmp_path / "b")
    listed = runner.invoke(app, ["backup", "--list"])
    assert listed.exit_code == 0 and path.name in listed.output
    with UnitOfWork(engine) as more:
        buy(more, "O2")
    result = runner.invoke(app, ["restore", str(path), "--yes"])
    assert result.exit_code == 0, result.output
    from patron.orders.tables import orders

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar() == 1
        runs = conn.execute(select(backup_runs.c.status)).scalars().all()
    assert runs == ["running"]  # the backup's own run, as it was in the snapshot
    get_settings.cache_clear()


def test_the_daily_backup_is_taken_once_per_night_by_one_process(engine, tmp_path):
    from patron.backup.schedule import run_due_backup

    at = dt.time(2, 30)
    now = dt.datetime(2026, 11, 25, 19, 0, tzinfo=dt.UTC)  # 03:00 in Shanghai
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_due_backup(
        engine, at=at, tz="Asia/Shanghai", directory=tmp_path, keep=5, now=now)))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is not None for r in results) == [False, False, True]
    assert len(backups.backup_files(tmp_path)) == 1
    # later the same night: nothing; the next night: one more
    assert run_due_backup(engine, at=at, tz="Asia/Shanghai", directory=tmp_path, keep=5,
                          now=now + dt.timedelta(hours=3)) is None
    assert run_due_backup(engine, at=at, tz="Asia/Shanghai", directory=tmp_path, keep=5,
                          now=now + dt.timedelta(days=1)) is not None
    with engine.connect() as conn:
        nights = conn.execute(select(backup_runs.c.scheduled_for, backup_runs.c.status)
                              .order_by(backup_runs.c.id)).all()
    assert nights == [(dt.date(2026, 11, 26), "done"), (dt.date(2026, 11, 27), "done")]


def test_a_file_that_is_not_a_backup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupUnreadable, match="backup_not_a_backup"):
        f = tmp_path / "x.pbk"
        f.write_bytes(b"hello")
        backups.describe(f)
