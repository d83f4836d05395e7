"""Throw-away benchmark databases: a SQLite file in a temp dir, a fresh PostgreSQL database."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Index, MetaData, Table, UniqueConstraint, create_engine, select, text

from patron import migrate
from patron.db import UnitOfWork, get_engine
from patron.org import service as org
from patron.org.tables import channels, stores
from patron.security.model import SYSTEM

DEFAULT_PG_ADMIN_URL = os.environ.get(
    "PATRON_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
STORE_COUNT = 20


@dataclass
class BenchDatabase:
    kind: str  # sqlite | postgresql
    url: str
    channel_ids: dict[str, int]
    store_ids: dict[str, int]
    # Where the raw anchor's bare tables live. On SQLite a database file of their own, opened
    # by the same ``get_engine`` (the same pragmas): each side writes and checkpoints its own
    # WAL, so neither pays for the other's pages. On PostgreSQL the same database.
    raw_url: str = ""

    def __post_init__(self) -> None:
        if not self.raw_url:
            self.raw_url = self.url

    @property
    def store_codes(self) -> list[str]:
        return sorted(self.store_ids)


def _prepare(kind: str, url: str) -> BenchDatabase:
    migrate.upgrade(url)
    engine = get_engine(url)
    with UnitOfWork(engine) as uow:
        org.ensure_default_channels(uow.c)
        uow.commit()
    for i in range(STORE_COUNT):
        with UnitOfWork(engine) as uow:
            org.create_store(uow=uow, actor=SYSTEM, code=f"S{i:03d}", name=f"门店 {i:03d}",
                             city="上海")
    with engine.connect() as conn:
        channel_ids = {r.code: int(r.id) for r in conn.execute(select(channels.c.code,
                                                                      channels.c.id))}
        store_ids = {r.code: int(r.id) for r in conn.execute(select(stores.c.code,
                                                                    stores.c.id))}
    return BenchDatabase(kind, url, channel_ids, store_ids)


@contextlib.contextmanager
def sqlite_database(directory: Path) -> Iterator[BenchDatabase]:
    path = directory / "bench.sqlite3"
    url = f"sqlite:///{path}"
    raw_url = f"sqlite:///{directory / 'bench-raw.sqlite3'}"
    try:
        db = _prepare("sqlite", url)
        db.raw_url = raw_url
        yield db
    finally:
        get_engine(url).dispose()
        get_engine(raw_url).dispose()


@contextlib.contextmanager
def postgres_database(admin_url: str = DEFAULT_PG_ADMIN_URL) -> Iterator[BenchDatabase]:
    name = f"patron_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield _prepare("postgresql", url)
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _describe(kind: str, url: str) -> BenchDatabase:
    """A database prepared before (a copy of a template): brought to the current schema, its
    channels and stores read back."""
    migrate.upgrade(url)
    with get_engine(url).connect() as conn:
        channel_ids = {r.code: int(r.id) for r in conn.execute(select(channels.c.code,
                                                                      channels.c.id))}
        store_ids = {r.code: int(r.id) for r in conn.execute(select(stores.c.code,
                                                                    stores.c.id))}
    return BenchDatabase(kind, url, channel_ids, store_ids)


def _database_exists(admin: Any, name: str) -> bool:
    with admin.connect() as conn:
        return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                            {"n": name}).first() is not None


@contextlib.contextmanager
def postgres_from_template(template: str, build: Callable[[BenchDatabase], None],
                           admin_url: str = DEFAULT_PG_ADMIN_URL) -> Iterator[BenchDatabase]:
    """A fresh database copied (``CREATE DATABASE ... TEMPLATE``) from the kept database
    ``template``, which is built first by ``build`` on a prepared database when it does not
    exist yet. The template is built under another name and renamed when complete, so that an
    interrupted build is never reused; it is kept (drop it by hand to rebuild it). The copy is
    brought to the current schema and dropped afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    base = admin_url.rsplit("/", 1)[0]
    if not _database_exists(admin, template):
        building = f"{template}_building"
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{building}"'))
        url = f"{base}/{building}"
        build(_prepare("postgresql", url))
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{building}" RENAME TO "{template}"'))
    name = f"patron_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = f"{base}/{name}"
    try:
        yield _describe("postgresql", url)
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bare_copy(table: Table, name: str, metadata: MetaData) -> Table:
    """The table's columns, primary key, unique constraints and indexes under another name,
    without foreign keys: what a plain bulk insert into it costs is the anchor."""
    from sqlalchemy import Text

    from patron.db import JSONType
    from patron.protection.fields import Encrypted, EncryptedJSON

    # An encrypted column's bare copy is plain text: the anchor writes values as given.
    cols = [Column(c.name, (JSONType if isinstance(c.type, EncryptedJSON) else Text())
                   if isinstance(c.type, Encrypted) else c.type,
                   primary_key=c.primary_key, nullable=c.nullable,
                   autoincrement=c.autoincrement,
                   server_default=c.server_default.arg if c.server_default else None)  # type: ignore[attr-defined]
            for c in table.columns]
    copy = Table(name, metadata, *cols)
    for i, cons in enumerate(c for c in table.constraints if isinstance(c, UniqueConstraint)):
        copy.append_constraint(UniqueConstraint(*[c.name for c in cons.columns],
                                                name=f"uq_{name}_{i}"))
    for i, idx in enumerate(sorted(table.indexes, key=lambda x: str(x.name))):
        Index(f"ix_{name}_{i}", *[copy.c[c.name] for c in idx.columns], unique=idx.unique)
    return copy
