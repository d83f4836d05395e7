"""Running automations: look for triggers, admit entries, run their steps.

A round (``run_due``), safe with any number of processes on one PostgreSQL:

1. **Look** (:func:`scan_due`): each active automation whose trigger looks at the data is
   looked at once per ``SCAN_EVERY`` by whichever process wins a compare-and-set on its
   ``scanned_at``; a schedule fires its latest due tick once (compare-and-set on
   ``last_tick_at``). Candidates are inserted as ``triggered`` entries; the unique key
   (automation, customer, occurrence) drops any already there. Order triggers are entered by
   the order hook in the order's own transaction (:mod:`patron.automations.hooks`).
2. **Admit** (:func:`admit_due`): triggered entries, locked with ``SKIP LOCKED``, are checked
   (membership still active, the conditions' segment, the re-entry guard by a conditional
   upsert) and assigned an arm (control group held out, or a variant), recorded.
3. **Steps** (:func:`run_steps`): one transaction per step: lock one due entry (``SKIP
   LOCKED``), do its action under the key ``automation:{entry}:{step}``, record the step (unique
   per entry and step) and advance the entry, commit. A process that dies mid-step rolls the
   whole step back; the next one does it once. A wait step sets when the next one is due.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import DBAPIError

from patron import workers
from patron.automations import audience, model, triggers
from patron.automations.actions import run_action
from patron.automations.schemas import ORDER_TRIGGERS, SCAN_TRIGGERS, Definition
from patron.automations.tables import (
    automation_entries,
    automation_reentry,
    automation_step_runs,
    automation_versions,
    automations,
    experiment_assignments,
)
from patron.db import UnitOfWork, upsert, utcnow
from patron.errors import PatronError
from patron.loyalty.tables import loyalty_members, loyalty_programs
from patron.security import audit

log = logging.getLogger(__name__)

SCAN_EVERY = dt.timedelta(minutes=10)
ADMIT_BATCH = 200
RETRY_AFTER_ERROR = dt.timedelta(minutes=1)


@dataclass
class RoundStats:
    claimed: int = 0
    scanned: int = 0
    triggered: int = 0
    admitted: int = 0
    held_out: int = 0
    not_eligible: int = 0
    skipped: int = 0
    steps: int = 0
    done: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def definition_of(conn: Connection, automation_id: int, version: int) -> Definition:
    v = automation_versions.c
    raw = conn.execute(select(v.definition).where(v.automation_id == automation_id,
                                                  v.version == version)).scalar_one()
    return Definition.model_validate(raw)


def program_of(conn: Connection, program_id: int) -> dict[str, Any]:
    return dict(conn.execute(select(loyalty_programs).where(
        loyalty_programs.c.id == program_id)).mappings().one())


def insert_entries(conn: Connection, *, automation: dict[str, Any],
                   candidates: list[triggers.Candidate], now: dt.datetime) -> int:
    """Triggered entries for the candidates; one already there (same occurrence) is left."""
    if not candidates:
        return 0
    seen: set[tuple[int, str]] = set()
    rows = []
    for cid, mid, occurrence in candidates:
        if (cid, occurrence) in seen:
            continue
        seen.add((cid, occurrence))
        rows.append({"automation_id": automation["id"], "version": automation["version"],
                     "customer_id": cid, "member_id": mid, "occurrence": occurrence[:120],
                     "state": "triggered", "step": 0, "due_at": now, "triggered_at": now})
    inserted = 0
    for start in range(0, len(rows), 500):
        chunk = rows[start:start + 500]
        # Counted from RETURNING: drivers need not report an INSERT's row count.
        inserted += len(conn.execute(upsert(conn, automation_entries).values(chunk)
                                     .on_conflict_do_nothing(index_elements=[
                                         "automation_id", "customer_id", "occurrence"])
                                     .returning(automation_entries.c.id)).all())
    return inserted


# --- 1. looking for triggers ----------------------------------------------------------------------

def scan_due(engine: Engine, now: dt.datetime, stats: RoundStats) -> None:
    with UnitOfWork(engine, readonly=True) as uow:
        rows = [dict(r) for r in uow.c.execute(select(automations).where(
            automations.c.status == "active",
            automations.c.trigger_type.in_((*SCAN_TRIGGERS, "schedule")))
            .order_by(automations.c.id)).mappings()]
    for a in rows:
        try:
            if a["trigger_type"] == "schedule":
                _fire_schedule(engine, a, now, stats)
            elif a["scanned_at"] is None or a["scanned_at"] <= now - SCAN_EVERY:
                _scan_one(engine, a, now, stats)
        except DBAPIError:
            log.exception("automation %s: looking for triggers failed; next round", a["code"])


def _scan_one(engine: Engine, a: dict[str, Any], now: dt.datetime, stats: RoundStats) -> None:
    with UnitOfWork(engine) as uow:
        conn = uow.c
        won = conn.execute(update(automations).where(
            automations.c.id == a["id"], automations.c.status == "active",
            or_(automations.c.scanned_at.is_(None), automations.c.scanned_at == a["scanned_at"])
        ).values(scanned_at=now)).rowcount
        if won != 1:
            return  # another process is looking (or the automation changed)
        definition = definition_of(conn, a["id"], a["version"])
        program = program_of(conn, a["program_id"])
        found = triggers.scan(conn, automation=a, definition=definition, program=program,
                              now=now)
        stats.triggered += insert_entries(conn, automation=a, candidates=found, now=now)
        stats.scanned += 1
        uow.commit()


def _fire_schedule(engine: Engine, a: dict[str, Any], now: dt.datetime,
                   stats: RoundStats) -> None:
    with UnitOfWork(engine) as uow:
        conn = uow.c
        definition = definition_of(conn, a["id"], a["version"])
        program = program_of(conn, a["program_id"])
        expression = definition.trigger.cron  # type: ignore[union-attr]
        tick = model.due_tick(expression, last=a["last_tick_at"],
                              since=a["activated_at"] or now, now=now, tz=program["timezone"])
        if tick is None:
            return
        last = automations.c.last_tick_at
        won = conn.execute(update(automations).where(
            automations.c.id == a["id"], automations.c.status == "active",
            last.is_(None) if a["last_tick_at"] is None else last == a["last_tick_at"]
        ).values(last_tick_at=tick)).rowcount
        if won != 1:
            return
        found = [(int(r[0]), int(r[1]), f"cron:{tick.isoformat()}") for r in conn.execute(
            audience.matching(conn, int(program["id"]), definition.conditions, as_of=now))]
        stats.triggered += insert_entries(conn, automation=a, candidates=found, now=now)
        stats.scanned += 1
        uow.commit()


# --- 2. admitting entries -------------------------------------------------------------------------

def admit_due(engine: Engine, now: dt.datetime, stats: RoundStats,
              limit: int = ADMIT_BATCH) -> int:
    e, a = automation_entries.c, automations.c
    with UnitOfWork(engine) as uow:
        conn = uow.c
        q = (select(automation_entries).join(automations, a.id == e.automation_id)
             .where(e.state == "triggered", a.status == "active", e.due_at <= now)
             .order_by(e.id).limit(limit))
        if uow.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True, of=automation_entries)
        rows = [dict(r) for r in conn.execute(q).mappings()]
        cache: dict[tuple[int, int], tuple[dict[str, Any], Definition]] = {}
        for entry in rows:
            key = (int(entry["automation_id"]), int(entry["version"]))
            if key not in cache:
                auto = dict(conn.execute(select(automations).where(
                    a.id == entry["automation_id"])).mappings().one())
                cache[key] = (auto, definition_of(conn, *key))
            auto, definition = cache[key]
            _admit(conn, entry, auto, definition, now, stats)
        uow.commit()
    stats.claimed += len(rows)
    return len(rows)


def _admit(conn: Connection, entry: dict[str, Any], auto: dict[str, Any],
           definition: Definition, now: dt.datetime, stats: RoundStats) -> None:
    e = automation_entries.c
    eid = int(entry["id"])
    cid = int(entry["customer_id"])

    def end(state: str, reason: str, arm: str | None = None) -> None:
        conn.execute(update(automation_entries).where(e.id == eid).values(
            state=state, reason=reason, arm=arm, admitted_at=now, finished_at=now))

    m = loyalty_members.c
    active = conn.execute(select(m.id).where(
        m.id == entry["member_id"], m.status == "active", m.customer_id == cid)).scalar()
    if active is None:
        end("not_eligible", "member_not_active")
        stats.not_eligible += 1
        return
    if not audience.contains(conn, definition.conditions, cid, as_of=now):
        end("not_eligible", "conditions_not_met")
        stats.not_eligible += 1
        return
    if not _pass_guard(conn, int(auto["id"]), cid, definition.reentry_days, now):
        end("skipped", "reentry_period")
        stats.skipped += 1
        return
    arm = assign_arm(conn, source="automation", source_id=int(auto["id"]), customer_id=cid,
                     control_share=definition.control_share,
                     arms=[(c, s) for c, s, _ in definition.arms()], now=now)
    if arm == model.CONTROL:
        end("held_out", "control_group", arm)
        stats.held_out += 1
        return
    conn.execute(update(automation_entries).where(e.id == eid).values(
        state="active", arm=arm, admitted_at=now, due_at=now, step=0))
    stats.admitted += 1


def _pass_guard(conn: Connection, automation_id: int, customer_id: int,
                reentry_days: int | None, now: dt.datetime) -> bool:
    """Record the entry in the re-entry guard, or refuse it: a conditional upsert, so that of
    two processes admitting the same customer at once only one passes."""
    g = automation_reentry.c
    ins = upsert(conn, automation_reentry).values(automation_id=automation_id,
                                                  customer_id=customer_id, last_entered_at=now)
    if reentry_days is None:
        stmt = ins.on_conflict_do_nothing(index_elements=["automation_id", "customer_id"])
    else:
        stmt = ins.on_conflict_do_update(
            index_elements=["automation_id", "customer_id"],
            set_={"last_entered_at": now},
            where=g.last_entered_at <= now - dt.timedelta(days=reentry_days))
    return conn.execute(stmt.returning(g.customer_id)).first() is not None


def guard_would_pass(conn: Connection, automation_id: int, customer_id: int,
                     reentry_days: int | None, now: dt.datetime) -> bool:
    g = automation_reentry.c
    last = conn.execute(select(g.last_entered_at).where(
        g.automation_id == automation_id, g.customer_id == customer_id)).scalar()
    if last is None:
        return True
    return reentry_days is not None and last <= now - dt.timedelta(days=reentry_days)


def assign_arm(conn: Connection, *, source: str, source_id: int, customer_id: int,
               control_share: Any, arms: list[tuple[str, Any]], now: dt.datetime,
               record: bool = True) -> str:
    """The customer's arm (deterministic), recorded the first time it is assigned."""
    position = model.bucket(source, source_id, customer_id)
    arm = model.choose_arm(position, control_share, arms)
    if record:
        conn.execute(upsert(conn, experiment_assignments).values(
            source=source, source_id=source_id, customer_id=customer_id, arm=arm,
            bucket=position, shares=model.shares_json(control_share, arms), assigned_at=now
        ).on_conflict_do_nothing(index_elements=["source", "source_id", "customer_id"]))
    return arm


# --- 3. running steps -----------------------------------------------------------------------------

def run_steps(engine: Engine, now: dt.datetime, stats: RoundStats, limit: int = 100) -> int:
    ran = 0
    while ran < limit:
        outcome = _run_one_step(engine, now, stats)
        if outcome is None:
            break
        ran += 1
    stats.claimed += ran
    return ran


def _run_one_step(engine: Engine, now: dt.datetime, stats: RoundStats) -> str | None:
    e, a = automation_entries.c, automations.c
    refused: tuple[dict[str, Any], dict[str, Any], Any, PatronError] | None = None
    with UnitOfWork(engine) as uow:
        conn = uow.c
        q = (select(automation_entries).join(automations, a.id == e.automation_id)
             .where(e.state == "active", a.status == "active", e.due_at <= now)
             .order_by(e.due_at, e.id).limit(1))
        if uow.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True, of=automation_entries)
        row = conn.execute(q).mappings().first()
        if row is None:
            return None
        entry = dict(row)
        auto = dict(conn.execute(select(automations).where(
            a.id == entry["automation_id"])).mappings().one())
        definition = definition_of(conn, auto["id"], entry["version"])
        steps = definition.steps_of(entry["arm"])
        index = int(entry["step"])
        if index >= len(steps):
            _finish(conn, entry, "done", None, now)
            uow.commit()
            stats.done += 1
            return "done"
        step = steps[index]
        program = program_of(conn, auto["program_id"])
        if step.action == "wait":
            _record_step(conn, entry, step.action, "waited",
                         {"until": (now + model.wait_of(step)).isoformat()}, now)
            conn.execute(update(automation_entries).where(e.id == entry["id"]).values(
                step=index + 1, due_at=now + model.wait_of(step)))
            uow.commit()
            stats.steps += 1
            return "waited"
        try:
            result = run_action(conn, step=step, entry=entry, automation=auto, program=program,
                                now=now)
        except PatronError as exc:
            uow.rollback()
            refused = (entry, auto, step, exc)
        except DBAPIError:
            uow.rollback()
            log.exception("automation entry %s step %s: database error; retried later",
                          entry["id"], index)
            _postpone(engine, entry, now)
            return "postponed"
        else:
            _record_step(conn, entry, step.action, "done", result, now)
            last = index + 1 >= len(steps)
            values: dict[str, Any] = {"step": index + 1, "due_at": now}
            if last:
                values.update(state="done", finished_at=now)
            conn.execute(update(automation_entries).where(e.id == entry["id"]).values(**values))
            uow.commit()
            stats.steps += 1
            if last:
                stats.done += 1
            return "done"
    assert refused is not None
    _refuse(engine, *refused, now=now)
    stats.failed += 1
    return "failed"


def _record_step(conn: Connection, entry: dict[str, Any], kind: str, outcome: str,
                 result: dict[str, Any], now: dt.datetime) -> None:
    conn.execute(insert(automation_step_runs).values(
        entry_id=entry["id"], step=entry["step"], kind=kind, outcome=outcome,
        result=result, at=now))


def _finish(conn: Connection, entry: dict[str, Any], state: str, reason: str | None,
            now: dt.datetime, error: str | None = None) -> None:
    conn.execute(update(automation_entries).where(automation_entries.c.id == entry["id"]).values(
        state=state, reason=reason, error=error, finished_at=now))


def _refuse(engine: Engine, entry: dict[str, Any], auto: dict[str, Any], step: Any,
            exc: PatronError, *, now: dt.datetime) -> None:
    """The action was refused (a spent coupon budget, a closed membership): the entry ends
    'failed' with the reason, recorded with the step, audited."""
    from patron.automations.actions import actor_for

    e = automation_entries.c
    with UnitOfWork(engine) as uow:
        conn = uow.c
        still = conn.execute(update(automation_entries).where(
            e.id == entry["id"], e.state == "active", e.step == entry["step"]).values(
            state="failed", reason=exc.message[:48], finished_at=now,
            error=str(exc.params or exc.fields or exc.message)[:500])).rowcount
        if still == 1:
            _record_step(conn, entry, step.action, "refused",
                         {"reason": exc.message, "params": {k: str(v) for k, v in
                                                            exc.params.items()}}, now)
            audit.record(conn, actor_for(auto["code"]), "automation.step_refused",
                         entity="automation_entry", entity_id=entry["id"],
                         details={"step": entry["step"], "action": step.action,
                                  "reason": exc.message}, outcome="refused")
        uow.commit()


def _postpone(engine: Engine, entry: dict[str, Any], now: dt.datetime) -> None:
    e = automation_entries.c
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(automation_entries).where(
            e.id == entry["id"], e.state == "active", e.step == entry["step"]).values(
            due_at=now + RETRY_AFTER_ERROR))
        uow.commit()


# --- the round and the worker ---------------------------------------------------------------------

def run_due(*, engine: Engine, now: dt.datetime | None = None, limit: int = 500) -> RoundStats:
    """One round: look for triggers, admit entries, run due steps (at most ``limit`` each)."""
    stats = RoundStats()
    at = now or utcnow()
    scan_due(engine, at, stats)
    while admit_due(engine, at, stats, min(ADMIT_BATCH, limit)) == min(ADMIT_BATCH, limit):
        if stats.claimed >= limit:
            break
    run_steps(engine, at, stats, limit)
    return stats


def run_round(engine: Engine, limit: int) -> RoundStats:
    """An automations round, then a campaigns round (patron.campaigns.engine): one worker
    thread per server process runs both."""
    from patron.campaigns.engine import run_due as send_campaigns

    stats = run_due(engine=engine, limit=limit)
    stats.claimed += send_campaigns(engine=engine, limit=limit).claimed
    return stats


def run_worker(engine: Engine, *, interval: float = 10.0, once: bool = False, limit: int = 500,
               stop: threading.Event | None = None,
               on_stats: Callable[[RoundStats], None] | None = None) -> None:
    workers.poll(lambda: run_round(engine, limit), what="automations and campaigns",
                 interval=interval, once=once, limit=limit, stop=stop, on_stats=on_stats,
                 log=log)


def start_background_worker(engine: Engine, *, interval: float = 10.0) -> Callable[[], None]:
    return workers.start_in_thread(run_worker, engine, interval=interval,
                                   name="patron-automations", join_timeout=20.0)


__all__ = ["ORDER_TRIGGERS", "RoundStats", "run_due", "run_worker"]
