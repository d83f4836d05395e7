"""The audience replica: a DuckDB copy of what segment conditions read, for the builder's live
count and sample while a definition is being edited (docs/segments.md#the-audience-replica,
docs/decisions/0014-duckdb-audience-replica.md).

The primary database cannot count an arbitrary definition over a million customers in half a
second on a small machine (docs/benchmarks.md); a column store can. :func:`sync` copies exactly
the columns :mod:`patron.segments.compile` reads (for encrypted personal data only whether it
is present, and the blind indexes and ``birth_md`` the compiler already uses: never a
ciphertext) into ``<data dir>/audience.duckdb``, written to a temporary file and renamed over
the old one, so a reader sees the old copy or the new one, never half of one. The copy is read
in one transaction (a consistent snapshot); its ``as_of`` is the moment that transaction began.

:func:`count_and_ids` evaluates a definition there: the same compiled statement
(:func:`patron.segments.compile.member_ids_select`), rendered by a PostgreSQL-like dialect named
``duckdb`` (the JSON accessors and ``json_array_has`` rendered for DuckDB). It answers None
when the replica cannot be used (missing, older than allowed, of another format, or the
statement fails there); the caller then counts in the primary database. Saving, exports,
snapshots, automations and campaigns never read the replica.
"""

# Every statement here is built from this module's table and column names and constants.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select
from sqlalchemy.dialects.postgresql.base import PGCompiler, PGDialect, PGTypeCompiler

log = logging.getLogger("patron.segments.replica")

FILE_NAME = "audience.duckdb"
# Bumped whenever the copied tables or columns change: a replica of another format is ignored.
FORMAT = 5
BATCH_ROWS = 100_000

# The tables and columns the segment compiler reads (patron.segments.compile, the store-scope
# clause patron.customers.queries.visible_clause and privacy.service.personalisation_opted_out).
TABLES: dict[str, tuple[str, ...]] = {
    "customers": ("id", "merged_into_id", "registration_store_id", "registration_channel_id",
                  "member_code", "gender", "language", "is_member", "created_at",
                  "custom_fields", "birth_md", "name_index", "surname_index",
                  "name", "phone", "email", "birthday"),
    "customer_figures": ("customer_id", "order_count", "net_spend", "last_order_at",
                         "counters"),
    "orders": ("id", "customer_id", "purchased_at", "store_id", "channel_id", "total_amount",
               "refunded_amount"),
    "order_lines": ("order_id", "category", "sku", "quantity", "returned_quantity"),
    "identities": ("customer_id", "kind", "value_index"),
    # scores computed from each scope's cut points (patron.analytics.rfm_read)
    "rfm_scores": ("scope", "customer_id", "last_order_at", "frequency", "monetary"),
    "rfm_refreshes": ("scope", *(f"{d}_cut{level}" for d in "rfm" for level in (2, 3, 4, 5))),
    "lifecycle_stages": ("customer_id", "stage"),
    "customer_predictions": ("customer_id", "probability_alive", "clv_12m"),
    "customer_churn_scores": ("customer_id", "probability"),
    "loyalty_programs": ("id", "code"),
    "loyalty_tiers": ("id", "program_id", "code"),
    "loyalty_members": ("id", "customer_id", "program_id", "status", "tier_id",
                        "points_available"),
    "loyalty_consents": ("id", "member_id", "kind", "granted"),
    "sv_accounts": ("member_id", "principal", "bonus"),
    "tags": ("id", "code"),
    "customer_tags": ("customer_id", "tag_id"),
    "stores": ("id", "code", "region_id", "brand_id"),
    "regions": ("id", "code"),
    "brands": ("id", "code"),
    "channels": ("id", "code"),
    "privacy_consents": ("id", "customer_id", "purpose", "granted"),
}
# What is copied of a column when not the column itself: of the running counters only the
# orders per local hour (the hour-slot condition), which the replica keeps as one integer
# column per hour (customer_figures.hour_00 ... hour_23: no JSON parsed while counting).
SOURCE_SQL: dict[tuple[str, str], dict[str, str]] = {
    ("customer_figures", "counters"): {"postgresql": "CAST(counters -> 'hour' AS TEXT)",
                                       "sqlite": "json_extract(counters, '$.hour')"}}
HOURS = tuple(f"{h:02d}" for h in range(24))
# Encrypted columns: the replica holds only whether a value is there (true, or NULL), which is
# all the compiler asks of them (is set / is not set).
PRESENCE: dict[str, frozenset[str]] = {
    "customers": frozenset({"name", "phone", "email", "birthday"})}


@dataclass(frozen=True)
class SyncResult:
    path: Path
    as_of: dt.datetime
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "as_of": self.as_of.isoformat(),
                "seconds": round(self.seconds, 3), "rows": self.rows}


# --- the dialect the replica's statements are rendered in ------------------------------------

class _DuckTypeCompiler(PGTypeCompiler):
    def visit_FLOAT(self, type_: Any, **kw: Any) -> str:  # noqa: N802 - SQLAlchemy's name
        # PostgreSQL's FLOAT is double precision; DuckDB's is single
        return "DOUBLE"


class CannotAnswer(Exception):
    """The statement uses something the replica cannot render; count in the primary."""


def _json_path(elements: Any) -> str:
    """A DuckDB JSONPath literal for a key or a path of keys and indexes."""
    parts = ["$"]
    for e in elements if isinstance(elements, list | tuple) else [elements]:
        if isinstance(e, int):
            parts.append(f"[{int(e)}]")
            continue
        text = str(e)
        if '"' in text or "\\" in text:
            raise CannotAnswer(f"JSON key {text!r}")
        parts.append(f'."{text}"')
    return "'" + "".join(parts).replace("'", "''") + "'"


class _DuckCompiler(PGCompiler):
    """PostgreSQL's SQL, but JSON values read with DuckDB's functions."""

    def _json(self, binary: Any, text: bool, **kw: Any) -> str:
        right = binary.right
        value = getattr(right, "value", None)
        if value is None:
            raise CannotAnswer("JSON key that is not a constant")
        kw.pop("_cast_applied", None)
        fn = "json_extract_string" if text else "json_extract"
        return f"{fn}({self.process(binary.left, **kw)}, {_json_path(value)})"

    def visit_json_getitem_op_binary(self, binary: Any, operator: Any,
                                     _cast_applied: bool = False, **kw: Any) -> str:
        return self._getitem(binary, operator, _cast_applied, **kw)

    def visit_json_path_getitem_op_binary(self, binary: Any, operator: Any,
                                          _cast_applied: bool = False, **kw: Any) -> str:
        return self._getitem(binary, operator, _cast_applied, **kw)

    def _getitem(self, binary: Any, operator: Any, cast_applied: bool, **kw: Any) -> str:
        from sqlalchemy import cast
        from sqlalchemy import types as sqltypes

        if getattr(binary.left, "name", None) == "counters":
            # only the orders per hour are copied, as customer_figures.hour_HH
            path = getattr(binary.right, "value", None)
            if (not isinstance(path, tuple | list) or len(path) != 3 or path[0] != "hour"
                    or path[1] not in HOURS or path[2] != 0):
                raise CannotAnswer(f"counters path {path!r}")
            column = self.process(binary.left, **{**kw, "_cast_applied": None})
            return column[: -len("counters")] + f"hour_{path[1]}"
        if not cast_applied and binary.type._type_affinity is not sqltypes.JSON:
            kw["_cast_applied"] = True
            return self.process(cast(binary, binary.type), **kw)
        return self._json(binary, cast_applied, **kw)


class DuckDBDialect(PGDialect):
    """Renders (never connects) statements for DuckDB, whose SQL is PostgreSQL's nearly."""

    name = "duckdb"
    statement_compiler = _DuckCompiler
    type_compiler_cls = _DuckTypeCompiler
    supports_statement_cache = False

    def __init__(self) -> None:
        super().__init__(paramstyle="numeric_dollar")


_DIALECT = DuckDBDialect()


def render(stmt: Select[Any]) -> tuple[str, list[Any]]:
    """The statement as DuckDB SQL with ``$n`` parameters, and their values (bound as the
    columns' types bind them: fen for money, UTC for moments)."""
    compiled = stmt.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    # SQLAlchemy keeps each bound value's type processor here (Money -> fen, UTCDateTime -> UTC)
    processors = compiled._bind_processors
    values = []
    for name in compiled.positiontup or ():
        value = params[name]
        proc = processors.get(name)
        values.append(proc(value) if proc is not None and value is not None else value)
    return str(compiled), values


# --- copying ---------------------------------------------------------------------------------

def source_key(url: Any) -> str:
    """Which database a replica was copied from (its URL without the password, hashed): a
    replica of another database is never counted on."""
    import hashlib

    text = url.render_as_string(hide_password=True) if hasattr(url, "render_as_string") \
        else str(url)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def replica_path(data_dir: Path | None = None) -> Path:
    from patron.config import get_settings

    return Path(data_dir or get_settings().data_dir) / FILE_NAME


def _duck_type(column: Any, presence: bool) -> str:
    from sqlalchemy import JSON, Boolean, Date, DateTime, Float, Integer, Numeric, String

    if presence:
        return "BOOLEAN"
    t = column.type
    impl = getattr(t, "impl", t)
    if isinstance(t, JSON) or isinstance(impl, JSON):
        return "JSON"
    if isinstance(impl, Boolean):
        return "BOOLEAN"
    if isinstance(impl, DateTime):
        return "TIMESTAMPTZ"
    if isinstance(impl, Date):
        return "DATE"
    if isinstance(impl, Integer):
        return "BIGINT"
    if isinstance(impl, Float | Numeric):
        return "DOUBLE"
    if isinstance(impl, String):
        return "VARCHAR"
    raise TypeError(f"no replica type for {column}")


def _schema() -> dict[str, list[tuple[str, str, bool]]]:
    """table -> [(column, DuckDB type, presence only)]."""
    import patron.tables  # noqa: F401 - every table in metadata
    from patron.db import metadata

    out = {}
    for table, columns in TABLES.items():
        t = metadata.tables[table]
        hidden = PRESENCE.get(table, frozenset())
        out[table] = [(c, _duck_type(t.c[c], c in hidden), c in hidden) for c in columns]
    return out


def _source_select(table: str, columns: list[tuple[str, str, bool]], dialect: str) -> str:
    parts = []
    for name, duck_type, presence in columns:
        special = SOURCE_SQL.get((table, name))
        if special is not None:
            parts.append(f"{special[dialect]} AS {name}")
        elif presence:
            parts.append(f"CASE WHEN {name} IS NULL THEN NULL ELSE 1 END AS {name}")
        elif duck_type == "JSON" and dialect == "postgresql":
            parts.append(f"CAST({name} AS TEXT) AS {name}")
        else:
            parts.append(name)
    # table and column names are this module's constants
    return f"SELECT {', '.join(parts)} FROM {table}"


def _create(duck: Any, table: str, columns: list[tuple[str, str, bool]]) -> None:
    cols = ", ".join(f"{name} {duck_type}" for name, duck_type, _p in columns)
    duck.execute(f"CREATE TABLE {table} ({cols})")


def _hour_columns(duck: Any) -> None:
    """customer_figures.counters (the hour object, {"08": [orders, spend], ...}) becomes one
    column of orders per hour, parsed once here rather than at every count."""
    keep = [c for c in TABLES["customer_figures"] if c != "counters"]
    paths = ", ".join(f"'$.\"{h}\"[0]'" for h in HOURS)
    hours = ", ".join(f"CAST(h[{i + 1}] AS BIGINT) AS hour_{h}" for i, h in enumerate(HOURS))
    duck.execute(f"CREATE TABLE customer_figures_hours AS SELECT {', '.join(keep)}, {hours} "
                 f"FROM (SELECT *, json_extract_string(counters, [{paths}]) AS h "
                 f"FROM customer_figures)")
    duck.execute("DROP TABLE customer_figures")
    duck.execute("ALTER TABLE customer_figures_hours RENAME TO customer_figures")


def _copy_postgres(conn: Connection, duck: Any, table: str,
                   columns: list[tuple[str, str, bool]], work: Path) -> None:
    """COPY ... TO STDOUT as CSV into a file DuckDB reads with the columns' types."""
    csv_path = work / f"{table}.csv"
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur, csv_path.open("wb") as out:
        sql = f"COPY ({_source_select(table, columns, 'postgresql')}) TO STDOUT (FORMAT csv)"
        with cur.copy(sql) as copy:
            for chunk in copy:
                out.write(chunk)
    types = ", ".join(f"'{name}': '{'VARCHAR' if duck_type == 'JSON' else duck_type}'"
                      for name, duck_type, _p in columns)
    # PostgreSQL writes NULL as an empty field and an empty text as "": keep them apart
    duck.execute(f"INSERT INTO {table} SELECT * FROM read_csv(?, header = false, "
                 f"delim = ',', quote = '\"', escape = '\"', auto_detect = false, "
                 f"allow_quoted_nulls = false, columns = {{{types}}})", [str(csv_path)])
    csv_path.unlink()


def _copy_rows(conn: Connection, duck: Any, table: str,
               columns: list[tuple[str, str, bool]]) -> None:
    """Any other database (SQLite): the rows in batches through pandas, cast by DuckDB."""
    import pandas as pd

    names = [c[0] for c in columns]
    casts = ", ".join(f"CAST({name} AS {duck_type}) AS {name}"
                      for name, duck_type, _p in columns)
    result = conn.exec_driver_sql(_source_select(table, columns, conn.dialect.name))
    while True:
        rows = result.fetchmany(BATCH_ROWS)
        if not rows:
            break
        batch = pd.DataFrame([tuple(r) for r in rows], columns=names, dtype=object)
        duck.register("patron_batch", batch)
        duck.execute(f"INSERT INTO {table} SELECT {casts} FROM patron_batch")
        duck.unregister("patron_batch")


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction over every table: the copy is one moment of the database."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
                yield conn
        return
    with engine.connect() as conn:
        # a deferred BEGIN (not the writers' BEGIN IMMEDIATE): in WAL mode the copy reads one
        # snapshot while orders keep being written
        conn = conn.execution_options(patron_readonly=True)
        with conn.begin():
            yield conn


STAGING_PREFIX = "audience-"


def _duck_config(spill: Path | None = None) -> dict[str, Any]:
    """DuckDB's own defaults are 80 % of the machine's memory and every core, per connection:
    too much for a server process that shares the machine with the database and its peers.
    Past the limit DuckDB spills to ``spill`` (a file database spills beside its file)."""
    from patron.config import get_settings

    settings = get_settings()
    config: dict[str, Any] = {"memory_limit": f"{settings.audience_replica_memory_mb}MB",
                              "threads": settings.audience_replica_threads}
    if spill is not None:
        config["temp_directory"] = str(spill)
    return config


@contextmanager
def _sync_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """The data dir's replica lock: one sync at a time, whether a server process's refresher
    or the CLI started it. Yields False when ``wait`` is off and another process holds it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f"{FILE_NAME}.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_staging(directory: Path) -> list[str]:
    """Staging directories left by a sync that was killed (a crash, SIGKILL, a full disk):
    with the lock held nobody else is staging, so every one of them is garbage, and each may
    hold a copy of the whole replica."""
    removed = []
    for stale in directory.glob(f"{STAGING_PREFIX}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale.name)
    if removed:
        log.warning("audience replica: removed staging left by an interrupted sync: %s",
                    ", ".join(sorted(removed)))
    return removed


def sync(engine: Engine, *, path: Path | None = None,
         progress: Callable[[str], None] | None = None) -> SyncResult:
    """Copy what segments read into the replica file and swap it in (see the module doc).
    Waits for a sync of the same data dir that is under way in another process."""
    path = path or replica_path()
    with _sync_lock(path, wait=True):
        return _sync_locked(engine, path, progress)


def _sync_locked(engine: Engine, path: Path,
                 progress: Callable[[str], None] | None) -> SyncResult:
    import duckdb

    from patron.db import utcnow

    _remove_stale_staging(path.parent)
    schema = _schema()
    started = time.perf_counter()
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=path.parent) as tmp:
        work = Path(tmp)
        staged = work / FILE_NAME
        duck = duckdb.connect(str(staged), config=_duck_config())
        try:
            duck.execute("SET TimeZone = 'UTC'")
            with _snapshot(engine) as conn:
                as_of = utcnow()
                for table, columns in schema.items():
                    began = time.perf_counter()
                    _create(duck, table, columns)
                    if engine.dialect.name == "postgresql":
                        _copy_postgres(conn, duck, table, columns, work)
                    else:
                        _copy_rows(conn, duck, table, columns)
                    if table == "customer_figures":
                        _hour_columns(duck)
                    rows[table] = int(duck.execute(
                        f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                    if progress is not None:
                        progress(f"{table}: {rows[table]:,} rows "
                                 f"({time.perf_counter() - began:.1f} s)")
            duck.execute("CREATE TABLE replica_meta (format INTEGER, as_of TIMESTAMPTZ, "
                         "dialect VARCHAR, source VARCHAR, seconds DOUBLE)")
            duck.execute("INSERT INTO replica_meta VALUES (?, ?, ?, ?, ?)",
                         [FORMAT, as_of, engine.dialect.name, source_key(engine.url),
                          time.perf_counter() - started])
            duck.execute("CHECKPOINT")
        finally:
            duck.close()
        os.replace(staged, path)
    seconds = time.perf_counter() - started
    log.info("audience replica synced in %.1f s as of %s", seconds, as_of.isoformat())
    return SyncResult(path=path, as_of=as_of, seconds=seconds, rows=rows)


# --- reading ---------------------------------------------------------------------------------

class _Reader:
    """An in-memory DuckDB with the replica file attached read-only. A new file (a new sync)
    gets a new reader: an attached file is never re-read under a reader's feet."""

    def __init__(self, path: Path, key: tuple[int, int, int]) -> None:
        import duckdb

        self.key = key
        self.db = duckdb.connect(config=_duck_config(path.parent / f"{FILE_NAME}.tmp"))
        escaped = str(path).replace("'", "''")
        self.db.execute(f"ATTACH '{escaped}' AS audience (READ_ONLY)")
        self.db.execute("USE audience")
        meta = self.db.execute("SELECT format, as_of, source FROM replica_meta").fetchone()
        if meta is None or int(meta[0]) != FORMAT:
            raise CannotAnswer("replica of another format")
        as_of, self.source = meta[1], str(meta[2])
        self.as_of: dt.datetime = (as_of.replace(tzinfo=dt.UTC) if as_of.tzinfo is None
                                   else as_of.astimezone(dt.UTC))

    def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        cur = self.db.cursor()  # one per call: DuckDB connections are not shared by threads
        try:
            cur.execute("USE audience")
            return cur.execute(sql, params).fetchall()
        finally:
            cur.close()


_readers: dict[Path, _Reader] = {}
_lock = threading.Lock()


def _reader(path: Path) -> _Reader | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _lock:
        current = _readers.get(path)
        if current is None or current.key != key:
            current = _Reader(path, key)
            _readers[path] = current
        return current


def as_of(path: Path | None = None) -> dt.datetime | None:
    """When the replica's copy was taken, or None without a (usable) replica."""
    try:
        r = _reader(path or replica_path())
    except Exception:  # noqa: BLE001 - a damaged or foreign file is no replica
        return None
    return r.as_of if r is not None else None


@dataclass(frozen=True)
class Counted:
    count: int
    ids: list[int]
    as_of: dt.datetime


def count_and_ids(definition: Any, *, scope: Any, as_of: dt.datetime | None = None,
                  limit: int = 20, max_age: dt.timedelta | None = None,
                  path: Path | None = None, now: dt.datetime | None = None,
                  source: Any = None) -> Counted | None:
    """The count of the customers the definition selects in the replica and the ids of the
    newest ``limit`` of them; None when the replica is missing, older than ``max_age``
    (default ``PATRON_AUDIENCE_REPLICA_MAX_AGE_MINUTES``; 0 turns the replica off), copied from
    another database than ``source`` (a database URL) or cannot answer this definition."""
    from patron.config import get_settings
    from patron.db import utcnow
    from patron.segments import compile as sqlc

    if max_age is None:
        minutes = get_settings().audience_replica_max_age_minutes
        if minutes <= 0:
            return None
        max_age = dt.timedelta(minutes=minutes)
    try:
        reader = _reader(path or replica_path())
    except Exception:  # noqa: BLE001 - a damaged or foreign file: count in the primary
        log.warning("audience replica unreadable; counting in the database", exc_info=True)
        return None
    if reader is None or (now or utcnow()) - reader.as_of > max_age:
        return None
    if source is not None and reader.source != source_key(source):
        return None
    try:
        ids = sqlc.member_ids_select(definition, scope=scope, as_of=as_of).subquery()
        stmt = (select(ids.c.customer_id, func.count().over().label("total"))
                .order_by(ids.c.customer_id.desc()).limit(max(1, int(limit))))
        sql, params = render(stmt)
        rows = reader.query(sql, params)
    except CannotAnswer:
        return None
    except Exception:  # noqa: BLE001 - a statement DuckDB refuses is counted in the primary
        log.warning("audience replica could not count; counting in the database",
                    exc_info=True)
        return None
    total = int(rows[0][1]) if rows else 0
    return Counted(count=total, ids=[int(r[0]) for r in rows], as_of=reader.as_of)


def reset_readers() -> None:
    """Forget the open replicas (tests that remove files)."""
    with _lock:
        _readers.clear()


# --- the refresh in each server process ------------------------------------------------------

def refresh_due(engine: Engine, *, interval: float, path: Path | None = None) -> SyncResult | None:
    """Sync unless the replica of this database is younger than most of ``interval`` or
    another process of this data dir is syncing it now (several server processes share one
    file: one copies, the others count on it)."""
    from patron.db import utcnow

    path = path or replica_path()
    with _sync_lock(path, wait=False) as held:
        if not held:
            return None
        try:
            reader = _reader(path)
        except Exception:  # noqa: BLE001 - a damaged or foreign file is replaced
            reader = None
        if (reader is not None and reader.source == source_key(engine.url)
                and utcnow() - reader.as_of < dt.timedelta(seconds=interval * 0.9)):
            return None
        return _sync_locked(engine, path, None)


def run_refresher(engine: Engine, *, interval: float, stop: threading.Event) -> None:
    """Sync now, then every ``interval`` seconds, until ``stop``; trouble is logged and the
    next round tried (the builder counts in the database meanwhile)."""
    while not stop.is_set():
        try:
            refresh_due(engine, interval=interval)
        except Exception:  # noqa: BLE001 - a background thread has nobody to raise to
            log.exception("audience replica sync failed; trying again in %ss", interval)
        stop.wait(interval)


def start_refresher(engine: Engine) -> Callable[[], None] | None:
    """The replica's refresh thread of a server process, unless
    ``PATRON_AUDIENCE_REPLICA_REFRESH_MINUTES=0`` or the replica is turned off
    (``PATRON_AUDIENCE_REPLICA_MAX_AGE_MINUTES=0``); returns the function that stops it."""
    from patron.config import get_settings
    from patron.workers import start_in_thread

    settings = get_settings()
    minutes = settings.audience_replica_refresh_minutes
    if minutes <= 0 or settings.audience_replica_max_age_minutes <= 0:
        return None
    return start_in_thread(run_refresher, engine, interval=minutes * 60.0,
                           name="patron-audience-replica", join_timeout=5.0)
