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


# On PostgreSQL orders, their lines and payments reference their parents through checks run
# once per statement instead of foreign keys (migration 0009, decision 0017); the tables still
# declare the keys, which SQLite keeps.
CHECKED_BY_0009 = {("orders", "fk_orders_customer_id_customers"),
                   ("orders", "fk_orders_channel_id_channels"),
                   ("orders", "fk_orders_store_id_stores"),
                   ("order_lines", "fk_order_lines_order_id_orders"),
                   ("order_payments", "fk_order_payments_order_id_orders")}
CHECKED_BY_0010 = {("identities", "fk_identities_customer_id_customers"),
                   ("customer_figures", "fk_customer_figures_customer_id_customers")}
CHECKED_PER_STATEMENT = CHECKED_BY_0009 | CHECKED_BY_0010


def test_migrated_schema_matches_the_tables(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, metadata)
    if engine.dialect.name == "postgresql":
        missing = {(d[1].table.name, d[1].name) for d in diffs if d[0] == "add_fk"}
        assert missing == CHECKED_PER_STATEMENT
        diffs = [d for d in diffs if d[0] != "add_fk"]
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


def test_0009_checks_the_order_references_per_statement_on_postgresql_and_goes_back(fresh_url):
    """On PostgreSQL 0009 replaces the foreign keys of orders, order lines and payments by
    checks run once per statement (a payment of a missing order and an order of a missing
    customer are still refused), and undoing it brings the foreign keys back; on SQLite it
    changes nothing and the foreign keys stay."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import IntegrityError

    engine = create_engine(fresh_url)
    migrate = _migrator(engine, fresh_url)
    postgres = engine.dialect.name == "postgresql"
    keys_of = {name for _table, name in CHECKED_BY_0009}

    def keys() -> set[str]:
        with engine.connect() as conn:
            found = inspect(conn)
            return {fk["name"] for t in ("orders", "order_lines", "order_payments")
                    for fk in found.get_foreign_keys(t)}

    def orphans_refused() -> None:
        if not postgres:
            return  # SQLite checks foreign keys only with the pragma, which Patron's engine sets
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO order_payments (order_id, method, amount) "
                              "VALUES (424242, 'cash', 100)"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO orders (id, channel_id, scope_store_id, external_id, customer_id, "
                "purchased_at, gross_amount, discount_amount, total_amount, refunded_amount, "
                "line_count, identifiers, content_hash, source, created_at) SELECT 1, id, 0, "
                "'X1', 424242, now(), 0, 0, 0, 0, 0, '[]', 'h', 'api', now() FROM channels "
                "LIMIT 1"))

    try:
        migrate(command.upgrade, "0008")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO channels (code, name, kind, requires_store) "
                              "VALUES ('pos', 'POS', 'store', false)"))
        assert keys_of <= keys()
        migrate(command.upgrade, "0009")
        assert (keys() & keys_of) == (set() if postgres else keys_of)
        orphans_refused()
        migrate(command.downgrade, "0008")
        assert keys_of <= keys()
        orphans_refused()
        migrate(command.upgrade, "0009")
        assert (keys() & keys_of) == (set() if postgres else keys_of)
        orphans_refused()
    finally:
        engine.dispose()


def test_0010_checks_identities_and_figures_per_statement_on_postgresql_and_goes_back(
        fresh_url):
    """On PostgreSQL 0010 replaces the foreign keys of identities and figures to customers by
    checks run once per statement (an identity or a figures row of a missing customer is still
    refused), and undoing it brings the foreign keys back; SQLite keeps them throughout."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import IntegrityError

    engine = create_engine(fresh_url)
    migrate = _migrator(engine, fresh_url)
    postgres = engine.dialect.name == "postgresql"
    keys_of = {name for _table, name in CHECKED_BY_0010}

    def keys() -> set[str]:
        with engine.connect() as conn:
            found = inspect(conn)
            return {fk["name"] for t in ("identities", "customer_figures")
                    for fk in found.get_foreign_keys(t)}

    def orphans_refused() -> None:
        if not postgres:
            return  # SQLite checks foreign keys only with the pragma, which Patron's engine sets
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO customer_figures (customer_id, counters) "
                              "VALUES (424242, '{}')"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO identities (kind, namespace, value, value_index, "
                              "customer_id, created_at) VALUES ('phone', '', 'x', 'i', 424242, "
                              "now())"))

    try:
        migrate(command.upgrade, "0009")
        assert keys_of <= keys()
        orphans_refused()
        migrate(command.upgrade, "0010")
        assert (keys() & keys_of) == (set() if postgres else keys_of)
        orphans_refused()
        migrate(command.downgrade, "0009")
        assert keys_of <= keys()
        orphans_refused()
        migrate(command.upgrade, "head")
        assert (keys() & keys_of) == (set() if postgres else keys_of)
        orphans_refused()
    finally:
        engine.dispose()


def test_0011_keeps_every_stored_score_as_cut_points_and_goes_back(fresh_url):
    """Rows scored at 0010 (quantiles and a dimension whose lowest score nobody has) keep
    their scores and segment after 0011, computed from the scope's cut points; undone, the
    columns are back with the same values; done again."""
    import datetime as dt

    from sqlalchemy import select

    from patron.analytics import rfm_read
    from patron.analytics.model import segment_for
    from patron.db import get_engine

    engine = get_engine(fresh_url)
    migrate = _migrator(engine, fresh_url)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    # (customer, days after t0, orders, fen, r, f, m): f never scores 1 (owner thresholds)
    rows = [(1, 1, 1, 500, 1, 2, 1), (2, 5, 2, 900, 2, 2, 3), (3, 5, 7, 100, 2, 4, 1),
            (4, 9, 9, 2000, 5, 5, 5)]

    def stored() -> list[tuple[int, int, int, int, str]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT customer_id, r_score, f_score, m_score, segment FROM rfm_scores "
                "ORDER BY customer_id"))]

    try:
        migrate(command.upgrade, "0010")
        stamp = "2026-01-01 00:00:00" if engine.dialect.name == "sqlite" else t0
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO rfm_refreshes (scope, as_of, computed_at, customers, changed) "
                "VALUES ('overall', :t, :t, 4, 4)"), {"t": stamp})
            for cid, days, n, fen, r, f, m in rows:
                seg = segment_for(r, f, m)
                conn.execute(text(
                    "INSERT INTO rfm_scores (scope, customer_id, last_order_at, frequency, "
                    "monetary, r_score, f_score, m_score, segment, computed_at) VALUES "
                    "('overall', :c, :at, :n, :fen, :r, :f, :m, :seg, :t)"),
                    {"c": cid, "at": t0 + dt.timedelta(days=days) if stamp == t0
                     else f"2026-01-{1 + days:02d} 00:00:00.000000", "n": n, "fen": fen,
                     "r": r, "f": f, "m": m, "seg": seg, "t": stamp})
        before = stored()
        migrate(command.upgrade, "0011")
        sc = rfm_read.scored()
        with engine.connect() as conn:
            got = [(int(r.customer_id), int(r.r_score), int(r.f_score), int(r.m_score),
                    r.segment) for r in conn.execute(select(sc).order_by(sc.c.customer_id))]
        assert got == before
        migrate(command.downgrade, "0010")
        assert stored() == before
        migrate(command.upgrade, "head")
    finally:
        engine.dispose()


def test_0012_counts_the_transitions_already_recorded_and_goes_back(fresh_url):
    """Transitions recorded at 0011 are counted per day and flow by 0012 (first stages under
    ""), and from then on the triggers keep the counts; undone, the table and triggers go."""
    from patron.db import get_engine

    engine = get_engine(fresh_url)
    migrate = _migrator(engine, fresh_url)
    stamp = "2026-01-01 00:00:00.000000"

    def add(conn, *rows) -> None:
        for cid, from_stage, to_stage, day in rows:
            conn.execute(text(
                "INSERT INTO lifecycle_transitions (customer_id, from_stage, to_stage, "
                "changed_on, recorded_at) VALUES (:c, :f, :t, :d, :at)"),
                {"c": cid, "f": from_stage, "t": to_stage, "d": day, "at": stamp})

    def counts() -> set[tuple[str, str, str, int]]:
        with engine.connect() as conn:
            return {(str(r[0]), r[1], r[2], int(r[3])) for r in conn.execute(text(
                "SELECT changed_on, from_stage, to_stage, customers "
                "FROM lifecycle_flow_counts WHERE customers <> 0"))}

    try:
        migrate(command.upgrade, "0011")
        with engine.begin() as conn:
            add(conn, (1, None, "new", "2026-01-01"), (2, None, "new", "2026-01-01"),
                (3, None, "active", "2026-01-01"), (1, "new", "active", "2026-01-05"))
        migrate(command.upgrade, "0012")
        assert counts() == {("2026-01-01", "", "new", 2), ("2026-01-01", "", "active", 1),
                            ("2026-01-05", "new", "active", 1)}
        with engine.begin() as conn:
            add(conn, (2, "new", "active", "2026-01-05"), (4, None, "new", "2026-01-06"))
            conn.execute(text("DELETE FROM lifecycle_transitions WHERE customer_id = 3"))
        assert counts() == {("2026-01-01", "", "new", 2), ("2026-01-05", "new", "active", 2),
                            ("2026-01-06", "", "new", 1)}
        migrate(command.downgrade, "0011")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM lifecycle_transitions")
                                ).scalar_one() == 5
        migrate(command.upgrade, "head")
        assert counts() == {("2026-01-01", "", "new", 2), ("2026-01-05", "new", "active", 2),
                            ("2026-01-06", "", "new", 1)}
    finally:
        engine.dispose()
