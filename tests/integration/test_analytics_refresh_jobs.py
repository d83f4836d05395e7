"""Analytics refresh jobs on both databases: every step, progress another connection sees, one
job at a time, runners that died, the nightly schedule raced by several processes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, insert, select

from patron.analytics import jobs
from patron.analytics.clv_tables import customer_predictions
from patron.analytics.jobs_tables import analytics_refresh_jobs
from patron.analytics.tables import lifecycle_stages, rfm_scores
from patron.db import UnitOfWork, utcnow
from patron.errors import Forbidden, ValidationFailed
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org
from tests.integration.test_clv_service import random_history

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
AS_OF = dt.datetime(2026, 6, 30, 12, 0, tzinfo=SHANGHAI)
ANALYST = Actor(type="user", id=7, name="ana", role="analyst", language="en")
STEPS = [step.name for step in jobs.plan_steps()]  # with "dashboards" when that module exists


@pytest.fixture
def shop(uow):
    make_org(uow)
    record_orders(uow=uow, orders_in=random_history(5, 150), source="api", actor=SYSTEM,
                  audit_each=False)


def count(engine, table, *where) -> int:
    with UnitOfWork(engine, readonly=True) as uow:
        return int(uow.c.execute(select(func.count()).select_from(table).where(*where))
                   .scalar_one())


def job_row(engine, job_id):
    with UnitOfWork(engine, readonly=True) as uow:
        return uow.c.execute(select(analytics_refresh_jobs).where(
            analytics_refresh_jobs.c.id == job_id)).one()


def test_a_job_runs_every_step_and_another_connection_sees_its_progress(engine, shop):
    with UnitOfWork(engine) as uow:
        job, created = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)
    assert created and job["status"] == "queued" and job["steps_done"] == 0
    assert STEPS[:7] == ["rfm", "lifecycle", "clv", "churn", "crosssell_rules:category",
                         "crosssell_rules:sku", "recommendations"]
    assert [s for s in STEPS[7:] if s not in ("tags", "segment_sizes")] in ([], ["dashboards"])
    assert job["steps_total"] == len(STEPS)

    seen = []

    def on_progress(step, done, total):
        row = job_row(engine, job["id"])  # a connection of its own, between two steps
        seen.append((step, done, total, row.status, row.step, row.steps_done))

    out = jobs.run_job(engine, job["id"], ANALYST, on_progress=on_progress)

    assert out["status"] == "done" and out["progress"] == 1.0 and out["error"] is None
    assert out["steps_done"] == out["steps_total"] == len(STEPS)
    names = [s[0] for s in seen[:-1]]
    assert names == STEPS
    # before step i, the database says step i is running with i done
    assert [(s[3], s[4], s[5]) for s in seen[:-1]] == [
        ("running", name, i) for i, name in enumerate(names)]
    assert seen[-1][3] == "done" and seen[-1][5] == len(STEPS)
    steps = out["result"]["steps"]
    assert {s["status"] for s in steps.values()} == {"done"}, steps
    assert steps["rfm"]["customers"] == 150
    assert steps["rfm"]["scopes"] == 6  # overall, two stores, two regions, one brand
    assert out["started_at"] <= out["finished_at"]
    assert out["trigger"] == "manual" and out["requested_by"] == "ana"
    assert count(engine, rfm_scores, rfm_scores.c.scope == "overall") == 150
    assert count(engine, lifecycle_stages) == 150
    assert count(engine, customer_predictions) == 150
    with UnitOfWork(engine, readonly=True) as uow:
        actions = [r.action for r in uow.c.execute(
            select(audit_log.c.action).where(audit_log.c.actor_name == "ana")
            .order_by(audit_log.c.id))]
    assert actions[0] == "analytics.refresh_requested"
    assert actions[-1] == "analytics.refresh_finished"
    assert "analytics.rfm_refreshed" in actions and "analytics.clv_predictions_refreshed" in actions


def test_a_second_request_gets_the_job_under_way_and_a_new_one_follows_it(engine, shop):
    with UnitOfWork(engine) as uow:
        first, created = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)
    with UnitOfWork(engine) as uow:
        again, created_again = jobs.request_refresh(uow=uow, actor=SYSTEM, trigger="cli")
    assert created and not created_again
    assert again["id"] == first["id"]
    assert count(engine, analytics_refresh_jobs) == 1
    jobs.run_job(engine, first["id"], ANALYST)
    with UnitOfWork(engine) as uow:
        second, created = jobs.request_refresh(uow=uow, actor=SYSTEM, trigger="cli")
    assert created and second["id"] != first["id"]
    listed = jobs.list_jobs(engine, actor=ANALYST)["items"]
    assert [j["id"] for j in listed] == [second["id"], first["id"]]
    assert [j["status"] for j in listed] == ["queued", "done"]


def test_only_owners_and_analysts_of_every_store_may_refresh(engine, shop):
    manager = Actor(type="user", id=3, name="mgr", role="manager", store_ids=frozenset({1}))
    scoped_analyst = Actor(type="user", id=4, name="a2", role="analyst",
                           store_ids=frozenset({1}))
    for actor in (manager, scoped_analyst):
        with UnitOfWork(engine) as uow, pytest.raises(Forbidden):
            jobs.request_refresh(uow=uow, actor=actor)
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed):
        jobs.request_refresh(uow=uow, actor=SYSTEM, as_of=dt.datetime(2026, 6, 1))  # naive
    assert count(engine, analytics_refresh_jobs) == 0


def _stale_job(engine, runner, heartbeat_at, status="running"):
    with UnitOfWork(engine) as uow:
        job_id = uow.c.execute(insert(analytics_refresh_jobs).values(
            requested_by="x", trigger="manual", status=status, step="lifecycle", steps_done=6,
            steps_total=12, requested_at=heartbeat_at, started_at=heartbeat_at,
            runner=runner, heartbeat_at=heartbeat_at, active=1,
        ).returning(analytics_refresh_jobs.c.id)).scalar_one()
        uow.commit()
    return job_id


def test_a_job_whose_process_died_is_failed_and_no_longer_blocks(engine, shop):
    # The same host, a process id that does not exist: gone at once, whatever the heartbeat.
    dead = _stale_job(engine, f"{jobs._HOST}:999999999:abcd1234", utcnow())
    got = jobs.get_job(engine, actor=ANALYST, job_id=dead)
    assert got["status"] == "failed" and "stopped" in got["error"]
    assert job_row(engine, dead).active is None
    # Another machine: trusted until its heartbeat is older than the lease.
    remote = _stale_job(engine, "other-host:42:abcd1234", utcnow() - dt.timedelta(minutes=5))
    with UnitOfWork(engine) as uow:
        under_way, created = jobs.request_refresh(uow=uow, actor=ANALYST)
    assert not created and under_way["id"] == remote and under_way["status"] == "running"
    with UnitOfWork(engine) as uow:
        uow.c.execute(analytics_refresh_jobs.update().where(
            analytics_refresh_jobs.c.id == remote).values(
                heartbeat_at=utcnow() - jobs.LEASE - dt.timedelta(seconds=1)))
        uow.commit()
    with UnitOfWork(engine) as uow:
        new, created = jobs.request_refresh(uow=uow, actor=ANALYST)
    assert created and new["id"] not in (dead, remote)
    assert job_row(engine, remote).status == "failed"
    assert job_row(engine, new["id"]).runner == jobs.runner_id()
    jobs.run_job(engine, new["id"], ANALYST)
    # This host and process id, another start: a restarted container's predecessor.
    host, pid, _token = jobs.runner_id().split(":")
    before = _stale_job(engine, f"{host}:{pid}:00000000", utcnow())
    assert jobs.get_job(engine, actor=ANALYST, job_id=before)["status"] == "failed"


def test_a_runner_whose_job_was_failed_meanwhile_stops_writing(engine, shop):
    with UnitOfWork(engine) as uow:
        job, _ = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)

    def fail_it(step, done, total):
        if step == "lifecycle":
            with UnitOfWork(engine) as uow:
                uow.c.execute(analytics_refresh_jobs.update().values(
                    status="failed", active=None, error="taken over"))
                uow.commit()

    out = jobs.run_job(engine, job["id"], ANALYST, on_progress=fail_it)
    assert out["status"] == "failed" and out["error"] == "taken over"
    assert out["steps_done"] == 1  # RFM, finished before


def test_an_unexpected_error_fails_the_job_with_the_step_and_frees_the_slot(
        engine, shop, monkeypatch):
    from patron.analytics import service

    def broken(**kw):
        raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(service, "refresh_lifecycle", broken)
    with UnitOfWork(engine) as uow:
        job, _ = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)
    out = jobs.run_job(engine, job["id"], ANALYST)
    assert out["status"] == "failed"
    assert out["error"] == "lifecycle: RuntimeError: disk full"
    assert out["steps_done"] == 1 and out["step"] == "lifecycle"
    assert out["result"]["steps"]["lifecycle"]["status"] == "failed"
    assert "clv" not in out["result"]["steps"]
    with UnitOfWork(engine) as uow:
        _next, created = jobs.request_refresh(uow=uow, actor=ANALYST)
    assert created


def test_an_empty_store_refreshes_with_the_model_steps_skipped_and_their_reasons(engine):
    with UnitOfWork(engine) as uow:
        job, _ = jobs.request_refresh(uow=uow, actor=ANALYST, trigger="cli")
    out = jobs.run_job(engine, job["id"], ANALYST)
    assert out["status"] == "done" and out["error"] is None
    steps = out["result"]["steps"]
    assert steps["rfm"] == {"status": "done", "customers": 0, "scopes": 1, "scored_rows": 0,
                            "seconds": steps["rfm"]["seconds"]}
    assert steps["lifecycle"]["status"] == "done"
    assert steps["clv"]["status"] == "skipped" and steps["clv"]["reason"] == "clv_no_customers"
    assert steps["clv"]["message"]  # in the requester's language
    assert steps["churn"]["status"] == "skipped"
    assert steps["recommendations"]["status"] == "done"
    assert steps["recommendations"]["customers"] == 0


def _tick_together(engine, now, ticks=2):
    barrier = threading.Barrier(ticks)
    created: list[int | None] = []
    errors: list[BaseException] = []

    def tick():
        try:
            barrier.wait()
            created.append(jobs.scheduler_tick(engine, now=now, refresh_at="03:00",
                                               tz="Asia/Shanghai"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=tick) for _ in range(ticks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return created


def test_schedulers_racing_at_three_queue_one_job_for_the_night(engine, shop):
    three = dt.datetime(2026, 6, 1, 3, 0, 5, tzinfo=SHANGHAI)
    assert jobs.scheduler_tick(engine, now=three - dt.timedelta(minutes=1),
                               refresh_at="03:00", tz="Asia/Shanghai") is None
    created = _tick_together(engine, three, ticks=3)
    winners = [c for c in created if c is not None]
    assert len(winners) == 1
    row = job_row(engine, winners[0])
    assert row.scheduled_for == dt.date(2026, 6, 1)
    assert row.trigger == "schedule" and row.requested_by == "scheduler"
    assert count(engine, analytics_refresh_jobs) == 1
    jobs.run_job(engine, winners[0], jobs.SCHEDULER)
    # Later that night, and in other processes: done once is done.
    assert _tick_together(engine, three + dt.timedelta(hours=2)) == [None, None]
    assert jobs.scheduler_tick(engine, now=three + dt.timedelta(days=1), refresh_at="03:00",
                               tz="Asia/Shanghai") is not None
    assert jobs.scheduler_tick(engine, now=three, refresh_at="off") is None


def test_a_manual_job_under_way_at_three_delays_the_nightly_one(engine, shop):
    with UnitOfWork(engine) as uow:
        manual, _ = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)
    three = dt.datetime(2026, 6, 1, 3, 0, tzinfo=SHANGHAI)
    assert jobs.scheduler_tick(engine, now=three, refresh_at="03:00", tz="Asia/Shanghai") is None
    jobs.run_job(engine, manual["id"], ANALYST)
    later = jobs.scheduler_tick(engine, now=three + dt.timedelta(minutes=1),
                                refresh_at="03:00", tz="Asia/Shanghai")
    assert later is not None and job_row(engine, later).scheduled_for == dt.date(2026, 6, 1)


def test_cli_refresh_runs_every_step_with_a_progress_bar_and_prints_json(db_url, engine, shop):
    import json

    from tests.integration.test_clv_cli import patron

    out = patron(db_url, "refresh", "--as-of", "2026-06-30")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "done" and doc["trigger"] == "cli"
    assert doc["requested_by"].startswith("cli:")
    assert doc["as_of"].startswith("2026-06-30T15:59:59")  # the end of the local day, in UTC
    assert doc["steps_done"] == len(STEPS) and list(doc["result"]["steps"]) == STEPS
    assert "Refreshing analytics" in out.stderr and f"{len(STEPS)}/{len(STEPS)}" in out.stderr

    with UnitOfWork(engine) as uow:
        queued, _ = jobs.request_refresh(uow=uow, actor=SYSTEM)
    busy = patron(db_url, "refresh")
    assert busy.returncode == 1
    assert f"Refresh job {queued['id']} is already queued" in busy.stderr
    assert "Traceback" not in busy.stderr

    bad = patron(db_url, "refresh", "--as-of", "yesterday")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_dated_request_fails_a_dead_runners_job_without_waiting_for_a_lock(engine, shop):
    dead = _stale_job(engine, f"{jobs._HOST}:999999999:abcd1234", utcnow())
    started = utcnow()
    with UnitOfWork(engine) as uow:
        job, created = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)
    assert created and job["id"] != dead
    assert (utcnow() - started).total_seconds() < 10  # (SQLite's busy timeout is 30 s)
    assert job_row(engine, dead).status == "failed"
    jobs.run_job(engine, job["id"], ANALYST)


def test_on_postgresql_the_lifecycle_refresh_runs_while_the_rfm_refresh_is_under_way(
        engine, shop, monkeypatch):
    """Two connections, one core each: the lifecycle refresh does not wait for RFM's
    transaction on PostgreSQL; on SQLite (one writer) it runs after it, in its own step."""
    from patron.analytics import service

    lifecycle_done = threading.Event()
    real_rfm, real_lifecycle = service.refresh_rfm, service.refresh_lifecycle
    seen = {}

    def lifecycle(**kw):
        out = real_lifecycle(**kw)
        lifecycle_done.set()
        return out

    def rfm(**kw):
        # RFM's transaction is open (its first statement has run) when the lifecycle ends.
        kw["uow"].c.execute(select(func.count()).select_from(rfm_scores)).scalar_one()
        seen["lifecycle_finished_during_rfm"] = lifecycle_done.wait(
            30 if engine.dialect.name == "postgresql" else 0.5)
        return real_rfm(**kw)

    monkeypatch.setattr(service, "refresh_rfm", rfm)
    monkeypatch.setattr(service, "refresh_lifecycle", lifecycle)
    with UnitOfWork(engine) as uow:
        job, _ = jobs.request_refresh(uow=uow, actor=ANALYST, as_of=AS_OF)
    out = jobs.run_job(engine, job["id"], ANALYST)
    assert out["status"] == "done"
    assert seen["lifecycle_finished_during_rfm"] is (engine.dialect.name == "postgresql")
    steps = out["result"]["steps"]
    assert steps["lifecycle"]["status"] == "done"
    assert sum(steps["lifecycle"]["stages"].values()) == count(engine, lifecycle_stages) > 0
    assert steps["rfm"]["customers"] == count(engine, rfm_scores, rfm_scores.c.scope == "overall")


def test_a_lifecycle_refresh_failing_alongside_rfm_fails_its_own_step(engine, shop, monkeypatch):
    from patron.analytics import service

    def broken(**kw):
        raise RuntimeError("lock timeout")

    monkeypatch.setattr(service, "refresh_lifecycle", broken)
    out = service.refresh_rfm_and_lifecycle  # the same pair outside a job
    with pytest.raises(RuntimeError, match="lock timeout"):
        out(engine, actor=SYSTEM, as_of=AS_OF)
    # RFM committed in its own transaction all the same
    assert count(engine, rfm_scores) > 0
