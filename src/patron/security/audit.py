"""The audit trail: who did what, when, from where, with what outcome.

The log is append-only (triggers refuse UPDATE and DELETE, migration 0004) and tamper-evident:
entries form one hash chain (docs/data-protection.md#audit-log). An entry recorded in a
transaction is held on the connection and appended to the chain when the transaction commits:
the chain head is locked only for the last moment of the transaction, after every other lock it
takes, so audited writers never deadlock on it and hold it for as short a time as possible. A
rolled-back transaction leaves no entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select, update

from patron.db import cached_text, json_insert, prepare_rows, upsert, utcnow
from patron.protection.redact import scrub_json
from patron.security.model import Actor
from patron.security.tables import audit_chain_head, audit_log

GENESIS = "0" * 64
# Up to this many entries, PostgreSQL appends them and moves the head in one statement (a
# group of API orders); more (a batch, a job) go by executemany, within the bind-parameter limit.
ONE_STATEMENT_ENTRIES = 200
_PENDING = "patron_audit_pending"
# Columns covered by an entry's hash, in this order.
HASHED = ("id", "at", "actor_type", "actor_id", "actor_name", "action", "entity", "entity_id",
          "ip", "outcome", "details")


def record(conn: Connection, actor: Actor, action: str, *, entity: str | None = None,
           entity_id: Any = None, details: dict[str, Any] | None = None,
           outcome: str = "ok") -> None:
    _pending(conn).append(_entry(actor, action, entity, entity_id, details, outcome, utcnow()))


def record_many(conn: Connection,
                entries: list[tuple[Actor, str, str | None, Any, dict[str, Any]]]) -> None:
    """Several entries at once: (actor, action, entity, entity_id, details)."""
    if not entries:
        return
    at = utcnow()
    _pending(conn).extend(_entry(a, action, entity, entity_id, details, "ok", at)
                          for a, action, entity, entity_id, details in entries)


def _entry(actor: Actor, action: str, entity: str | None, entity_id: Any,
           details: dict[str, Any] | None, outcome: str, at: dt.datetime) -> dict[str, Any]:
    return {
        "at": at, "actor_type": actor.type, "actor_id": actor.id, "actor_name": actor.name,
        "action": action, "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id), "ip": actor.ip,
        "outcome": outcome,
        # What is stored is what is hashed: tuples become lists, keys strings, as the database
        # gives them back. Free text a caller put in (a reason, a note) has its phones and
        # e-mails masked: entries never hold full personal data.
        "details": json.loads(json.dumps(scrub_json(details or {}), ensure_ascii=False)),
    }


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    """SHA-256 of the previous entry's hash and this entry's canonical JSON."""
    values = []
    for name in HASHED:
        value = entry[name]
        if name == "at":
            value = value.astimezone(dt.UTC).isoformat(timespec="microseconds")
        values.append(value)
    canonical = json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}|{canonical}".encode()).hexdigest()


def _pending(conn: Connection) -> list[dict[str, Any]]:
    _install(conn.engine)
    if not conn.in_transaction():
        # The transaction must exist for its commit to append the entries (and on SQLite it
        # begins with BEGIN IMMEDIATE, like any write).
        conn.begin()
    pending: list[dict[str, Any]] = conn.info.setdefault(_PENDING, [])
    return pending


_install_lock = threading.Lock()


def pending(conn: Connection) -> list[dict[str, Any]]:
    """Entries recorded in the connection's open transaction, not yet in the table (they are
    appended at commit): what a check counting this transaction's own entries adds."""
    return list(conn.info.get(_PENDING, ()))


def _install(engine: Engine) -> None:
    """Listen to the engine's commits. patron.db.make_engine calls this when it creates an
    engine, before any thread uses it (adding a listener while another thread dispatches an
    event breaks SQLAlchemy's iteration over its listeners); here it covers other engines."""
    if event.contains(engine, "commit", _append_on_commit):
        return
    with _install_lock:
        if not event.contains(engine, "commit", _append_on_commit):
            event.listen(engine, "commit", _append_on_commit)
            event.listen(engine, "rollback", _forget_on_rollback)
            event.listen(engine, "begin", _forget_on_rollback)


def _forget_on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _append_on_commit(conn: Connection) -> None:
    pending = conn.info.pop(_PENDING, None)
    if pending:
        append(conn, pending)


def append(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Append entries to the chain, inside the caller's transaction, under the head's lock."""
    last_id, last_hash = _lock_head(conn)
    rows = []
    for entry in entries:
        last_id += 1
        row = {**entry, "id": last_id, "prev_hash": last_hash}
        row["entry_hash"] = last_hash = entry_hash(last_hash, row)
        rows.append(row)
    if conn.dialect.name == "postgresql" and len(rows) <= ONE_STATEMENT_ENTRIES:
        # The entries (one JSON parameter, bound as an executemany would bind them) and the
        # head's move in one round trip, a data-modifying WITH: the head stays locked one
        # round trip less. A multi-row VALUES would be compiled anew for every call.
        sql, payload = json_insert(conn, prepare_rows(conn, audit_log, rows))
        conn.execute(cached_text(f"WITH appended AS ({sql}) UPDATE audit_chain_head "  # noqa: S608
                                 "SET last_id = :last_id, last_hash = :last_hash WHERE id = 1"),
                     {"rows": payload, "last_id": last_id, "last_hash": last_hash})
        return
    conn.execute(insert(audit_log), rows)
    conn.execute(update(audit_chain_head).where(audit_chain_head.c.id == 1)
                 .values(last_id=last_id, last_hash=last_hash))


# Built once: the head is read for every transaction that audits anything.
_HEAD = select(audit_chain_head.c.last_id, audit_chain_head.c.last_hash).where(
    audit_chain_head.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()


def _lock_head(conn: Connection) -> tuple[int, str]:
    query = _HEAD_LOCKED if conn.dialect.name == "postgresql" else _HEAD
    head = conn.execute(query).first()
    if head is None:
        # A new database (or one whose tables were emptied): the head starts at the last
        # entry, if any. Two first writers insert the same row; one insert does nothing.
        last = conn.execute(select(audit_log.c.id, audit_log.c.entry_hash)
                            .order_by(audit_log.c.id.desc()).limit(1)).first()
        start = (int(last[0]), str(last[1])) if last else (0, GENESIS)
        conn.execute(upsert(conn, audit_chain_head).values(
            id=1, last_id=start[0], last_hash=start[1]).on_conflict_do_nothing())
        head = conn.execute(query).first()
    assert head is not None
    return int(head[0]), str(head[1])


@dataclass
class ChainReport:
    entries: int
    head_id: int
    head_hash: str
    broken_at: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(conn: Connection, *, batch: int = 5000) -> ChainReport:
    """Walk the chain from the first entry and report the first broken link: an entry whose
    content no longer matches its hash, whose previous hash is not the previous entry's, a
    missing id, or a head that is not the last entry."""
    prev_id, prev_hash, count = 0, GENESIS, 0
    cols = [audit_log.c[n] for n in HASHED] + [audit_log.c.prev_hash, audit_log.c.entry_hash]
    while True:
        rows = conn.execute(select(*cols).where(audit_log.c.id > prev_id)
                            .order_by(audit_log.c.id).limit(batch)).mappings().all()
        for row in rows:
            entry_id = int(row["id"])
            if entry_id != prev_id + 1:
                return ChainReport(count, prev_id, prev_hash, prev_id + 1,
                                   f"entry {prev_id + 1} is missing")
            if row["prev_hash"] != prev_hash:
                return ChainReport(count, prev_id, prev_hash, entry_id,
                                   "previous hash does not match the previous entry")
            if entry_hash(prev_hash, dict(row)) != row["entry_hash"]:
                return ChainReport(count, prev_id, prev_hash, entry_id,
                                   "content does not match its hash")
            prev_id, prev_hash, count = entry_id, row["entry_hash"], count + 1
        if len(rows) < batch:
            break
    head = conn.execute(select(audit_chain_head.c.last_id, audit_chain_head.c.last_hash)
                        .where(audit_chain_head.c.id == 1)).first()
    if head is not None and (int(head[0]), str(head[1])) != (prev_id, prev_hash):
        return ChainReport(count, prev_id, prev_hash, int(head[0]),
                           f"the chain head names entry {head[0]}, the last entry is {prev_id}")
    if head is None and count:
        return ChainReport(count, prev_id, prev_hash, prev_id, "the chain head is missing")
    return ChainReport(count, prev_id, prev_hash)
