"""Segments: validate a definition, evaluate it inside the database, saved segments and their
daily size history, and the export of their members.

The functions other areas call (automations, campaigns, tags) are the first block below; their
description is in docs/segments.md ("For other areas") and stays stable:

- ``validate(definition, conn=None) -> Definition``
- ``member_ids_select(definition, *, scope, as_of=None) -> Select`` of ``customer_id``
- ``count(conn, definition, *, scope, as_of=None) -> int``
- ``sample(conn, definition, *, scope, as_of=None, limit=20) -> list[dict]`` (masked)
- ``live_count_and_sample(conn, definition, *, scope, ...)``: the builder's, from the audience
  replica when fresh (patron.segments.replica); nothing else reads the replica
- ``contains(conn, definition, customer_id, *, scope, as_of=None) -> bool``
- ``saved_definition(conn, segment_id, *, scope) -> Definition``
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Connection, Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from patron.customers.model import mask_name, mask_phone
from patron.customers.tables import custom_field_defs, customer_figures, customers
from patron.db import UnitOfWork, upsert, utcnow
from patron.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from patron.security import audit
from patron.security.model import SYSTEM, Actor
from patron.segments import compile as sqlc
from patron.segments import model
from patron.segments.model import Definition
from patron.segments.tables import segment_sizes, segments

SAMPLE_MAX = 100
# Reasons whose Pydantic location is the condition itself but that concern one of its parts.
_PART_OF_REASON = {
    "op_not_for_type": "op", "value_not_allowed": "value", "days_expected": "value",
    "list_expected": "value", "text_expected": "value", "choice_unknown": "value",
    "number_expected": "value", "between_needs_pair": "value", "between_reversed": "value",
    "number_out_of_range": "value", "date_expected": "value", "categories_or_skus": "categories",
    "window_not_allowed": "window", "money_precision": "value",
}


def _need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


# --- the interface other areas use ----------------------------------------------------------

def validate(definition: Any, conn: Connection | None = None) -> Definition:
    """The definition checked in every part, or ``ValidationFailed`` (422) whose fields name
    each bad part by its path (``definition.conditions.1.conditions.0.window``) and reason.
    With a connection, the tags, stores, regions, brands, channels, categories, programs, tiers
    and custom fields it names must exist (and custom fields' operators fit their type)."""
    try:
        d = model.parse(definition)
    except ValidationError as exc:
        raise ValidationFailed("segment_invalid", fields=_fields(exc)) from None
    problems = _money_precision(d)
    if conn is not None:
        problems += _unknown_references(conn, d)
    if problems:
        raise ValidationFailed("segment_invalid", fields=problems)
    return d


def member_ids_select(definition: Any, *, scope: Actor, as_of: dt.datetime | None = None
                      ) -> Select[Any]:
    """One query selecting ``customer_id`` of every matching customer ``scope`` may see (its
    store scope applies; merged profiles never match). Use it as a subquery:
    ``customers.c.id.in_(member_ids_select(...))``."""
    return sqlc.member_ids_select(model.parse(definition), scope=scope, as_of=as_of)


def count(conn: Connection, definition: Any, *, scope: Actor,
          as_of: dt.datetime | None = None) -> int:
    sub = member_ids_select(definition, scope=scope, as_of=as_of).subquery()
    return int(conn.execute(select(func.count()).select_from(sub)).scalar_one())


def sample(conn: Connection, definition: Any, *, scope: Actor,
           as_of: dt.datetime | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Up to ``limit`` matching customers (the newest profiles first: the database can stop at
    the first ``limit`` matches instead of sorting every member), personal data masked as in
    every list."""
    limit = max(1, min(int(limit), SAMPLE_MAX))
    ids = member_ids_select(definition, scope=scope, as_of=as_of).subquery()
    f = customer_figures.c
    rows = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.name, customers.c.phone,
               f.order_count, f.net_spend, f.last_order_at)
        .join(ids, ids.c.customer_id == customers.c.id)
        .outerjoin(customer_figures, f.customer_id == customers.c.id)
        .order_by(customers.c.id.desc())
        .limit(limit)).mappings().all()
    return [_sampled(r) for r in rows]


def contains(conn: Connection, definition: Any, customer_id: int, *, scope: Actor,
             as_of: dt.datetime | None = None) -> bool:
    q = member_ids_select(definition, scope=scope, as_of=as_of).where(
        customers.c.id == customer_id)
    return conn.execute(q.limit(1)).first() is not None


def saved_definition(conn: Connection, segment_id: int, *, scope: Actor) -> Definition:
    """A saved segment's definition (``NotFound`` when it does not exist)."""
    row = conn.execute(select(segments.c.definition).where(segments.c.id == segment_id)).first()
    if row is None:
        raise NotFound("segment_not_found")
    return model.parse(row.definition)


# --- validation details ---------------------------------------------------------------------

def _fields(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        path = model.error_path(tuple(err.get("loc", ())))
        reason = err.get("type", "invalid")
        part = _PART_OF_REASON.get(reason)
        if part and not path.endswith(part):
            path = f"{path}.{part}" if path else part
        params = {k: str(v) for k, v in (err.get("ctx") or {}).items() if k != "error"}
        params.setdefault("detail", err.get("msg", ""))
        out.append(FieldError(f"definition.{path}" if path else "definition",
                              _reason_key(reason), params))
    return out


def _reason_key(reason: str) -> str:
    """The message key of a reason: the segment catalogue's, the shared one's (Pydantic's
    standard reasons), or a generic one whose message carries Pydantic's detail."""
    from patron.i18n import catalog

    known = catalog("en")
    for key in (f"segment.{reason}", reason):
        if key in known:
            return key
    return "segment.invalid"


def _money_precision(d: Definition) -> list[FieldError]:
    out = []
    for path, node, _depth in model.walk(d):
        money = (node.type in ("stored_value", "clv")
                 or (node.type == "purchases" and node.measure in ("spend", "aov")))
        if not money:
            continue
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        if any(Decimal(v).as_tuple().exponent < -2 for v in values):  # type: ignore[operator]
            out.append(FieldError(f"definition.{path}.value", "segment.money_precision",
                                  {"detail": "at most two decimals (fen)"}))
    return out


def _unknown_references(conn: Connection, d: Definition) -> list[FieldError]:
    from patron.loyalty.tables import loyalty_programs, loyalty_tiers
    from patron.org.tables import brands, categories, channels, regions, stores
    from patron.tags.tables import tags

    wanted: dict[str, set[str]] = {}
    uses: list[tuple[str, str, str, list[str]]] = []  # (path, part, kind, codes)

    def need(path: str, part: str, kind: str, codes: Any) -> None:
        if codes:
            codes = list(codes)
            wanted.setdefault(kind, set()).update(codes)
            uses.append((path, part, kind, codes))

    custom: list[tuple[str, Any]] = []
    tiers_wanted: list[tuple[str, str, list[str]]] = []
    for path, n, _depth in model.walk(d):
        t = n.type
        if t == "tag":
            need(path, "tags", "tag", n.tags)
        elif t in ("store", "region", "brand", "channel"):
            need(path, f"{t}s", t, getattr(n, f"{t}s"))
        elif t == "purchases":
            need(path, "stores", "store", n.stores)
            need(path, "channels", "channel", n.channels)
        elif t == "bought":
            need(path, "categories", "category", n.categories)
        elif t in ("points", "stored_value"):
            need(path, "program", "program", [n.program] if n.program else None)
        elif t == "tier":
            need(path, "program", "program", [n.program])
            tiers_wanted.append((path, n.program, list(n.tiers)))
        elif t in ("rfm_score", "rfm_segment") and n.scope != "overall":
            kind, _, code = n.scope.partition(":")
            need(path, "scope", kind, [code])
        elif t == "custom_field":
            custom.append((path, n))
    tables = {"tag": tags, "store": stores, "region": regions, "brand": brands,
              "channel": channels, "category": categories, "program": loyalty_programs}
    known: dict[str, set[str]] = {}
    for kind, codes in wanted.items():
        table = tables[kind]
        known[kind] = set(conn.execute(select(table.c.code).where(
            table.c.code.in_(sorted(codes)))).scalars())
    out = []
    for path, part, kind, codes in uses:
        missing = [c for c in codes if c not in known[kind]]
        if missing:
            out.append(FieldError(f"definition.{path}.{part}", f"segment.unknown_{kind}",
                                  {"codes": ", ".join(missing)}))
    for path, program, codes in tiers_wanted:
        have = set(conn.execute(
            select(loyalty_tiers.c.code).join(loyalty_programs,
                                              loyalty_programs.c.id == loyalty_tiers.c.program_id)
            .where(loyalty_programs.c.code == program)).scalars())
        missing = [c for c in codes if c not in have]
        if missing and program in known.get("program", set()):
            out.append(FieldError(f"definition.{path}.tiers", "segment.unknown_tier",
                                  {"codes": ", ".join(missing), "program": program}))
    if custom:
        defs = {r.key: r for r in conn.execute(select(custom_field_defs))}
        for path, n in custom:
            spec = defs.get(n.key)
            if spec is None:
                out.append(FieldError(f"definition.{path}.key", "segment.unknown_custom_field",
                                      {"codes": n.key}))
                continue
            kind = {"text": "text", "number": "number", "date": "date", "choice": "choice",
                    "multi_choice": "multi_choice"}.get(spec.type, "text")
            choices = tuple(o if isinstance(o, str) else str(o.get("value", o))
                            for o in (spec.options or [])) or None
            try:
                model.check_op_value(kind, n.op, n.value,
                                     choices=choices if kind in ("choice", "multi_choice")
                                     else None)
            except Exception as exc:  # PydanticCustomError
                reason = getattr(exc, "type", "invalid")
                part = _PART_OF_REASON.get(reason, "value")
                ctx = {k: str(v) for k, v in (getattr(exc, "context", None) or {}).items()}
                ctx.setdefault("detail", str(exc))
                out.append(FieldError(f"definition.{path}.{part}", f"segment.{reason}", ctx))
    return out


# --- saved segments -------------------------------------------------------------------------

def _view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": int(row["id"]), "name": row["name"], "description": row["description"],
            "definition": row["definition"], "created_at": row["created_at"],
            "created_by": row["created_by"], "updated_at": row["updated_at"],
            "updated_by": row["updated_by"]}


def _row(conn: Connection, segment_id: int) -> Mapping[str, Any]:
    row = conn.execute(select(segments).where(segments.c.id == segment_id)).mappings().first()
    if row is None:
        raise NotFound("segment_not_found")
    return row


def list_segments(conn: Connection, *, actor: Actor) -> list[dict[str, Any]]:
    _need(actor, "segments.read")
    last = (select(segment_sizes.c.segment_id, func.max(segment_sizes.c.day).label("day"))
            .group_by(segment_sizes.c.segment_id).subquery())
    sizes = {int(r.segment_id): (r.day, int(r.customers)) for r in conn.execute(
        select(segment_sizes.c.segment_id, segment_sizes.c.day, segment_sizes.c.customers)
        .join(last, (last.c.segment_id == segment_sizes.c.segment_id)
              & (last.c.day == segment_sizes.c.day)))}
    out = []
    for row in conn.execute(select(segments).order_by(segments.c.name)).mappings():
        item = _view(row)
        day, size = sizes.get(item["id"], (None, None))
        item["last_size"] = size
        item["last_size_day"] = day
        out.append(item)
    return out


def get_segment(conn: Connection, *, actor: Actor, segment_id: int,
                with_count: bool = True) -> dict[str, Any]:
    _need(actor, "segments.read")
    item = _view(_row(conn, segment_id))
    if with_count:
        item["count"] = count(conn, item["definition"], scope=actor)
    item["history"] = size_history(conn, segment_id=segment_id)
    return item


def size_history(conn: Connection, *, segment_id: int, days: int = 400
                 ) -> list[dict[str, Any]]:
    rows = conn.execute(select(segment_sizes.c.day, segment_sizes.c.customers)
                        .where(segment_sizes.c.segment_id == segment_id)
                        .order_by(segment_sizes.c.day.desc()).limit(days)).all()
    return [{"day": r.day, "customers": int(r.customers)} for r in reversed(rows)]


def _clean_name(name: Any) -> str:
    text = str(name or "").strip()
    if not text or len(text) > 120:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("name", "segment.name_required")])
    return text


def create_segment(*, uow: UnitOfWork, actor: Actor, name: str, definition: Any,
                   description: str | None = None) -> dict[str, Any]:
    _need(actor, "segments.manage")
    conn = uow.c
    d = validate(definition, conn)
    now = utcnow()
    values = {"name": _clean_name(name), "description": description or None,
              "definition": d.as_json(), "created_at": now, "created_by": actor.name,
              "updated_at": now, "updated_by": actor.name}
    try:
        with conn.begin_nested():
            new_id = int(conn.execute(insert(segments).values(**values)
                                      .returning(segments.c.id)).scalar_one())
    except IntegrityError:
        raise Conflict("segment_name_taken",
                       fields=[FieldError("name", "segment.name_taken")]) from None
    audit.record(conn, actor, "segment.created", entity="segment", entity_id=new_id,
                 details={"name": values["name"], "definition": values["definition"]})
    uow.commit()
    return _view(_row(conn, new_id))


def update_segment(*, uow: UnitOfWork, actor: Actor, segment_id: int,
                   changes: Mapping[str, Any]) -> dict[str, Any]:
    _need(actor, "segments.manage")
    conn = uow.c
    before = _row(conn, segment_id)
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _clean_name(changes["name"])
    if "description" in changes:
        values["description"] = changes["description"] or None
    if "definition" in changes:
        values["definition"] = validate(changes["definition"], conn).as_json()
    if values:
        values.update(updated_at=utcnow(), updated_by=actor.name)
        try:
            with conn.begin_nested():
                conn.execute(update(segments).where(segments.c.id == segment_id)
                             .values(**values))
        except IntegrityError:
            raise Conflict("segment_name_taken",
                           fields=[FieldError("name", "segment.name_taken")]) from None
        audit.record(conn, actor, "segment.updated", entity="segment", entity_id=segment_id,
                     details={"before": {k: before[k] for k in values if k in before
                                         and k not in ("updated_at", "updated_by")},
                              "after": {k: v for k, v in values.items()
                                        if k not in ("updated_at", "updated_by")}})
    uow.commit()
    return _view(_row(conn, segment_id))


def delete_segment(*, uow: UnitOfWork, actor: Actor, segment_id: int) -> None:
    _need(actor, "segments.manage")
    conn = uow.c
    row = _row(conn, segment_id)
    conn.execute(delete(segment_sizes).where(segment_sizes.c.segment_id == segment_id))
    conn.execute(delete(segments).where(segments.c.id == segment_id))
    audit.record(conn, actor, "segment.deleted", entity="segment", entity_id=segment_id,
                 details={"name": row["name"], "definition": row["definition"]})
    uow.commit()


def preview(conn: Connection, *, actor: Actor, definition: Any, limit: int = 20,
            as_of: dt.datetime | None = None) -> dict[str, Any]:
    """The live count and a sample while a definition is being edited (nothing written)."""
    _need(actor, "segments.read")
    d = validate(definition, conn)
    live = live_count_and_sample(conn, d, scope=actor, as_of=as_of, limit=limit)
    return {**live, "definition": d.as_json()}


def live_count_and_sample(conn: Connection, definition: Any, *, scope: Actor,
                          as_of: dt.datetime | None = None, limit: int = 20
                          ) -> dict[str, Any]:
    """What the builder shows while a definition is edited: the count and the ids of the
    sample from the audience replica when it is fresh enough (``counted_on: "replica"``, with
    its ``as_of``), the sampled rows (masked) from the database by id; otherwise both from the
    database, as :func:`count_and_sample` (``counted_on: "database"``, ``as_of: None``)."""
    from patron.segments import replica

    limit = max(1, min(int(limit), SAMPLE_MAX))
    counted = replica.count_and_ids(definition, scope=scope, as_of=as_of, limit=limit,
                                    source=conn.engine.url)
    if counted is None:
        total, rows = count_and_sample(conn, definition, scope=scope, as_of=as_of, limit=limit)
        return {"count": total, "sample": rows, "counted_on": "database", "as_of": None}
    f = customer_figures.c
    found = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.name, customers.c.phone,
               f.order_count, f.net_spend, f.last_order_at)
        .outerjoin(customer_figures, f.customer_id == customers.c.id)
        .where(customers.c.id.in_(counted.ids))
        .order_by(customers.c.id.desc())).mappings().all() if counted.ids else []
    return {"count": counted.count, "sample": [_sampled(r) for r in found],
            "counted_on": "replica", "as_of": counted.as_of}


def count_and_sample(conn: Connection, definition: Any, *, scope: Actor,
                     as_of: dt.datetime | None = None, limit: int = 20
                     ) -> tuple[int, list[dict[str, Any]]]:
    """:func:`count` and :func:`sample` from one evaluation of the definition (the count rides
    along every sampled row as ``COUNT(*) OVER ()``): what the builder asks on every edit."""
    limit = max(1, min(int(limit), SAMPLE_MAX))
    ids = member_ids_select(definition, scope=scope, as_of=as_of).subquery()
    top = (select(ids.c.customer_id, func.count().over().label("total"))
           .order_by(ids.c.customer_id.desc()).limit(limit).subquery())
    f = customer_figures.c
    rows = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.name, customers.c.phone,
               f.order_count, f.net_spend, f.last_order_at, top.c.total)
        .join(top, top.c.customer_id == customers.c.id)
        .outerjoin(customer_figures, f.customer_id == customers.c.id)
        .order_by(customers.c.id.desc())).mappings().all()
    total = int(rows[0]["total"]) if rows else 0
    return total, [_sampled(r) for r in rows]


def _sampled(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": int(r["id"]), "member_code": r["member_code"], "name": mask_name(r["name"]),
            "phone": mask_phone(r["phone"]), "order_count": int(r["order_count"] or 0),
            "net_spend": r["net_spend"] if r["net_spend"] is not None else Decimal("0.00"),
            "last_order_at": r["last_order_at"]}


def export_members(*, uow: UnitOfWork, actor: Actor, segment_id: int, fmt: str = "csv",
                   unmasked: bool = False) -> Path:
    """The segment's members through the customer export (masked unless asked for by someone
    allowed to, audited with the segment named)."""
    from patron.customers.export import export_customers

    _need(actor, "segments.read")
    row = _row(uow.c, segment_id)
    among = member_ids_select(row["definition"], scope=actor)
    return export_customers(uow=uow, actor=actor, filters=None, fmt=fmt,  # type: ignore[arg-type]
                            unmasked=unmasked, among=among,
                            among_audit={"segment_id": segment_id, "segment": row["name"]})


# --- daily size history ---------------------------------------------------------------------

def local_today(now: dt.datetime | None = None) -> dt.date:
    return (now or utcnow()).astimezone(ZoneInfo(sqlc.default_timezone())).date()


def snapshot_sizes(*, uow: UnitOfWork, actor: Actor = SYSTEM, day: dt.date | None = None,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    """Record every saved segment's size (over every customer) for the local day; running it
    again the same day replaces that day's figures. Also records each tag's count."""
    conn = uow.c
    now = now or utcnow()
    day = day or local_today(now)
    written = 0
    for row in conn.execute(select(segments.c.id, segments.c.definition)).all():
        size = count(conn, row.definition, scope=SYSTEM, as_of=now)
        stmt = upsert(conn, segment_sizes).values(segment_id=int(row.id), day=day,
                                                  customers=size, recorded_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["segment_id", "day"],
            set_={"customers": stmt.excluded.customers,
                  "recorded_at": stmt.excluded.recorded_at}))
        written += 1
    tags_written = 0
    try:
        from patron.tags import service as tags_service
    except ModuleNotFoundError:  # pragma: no cover - tags ship with segments
        tags_service = None  # type: ignore[assignment]
    if tags_service is not None and hasattr(tags_service, "snapshot_counts"):
        tags_written = tags_service.snapshot_counts(conn, day=day)
    audit.record(conn, actor, "segment.sizes_recorded", entity="segment",
                 details={"day": day.isoformat(), "segments": written, "tags": tags_written})
    uow.commit()
    return {"day": day.isoformat(), "segments": written, "tags": tags_written}
