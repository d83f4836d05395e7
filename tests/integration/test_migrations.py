"""The migrations build exactly the schema the tables describe, on both databases."""

import uuid
from collections.abc import Callable, Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

import patron.tables  # noqa: F401
from patron.db import metadata
from patron.migrate import alembic_config


@pytest.fixture
def fresh_url(db_url, tmp_path) -> Iterator[str]:
    """An empty database of the test's kind (a file, or a database created on the test's
    PostgreSQL server and dropped afterwards), for migrating step by step."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    name = f"patron_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(db_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield db_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrator(engine, url: str) -> Callable[..., None]:
    """``migrate(command.upgrade | command.downgrade, revision)`` on the engine's database."""

    def migrate(step, revision: str) -> None:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            step(cfg, revision)

    return migrate


def test_migrated_schema_matches_the_tables(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, metadata)
    assert diffs == []


def test_0006_adds_the_customer_language_to_existing_profiles_and_goes_back(fresh_url):
    """On a fresh database of the test's kind: a profile written at 0005 has no language after
    0006 (the default language), 0006 can be undone, and done again."""
    from sqlalchemy import inspect

    engine = create_engine(fresh_url)
    migrate = _migrator(engine, fresh_url)

    def columns() -> set[str]:
        with engine.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns("customers")}

    try:
        migrate(command.upgrade, "0005")
        assert "language" not in columns()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO customers (id, is_member, custom_fields, created_at, "
                              "updated_at) VALUES (1, false, '{}', :t, :t)"),
                         {"t": "2026-01-01 00:00:00"})
        migrate(command.upgrade, "0006")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT language FROM customers")).all() == [(None,)]
        migrate(command.downgrade, "0005")
        assert "language" not in columns()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 1
        migrate(command.upgrade, "head")
        assert "language" in columns()
    finally:
        engine.dispose()


def test_0008_lets_a_program_deduct_spent_points_from_refunds_and_goes_back(fresh_url):
    """On a fresh database of the test's kind with a program and a member (whose row refers to
    it): 0008 accepts ``deduct_from_refund`` and still refuses an unknown policy; undone, the
    program goes back to ``owe`` and the old constraint is in force again; done again."""
    from sqlalchemy.exc import DataError, IntegrityError

    from patron.db import UnitOfWork, get_engine
    from tests.factories import make_org
    from tests.loyalty_factories import enrol, make_program

    engine = get_engine(fresh_url)
    migrate = _migrator(engine, fresh_url)

    def set_policy(policy: str) -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE loyalty_programs SET clawback_policy = :p"), {"p": policy})

    def policy() -> str:
        with engine.connect() as conn:
            return conn.execute(text("SELECT clawback_policy FROM loyalty_programs")).scalar_one()

    try:
        migrate(command.upgrade, "0007")
        with UnitOfWork(engine) as uow:
            make_org(uow)
            make_program(uow)
            enrol(uow)
        # PostgreSQL refuses the longer value for the column's length before the constraint.
        with pytest.raises((IntegrityError, DataError)):
            set_policy("deduct_from_refund")
        migrate(command.upgrade, "0008")
        set_policy("deduct_from_refund")
        assert policy() == "deduct_from_refund"
        with pytest.raises(IntegrityError):
            set_policy("keep_the_points")
        with engine.connect() as conn:  # the member still refers to its program
            assert conn.execute(text("SELECT count(*) FROM loyalty_members JOIN "
                                     "loyalty_programs ON loyalty_programs.id = "
                                     "loyalty_members.program_id")).scalar_one() == 1
        migrate(command.downgrade, "0007")
        assert policy() == "owe"
        with pytest.raises((IntegrityError, DataError)):
            set_policy("deduct_from_refund")
        migrate(command.upgrade, "head")
        set_policy("deduct_from_refund")
        assert policy() == "deduct_from_refund"
    finally:
        engine.dispose()
