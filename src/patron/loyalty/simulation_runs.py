"""Simulation runs: the what-if replay (``simulation.simulate``) requested from the staff
pages, run in a background thread of the server so that no request waits for it, with its
progress and its answer kept in ``loyalty_simulation_runs``.

A run is requested (a row, ``queued``, committed at once) and started in a daemon thread of
the process that took the request, as analytics refresh jobs are (``analytics.jobs``). The
thread reads in its own read-only transaction and writes its progress in short transactions
of their own, so a page polling the run sees it move. A run belongs to the user who asked:
its figures were computed in that user's store scope, so nobody else reads it. A run whose
runner is gone (this process restarted, or no sign of life for ``LEASE``) is shown as failed.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from decimal import Decimal
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import Engine, insert, select, update

from patron.analytics.jobs import runner_id
from patron.db import UnitOfWork, utcnow
from patron.errors import NotFound, PatronError
from patron.loyalty.reports_tables import loyalty_simulation_runs as runs
from patron.loyalty.service import _program, need
from patron.loyalty.simulation import SimulationIn, simulate
from patron.loyalty.tables import loyalty_programs
from patron.security import audit
from patron.security.model import Actor

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=10)
LATEST = 10  # runs listed on the page
_running: set[int] = set()
_running_lock = threading.Lock()


def request_run(*, uow: UnitOfWork, actor: Actor, program: str, body: SimulationIn,
                now: dt.datetime | None = None) -> int:
    """Record a run for ``program`` (queued) and return its id; the caller starts it."""
    need(actor, "loyalty.read")
    at = now or utcnow()
    p = _program(uow.c, program)
    run_id = int(uow.c.execute(insert(runs).values(
        program_id=p["id"], user_id=actor.id, requested_by=actor.name,
        request=body.model_dump(mode="json", by_alias=True, exclude_none=True),
        status="queued", step=None, progress=0.0, requested_at=at, runner=runner_id(),
        heartbeat_at=at).returning(runs.c.id)).scalar_one())
    audit.record(uow.c, actor, "loyalty.simulation_requested", entity="loyalty_simulation_run",
                 entity_id=run_id, details={"program": program, "months": body.months,
                                            "rules": body.rules is not None,
                                            "tiers": body.tiers is not None})
    uow.commit()
    with _running_lock:
        _running.add(run_id)
    return run_id


def _set(engine: Engine, run_id: int, **values: Any) -> None:
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(runs).where(runs.c.id == run_id).values(
            heartbeat_at=utcnow(), **values))
        uow.commit()


def run(engine: Engine, run_id: int, actor: Actor) -> None:
    """Run a queued run to its end (done or failed), reporting progress as it goes."""
    with UnitOfWork(engine, readonly=True) as uow:
        row = uow.c.execute(select(runs, loyalty_programs.c.code.label("program_code"))
                            .join(loyalty_programs, loyalty_programs.c.id == runs.c.program_id)
                            .where(runs.c.id == run_id)).mappings().one()
    program = str(row["program_code"])
    body = SimulationIn.model_validate(row["request"])
    _set(engine, run_id, status="running", started_at=utcnow(), step="load")
    last = [0.0]

    def progress(step: str, share: float) -> None:
        if share - last[0] >= 0.01 or share == 0.0:
            last[0] = share
            _set(engine, run_id, step=step, progress=round(min(share, 1.0), 4))

    try:
        with UnitOfWork(engine, readonly=True) as uow:
            result = simulate(uow.c, actor=actor, program=program, body=body,
                              progress=progress)
    except PatronError as exc:
        _set(engine, run_id, status="failed", finished_at=utcnow(), error={
            "code": exc.message, "params": jsonable_encoder(exc.params),
            "fields": [{"field": f.field, "reason": f.reason,
                        "params": jsonable_encoder(f.params)} for f in exc.fields]})
        return
    except Exception as exc:
        _set(engine, run_id, status="failed", finished_at=utcnow(), error={
            "code": "simulation_failed", "params": {"error": str(exc)[:300]}, "fields": []})
        raise
    finally:
        with _running_lock:
            _running.discard(run_id)
    _set(engine, run_id, status="done", step="compare", progress=1.0, finished_at=utcnow(),
         result=jsonable_encoder(result, custom_encoder={Decimal: str}))


def start_thread(engine: Engine, run_id: int, actor: Actor) -> threading.Thread:
    thread = threading.Thread(target=_run_logged, args=(engine, run_id, actor),
                              name=f"patron-simulation-{run_id}", daemon=True)
    thread.start()
    return thread


def _run_logged(engine: Engine, run_id: int, actor: Actor) -> None:
    try:
        run(engine, run_id, actor)
    except Exception:  # noqa: BLE001 - a background thread has nobody to raise to
        log.exception("simulation run %s failed", run_id)


def _gone(row: dict[str, Any], now: dt.datetime) -> bool:
    if row["status"] not in ("queued", "running"):
        return False
    if row["runner"] == runner_id():
        with _running_lock:
            return int(row["id"]) not in _running
    return now - row["heartbeat_at"] > LEASE


def run_out(row: dict[str, Any], now: dt.datetime, program: str) -> dict[str, Any]:
    out = {"id": int(row["id"]), "program": program, "status": row["status"],
           "step": row["step"], "progress": float(row["progress"]),
           "request": row["request"], "requested_by": row["requested_by"],
           "requested_at": row["requested_at"], "started_at": row["started_at"],
           "finished_at": row["finished_at"], "error": row["error"], "result": row["result"]}
    if _gone(row, now):
        out.update(status="failed", error={"code": "simulation_runner_gone", "params": {},
                                           "fields": []})
    return out


def get_run(conn: Any, *, actor: Actor, run_id: int) -> dict[str, Any]:
    """A run of this user's (anyone else's is not found)."""
    need(actor, "loyalty.read")
    row = conn.execute(select(runs, loyalty_programs.c.code.label("program_code"))
                       .join(loyalty_programs, loyalty_programs.c.id == runs.c.program_id)
                       .where(runs.c.id == run_id)).mappings().first()
    if row is None or row["user_id"] != actor.id:
        raise NotFound("simulation_run_not_found")
    return run_out(dict(row), utcnow(), row["program_code"])


def latest_runs(conn: Any, *, actor: Actor, program: str) -> list[dict[str, Any]]:
    need(actor, "loyalty.read")
    p = _program(conn, program)
    now = utcnow()
    return [run_out({**dict(r), "result": None}, now, program) for r in conn.execute(
        select(runs).where(runs.c.program_id == p["id"], runs.c.user_id == actor.id)
        .order_by(runs.c.id.desc()).limit(LATEST)).mappings()]
