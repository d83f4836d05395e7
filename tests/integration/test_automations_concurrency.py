"""Exactly once with several workers: threads on SQLite and PostgreSQL, processes on
PostgreSQL, all running rounds of the same automations at the same time. Afterwards each
customer entered once per occurrence, each step ran once, and each action (coupon, points,
message) happened once; the re-entry guard let one of many simultaneous occurrences through."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from patron.automations.engine import run_due
from patron.automations.tables import automation_entries, automation_step_runs
from patron.coupons.tables import coupons
from patron.db import UnitOfWork, get_engine
from patron.loyalty.tables import loyalty_operations
from patron.messaging.tables import messages
from tests.automation_factories import NOW, PHONES, count, create, entries, setup_program
from tests.factories import T0
from tests.loyalty_factories import buy

pytestmark = pytest.mark.xdist_group("concurrency")
PATRON = Path(sys.executable).parent / "patron"
DAY = dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _close_idle_connections(db_url):
    yield
    get_engine(db_url).dispose()


def _workers(engine) -> int:
    return 4 if engine.dialect.name == "postgresql" else 3


def _three_step_automation(engine, members: int):
    club = setup_program(engine, members=members)
    auto = create(engine, "daily", {"type": "schedule", "cron": "0 10 * * *"},
                  control_share="0.1", steps=[
                      {"action": "issue_coupon", "coupon_template_id": club["coupon"]["id"]},
                      {"action": "grant_points", "points": 10},
                      {"action": "send_message", "channel": "sms", "template": "welcome"}])
    return club, auto


def _check_once_each(engine, members: int):
    found = entries(engine)
    assert len(found) == members
    states = Counter(e["state"] for e in found)
    assert set(states) <= {"done", "held_out"} and states["done"] >= members // 2
    done = [e for e in found if e["state"] == "done"]
    with UnitOfWork(engine, readonly=True) as uow:
        c = uow.c
        runs = Counter(c.execute(select(automation_step_runs.c.entry_id)).scalars())
        assert all(runs[e["id"]] == 3 for e in done) and len(runs) == len(done)
        assert c.execute(select(func.count()).select_from(coupons)).scalar_one() == len(done)
        ops = c.execute(select(func.count()).select_from(loyalty_operations).where(
            loyalty_operations.c.kind == "adjust")).scalar_one()
        assert ops == len(done)
        keys = list(c.execute(select(messages.c.dedupe_key)).scalars())
        assert len(keys) == len(done) == len(set(keys))


def test_several_worker_threads_run_each_entry_and_step_once(engine):
    members = 24
    _three_step_automation(engine, members)
    barrier = threading.Barrier(_workers(engine))
    errors: list[BaseException] = []

    def work():
        try:
            barrier.wait()
            for _ in range(200):
                stats = run_due(engine=engine, now=NOW + DAY, limit=3)
                if not (stats.claimed or stats.triggered):
                    break
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(_workers(engine))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    run_due(engine=engine, now=NOW + DAY)  # anything a thread left behind
    _check_once_each(engine, members)


def test_simultaneous_occurrences_of_one_customer_pass_the_guard_once(engine):
    setup_program(engine, members=1)
    auto = create(engine, "each-order", {"type": "every_order"})
    with UnitOfWork(engine) as uow:
        for n in range(12):
            buy(uow, f"O{n}", phone=PHONES[0], at=T0 + dt.timedelta(minutes=n),
                now=T0 + dt.timedelta(minutes=n + 1))
    assert len(entries(engine, auto["id"])) == 12
    barrier = threading.Barrier(_workers(engine))

    def work():
        barrier.wait()
        for _ in range(30):
            if not run_due(engine=engine, now=NOW + DAY, limit=1).claimed:
                break

    threads = [threading.Thread(target=work) for _ in range(_workers(engine))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_due(engine=engine, now=NOW + DAY)
    states = Counter(e["state"] for e in entries(engine, auto["id"]))
    assert states == {"done": 1, "skipped": 11}
    assert count(engine, messages) == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_three_patron_processes_on_postgresql_run_each_entry_and_step_once(db_url, engine):
    from patron.automations.engine import RoundStats, scan_due

    members = 30
    _three_step_automation(engine, members)
    scan_due(engine, NOW + DAY, RoundStats())  # the tick's entries: the processes compete
    assert len(entries(engine)) == members     # to admit them and run their steps
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}
    now = (NOW + DAY).isoformat()
    procs = [subprocess.Popen([str(PATRON), "automations", "run", "--now", now,  # noqa: S603
                               "--limit", "1000"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    with UnitOfWork(engine, readonly=True) as uow:
        left = uow.c.execute(select(func.count()).select_from(automation_entries).where(
            automation_entries.c.state.in_(("triggered", "active")))).scalar_one()
    assert left == 0
    _check_once_each(engine, members)
