"""The audience replica (patron.segments.replica) selects exactly the customers the primary
database selects, for every condition of the compile tests and nested groups of them, with and
without a store scope, copied from SQLite and from PostgreSQL; it holds no encrypted personal
data; and the live count uses it only while it is fresh."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patron.db import UnitOfWork
from patron.security.model import SYSTEM, Actor
from patron.segments import replica, service
from tests.integration.test_segment_compile import CONDITIONS, _tree
from tests.segment_factories import AS_OF, World, generate

DAY = dt.timedelta(days=1)


@pytest.fixture
def world(engine) -> World:  # type: ignore[no-untyped-def]
    with UnitOfWork(engine) as uow:
        return generate(uow, count=90)


@pytest.fixture
def synced(engine, world: World, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / replica.FILE_NAME
    result = replica.sync(engine, path=path)
    assert result.rows["customers"] == len(world.customers)
    return path


def _primary(engine, definition, scope: Actor = SYSTEM) -> set[int]:  # type: ignore[no-untyped-def]
    with UnitOfWork(engine, readonly=True) as uow:
        d = service.validate(definition, uow.c)
        return {int(r.customer_id) for r in uow.c.execute(
            service.member_ids_select(d, scope=scope, as_of=AS_OF))}


def _replica(path: Path, definition, scope: Actor = SYSTEM) -> set[int]:  # type: ignore[no-untyped-def]
    got = replica.count_and_ids(definition, scope=scope, as_of=AS_OF, limit=10**6,
                                max_age=DAY, path=path)
    assert got is not None, definition  # the replica answered: no fallback hides a miss
    assert got.count == len(got.ids)
    return set(got.ids)


def test_each_condition_selects_the_same_customers_as_the_database(engine, synced) -> None:
    wrong = []
    for cond in CONDITIONS:
        definition = {"match": "all", "conditions": [cond]}
        want, got = _primary(engine, definition), _replica(synced, definition)
        if got != want:
            wrong.append((cond, sorted(got - want), sorted(want - got)))
    assert not wrong, wrong


def test_nested_groups_select_the_same_customers(engine, synced) -> None:
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(match=st.sampled_from(["all", "any"]),
           kids=st.lists(_tree(2), min_size=1, max_size=4))
    def check(match: str, kids: list[dict]) -> None:
        definition = {"match": match, "conditions": kids}
        assert _replica(synced, definition) == _primary(engine, definition), definition

    check()


def test_store_scope_and_empty_definition(engine, world: World, synced) -> None:
    manager = Actor(type="user", id=5, name="mgr", role="manager",
                    store_ids=frozenset({world.store_ids["BJ01"]}))
    nobody = Actor(type="user", id=6, name="x", role="manager", store_ids=frozenset())
    for definition in ({"conditions": []},
                       {"conditions": [{"type": "purchases", "measure": "orders", "op": "gte",
                                        "value": 1}]}):
        for scope in (SYSTEM, manager, nobody):
            assert _replica(synced, definition, scope) == _primary(engine, definition, scope)
    assert _replica(synced, {"conditions": []}, manager)


def test_no_encrypted_personal_data_is_copied(engine, world: World, synced) -> None:
    con = duckdb.connect(str(synced), read_only=True)
    try:
        types = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'customers'").fetchall())
        for name in ("name", "phone", "email", "birthday"):
            assert types[name] == "BOOLEAN"
        with_phone = sum(1 for c in world.customers if c.phone)
        assert con.execute("SELECT count(*) FROM customers WHERE phone").fetchone()[0] \
            == with_phone
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        assert tables == {*replica.TABLES, "replica_meta"}
        assert "value" not in {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'identities'").fetchall()}
    finally:
        con.close()


def test_the_live_count_uses_a_fresh_replica_and_the_database_otherwise(
        engine, world: World, tmp_path: Path, monkeypatch) -> None:
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    definition = {"conditions": [{"type": "purchases", "measure": "orders", "op": "gte",
                                  "value": 2}]}
    want = _primary(engine, definition)
    try:
        with UnitOfWork(engine, readonly=True) as uow:
            before = service.preview(uow.c, actor=SYSTEM, definition=definition, limit=5)
        assert before["counted_on"] == "database" and before["as_of"] is None
        assert before["count"] == len(want)
        result = replica.sync(engine)
        assert result.path == tmp_path / replica.FILE_NAME
        with UnitOfWork(engine, readonly=True) as uow:
            now = service.preview(uow.c, actor=SYSTEM, definition=definition, limit=5)
        assert now["counted_on"] == "replica" and now["as_of"] == result.as_of
        assert now["count"] == len(want)
        assert [r["id"] for r in now["sample"]] == sorted(want, reverse=True)[:5]
        assert all("*" in (r["phone"] or "*") for r in now["sample"])  # masked
        # too old: the database counts again
        monkeypatch.setenv("PATRON_AUDIENCE_REPLICA_MAX_AGE_MINUTES", "0")
        get_settings.cache_clear()
        with UnitOfWork(engine, readonly=True) as uow:
            off = service.preview(uow.c, actor=SYSTEM, definition=definition, limit=5)
        assert off["counted_on"] == "database" and off["count"] == len(want)
        assert replica.count_and_ids(definition, scope=SYSTEM, max_age=dt.timedelta(0),
                                     now=result.as_of + dt.timedelta(seconds=1)) is None
        # a copy of another database is never counted on
        assert replica.count_and_ids(definition, scope=SYSTEM, max_age=DAY,
                                     source=engine.url) is not None
        assert replica.count_and_ids(definition, scope=SYSTEM, max_age=DAY,
                                     source="sqlite:///elsewhere.sqlite3") is None
    finally:
        get_settings.cache_clear()
        replica.reset_readers()


def test_a_new_sync_replaces_the_copy_readers_see(engine, world: World, synced) -> None:
    from sqlalchemy import delete

    from patron.tags.tables import customer_tags

    definition = {"conditions": [{"type": "tag", "op": "has_any", "tags": ["vip"]}]}
    before = _replica(synced, definition)
    assert before
    with UnitOfWork(engine) as uow:
        uow.c.execute(delete(customer_tags))
        uow.commit()
    assert _replica(synced, definition) == before  # the copy is a moment, until synced again
    replica.sync(engine, path=synced)
    assert _replica(synced, definition) == set()
    assert not list(synced.parent.glob("audience-*"))  # the staging directory is gone


def test_the_cli_syncs_the_replica_into_the_data_dir(engine, world: World, tmp_path: Path,
                                                     monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from patron.cli import app
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["segments", "sync-replica", "--quiet"])
        assert out.exit_code == 0, out.output
        summary = json.loads(out.stdout)
        assert summary["path"] == str(tmp_path / replica.FILE_NAME)
        assert summary["rows"]["customers"] == len(world.customers)
        assert summary["seconds"] > 0
        assert replica.as_of(tmp_path / replica.FILE_NAME) is not None
    finally:
        get_settings.cache_clear()
        replica.reset_readers()


def test_the_copy_does_not_hold_up_writers(engine, world: World) -> None:
    from sqlalchemy import select, update

    from patron.customers.tables import customers

    with replica._snapshot(engine) as conn:
        before = conn.execute(select(customers.c.gender).where(customers.c.id == 1)).scalar()
        with UnitOfWork(engine) as uow:  # SQLite: no write lock is held by the copy
            uow.c.execute(update(customers).where(customers.c.id == 1).values(gender="U"))
            uow.commit()
        # the copy still reads the moment it began
        assert conn.execute(select(customers.c.gender).where(customers.c.id == 1)
                            ).scalar() == before


def test_the_refresher_syncs_only_when_due(engine, world: World, tmp_path: Path) -> None:
    path = tmp_path / replica.FILE_NAME
    first = replica.refresh_due(engine, interval=600, path=path)
    assert first is not None and path.exists()
    assert replica.refresh_due(engine, interval=600, path=path) is None  # fresh enough
    again = replica.refresh_due(engine, interval=0.001, path=path)
    assert again is not None and again.as_of > first.as_of
    replica.reset_readers()


def test_a_sync_removes_staging_left_by_a_killed_one(engine, world: World,
                                                      tmp_path: Path) -> None:
    # A sync killed mid-copy leaves its staging directory (with a partial copy) behind; the
    # next sync, holding the lock, knows nobody else is staging and removes it.
    path = tmp_path / replica.FILE_NAME
    stale = tmp_path / f"{replica.STAGING_PREFIX}killed"
    stale.mkdir()
    (stale / replica.FILE_NAME).write_bytes(b"\0" * 4096)
    unrelated = tmp_path / "audience-notes.txt"  # a file, not a staging directory
    unrelated.write_text("kept")
    replica.sync(engine, path=path)
    assert not stale.exists()
    assert unrelated.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
    replica.reset_readers()


def test_syncs_of_one_data_dir_take_turns(engine, world: World, tmp_path: Path) -> None:
    # The CLI's sync and each server process's refresher share one lock: while another
    # process syncs, the refresher skips its round and the CLI waits for its turn.
    import fcntl
    import threading

    path = tmp_path / replica.FILE_NAME
    with (tmp_path / f"{replica.FILE_NAME}.lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert replica.refresh_due(engine, interval=0.001, path=path) is None
        done = threading.Event()
        waiting = threading.Thread(target=lambda: (replica.sync(engine, path=path),
                                                   done.set()))
        waiting.start()
        assert not done.wait(1.0)  # waits for the lock, copies nothing meanwhile
        assert not path.exists()
        fcntl.flock(other, fcntl.LOCK_UN)
    waiting.join(60)
    assert done.is_set() and path.exists()
    replica.reset_readers()


def test_duckdb_runs_within_the_configured_limits(engine, world: World, synced: Path,
                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_AUDIENCE_REPLICA_MEMORY_MB", "256")
    monkeypatch.setenv("PATRON_AUDIENCE_REPLICA_THREADS", "1")
    get_settings.cache_clear()
    try:
        replica.reset_readers()
        reader = replica._reader(synced)
        assert reader is not None
        limit, threads = reader.query(
            "SELECT current_setting('memory_limit'), current_setting('threads')", [])[0]
        assert int(threads) == 1
        assert limit.replace(" ", "").upper() in {"256.0MIB", "256MIB", "244.1MIB", "268.4MB",
                                                  "256.0MB"}, limit
    finally:
        get_settings.cache_clear()
        replica.reset_readers()
