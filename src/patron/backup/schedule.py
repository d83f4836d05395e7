"""The daily backup (``PATRON_BACKUP_AT``): each server process checks once a minute whether
tonight's backup is due; the first to claim the night (the unique ``backup_runs.scheduled_for``)
takes it, the others see the claim and do nothing. A server that was down at the time catches
up within 12 hours of the slot, like the nightly analytics refresh (the same slot rules,
:mod:`patron.analytics.refresh_schedule`). `patron backup` from cron works just as well."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from patron.analytics.refresh_schedule import CATCH_UP, latest_slot, parse_refresh_at
from patron.backup.service import BackupResult, take_backup
from patron.backup.tables import backup_runs
from patron.security.model import Actor

log = logging.getLogger("patron.backup")
SCHEDULER = Actor(type="system", id=None, name="backup-scheduler", role="owner")


def run_due_backup(engine: Engine, *, at: dt.time, tz: str, directory: Path, keep: int,
                   now: dt.datetime | None = None) -> BackupResult | None:
    """Take tonight's backup if it is due and nobody has claimed it; None otherwise."""
    night, slot = latest_slot(at, ZoneInfo(tz), now)
    current = now or dt.datetime.now(dt.UTC)
    if current - slot > CATCH_UP:
        return None
    with engine.connect() as conn:
        if conn.execute(select(backup_runs.c.id).where(
                backup_runs.c.scheduled_for == night)).first() is not None:
            return None
    try:
        return take_backup(engine, actor=SCHEDULER, directory=directory, keep=keep,
                           trigger="scheduled", scheduled_for=night)
    except IntegrityError:
        return None  # another process claimed the night first


def run_scheduler(engine: Engine, *, interval: float, stop: threading.Event) -> None:
    from patron.config import get_settings

    settings = get_settings()
    at = parse_refresh_at(settings.backup_at)
    assert at is not None
    while not stop.is_set():
        try:
            done = run_due_backup(engine, at=at, tz=settings.backup_tz,
                                  directory=settings.effective_backup_dir,
                                  keep=settings.backup_keep)
            if done is not None:
                log.info("scheduled backup written: %s (%d bytes)", done.path, done.bytes)
        except Exception:
            log.exception("scheduled backup failed; trying again in %ss", interval)
        stop.wait(interval)


def start_scheduler(engine: Engine, *, interval: float = 60.0) -> Callable[[], None] | None:
    """The backup scheduler thread of a server process, unless ``PATRON_BACKUP_AT=off``."""
    from patron.config import get_settings
    from patron.workers import start_in_thread

    if parse_refresh_at(get_settings().backup_at) is None:
        return None
    return start_in_thread(run_scheduler, engine, interval=interval,
                           name="patron-backup-scheduler", join_timeout=5.0)
