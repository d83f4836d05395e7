"""Test databases: every integration test runs on SQLite and on the real PostgreSQL.

SQLite: a migrated template file is copied per test. PostgreSQL: one database per test session
(``patron_test_<random>`` on 127.0.0.1:5432), migrated once, truncated between tests. Set
``PATRON_TEST_POSTGRES_URL`` to use another server; set it to ``skip`` to run SQLite only.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

# Cheap password hashing in tests (set before patron.security.service builds its hasher).
os.environ.setdefault("PATRON_ARGON2_TIME_COST", "1")
os.environ.setdefault("PATRON_ARGON2_MEMORY_KIB", "1024")
# Tests deliver webhooks explicitly (deliver_due), not from a server thread.
os.environ.setdefault("PATRON_WEBHOOKS_WORKER", "0")
# Tests send messages explicitly (deliver_due), not from a server thread.
os.environ.setdefault("PATRON_MESSAGES_WORKER", "0")
# Tests run automations explicitly (run_due), not from a server thread.
os.environ.setdefault("PATRON_AUTOMATIONS_WORKER", "0")
# Tests run analytics refreshes explicitly, not from a nightly scheduler thread.
os.environ.setdefault("PATRON_ANALYTICS_REFRESH_AT", "off")
# nor copy the audience replica in the background (tests sync it when they need it)
os.environ.setdefault("PATRON_AUDIENCE_REPLICA_REFRESH_MINUTES", "0")
# Fixed test keys (docs/data-protection.md#keys): no test generates development keys on disk.
os.environ.setdefault("PATRON_DATA_KEYS", "t1:Y7YvJ4Sg0n8nV0gMmd3cNq3bJ1JY5jJqk9mX3e0mQ4A")
os.environ.setdefault("PATRON_INDEX_KEY", "2p3dDq5V4Jq8kQ9b7yVw6o0Yxg1rJ1m6vT2lZ8cH0sE")
os.environ.setdefault("PATRON_BACKUP_KEYS", "tb1:qE3wO7p2kX9zL4mN8bV1cR6tY0uI5oP3aS7dF2gH9jK")

from patron import migrate
from patron.db import UnitOfWork, dispose_engines, get_engine, metadata
from patron.org.service import clear_reference_cache, ensure_default_channels

# No per-example deadline: it is a timing assertion, and on a shared 2-core machine running the
# suite in two workers an example that takes 200 ms says nothing about the code. Hypothesis
# still reports examples that are slow, and every property keeps its own example count.
hypothesis_settings.register_profile("patron", deadline=None)
hypothesis_settings.load_profile("patron")

# The security figures printed at the end of a run (issue 6, section 7).
pytest_plugins = ["tests.security_figures"]

PG_ADMIN_URL = os.environ.get("PATRON_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    dispose_engines()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if PG_ADMIN_URL == "skip":
        pytest.skip("PostgreSQL disabled by PATRON_TEST_POSTGRES_URL=skip")
    name = f"patron_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_postgres(url: str) -> None:
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path,
           sqlite_template: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "patron.sqlite3"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
        _truncate_postgres(url)
    os.environ["PATRON_DATABASE_URL"] = url
    clear_reference_cache()  # the PostgreSQL URL is reused by every test
    from patron.config import get_settings

    get_settings.cache_clear()
    with UnitOfWork(get_engine(url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
    yield url
    if request.param == "sqlite":
        get_engine(url).dispose()
    os.environ.pop("PATRON_DATABASE_URL", None)
    get_settings.cache_clear()


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    return get_engine(db_url)


@pytest.fixture
def uow(engine):  # type: ignore[no-untyped-def]
    with UnitOfWork(engine) as u:
        yield u
