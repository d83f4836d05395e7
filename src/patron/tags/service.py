"""Tags: manual tags applied to one customer or in bulk (a segment's members, a pasted list of
member codes or phones, a list of ids), and rule tags whose members Patron keeps equal to a
segment definition.

Every addition and removal is a row of ``tag_events`` (who, what, when, why), written by the
same set-based statement family that changes ``customer_tags``, so a bulk change of a million
customers is a handful of ``INSERT ... SELECT`` / ``DELETE`` statements, never a Python loop.

When rule tags are evaluated (docs/segments.md, "Rule tags"): for the customers of each chunk
of recorded orders and of each return, in the recording transaction (``patron.tags.hooks``);
for everyone after each analytics refresh (a step of the nightly job) and by
``patron tags refresh``; and for everyone when the rule is created or changed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    Select,
    String,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from patron.customers.model import IdentifierError, normalize_phone
from patron.customers.protect import identity_in
from patron.customers.queries import visible_clause
from patron.customers.tables import customers, identities
from patron.db import IdType, UnitOfWork, UTCDateTime, utcnow
from patron.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from patron.security import audit
from patron.security.model import SYSTEM, Actor
from patron.segments import service as segments
from patron.tags.tables import customer_tags, tag_counts, tag_events, tags

CODE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_PASTED = 50_000
RULE_ACTOR = "rule"


def _need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


def _tag_row(conn: Connection, *, tag_id: int | None = None, code: str | None = None
             ) -> Mapping[str, Any]:
    q = select(tags)
    q = q.where(tags.c.id == tag_id) if tag_id is not None else q.where(tags.c.code == code)
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("tag_not_found")
    return row


def _visible_count(conn: Connection, actor: Actor, tag_ids: list[int]) -> dict[int, int]:
    q = (select(customer_tags.c.tag_id, func.count())
         .where(customer_tags.c.tag_id.in_(tag_ids)).group_by(customer_tags.c.tag_id))
    if actor.store_ids is not None:
        q = q.join(customers, customers.c.id == customer_tags.c.customer_id).where(
            visible_clause(actor))
    return {int(t): int(n) for t, n in conn.execute(q)}


def _view(row: Mapping[str, Any], count: int | None = None) -> dict[str, Any]:
    return {"id": int(row["id"]), "code": row["code"], "name": row["name"],
            "description": row["description"], "kind": row["kind"],
            "definition": row["definition"], "refreshed_at": row["refreshed_at"],
            "created_at": row["created_at"], "created_by": row["created_by"],
            "customers": count}


# --- reading --------------------------------------------------------------------------------

def list_tags(conn: Connection, *, actor: Actor) -> list[dict[str, Any]]:
    """Every tag with how many customers (the actor may see) carry it now."""
    _need(actor, "tags.read")
    rows = conn.execute(select(tags).order_by(tags.c.code)).mappings().all()
    counts = _visible_count(conn, actor, [int(r["id"]) for r in rows]) if rows else {}
    return [_view(r, counts.get(int(r["id"]), 0)) for r in rows]


def get_tag(conn: Connection, *, actor: Actor, code: str, events: int = 50
            ) -> dict[str, Any]:
    """The tag, its count, its daily counts and its latest events (customers the actor may
    see; masked)."""
    _need(actor, "tags.read")
    row = _tag_row(conn, code=code)
    tid = int(row["id"])
    out = _view(row, _visible_count(conn, actor, [tid]).get(tid, 0))
    out["history"] = [{"day": r.day, "customers": int(r.customers)} for r in conn.execute(
        select(tag_counts.c.day, tag_counts.c.customers).where(tag_counts.c.tag_id == tid)
        .order_by(tag_counts.c.day))]
    out["events"] = tag_history(conn, actor=actor, code=code, limit=events)
    return out


def tag_history(conn: Connection, *, actor: Actor, code: str, limit: int = 50,
                before_id: int | None = None, customer_id: int | None = None
                ) -> list[dict[str, Any]]:
    _need(actor, "tags.read")
    tid = int(_tag_row(conn, code=code)["id"])
    e = tag_events.c
    q = (select(e.id, e.customer_id, e.action, e.source, e.actor, e.note, e.at,
                customers.c.member_code)
         .join(customers, customers.c.id == e.customer_id)
         .where(e.tag_id == tid).order_by(e.id.desc()).limit(max(1, min(limit, 500))))
    if before_id is not None:
        q = q.where(e.id < before_id)
    if customer_id is not None:
        q = q.where(e.customer_id == customer_id)
    if actor.store_ids is not None:
        q = q.where(visible_clause(actor))
    return [{"id": int(r.id), "customer_id": int(r.customer_id), "member_code": r.member_code,
             "action": r.action, "source": r.source, "actor": r.actor, "note": r.note,
             "at": r.at} for r in conn.execute(q)]


def tags_of(conn: Connection, customer_id: int) -> list[str]:
    """The codes of the tags one customer carries."""
    return list(conn.execute(select(tags.c.code).join(
        customer_tags, customer_tags.c.tag_id == tags.c.id)
        .where(customer_tags.c.customer_id == customer_id).order_by(tags.c.code)).scalars())


# --- managing tags --------------------------------------------------------------------------

def _check_code(code: str) -> str:
    if not CODE.match(code or ""):
        raise ValidationFailed("validation_failed", fields=[
            FieldError("code", "tag.code_invalid")])
    return code


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("name", "tag.name_required")])
    return name


def create_tag(*, uow: UnitOfWork, actor: Actor, code: str, name: str,
               description: str | None = None, definition: Any = None,
               now: dt.datetime | None = None) -> dict[str, Any]:
    """A manual tag, or with ``definition`` a rule tag, whose members are computed at once."""
    _need(actor, "tags.manage")
    conn = uow.c
    now = now or utcnow()
    values: dict[str, Any] = {
        "code": _check_code(code), "name": _check_name(name), "description": description or None,
        "kind": "manual", "definition": None, "created_at": now, "created_by": actor.name,
        "updated_at": now}
    if definition is not None:
        values["kind"] = "rule"
        values["definition"] = segments.validate(definition, conn).as_json()
    try:
        with conn.begin_nested():
            tid = int(conn.execute(insert(tags).values(**values).returning(tags.c.id))
                      .scalar_one())
    except IntegrityError:
        raise Conflict("tag_code_taken", fields=[FieldError("code", "tag.code_taken")]
                       ) from None
    audit.record(conn, actor, "tag.created", entity="tag", entity_id=tid,
                 details={"code": code, "kind": values["kind"],
                          "definition": values["definition"]})
    changed = {"added": 0, "removed": 0}
    if values["kind"] == "rule":
        changed = _refresh_rule(conn, _tag_row(conn, tag_id=tid), now=now, note="rule created")
    uow.commit()
    return {**_view(_tag_row(conn, tag_id=tid), _visible_count(conn, actor, [tid]).get(tid, 0)),
            **changed}


def update_tag(*, uow: UnitOfWork, actor: Actor, code: str, changes: Mapping[str, Any],
               now: dt.datetime | None = None) -> dict[str, Any]:
    _need(actor, "tags.manage")
    conn = uow.c
    now = now or utcnow()
    row = _tag_row(conn, code=code)
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = _check_name(changes["name"])
    if "description" in changes:
        values["description"] = changes["description"] or None
    if "definition" in changes:
        if row["kind"] != "rule" or changes["definition"] is None:
            raise ValidationFailed("validation_failed", fields=[
                FieldError("definition", "tag.definition_rule_only")])
        values["definition"] = segments.validate(changes["definition"], conn).as_json()
    changed = {"added": 0, "removed": 0}
    if values:
        conn.execute(update(tags).where(tags.c.id == row["id"]).values(**values, updated_at=now))
        audit.record(conn, actor, "tag.updated", entity="tag", entity_id=row["id"],
                     details={"code": code, "before": {k: row[k] for k in values},
                              "after": values})
        if "definition" in values:
            changed = _refresh_rule(conn, _tag_row(conn, tag_id=int(row["id"])), now=now,
                                    note="rule changed")
    uow.commit()
    tid = int(row["id"])
    return {**_view(_tag_row(conn, tag_id=tid), _visible_count(conn, actor, [tid]).get(tid, 0)),
            **changed}


def delete_tag(*, uow: UnitOfWork, actor: Actor, code: str) -> None:
    """The tag, who carries it and its history go; the audit entry keeps how many carried it."""
    _need(actor, "tags.manage")
    conn = uow.c
    row = _tag_row(conn, code=code)
    tid = int(row["id"])
    carried = _visible_count(conn, SYSTEM, [tid]).get(tid, 0)
    for table in (tag_events, customer_tags, tag_counts):
        conn.execute(delete(table).where(table.c.tag_id == tid))
    conn.execute(delete(tags).where(tags.c.id == tid))
    audit.record(conn, actor, "tag.deleted", entity="tag", entity_id=tid,
                 details={"code": code, "kind": row["kind"], "customers": carried,
                          "definition": row["definition"]})
    uow.commit()


# --- applying manual tags -------------------------------------------------------------------

def resolve_pasted(conn: Connection, *, actor: Actor, text: str) -> dict[str, Any]:
    """The customers a pasted list names, one member code or phone per line (or separated by
    commas, semicolons or tabs): ``{"customer_ids": [...], "unmatched": [lines]}``, within the
    actor's scope (an invisible customer is reported as unmatched, like an unknown one)."""
    items = [p.strip() for p in re.split(r"[\r\n,;\t]+", text or "") if p.strip()]
    if len(items) > MAX_PASTED:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("text", "tag.too_many_lines", {"max": MAX_PASTED})])
    phones: dict[str, str] = {}
    codes: dict[str, str] = {}
    for item in items:
        try:
            phones[normalize_phone(item)] = item
            continue
        except (IdentifierError, ValueError):
            pass
        codes[item] = item
    found: dict[str, int] = {}
    visible = visible_clause(actor)
    live = customers.c.merged_into_id.is_(None)
    for chunk in _chunks(list(codes), 2000):
        for cid, code in conn.execute(select(customers.c.id, customers.c.member_code)
                                      .where(customers.c.member_code.in_(chunk), live,
                                             visible)):
            found[codes[code]] = int(cid)
        for cid, value in conn.execute(
                select(identities.c.customer_id, identities.c.value)
                .join(customers, customers.c.id == identities.c.customer_id)
                .where(identities.c.kind == "member_code", identity_in(chunk),
                       live, visible)):
            found.setdefault(codes[value], int(cid))
    for chunk in _chunks(list(phones), 2000):
        # phones are encrypted: found through their identities' blind indexes (a profile's
        # primary phone is always one of its phone identities)
        for cid, value in conn.execute(
                select(identities.c.customer_id, identities.c.value)
                .join(customers, customers.c.id == identities.c.customer_id)
                .where(identities.c.kind == "phone", identity_in(chunk), live,
                       visible)):
            found.setdefault(phones[value], int(cid))
    return {"customer_ids": sorted(set(found.values())),
            "unmatched": [i for i in items if i not in found]}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _ids_select(conn: Connection, actor: Actor, *, customer_ids: list[int] | None,
                segment_id: int | None, definition: Any,
                matching: tuple[Select[Any], dict[str, Any]] | None = None
                ) -> tuple[Select[Any], dict[str, Any]]:
    """The customers a bulk change targets, as a query of ``customer_id`` (scope applied), and
    how the audit entry describes them."""
    given = [x is not None for x in (customer_ids, segment_id, definition, matching)]
    if sum(given) != 1:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("target", "tag.one_target")])
    if matching is not None:
        # another area's query (a customer list's filters): the actor's scope applies again
        query, described = matching
        picked = query.subquery()
        return (select(customers.c.id.label("customer_id")).where(
            customers.c.id.in_(select(picked.c.customer_id)),
            customers.c.merged_into_id.is_(None), visible_clause(actor)), described)
    if segment_id is not None:
        d = segments.saved_definition(conn, segment_id, scope=actor)
        return segments.member_ids_select(d, scope=actor), {"segment_id": segment_id}
    if definition is not None:
        d = segments.validate(definition, conn)
        return segments.member_ids_select(d, scope=actor), {"definition": d.as_json()}
    ids = sorted({int(i) for i in customer_ids or []})
    if not ids or len(ids) > MAX_PASTED:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("customer_ids", "tag.ids_count", {"max": MAX_PASTED})])
    visible = set(conn.execute(select(customers.c.id).where(
        customers.c.id.in_(ids), customers.c.merged_into_id.is_(None),
        visible_clause(actor))).scalars())
    missing = [i for i in ids if i not in visible]
    if missing:  # nothing is written when any id is unknown or out of scope
        raise ValidationFailed("validation_failed", fields=[
            FieldError("customer_ids", "tag.customers_not_found",
                       {"ids": ", ".join(map(str, missing[:20])), "count": len(missing)})])
    return (select(customers.c.id.label("customer_id")).where(customers.c.id.in_(ids)),
            {"customer_ids": ids[:100], "customers_given": len(ids)})


def apply_tag(*, uow: UnitOfWork, actor: Actor, code: str, action: str = "add",
              customer_ids: list[int] | None = None, segment_id: int | None = None,
              definition: Any = None, note: str | None = None,
              matching: tuple[Select[Any], dict[str, Any]] | None = None,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """Add (``action="add"``) or remove a manual tag for one target: customer ids, a saved
    segment's members, a definition's, or ``matching``: a query of ``customer_id`` with how the
    audit entry describes it (no personal data), e.g. a customer list's filters; always within
    the actor's scope. Customers who already carry it (or do not) are left alone. One audit
    entry for the whole change, one event per customer changed."""
    _need(actor, "tags.apply")
    if action not in ("add", "remove"):
        raise ValidationFailed("validation_failed", fields=[
            FieldError("action", "literal_error", {"expected": "add, remove"})])
    conn = uow.c
    now = now or utcnow()
    row = _tag_row(conn, code=code)
    if row["kind"] == "rule":
        raise Conflict("tag_is_rule", fields=[FieldError("code", "tag.rule_is_automatic")])
    target, described = _ids_select(conn, actor, customer_ids=customer_ids,
                                    segment_id=segment_id, definition=definition,
                                    matching=matching)
    source = "manual" if customer_ids is not None and len(customer_ids) == 1 else "bulk"
    note = (note or "").strip()[:200] or None
    if action == "add":
        changed = _add(conn, int(row["id"]), target, source=source, actor_name=actor.name,
                       note=note, now=now)
    else:
        changed = _remove(conn, int(row["id"]), target, source=source, actor_name=actor.name,
                          note=note, now=now)
    audit.record(conn, actor, "tag.applied" if action == "add" else "tag.removed",
                 entity="tag", entity_id=row["id"],
                 details={"code": code, "changed": changed, "note": note, **described})
    uow.commit()
    return {"code": code, "action": action, "changed": changed}


def _change_one_in(conn: Connection, *, actor: Actor, customer_id: int, tag: str,
                   action: str, now: dt.datetime, source: str, note: str | None) -> int:
    _need(actor, "tags.apply")
    row = _tag_row(conn, code=tag)
    if row["kind"] == "rule":
        raise Conflict("tag_is_rule", fields=[FieldError("tag", "tag.rule_is_automatic")])
    target = select(customers.c.id.label("customer_id")).where(customers.c.id == customer_id)
    note = (note or "").strip()[:200] or None
    change = _add if action == "add" else _remove
    changed = change(conn, int(row["id"]), target, source=source, actor_name=actor.name,
                     note=note, now=now)
    if changed:  # a customer who already carries the tag (or does not) is no change
        audit.record(conn, actor, "tag.applied" if action == "add" else "tag.removed",
                     entity="tag", entity_id=row["id"],
                     details={"code": tag, "changed": changed, "note": note,
                              "customer_ids": [customer_id], "source": source})
    return changed


def add_tag_in(conn: Connection, *, actor: Actor, customer_id: int, tag: str,
               now: dt.datetime, source: str = "automation", note: str | None = None) -> int:
    """Add the manual tag ``tag`` to one customer inside the caller's transaction (never
    committing): an automation's step. Idempotent: a customer who already carries it is left
    alone (no event, no audit entry). Returns 1 when added, 0 otherwise. NotFound for an
    unknown tag; Conflict for a rule tag (Patron keeps those)."""
    return _change_one_in(conn, actor=actor, customer_id=customer_id, tag=tag, action="add",
                          now=now, source=source, note=note)


def remove_tag_in(conn: Connection, *, actor: Actor, customer_id: int, tag: str,
                  now: dt.datetime, source: str = "automation", note: str | None = None
                  ) -> int:
    """Remove the manual tag ``tag`` from one customer inside the caller's transaction, as
    :func:`add_tag_in` adds it. Returns 1 when removed, 0 when the customer did not carry it."""
    return _change_one_in(conn, actor=actor, customer_id=customer_id, tag=tag,
                          action="remove", now=now, source=source, note=note)


# --- set-based changes ----------------------------------------------------------------------

def _add(conn: Connection, tag_id: int, target: Select[Any], *, source: str, actor_name: str,
         note: str | None, now: dt.datetime) -> int:
    t = target.subquery()
    new = (select(t.c.customer_id).where(~exists().where(
        customer_tags.c.tag_id == tag_id, customer_tags.c.customer_id == t.c.customer_id)))
    fresh = new.subquery()
    # counted here: drivers differ on the row count of INSERT ... SELECT
    count = int(conn.execute(select(func.count()).select_from(fresh)).scalar_one())
    if not count:
        return 0
    # the events first: once the rows exist, "not yet tagged" selects nobody
    conn.execute(insert(tag_events).from_select(
        ["tag_id", "customer_id", "action", "source", "actor", "note", "at"],
        select(literal(tag_id, IdType), fresh.c.customer_id, literal("added", String()),
               literal(source, String()), literal(actor_name, String()),
               literal(note, String()), literal(now, UTCDateTime()))))
    conn.execute(insert(customer_tags).from_select(
        ["tag_id", "customer_id", "added_at", "added_by"],
        select(literal(tag_id, IdType), fresh.c.customer_id, literal(now, UTCDateTime()),
               literal(actor_name, String()))))
    return count


def _remove(conn: Connection, tag_id: int, target: Select[Any] | None, *, source: str,
            actor_name: str, note: str | None, now: dt.datetime,
            keep: Select[Any] | None = None, among: list[int] | None = None) -> int:
    """Remove the tag from the target's customers (or, with ``keep``, from every carrier not
    in ``keep``, optionally only ``among`` some ids)."""
    ct = customer_tags.c
    conds: list[Any] = [ct.tag_id == tag_id]
    if target is not None:
        conds.append(ct.customer_id.in_(target))
    if keep is not None:
        conds.append(ct.customer_id.not_in(keep))
    if among is not None:
        conds.append(ct.customer_id.in_(among))
    gone = select(ct.customer_id).where(and_(*conds))
    count = int(conn.execute(select(func.count()).select_from(gone.subquery())).scalar_one())
    if not count:
        return 0
    conn.execute(insert(tag_events).from_select(
        ["tag_id", "customer_id", "action", "source", "actor", "note", "at"],
        select(literal(tag_id, IdType), gone.subquery().c.customer_id,
               literal("removed", String()), literal(source, String()),
               literal(actor_name, String()), literal(note, String()),
               literal(now, UTCDateTime()))))
    conn.execute(delete(customer_tags).where(and_(*conds)))
    return count


# --- rule tags ------------------------------------------------------------------------------

def _refresh_rule(conn: Connection, row: Mapping[str, Any], *, now: dt.datetime,
                  customer_ids: list[int] | None = None, note: str) -> dict[str, int]:
    """Make the rule tag's carriers equal to its definition's members as of ``now`` (only
    among ``customer_ids`` when given)."""
    tid = int(row["id"])
    desired = segments.member_ids_select(row["definition"], scope=SYSTEM, as_of=now)
    if customer_ids is not None:
        desired = desired.where(customers.c.id.in_(customer_ids))
    added = _add(conn, tid, desired, source="rule", actor_name=RULE_ACTOR, note=note, now=now)
    removed = _remove(conn, tid, None, source="rule", actor_name=RULE_ACTOR, note=note, now=now,
                      keep=desired, among=customer_ids)
    if customer_ids is None:
        conn.execute(update(tags).where(tags.c.id == tid).values(refreshed_at=now))
    return {"added": added, "removed": removed}


def rule_tags(conn: Connection) -> list[Mapping[str, Any]]:
    return list(conn.execute(select(tags).where(tags.c.kind == "rule").order_by(tags.c.id))
                .mappings())


def refresh_rules_for(conn: Connection, customer_ids: Iterable[int | None], *,
                      now: dt.datetime, note: str) -> dict[str, int]:
    """Re-evaluate every rule tag for these customers, inside the caller's transaction (the
    order and return hooks). One query when there is no rule tag."""
    ids = sorted({int(i) for i in customer_ids if i is not None})
    if not ids:
        return {"added": 0, "removed": 0}
    rows = rule_tags(conn)
    total = {"added": 0, "removed": 0}
    for row in rows:
        for chunk in _chunks(ids, 1000):
            out = _refresh_rule(conn, row, now=now, customer_ids=chunk, note=note)
            total["added"] += out["added"]
            total["removed"] += out["removed"]
    return total


def refresh_rule_tags(*, uow: UnitOfWork, actor: Actor = SYSTEM, now: dt.datetime | None = None,
                      code: str | None = None) -> dict[str, Any]:
    """Re-evaluate rule tags (one, or all) for every customer; audited."""
    _need(actor, "tags.manage")
    conn = uow.c
    now = now or utcnow()
    rows = [_tag_row(conn, code=code)] if code else rule_tags(conn)
    out: dict[str, Any] = {}
    for row in rows:
        if row["kind"] != "rule":
            raise ValidationFailed("validation_failed", fields=[
                FieldError("code", "tag.not_a_rule")])
        out[row["code"]] = _refresh_rule(conn, row, now=now, note="refresh")
    audit.record(conn, actor, "tag.rules_refreshed", entity="tag",
                 details={"tags": out, "now": now.isoformat()})
    uow.commit()
    return {"tags": out}


def snapshot_counts(conn: Connection, *, day: dt.date) -> int:
    """Every tag's count for the day (replacing that day's), in the caller's transaction."""
    conn.execute(delete(tag_counts).where(tag_counts.c.day == day))
    counted = (select(tags.c.id, literal(day, Date()),
                      select(func.count()).select_from(customer_tags)
                      .where(customer_tags.c.tag_id == tags.c.id).scalar_subquery()))
    conn.execute(insert(tag_counts).from_select(["tag_id", "day", "customers"], counted))
    return int(conn.execute(select(func.count()).select_from(tags)).scalar_one())
