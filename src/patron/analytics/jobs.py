"""Analytics refresh jobs: every analytics table recomputed in steps, with progress.

A job is requested (``POST /api/v1/analytics/refresh-jobs``, ``patron analytics refresh``, or
the nightly scheduler) and then run by the process that requested it: in a background thread
of the server, in the foreground of the CLI, in the scheduler's thread. Its steps are RFM (every
scope), lifecycle stages, CLV predictions, churn scores, cross-sell rules (category and
SKU) and recommendations, and the dashboard rollups when that module exists. Each step is its
own transaction (the services commit); the job row is updated in a short transaction of its
own before and after every step, so another connection sees the progress.

One job at a time: the ``active`` column is 1 while a job is queued or running and unique, so
of two requests racing in different processes only one inserts; the other gets the job under
way (HTTP 200 instead of 202). A step that cannot run on the data at hand (a
:class:`~patron.errors.PatronError`: no customers yet, too little history for the churn model)
is recorded as skipped with its reason and the job goes on; anything else fails the job.

A job whose runner is gone is marked failed by whoever looks next (a request, the scheduler,
a read of the job): its process no longer exists on this host, or it is this process's own
earlier incarnation (same host and pid after a restart), or its heartbeat is older than
``LEASE``. The heartbeat is written every ``HEARTBEAT`` seconds from a thread of the runner
and at every step.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from patron.analytics import service
from patron.analytics.jobs_tables import analytics_refresh_jobs as jobs
from patron.analytics.refresh_schedule import due_night, parse_refresh_at
from patron.db import UnitOfWork, utcnow
from patron.errors import FieldError, NotFound, PatronError, ValidationFailed
from patron.i18n import t
from patron.security import audit
from patron.security.model import SYSTEM, Actor

log = logging.getLogger(__name__)

TRIGGERS = ("manual", "schedule", "cli")
LEASE = dt.timedelta(minutes=15)
HEARTBEAT = 30.0  # seconds
MAX_LIST = 100
ERROR_CHARS = 500
SCHEDULER = Actor(type="system", id=None, name="scheduler", role="owner")

# This process, as written in ``runner``: host, pid and a token of this start (a restarted
# container often has the same host name and pid as the process it replaces).
_HOST = socket.gethostname()[:120]
_RUNNER = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
_running: set[int] = set()  # jobs this process queued to run, or is running
_running_lock = threading.Lock()


def runner_id() -> str:
    return _RUNNER


class LeaseLost(Exception):
    """Another process decided this job's runner was gone and marked it failed."""


# --- steps ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[UnitOfWork, Actor, dt.datetime], dict[str, Any]]


def _local_day(moment: dt.datetime) -> dt.date:
    return service.local_date(moment)


class _RfmAndLifecycle:
    """The ``rfm`` and ``lifecycle`` steps of one job. On PostgreSQL the ``rfm`` step starts
    the lifecycle refresh on a connection of its own before its own work
    (:class:`service.Alongside`: they write different tables, so both cores work), and the
    ``lifecycle`` step waits for it and reports it (its error fails that step, as when it runs
    alone). On SQLite the lifecycle refresh runs in its own step, after RFM."""

    def __init__(self) -> None:
        self.alongside: service.Alongside | None = None

    def rfm(self, uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
        self.alongside = service.Alongside(uow.engine, actor, as_of)
        self.alongside.start()
        # Every scope in one step: the per-store totals behind the store, region and brand
        # scopes are built once per refresh (on SQLite a step holds the write lock, so the
        # job's progress cannot be written from inside one).
        out = service.refresh_rfm(uow=uow, actor=actor, as_of=as_of, scope="all")
        return {"customers": out["scopes"].get("overall", 0), "scopes": len(out["scopes"]),
                "scored_rows": sum(out["scopes"].values())}

    def lifecycle(self, uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
        alongside, self.alongside = self.alongside, None
        if alongside is None or alongside.as_of != as_of:
            alongside = service.Alongside(uow.engine, actor, as_of)
        out = alongside.result(uow)
        return {k: out[k] for k in ("changed", "transitions", "stages")}


def _clv(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
    from patron.analytics.clv_service import refresh_predictions

    out = refresh_predictions(uow=uow, actor=actor, as_of=_local_day(as_of))
    return {k: out[k] for k in ("run_id", "customers", "bgnbd", "gamma_gamma")}


def _churn(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
    from patron.analytics.churn_service import refresh_churn_scores

    out = refresh_churn_scores(uow=uow, actor=actor, as_of=_local_day(as_of))
    return {k: out[k] for k in ("run_id", "customers", "mean_probability")}


def _rules(level: str) -> Step:
    def run(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
        from patron.analytics.crosssell_service import refresh_rules

        out = refresh_rules(uow=uow, actor=actor, level=level)
        return {"rules": out["rules"], "baskets": out["baskets"]}
    return Step(f"crosssell_rules:{level}", run)


def _recommendations(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
    from patron.analytics.crosssell_service import refresh_recommendations

    out = refresh_recommendations(uow=uow, actor=actor, as_of=_local_day(as_of))
    return {"customers": out["customers"], "rules": out["rules"]}


def _dashboards(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
    from patron.analytics.dashboards_service import refresh_dashboards

    out = refresh_dashboards(uow=uow, actor=actor, as_of=as_of)
    return {k: v for k, v in out.items() if isinstance(v, str | int | float | bool | None)}


def plan_steps() -> list[Step]:
    """Every step of a full refresh, in order: later steps read what earlier ones wrote (churn
    features use the CLV model's probability of being active; rule tags read the scores; the
    day's segment sizes and tag counts come last)."""
    pair = _RfmAndLifecycle()
    return [Step("rfm", pair.rfm), Step("lifecycle", pair.lifecycle), Step("clv", _clv),
            Step("churn", _churn), _rules("category"), _rules("sku"),
            Step("recommendations", _recommendations), Step("dashboards", _dashboards),
            Step("tags", _rule_tags), Step("segment_sizes", _segment_sizes)]


def _rule_tags(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
    from patron.tags.service import refresh_rule_tags

    # Patron keeps rule tags itself, whoever asked for the refresh (named in the audit entry).
    out = refresh_rule_tags(uow=uow, actor=replace(SYSTEM, name=f"analytics-refresh:{actor.name}"),
                            now=as_of)
    return {"tags": len(out["tags"]),
            "added": sum(v["added"] for v in out["tags"].values()),
            "removed": sum(v["removed"] for v in out["tags"].values())}


def _segment_sizes(uow: UnitOfWork, actor: Actor, as_of: dt.datetime) -> dict[str, Any]:
    from patron.segments.service import snapshot_sizes

    out = snapshot_sizes(uow=uow, actor=actor, now=as_of)
    return {"segments": out["segments"], "tags": out["tags"]}


# --- JSON-safe summaries --------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """Dates as ISO strings, Decimals as strings, non-finite floats as None, numpy scalars as
    Python numbers: what the job's ``result`` column and the API may hold."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return json_safe(value.item())
    return str(value)


# --- reading --------------------------------------------------------------------------------

def view(row: Any) -> dict[str, Any]:
    """The API's shape of a job."""
    total = int(row.steps_total)
    done = int(row.steps_done)
    progress = 1.0 if row.status == "done" else (round(done / total, 4) if total else 0.0)
    return {"id": int(row.id), "status": row.status, "step": row.step, "steps_done": done,
            "steps_total": total, "progress": progress, "error": row.error,
            "started_at": row.started_at, "finished_at": row.finished_at}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def runner_gone(runner: str, heartbeat_at: dt.datetime, job_id: int, now: dt.datetime) -> bool:
    """Whether the process named ``runner`` can no longer be running the job."""
    if runner == _RUNNER:
        with _running_lock:
            return job_id not in _running
    if now - heartbeat_at > LEASE:
        return True
    host, _, rest = runner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != _HOST or not pid_text.isdigit():
        return False  # another machine: only its heartbeat tells
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # this pid, another start token: the process before a restart
    return not _pid_alive(pid)


def _mark_gone(conn: Connection, now: dt.datetime) -> list[int]:
    """Fail the queued or running jobs whose runner is gone; returns their ids."""
    j = jobs.c
    gone = []
    for row in conn.execute(select(j.id, j.runner, j.heartbeat_at, j.status)
                            .where(j.active.is_not(None))):
        if runner_gone(row.runner, row.heartbeat_at, int(row.id), now):
            conn.execute(update(jobs).where(j.id == row.id, j.active.is_not(None)).values(
                status="failed", active=None, finished_at=now,
                error=f"the process running this job ({row.runner}) stopped "
                      f"while it was {row.status}"))
            gone.append(int(row.id))
    return gone


def reap(engine: Engine) -> list[int]:
    """Mark jobs left queued or running by a process that is gone as failed."""
    now = utcnow()
    with UnitOfWork(engine, readonly=True) as uow:
        stale = [int(r.id) for r in uow.c.execute(
            select(jobs.c.id, jobs.c.runner, jobs.c.heartbeat_at).where(
                jobs.c.active.is_not(None)))
            if runner_gone(r.runner, r.heartbeat_at, int(r.id), now)]
    if not stale:
        return []
    with UnitOfWork(engine) as uow:
        gone = _mark_gone(uow.c, utcnow())
        uow.commit()
    return gone


def get_job(engine: Engine, *, actor: Actor, job_id: int) -> dict[str, Any]:
    service._need(actor, "dashboard.read")
    reap(engine)
    with UnitOfWork(engine, readonly=True) as uow:
        row = uow.c.execute(select(jobs).where(jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound("analytics_job_unknown", params={"id": job_id})
    return view(row)


def list_jobs(engine: Engine, *, actor: Actor, limit: int = 20) -> dict[str, Any]:
    service._need(actor, "dashboard.read")
    reap(engine)
    limit = max(1, min(int(limit), MAX_LIST))
    with UnitOfWork(engine, readonly=True) as uow:
        rows = uow.c.execute(select(jobs).order_by(jobs.c.requested_at.desc(), jobs.c.id.desc())
                             .limit(limit)).all()
    return {"items": [view(r) for r in rows]}


def job_result(engine: Engine, job_id: int) -> dict[str, Any]:
    """Everything stored about a job (the CLI prints it)."""
    with UnitOfWork(engine, readonly=True) as uow:
        row = uow.c.execute(select(jobs).where(jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound("analytics_job_unknown", params={"id": job_id})
    return {**view(row), "trigger": row.trigger, "requested_by": row.requested_by,
            "requested_at": row.requested_at, "as_of": row.as_of,
            "scheduled_for": row.scheduled_for, "result": row.result}


# --- requesting -----------------------------------------------------------------------------

def _active_job(conn: Connection) -> Any:
    return conn.execute(select(jobs).where(jobs.c.active.is_not(None))).first()


def request_refresh(*, uow: UnitOfWork, actor: Actor, trigger: str = "manual",
                    as_of: dt.datetime | None = None, scheduled_for: dt.date | None = None
                    ) -> tuple[dict[str, Any], bool]:
    """Queue a full refresh unless one is queued or running; returns the job and whether it
    was created by this call. The caller then runs it (:func:`run_job`). Owners and analysts
    (and the scheduler) only; audited."""
    service._need_refresher(actor)
    if trigger not in TRIGGERS:
        raise ValidationFailed(fields=[FieldError("trigger", "analytics_job_bad_trigger",
                                                  {"expected": ", ".join(TRIGGERS)})])
    moment = None if as_of is None else service._as_of(as_of)
    engine = uow.engine
    reap(engine)  # before this unit of work begins: on SQLite it may need the write lock
    conn = uow.c
    if moment is not None:
        service._check_after_first_purchase(conn, moment)
    active = _active_job(conn)
    if active is not None:
        uow.rollback()
        return view(active), False
    if scheduled_for is not None:
        done = conn.execute(select(jobs).where(jobs.c.scheduled_for == scheduled_for)).first()
        if done is not None:
            uow.rollback()
            return view(done), False
    now = utcnow()
    total = len(plan_steps())
    try:
        job_id = int(conn.execute(insert(jobs).values(
            requested_by=actor.name[:120], trigger=trigger, status="queued", step=None,
            steps_done=0, steps_total=total, as_of=moment, requested_at=now,
            runner=_RUNNER, heartbeat_at=now, active=1, scheduled_for=scheduled_for,
        ).returning(jobs.c.id)).scalar_one())
        audit.record(conn, actor, "analytics.refresh_requested", entity="analytics_refresh_job",
                     entity_id=job_id, details={
                         "trigger": trigger, "as_of": moment.isoformat() if moment else None,
                         "scheduled_for": scheduled_for.isoformat() if scheduled_for else None})
        uow.commit()
        with _running_lock:
            _running.add(job_id)  # the caller runs it next
    except IntegrityError:
        # Another process queued one between our check and our insert.
        uow.rollback()
        row = _active_job(uow.c)
        if row is None and scheduled_for is not None:
            row = uow.c.execute(select(jobs).where(jobs.c.scheduled_for == scheduled_for)
                                ).first()
        uow.rollback()
        if row is None:
            raise
        return view(row), False
    with UnitOfWork(engine, readonly=True) as read:
        row = read.c.execute(select(jobs).where(jobs.c.id == job_id)).one()
    return view(row), True


# --- running --------------------------------------------------------------------------------

def _write(engine: Engine, job_id: int, **values: Any) -> None:
    """Update our job in a transaction of its own, unless another process failed it."""
    with UnitOfWork(engine) as uow:
        j = jobs.c
        changed = uow.c.execute(update(jobs).where(
            j.id == job_id, j.runner == _RUNNER, j.status == "running").values(
                heartbeat_at=utcnow(), **values)).rowcount
        uow.commit()
    if changed != 1:
        raise LeaseLost(job_id)


class _Heartbeat:
    def __init__(self, engine: Engine, job_id: int) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, args=(engine, job_id),
                                       name=f"patron-refresh-heartbeat-{job_id}", daemon=True)

    def _beat(self, engine: Engine, job_id: int) -> None:
        while not self.stop.wait(HEARTBEAT):
            try:
                _write(engine, job_id)
            except LeaseLost:
                return
            except OperationalError:  # SQLite: a long step holds the write lock; try later
                log.debug("refresh job %s: heartbeat postponed", job_id)
            except Exception:  # noqa: BLE001 - a heartbeat must never take the job down
                log.exception("refresh job %s: heartbeat failed", job_id)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=HEARTBEAT + 5)


ProgressFn = Callable[[str, int, int], None]


def _error_text(step: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{step}: {type(exc).__name__}: {first}"[:ERROR_CHARS]


def _skipped(exc: PatronError, lang: str) -> dict[str, Any]:
    message = t(exc.message, lang, **exc.params)
    for f in exc.fields:
        message += f" ({f.field}: {t(f.reason, lang, **f.params)})"
    return {"status": "skipped", "reason": exc.message, "message": message}


def run_job(engine: Engine, job_id: int, actor: Actor, *, on_progress: ProgressFn | None = None,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """Claim the queued job and run its steps; returns the job as stored at the end. A job
    that is not queued any more (another runner took it, or it was failed meanwhile) is left
    alone."""
    now = utcnow()
    with _running_lock:
        _running.add(job_id)
    try:
        with UnitOfWork(engine) as uow:
            j = jobs.c
            claimed = uow.c.execute(update(jobs).where(
                j.id == job_id, j.status == "queued", j.runner == _RUNNER).values(
                    status="running", started_at=now, heartbeat_at=now)).rowcount
            row = uow.c.execute(select(j.as_of).where(j.id == job_id)).first()
            steps = plan_steps()
            uow.commit()
        if claimed != 1 or row is None:
            return job_result(engine, job_id)
        as_of = row.as_of or now
        _write(engine, job_id, steps_total=len(steps))
        with _Heartbeat(engine, job_id):
            _run_steps(engine, job_id, actor, steps, as_of, on_progress, stop)
    except LeaseLost:
        log.warning("refresh job %s was failed by another process meanwhile", job_id)
    except Exception as exc:
        # The job's own bookkeeping failed (the database went away): fail it if we still can,
        # else whoever looks next finds its runner gone.
        log.exception("refresh job %s stopped", job_id)
        try:
            _write(engine, job_id, status="failed", active=None, finished_at=utcnow(),
                   error=_error_text("job", exc))
        except Exception:  # noqa: BLE001
            log.exception("refresh job %s could not be marked failed", job_id)
    finally:
        with _running_lock:
            _running.discard(job_id)
    return job_result(engine, job_id)


def _run_steps(engine: Engine, job_id: int, actor: Actor, steps: list[Step],
               as_of: dt.datetime, on_progress: ProgressFn | None,
               stop: threading.Event | None) -> None:
    results: dict[str, Any] = {}
    total = len(steps)
    started = time.perf_counter()
    status, error = "done", None
    for done, step in enumerate(steps):
        if stop is not None and stop.is_set():
            status, error = "failed", f"{step.name}: interrupted, the server is stopping"
            break
        _write(engine, job_id, step=step.name, steps_done=done)
        if on_progress is not None:
            on_progress(step.name, done, total)
        began = time.perf_counter()
        try:
            with UnitOfWork(engine) as uow:
                summary = step.run(uow, actor, as_of)
            results[step.name] = {"status": "done", **json_safe(summary)}
        except PatronError as exc:
            results[step.name] = _skipped(exc, actor.language)
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded on the job, logged in full
            log.exception("refresh job %s: step %s failed", job_id, step.name)
            results[step.name] = {"status": "failed"}
            status, error = "failed", _error_text(step.name, exc)
        results[step.name]["seconds"] = round(time.perf_counter() - began, 3)
        if status == "failed":
            break
    done_count = sum(1 for r in results.values() if r["status"] != "failed")
    finished = utcnow()
    _write(engine, job_id, status=status, steps_done=done_count, finished_at=finished,
           active=None, error=error,
           result={"as_of": as_of.isoformat(), "steps": results,
                   "seconds": round(time.perf_counter() - started, 3)})
    if on_progress is not None:
        on_progress(steps[-1].name if steps else "", done_count, total)
    with UnitOfWork(engine) as uow:
        audit.record(uow.c, actor, "analytics.refresh_finished", entity="analytics_refresh_job",
                     entity_id=job_id, details={"status": status, "error": error},
                     outcome="ok" if status == "done" else "error")
        uow.commit()


def start_job_thread(engine: Engine, job_id: int, actor: Actor) -> threading.Thread:
    """Run the job in a daemon thread of this process (the API's way)."""
    thread = threading.Thread(target=_run_logged, args=(engine, job_id, actor),
                              name=f"patron-refresh-{job_id}", daemon=True)
    thread.start()
    return thread


def _run_logged(engine: Engine, job_id: int, actor: Actor) -> None:
    try:
        run_job(engine, job_id, actor)
    except Exception:  # noqa: BLE001 - a background thread has nobody to raise to
        log.exception("refresh job %s could not run", job_id)


# --- the nightly schedule -------------------------------------------------------------------

def scheduler_tick(engine: Engine, *, now: dt.datetime | None = None,
                   refresh_at: str | None = None, tz: str | None = None) -> int | None:
    """Queue tonight's job if its time has come and no job exists for tonight (in the
    database: any number of processes queue it once). Returns the id of the job queued by this
    call, which the caller runs; None otherwise."""
    from patron.config import get_settings

    settings = get_settings()
    at = parse_refresh_at(refresh_at if refresh_at is not None
                          else settings.analytics_refresh_at)
    night = due_night(at, ZoneInfo(tz or settings.analytics_refresh_tz), now)
    if night is None:
        return None
    with UnitOfWork(engine, readonly=True) as uow:
        exists = uow.c.execute(select(jobs.c.id).where(jobs.c.scheduled_for == night)).first()
    if exists is not None:
        return None
    with UnitOfWork(engine) as uow:
        job, created = request_refresh(uow=uow, actor=SCHEDULER, trigger="schedule",
                                       scheduled_for=night)
    return int(job["id"]) if created else None


def run_scheduler(engine: Engine, *, interval: float = 60.0,
                  stop: threading.Event | None = None) -> None:
    """Check every ``interval`` seconds whether tonight's refresh is due; run it here."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            job_id = scheduler_tick(engine)
            if job_id is not None:
                log.info("nightly analytics refresh: job %s", job_id)
                run_job(engine, job_id, SCHEDULER, stop=stop)
        except Exception:  # noqa: BLE001 - the database may be away; try again later
            log.exception("nightly analytics refresh: check failed; trying again")
        stop.wait(interval)


def start_scheduler(engine: Engine, *, interval: float = 60.0) -> Callable[[], None] | None:
    """The scheduler thread of a server process, unless ``PATRON_ANALYTICS_REFRESH_AT=off``;
    returns the function that stops it."""
    from patron.config import get_settings

    if parse_refresh_at(get_settings().analytics_refresh_at) is None:
        return None
    stop = threading.Event()
    thread = threading.Thread(target=run_scheduler, args=(engine,),
                              kwargs={"interval": interval, "stop": stop},
                              name="patron-analytics-scheduler", daemon=True)
    thread.start()

    def stop_scheduler() -> None:
        stop.set()
        thread.join(timeout=5.0)

    return stop_scheduler
