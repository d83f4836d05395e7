"""A machine-readable copy of everything Patron holds about a person (PIPL article 45).

The copy is found by following foreign keys from the person's customer rows (the customer and
every profile merged into it): every table that points at a row already in the copy gives its
rows too, whatever area it belongs to, so an area added later is included without being listed
here. Reference tables shared by everyone (stores, products, programs, templates...) are not
followed outwards, and secrets (hashes, salts, tokens) are left out of every row."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, select

from patron.db import metadata
from patron.privacy.erasure import customer_ids_of

# Rows of these tables are shared by many people: a row pointing at them is not about the person.
_SHARED = frozenset({
    "stores", "regions", "brands", "channels", "products", "categories", "users", "api_keys",
    "loyalty_programs", "loyalty_tiers", "loyalty_rule_versions", "coupon_templates",
    "coupon_template_versions", "rewards_items", "message_templates", "sv_programs",
    "sv_bonus_rules", "webhook_endpoints", "import_jobs", "column_mappings", "promotions",
    "custom_field_defs", "benefits_settings",
})
# Rows that would show other people's personal data: the phones and payment accounts of the
# friends a member referred (kept against referral abuse).
_OTHERS = frozenset({"benefits_referral_claims"})
_SECRET_SUFFIXES = ("_hash", "salt", "secret", "token")
_MAX_ROWS_PER_TABLE = 100_000


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID | bytes):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _public_columns(table: Table) -> list[Any]:
    return [c for c in table.columns if not c.name.endswith(_SECRET_SUFFIXES)]


def _links() -> list[tuple[Table, Any, str]]:
    """(table, its column, the table that column points at) for every single-column FK."""
    out = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            target = fk.column.table.name
            if fk.column.name == "id" and target not in _SHARED and table.name not in _OTHERS:
                out.append((table, fk.parent, target))
    return out


def person_rows(conn: Connection, customer_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row about the person, by table (rows as JSON-ready dicts, secrets left out)."""
    ids = customer_ids_of(conn, customer_id)
    found: dict[str, dict[Any, dict[str, Any]]] = {}
    table = metadata.tables["customers"]
    found["customers"] = {r["id"]: dict(r) for r in conn.execute(
        select(*_public_columns(table)).where(table.c.id.in_(ids))).mappings()}
    links = _links()
    changed = True
    while changed:
        changed = False
        for child, column, target in links:
            keys = list(found.get(target, {}))
            if not keys or "id" not in child.c:
                continue
            have = found.setdefault(child.name, {})
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = conn.execute(select(*_public_columns(child)).where(
                    column.in_(chunk)).limit(_MAX_ROWS_PER_TABLE)).mappings()
                for r in rows:
                    if r["id"] not in have:
                        have[r["id"]] = dict(r)
                        changed = True
    # Tables without an id of their own (link tables) that point at the person's rows.
    for child, column, target in links:
        if "id" in child.c or not found.get(target):
            continue
        rows = conn.execute(select(*_public_columns(child)).where(
            column.in_(list(found[target])))).mappings().all()
        if rows:
            found.setdefault(child.name, {}).update(
                {json.dumps(_jsonable(dict(r)), sort_keys=True): dict(r) for r in rows})
    audit = metadata.tables.get("audit_log")
    if audit is not None:
        rows = conn.execute(select(*_public_columns(audit)).where(
            audit.c.entity == "customer", audit.c.entity_id.in_([str(i) for i in ids]))
            .order_by(audit.c.id)).mappings().all()
        if rows:
            found["audit_log"] = {r["id"]: dict(r) for r in rows}
    return {name: [_jsonable(r) for r in rows.values()]
            for name, rows in sorted(found.items()) if rows}


def person_copy(conn: Connection, customer_id: int, now: dt.datetime) -> dict[str, Any]:
    tables = person_rows(conn, customer_id)
    return {"format": "patron.person-copy/1", "customer_id": customer_id,
            "generated_at": now.isoformat(),
            "counts": {name: len(rows) for name, rows in tables.items()},
            "tables": tables}
