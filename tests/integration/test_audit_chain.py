"""The audit log is append-only (triggers of migration 0004) and tamper-evident (one hash chain,
checked by `patron audit verify`), on SQLite and PostgreSQL; concurrent writers still build one
valid chain; a rolled-back transaction leaves no entry."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from patron.db import UnitOfWork, make_engine
from patron.security import audit
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_chain_head, audit_log
from tests.factories import make_org, order

pytestmark = pytest.mark.xdist_group("concurrency")


def _write(engine: Any, n: int, *, who: str = "tester") -> None:
    actor = Actor(type="user", id=7, name=who, role="owner", ip="203.0.113.9")
    for i in range(n):
        with UnitOfWork(engine) as uow:
            audit.record(uow.c, actor, "test.done", entity="thing", entity_id=i,
                         details={"i": i, "tags": ("a", "b"), "名": "值"})
            uow.commit()


def _verify(engine: Any) -> audit.ChainReport:
    with UnitOfWork(engine, readonly=True) as uow:
        return audit.verify(uow.c)


def test_entries_form_one_valid_chain_with_who_what_when_where_and_outcome(engine):
    with UnitOfWork(engine) as uow:
        make_org(uow)  # services' own entries
    _write(engine, 3)
    report = _verify(engine)
    assert report.ok, report
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings().all()
    assert [r["id"] for r in rows] == list(range(1, len(rows) + 1))
    assert report.entries == len(rows) and report.head_id == rows[-1]["id"]
    assert rows[0]["prev_hash"] == audit.GENESIS
    for before, after in zip(rows, rows[1:], strict=False):
        assert after["prev_hash"] == before["entry_hash"]
    last = rows[-1]
    assert (last["actor_type"], last["actor_name"], last["ip"], last["outcome"]) == (
        "user", "tester", "203.0.113.9", "ok")
    assert last["at"].utcoffset().total_seconds() == 0
    assert last["details"] == {"i": 2, "tags": ["a", "b"], "名": "值"}


def test_a_rolled_back_transaction_leaves_no_entry(engine):
    _write(engine, 1)
    with UnitOfWork(engine) as uow:
        audit.record(uow.c, SYSTEM, "test.rolled_back")
        uow.rollback()
        audit.record(uow.c, SYSTEM, "test.kept")
        uow.commit()
    with UnitOfWork(engine) as uow:
        audit.record(uow.c, SYSTEM, "test.never_committed")
    with engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action).order_by(audit_log.c.id)).scalars()
        assert list(actions) == ["test.done", "test.kept"]
    assert _verify(engine).ok


def test_the_audit_log_refuses_update_and_delete(engine):
    _write(engine, 2)
    for statement in (update(audit_log).values(outcome="denied"), delete(audit_log)):
        with UnitOfWork(engine) as uow, pytest.raises(IntegrityError, match="append-only"):
            uow.c.execute(statement)
    assert _verify(engine).ok


def _tamper(engine: Any, sql: str, **params: Any) -> None:
    """What someone with the database's owner rights could do: switch the triggers off."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            conn.execute(text(sql), params)
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            conn.execute(text(sql), params)


@pytest.mark.parametrize("sql, broken_at, reason", [
    ("UPDATE audit_log SET outcome = 'denied' WHERE id = 3", 3, "content"),
    ("UPDATE audit_log SET actor_name = 'someone else' WHERE id = 2", 2, "content"),
    ("DELETE FROM audit_log WHERE id = 3", 3, "missing"),
    ("DELETE FROM audit_log WHERE id = 5", 5, "head"),
])
def test_verify_reports_the_first_broken_link(engine, sql, broken_at, reason):
    _write(engine, 5)
    _tamper(engine, sql)
    report = _verify(engine)
    assert not report.ok
    assert report.broken_at == broken_at
    assert reason in report.reason


def test_a_rewritten_entry_with_a_recomputed_hash_breaks_the_next_link(engine):
    _write(engine, 4)
    with engine.connect() as conn:
        row = dict(conn.execute(select(audit_log).where(audit_log.c.id == 2)).mappings().one())
    row["details"] = {"i": 99}
    forged = audit.entry_hash(row["prev_hash"], row)
    _tamper(engine, "UPDATE audit_log SET details = :details, entry_hash = :forged "
                    "WHERE id = 2", details=json.dumps(row["details"]), forged=forged)
    report = _verify(engine)
    assert (report.broken_at, report.reason) == (
        3, "previous hash does not match the previous entry")


def test_patron_audit_verify_command(engine, monkeypatch):
    from patron.cli import app

    _write(engine, 3)
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert '"ok": true' in result.output and '"entries": 3' in result.output
    _tamper(engine, "UPDATE audit_log SET ip = '198.51.100.1' WHERE id = 2")
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "broken at entry 2" in result.output


def test_concurrent_writers_build_one_valid_chain(db_url):
    """Many threads, each on its own connection, auditing at once (orders recorded with their
    per-order entries among them): one chain, every entry in it, verified."""
    engine = make_engine(db_url)
    try:
        with UnitOfWork(engine) as uow:
            make_org(uow)
        threads_n, each = (12, 15) if engine.dialect.name == "postgresql" else (4, 10)
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads_n)

        def work(n: int) -> None:
            from patron.orders.service import record_orders

            barrier.wait()
            try:
                _write(engine, each, who=f"writer-{n}")
                with UnitOfWork(engine) as uow:
                    record_orders(uow=uow, orders_in=[order(f"T{n}-{k}") for k in range(3)],
                                  source="api", actor=SYSTEM)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        report = _verify(engine)
        assert report.ok, report
        with engine.connect() as conn:
            written = conn.execute(select(func.count()).select_from(audit_log).where(
                audit_log.c.action.in_(("test.done", "orders.recorded")))).scalar()
            head = conn.execute(select(audit_chain_head.c.last_id)).scalar()
        assert written == threads_n * (each + 3)
        assert head == report.entries
    finally:
        engine.dispose()
