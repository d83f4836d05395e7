"""Engine, column types and the unit of work.

All writes go through :class:`UnitOfWork`, which owns the transaction: ``with uow: ...;
uow.commit()``; leaving the block without committing rolls back. On SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` so that there is exactly one writer at a time and a
check-then-write cannot race; on PostgreSQL services lock rows with ``SELECT ... FOR UPDATE`` in
key order.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# Integer primary keys: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
IdType = BigInteger().with_variant(Integer(), "sqlite")

FEN = Decimal("0.01")
MILLI = Decimal("0.001")


class Money(TypeDecorator[Decimal]):
    """Yuan as an exact ``Decimal`` in Python, integer fen in the database.

    Integer fen keep sums exact on SQLite, whose NUMERIC is a float, and make bulk writes cheap.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * 100).to_integral_value(rounding=ROUND_HALF_UP))

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(int(value)) / 100).quantize(FEN)


class Quantity(TypeDecorator[Decimal]):
    """Quantities (pieces or kilograms) as ``Decimal``, stored as integer thousandths."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * 1000).to_integral_value(rounding=ROUND_HALF_UP))

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(int(value)) / 1000).quantize(MILLI).normalize()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware datetimes, stored in UTC; naive values are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: Patron stores timezone-aware UTC times")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSON(none_as_null=True), "postgresql")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-65536")
        # Checkpoint when the WAL passes 16,384 pages (64 MB) instead of SQLite's 1,000: a
        # 2,000-order import chunk dirties about 5,000 pages (figures rows, index leaves), and
        # with the default every chunk's commit copied all of them back into the database
        # file; with a longer WAL a page dirtied by several commits in a row is copied once.
        # Durability is the WAL's as before (synchronous=NORMAL: a committed transaction
        # survives a crash of the process, the last ones may be lost on power loss, the
        # database is never left inconsistent). The WAL file keeps its largest size between
        # checkpoints; journal_size_limit truncates it back to 64 MB after a longer one.
        cur.execute("PRAGMA wal_autocheckpoint=16384")
        cur.execute("PRAGMA journal_size_limit=67108864")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        checkpointer = WalCheckpointer(database)

        @event.listens_for(engine, "commit")
        def _on_commit(_conn: Connection) -> None:
            checkpointer.poke()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("patron_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class WalCheckpointer:
    """Copies a SQLite database's WAL back into the database file in a thread of its own while
    commits come, so that the writer does not: with only the automatic checkpoint, the commit
    that takes the WAL past the mark copies every page in it (and syncs twice) before it
    returns, and an import chunk that dirties thousands of pages paid for that on its own time.
    SQLite's documentation on WAL mentions checkpoints run in a separate thread; the automatic
    checkpoint stays on as a backstop, so a writer still checkpoints when this thread falls
    behind, and then finds little left to copy.

    A ``PASSIVE`` checkpoint waits for nobody and blocks nobody: readers and the writer go on,
    it copies what no reader still needs. It changes nothing of durability: a committed
    transaction is in the WAL before its commit returns; a checkpoint only moves it. Each
    commit pokes the engine's checkpointer; its thread checkpoints every ``PERIOD`` seconds and
    ends after ``IDLE_ROUNDS`` of them without a commit (the last ones catch the commit that
    poked last: the event comes before the commit lands). It opens a connection per checkpoint
    and never creates the file, so an idle engine holds no thread and no file (decision 0018)."""

    PERIOD = 0.1
    IDLE_ROUNDS = 3

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock = threading.Lock()
        self._pending = False
        self._running = False
        self._pid = os.getpid()

    def poke(self) -> None:
        with self._lock:
            self._pending = True
            if self._pid != os.getpid():  # a forked worker: the parent's thread is not here
                self._pid, self._running = os.getpid(), False
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="patron-wal-checkpoint", daemon=True).start()

    def _run(self) -> None:
        idle = 0
        try:
            while True:
                time.sleep(self.PERIOD)
                self.checkpoint()
                with self._lock:
                    if self._pending:
                        self._pending, idle = False, 0
                        continue
                    idle += 1
                    if idle >= self.IDLE_ROUNDS:
                        self._running = False
                        return
        except BaseException:
            with self._lock:
                self._running = False
            raise

    def checkpoint(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{quote(self.path)}?mode=rw", uri=True, timeout=0,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the file is gone (a throw-away database)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # busy: another checkpoint is running; a later commit tries again
        finally:
            conn.close()


_engines: dict[str, Engine] = {}


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _install_sqlite_hooks(engine)
    else:
        # No pre-ping: it costs a round trip per checkout on the hot path; a connection that
        # died is invalidated on its first error and replaced.
        engine = create_engine(url, pool_size=20, max_overflow=20, pool_recycle=3600)
    from patron.security.audit import _install

    _install(engine)  # the audit chain's commit hook, before any thread uses the engine
    return engine


def get_engine(url: str | None = None) -> Engine:
    from patron.config import get_settings

    url = url or get_settings().effective_database_url
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


class UnitOfWork:
    """One database transaction. Services receive it and are the only ones to commit."""

    def __init__(self, engine: Engine, *, readonly: bool = False) -> None:
        self.engine = engine
        self.readonly = readonly
        self.conn: Connection | None = None
        self._committed = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __enter__(self) -> UnitOfWork:
        conn = self.engine.connect()
        if self.readonly:
            conn = conn.execution_options(patron_readonly=True)
        self.conn = conn  # the first statement begins the transaction (autobegin)
        self._committed = False
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.conn is not None
        try:
            if self.conn.in_transaction():
                self.conn.rollback()
        finally:
            self.conn.close()
            self.conn = None

    def commit(self) -> None:
        assert self.conn is not None, "commit outside of 'with uow'"
        self.conn.commit()
        self._committed = True

    def rollback(self) -> None:
        assert self.conn is not None
        self.conn.rollback()

    @property
    def c(self) -> Connection:
        assert self.conn is not None, "use the unit of work inside 'with uow'"
        return self.conn


def upsert(conn: Connection, table: Any) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support, for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def allocate_ids(conn: Connection, table: Any, count: int) -> list[int]:
    """Reserve ``count`` primary keys so that rows and the rows referring to them can be written
    in bulk. On PostgreSQL from the table's sequence; on SQLite from max(id) under the write
    lock that ``BEGIN IMMEDIATE`` holds, so call it once per table per transaction."""
    return allocate_ids_many(conn, [(table, count)])[0]


def allocate_ids_many(conn: Connection, wanted: list[tuple[Any, int]]) -> list[list[int]]:
    """:func:`allocate_ids` for several tables, in one round trip on PostgreSQL."""
    from sqlalchemy import func, select

    out: list[list[int]] = [[] for _ in wanted]
    asked = [(i, table, count) for i, (table, count) in enumerate(wanted) if count > 0]
    if not asked:
        return out
    if conn.dialect.name == "postgresql":
        # The sequence is looked up once per table, not once per id: without OFFSET 0 the
        # planner flattens the subquery and calls pg_get_serial_sequence (a catalog lookup)
        # for every id (2,000 ids: about 9 ms against 4).
        parts, params = [], {}
        for i, table, count in asked:
            parts.append(f"SELECT {i} AS k, nextval(s.seq) AS id FROM (SELECT CAST("  # noqa: S608
                         f"pg_get_serial_sequence(:t{i}, 'id') AS regclass) AS seq OFFSET 0) "
                         f"AS s, generate_series(1, :n{i})")
            params[f"t{i}"], params[f"n{i}"] = table.name, count
        for k, new_id in conn.execute(cached_text(" UNION ALL ".join(parts)), params):
            out[int(k)].append(int(new_id))
        return out
    for i, table, count in asked:
        start = int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())
        out[i] = list(range(start + 1, start + 1 + count))
    return out


def bulk_insert(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: ``COPY`` on PostgreSQL, the driver's ``executemany`` on SQLite.

    Values go through each column's type (Money to fen, JSON to text) exactly as an ``INSERT``
    would bind them, but without SQLAlchemy's per-row parameter handling, which cost more than
    the inserts themselves. Columns missing from the first row take their defaults.
    """
    if not rows:
        return
    columns = [c for c in table.columns if c.name in rows[0]]
    dialect = conn.dialect
    processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    names = [c.name for c in columns]
    quoted = ", ".join(f'"{n}"' for n in names)

    def values(row: dict[str, Any]) -> list[Any]:
        return [p(row.get(n)) if p else row.get(n) for n, p in zip(names, processors,
                                                                     strict=True)]

    _begin(conn)
    dbapi_conn = conn.connection.driver_connection
    if dialect.name != "postgresql":
        # Table and column names come from Patron's own metadata, never from input.
        placeholders = ", ".join("?" * len(names))
        sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({placeholders})'  # noqa: S608
        sqlite_executemany(conn, sql, [values(r) for r in rows])
        return
    import psycopg
    from sqlalchemy.exc import DBAPIError

    sql = f'COPY "{table.name}" ({quoted}) FROM STDIN'
    try:
        with dbapi_conn.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(values(row))
    except psycopg.Error as exc:
        # Raise what an INSERT would have raised (IntegrityError on a duplicate key), so that
        # callers retry a chunk the same way whichever path wrote it.
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


@dataclass(frozen=True, slots=True)
class PreparedRows:
    """Rows of ``table`` already in the form the driver receives, one tuple per row in
    ``columns`` order: what each column type's bind processor would have made of the values
    (Money and Quantity as integers, JSON as its text, times as :func:`driver_datetime` gives
    them). Hot paths build these directly; building dicts and running every value through
    SQLAlchemy's processors cost more than the inserts themselves."""

    table: Any
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def driver_datetime(dialect: Any) -> Callable[[dt.datetime], Any]:
    """A function giving an aware datetime in the form :class:`UTCDateTime` binds it on this
    dialect: a UTC ``datetime`` on PostgreSQL, SQLite's ``YYYY-MM-DD HH:MM:SS.ffffff`` text
    in UTC on SQLite (SQLAlchemy's own storage format)."""
    if dialect.name == "sqlite":
        def sqlite_text(value: dt.datetime) -> str:
            if value.tzinfo is None:
                raise ValueError("naive datetime refused: Patron stores timezone-aware UTC times")
            return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return sqlite_text

    def utc(value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: Patron stores timezone-aware UTC times")
        return value.astimezone(dt.UTC)
    return utc


def prepare_rows(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> PreparedRows:
    """Dict rows through each column's bind processor (columns missing from the first row take
    their defaults); JSON as text on every dialect."""
    dialect = conn.dialect
    columns = [c for c in table.columns if c.name in rows[0]] if rows else []
    names = tuple(c.name for c in columns)
    processors = [column_binder(c, dialect) for c in columns]
    pairs = list(zip(names, processors, strict=True))
    return PreparedRows(table, names, [
        tuple([p(row.get(n)) if p else row.get(n) for n, p in pairs]) for row in rows])


def column_binder(column: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """What :class:`PreparedRows` hold for ``column``: the column type's bind processor, or an
    equal shortcut for Patron's own types (going through SQLAlchemy's chain of processors per
    value cost more than the insert); a plain JSON column as its text on every dialect. Any
    other type (a TypeDecorator of another area, say) binds through its own processor."""
    if isinstance(column.type, JSON):
        return _json_text
    kind = type(column.type)
    if kind is UTCDateTime:
        when = driver_datetime(dialect)
        return lambda value: None if value is None else when(value)
    if kind is Money or kind is Quantity:
        return functools.partial(kind.process_bind_param, column.type, dialect=dialect)
    return column.type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


# Up to this many rows in all, bulk_insert_many sends one JSON statement on PostgreSQL; above
# it, one COPY per table (measured: JSON wins for API groups, COPY for 2,000-order chunks).
JSON_INSERT_ROWS = 1000


def bulk_insert_many(conn: Connection,
                     batches: list[tuple[Any, list[dict[str, Any]]] | PreparedRows]) -> None:
    """Insert the rows of several tables in one round trip on PostgreSQL: one statement whose
    data-modifying ``WITH`` parts each insert one table's rows from a JSON parameter (foreign
    keys between them are checked at the end of the statement, so parents and children may
    come together). On SQLite, which has no round trips, the driver's ``executemany`` per table.

    A batch is ``(table, dict rows)``, bound exactly as :func:`bulk_insert` binds them, or
    :class:`PreparedRows` already in the driver's form. For the small groups of the
    single-order API one statement replaces one ``COPY`` per table (each a few round trips);
    above ``JSON_INSERT_ROWS`` rows the tables are copied one by one.
    """
    prepared = [b if isinstance(b, PreparedRows) else prepare_rows(conn, b[0], b[1])
                for b in batches if (b.rows if isinstance(b, PreparedRows) else b[1])]
    if not prepared:
        return
    if conn.dialect.name != "postgresql":
        for batch in prepared:
            # Table and column names come from Patron's own metadata, never from input.
            quoted = ", ".join(f'"{n}"' for n in batch.columns)
            placeholders = ", ".join("?" * len(batch.columns))
            sqlite_executemany(conn, f'INSERT INTO "{batch.table.name}" ({quoted}) '  # noqa: S608
                                     f"VALUES ({placeholders})", batch.rows)
        return
    if sum(len(b.rows) for b in prepared) > JSON_INSERT_ROWS:
        # Large chunks (file imports): COPY moves rows faster than the server parses JSON.
        for batch in prepared:
            _copy_rows(conn, batch)
        return
    parts: list[str] = []
    params: dict[str, str] = {}
    for i, batch in enumerate(prepared):
        sql, payload = _json_insert(conn, batch)
        parts.append(sql.replace(":rows", f":j{i}"))
        params[f"j{i}"] = payload
    head = ", ".join(f"i{i} AS ({p})" for i, p in enumerate(parts[:-1]))
    statement = (f"WITH {head} {parts[-1]}" if head else parts[-1])
    conn.execute(cached_text(statement), params)


@functools.lru_cache(maxsize=256)
def cached_text(statement: str) -> Any:
    """``text(statement)``, built once per distinct statement: a ``TextClause`` parses its
    parameters with a regular expression when built, on every call of a hot path otherwise."""
    from sqlalchemy import text

    return text(statement)


def _copy_rows(conn: Connection, batch: PreparedRows) -> None:
    import psycopg
    from sqlalchemy.exc import DBAPIError

    _begin(conn)
    quoted = ", ".join(f'"{n}"' for n in batch.columns)
    sql = f'COPY "{batch.table.name}" ({quoted}) FROM STDIN'
    dbapi_conn = conn.connection.driver_connection
    try:
        with dbapi_conn.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            write = copy.write_row
            for row in batch.rows:
                write(row)
    except psycopg.Error as exc:
        # Raise what an INSERT would have raised (IntegrityError on a duplicate key), so that
        # callers retry a chunk the same way whichever path wrote it.
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


def json_insert(conn: Connection, batch: PreparedRows) -> tuple[str, str]:
    """PostgreSQL: an ``INSERT`` of the batch's rows from the JSON parameter ``:rows``, and that
    parameter's value (a statement whose text is the same for any number of rows)."""
    return _json_insert(conn, batch)


def _json_insert(conn: Connection, batch: PreparedRows) -> tuple[str, str]:
    sql = _json_insert_sql(conn.dialect, batch.table, tuple(batch.columns))
    payload = json.dumps(batch.rows, default=_json_value, ensure_ascii=False)
    return sql, payload


@functools.lru_cache(maxsize=256)
def _json_insert_sql(dialect: Any, table: Any, column_names: tuple[str, ...]) -> str:
    """The statement's text depends only on the table and columns: compiled once (the column
    types' compilation cost more CPU than the insert's round trip on the API's small groups)."""
    columns = [table.c[n] for n in column_names]
    selects = []
    for j, c in enumerate(columns):
        sql_type = c.type.compile(dialect=dialect)
        if sql_type.startswith("VARCHAR") or sql_type == "TEXT":
            selects.append(f"e->>{j}")
        else:
            selects.append(f"CAST(e->>{j} AS {sql_type})")
    quoted = ", ".join(f'"{n}"' for n in column_names)
    # Table and column names and types come from Patron's own metadata, never from input.
    return (f'INSERT INTO "{table.name}" ({quoted}) SELECT {", ".join(selects)} '  # noqa: S608
            "FROM json_array_elements(CAST(:rows AS json)) AS e")


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _begin(conn: Connection) -> None:
    """Statements sent through the driver's own connection do not begin SQLAlchemy's
    transaction; without one, the unit of work's commit would do nothing and the rows would be
    rolled back when the connection goes back to the pool."""
    if not conn.in_transaction():
        conn.begin()


def sqlite_executemany(conn: Connection, sql: str, rows: list[Any]) -> None:
    """The sqlite3 driver's executemany with ready values, errors raised as SQLAlchemy's."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    _begin(conn)

    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(sql, rows)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    finally:
        cur.close()


def sqlite_fetchall(conn: Connection, sql: str, params: Any) -> list[tuple[Any, ...]]:
    """The sqlite3 driver's rows as plain tuples, for hot paths reading many rows whose values
    need none of SQLAlchemy's result processing; errors raised as SQLAlchemy's."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    _begin(conn)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return cur.fetchall()  # type: ignore[no-any-return]
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    finally:
        cur.close()
