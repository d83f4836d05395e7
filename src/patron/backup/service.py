"""Online, consistent, encrypted backups and their restore (docs/backups.md).

SQLite: the sqlite3 online backup API copies the database in one step under a read
transaction, so writers carry on (WAL) and the copy is the database as of one moment.
PostgreSQL: ``pg_dump`` in its custom format, which reads every table in one repeatable-read
snapshot. Either way the copy is streamed through :mod:`patron.backup.envelope` with the backup
key; the only plaintext that touches the disk is SQLite's copy, in a file only its owner can
read, removed as soon as it is encrypted.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.engine import make_url

import patron
from patron.backup.envelope import BackupUnreadable, decrypt_stream, encrypt_stream, read_header
from patron.backup.tables import backup_runs
from patron.db import UnitOfWork, utcnow
from patron.errors import PatronError
from patron.protection.keys import Keyring, backup_keyring
from patron.security import audit
from patron.security.model import Actor

SUFFIX = ".pbk"


class BackupFailed(PatronError):
    status = 500
    code = "backup_failed"


@dataclass
class BackupResult:
    path: Path
    bytes: int
    removed: list[Path]
    run_id: int | None = None


def _libpq_url(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for pg_dump / pg_restore, and the environment carrying the
    password (never on the command line, where `ps` shows it)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # noqa: BLE001 - a database without migrations
            return None


def backup_files(directory: Path) -> list[Path]:
    """Backups in a directory, oldest first (their names start with the UTC time)."""
    if not directory.exists():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.name.startswith("patron-") and p.name.endswith(SUFFIX))


def describe(path: Path) -> dict[str, Any]:
    """A backup's manifest, read without the key."""
    with path.open("rb") as f:
        _raw, header = read_header(f)
    return {"file": str(path), "bytes": path.stat().st_size, "key_id": header.get("key_id"),
            **header.get("manifest", {})}


def take_backup(engine: Engine, *, actor: Actor, directory: Path, keep: int,
                trigger: str = "manual", scheduled_for: dt.date | None = None,
                keyring: Keyring | None = None) -> BackupResult:
    """Back the database up into ``directory`` while Patron keeps writing, then keep only the
    newest ``keep`` backups there. Recorded in ``backup_runs`` and audited."""
    keyring = keyring or backup_keyring()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    started = utcnow()
    run_id = _start_run(engine, actor=actor, trigger=trigger, scheduled_for=scheduled_for,
                        now=started)
    dialect = engine.dialect.name
    name = f"patron-{started.strftime('%Y%m%dT%H%M%S%fZ')}-{dialect}{SUFFIX}"
    final = directory / name
    part = directory / (name + ".part")
    manifest = {"format": "patron-backup", "dialect": dialect,
                "created_at": started.isoformat(), "revision": _revision(engine),
                "patron": patron.__version__,
                "payload": "sqlite-database" if dialect == "sqlite" else "pg_dump-custom"}
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as target, _snapshot(engine, directory) as source:
            encrypt_stream(source, target, keyring=keyring, manifest=manifest)
            target.flush()
            os.fsync(target.fileno())
        os.replace(part, final)
    except BaseException as exc:
        part.unlink(missing_ok=True)
        _finish_run(engine, run_id, status="failed", error=str(exc)[:2000])
        if isinstance(exc, PatronError):
            raise
        raise BackupFailed("backup_failed", params={"reason": str(exc)[:500]}) from exc
    size = final.stat().st_size
    removed = prune(directory, keep)
    _finish_run(engine, run_id, status="done", file=str(final), size=size)
    with UnitOfWork(engine) as uow:
        audit.record(uow.c, actor, "backup.created", entity="backup_run", entity_id=run_id,
                     details={"file": final.name, "bytes": size, "trigger": trigger,
                              "key_id": keyring.current_id, "removed": [p.name for p in removed]})
        uow.commit()
    return BackupResult(final, size, removed, run_id)


def prune(directory: Path, keep: int) -> list[Path]:
    files = backup_files(directory)
    doomed = files[:-keep] if keep > 0 else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


@contextmanager
def _snapshot(engine: Engine, directory: Path) -> Iterator[Any]:
    """A readable stream of one consistent copy of the database."""
    if engine.dialect.name == "sqlite":
        source_path = make_url(str(engine.url)).database
        fd, tmp_name = tempfile.mkstemp(prefix=".snapshot-", dir=directory)
        os.close(fd)  # mkstemp's file is readable by its owner only
        tmp = Path(tmp_name)
        try:
            src = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True, timeout=30)
            dst = sqlite3.connect(tmp)
            try:
                # One step (pages=-1): the whole database under one read transaction, so a
                # writer committing meanwhile is either entirely in the copy or not at all.
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
                src.close()
            with tmp.open("rb") as f:
                yield f
        finally:
            tmp.unlink(missing_ok=True)
        return
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupFailed("backup_tool_missing", params={"tool": "pg_dump"})
    url, env = _libpq_url(str(engine.url.render_as_string(hide_password=False)))
    proc = subprocess.Popen(  # noqa: S603 - fixed program, arguments from our configuration
        [pg_dump, "--format=custom", "--no-owner", "--no-privileges", "--dbname", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        yield proc.stdout
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise BackupFailed("backup_failed", params={"reason": err.strip()[:500]})
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_run(engine: Engine, *, actor: Actor, trigger: str, scheduled_for: dt.date | None,
               now: dt.datetime) -> int:
    with UnitOfWork(engine) as uow:
        run_id = uow.c.execute(insert(backup_runs).values(
            trigger=trigger, scheduled_for=scheduled_for, requested_by=actor.name,
            started_at=now, status="running").returning(backup_runs.c.id)).scalar_one()
        uow.commit()
    return int(run_id)


def _finish_run(engine: Engine, run_id: int, *, status: str, file: str | None = None,
                size: int | None = None, error: str | None = None) -> None:
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(backup_runs).where(backup_runs.c.id == run_id).values(
            status=status, finished_at=utcnow(), file=file, bytes=size, error=error))
        uow.commit()


def list_runs(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    with UnitOfWork(engine, readonly=True) as uow:
        rows = uow.c.execute(select(backup_runs).order_by(backup_runs.c.id.desc())
                             .limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def restore_backup(engine: Engine, *, actor: Actor, path: Path,
                   keyring: Keyring | None = None) -> dict[str, Any]:
    """Replace the database's content with a backup's. The whole file is decrypted and
    authenticated into a private temporary file first: a wrong key or a damaged file stops
    here, with the database untouched. Patron's servers should be stopped meanwhile."""
    keyring = keyring or backup_keyring()
    info = describe(path)
    dialect = engine.dialect.name
    if info.get("dialect") != dialect:
        raise BackupUnreadable("backup_wrong_database", params={
            "backup": info.get("dialect"), "database": dialect})
    engine.dispose()  # no pooled connection holds the old tables
    with tempfile.TemporaryDirectory(prefix="patron-restore-") as tmp_dir:
        plain = Path(tmp_dir) / "restore"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, path.open("rb") as source:
            for chunk in decrypt_stream(source, keyring=keyring):
                out.write(chunk)
        if dialect == "sqlite":
            _restore_sqlite(engine, plain)
        else:
            _restore_postgres(engine, plain)
    engine.dispose()
    from patron.org.service import clear_reference_cache

    clear_reference_cache()
    with UnitOfWork(engine) as uow:
        audit.record(uow.c, actor, "backup.restored", entity="backup", entity_id=path.name,
                     details={"file": path.name, "created_at": info.get("created_at"),
                              "revision": info.get("revision")})
        uow.commit()
    return info


def _restore_sqlite(engine: Engine, plain: Path) -> None:
    target_path = make_url(str(engine.url)).database
    src = sqlite3.connect(plain)
    try:
        if src.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupUnreadable("backup_corrupt")
        dst = sqlite3.connect(target_path, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise BackupUnreadable("backup_corrupt") from exc
    finally:
        src.close()


def _restore_postgres(engine: Engine, plain: Path) -> None:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        raise BackupFailed("backup_tool_missing", params={"tool": "pg_restore"})
    url, env = _libpq_url(str(engine.url.render_as_string(hide_password=False)))
    done = subprocess.run(  # noqa: S603 - fixed program, arguments from our configuration
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges",
         "--single-transaction", "--exit-on-error", "--dbname", url, str(plain)],
        capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise BackupFailed("restore_failed", params={
            "reason": done.stderr.decode(errors="replace").strip()[:500]})
