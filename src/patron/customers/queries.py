"""Customer 360, the read side: search, list, profile, timeline, and the audited reveal.

Who sees whom (docs/customers.md): owners and analysts see every customer. A store-scoped actor
(manager, cashier, store-bound API key) sees a customer who registered at one of its stores or
has at least one order in one of them; a merged profile is visible when its survivor is. Any
other id answers exactly like a missing one (``NotFound``), so ids cannot be probed.

Personal data (name, phone, email, birthday, identifiers other than the member code) is masked
in every read, for every role; the full value comes only from :func:`reveal_personal_data`,
which needs ``personal_data.reveal`` and leaves an audit entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.dialects.postgresql import JSONB

from patron.config import get_settings
from patron.customers.figures import ranked, read_counters
from patron.customers.model import (
    IdentifierError,
    mask_email,
    mask_identifier,
    mask_name,
    mask_phone,
    normalize_phone,
)
from patron.customers.protect import identity_in, identity_is, name_search_indexes
from patron.customers.tables import (
    custom_field_defs,
    customer_figures,
    customer_merges,
    customers,
    identities,
)
from patron.db import UnitOfWork
from patron.errors import FieldError, Forbidden, NotFound, ValidationFailed
from patron.orders.tables import order_lines, order_payments, orders, return_lines, returns
from patron.org.tables import channels, stores
from patron.security import audit
from patron.security.model import Actor

MAX_PAGE_SIZE = 200
COUNT_CAP = 10_000
REVEALABLE = ("phone", "email", "name", "birthday")
# Not by name: names are encrypted, so the database cannot order them (docs/customers.md#list).
SORTS = ("id", "created_at", "last_order_at", "net_spend", "order_count")


def _need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


# --- visibility -----------------------------------------------------------------------------

def _bought_or_registered(customer_id: Any, store_ids: list[int]) -> ColumnElement[bool]:
    return exists().where(orders.c.customer_id == customer_id, orders.c.store_id.in_(store_ids))


def visible_clause(actor: Actor) -> ColumnElement[bool]:
    """The rows of ``customers`` the actor may see (see the module docstring)."""
    if actor.store_ids is None:
        return true()
    ids = sorted(actor.store_ids)
    if not ids:
        return false()
    return or_(customers.c.registration_store_id.in_(ids),
               _bought_or_registered(customers.c.id, ids))


def visible_ids(actor: Actor) -> Select[Any] | None:
    """The ids of the customers :func:`visible_clause` lets the actor see, as one set: those
    registered at its stores, union those with an order in one of them. None for who sees
    everyone.

    For a query over many customers at once (a dashboard's counts over a whole RFM scope or
    every lifecycle stage), ``id IN (this)``: the databases build the set once (PostgreSQL
    hashes it into a semi-join, SQLite materialises it) where ``visible_clause``'s EXISTS, under
    its OR, is probed once per row: 5.7 s for a store manager's count of a segment at a million
    customers. A point lookup or a short page keeps ``visible_clause``: a few probes cost less
    than gathering every buyer of the stores (docs/benchmarks.md)."""
    if actor.store_ids is None:
        return None
    ids = sorted(actor.store_ids)
    if not ids:
        return select(customers.c.id).where(false())
    return union(
        select(customers.c.id).where(customers.c.registration_store_id.in_(ids)),
        select(orders.c.customer_id).where(orders.c.store_id.in_(ids),
                                           orders.c.customer_id.is_not(None)))


def _visible_with_survivor(actor: Actor) -> ColumnElement[bool]:
    """Like :func:`visible_clause`, and a merged profile is visible when its survivor is: its
    orders moved there with the merge."""
    if actor.store_ids is None:
        return true()
    ids = sorted(actor.store_ids)
    if not ids:
        return false()
    survivor = customers.alias("survivor")
    return or_(
        visible_clause(actor),
        and_(customers.c.merged_into_id.is_not(None), exists().where(
            survivor.c.id == customers.c.merged_into_id,
            or_(survivor.c.registration_store_id.in_(ids),
                _bought_or_registered(survivor.c.id, ids)))),
    )


def visible_customer(conn: Connection, actor: Actor, customer_id: int) -> dict[str, Any]:
    """The customer row, or ``NotFound`` when it is missing or outside the actor's scope."""
    row = conn.execute(select(customers).where(customers.c.id == customer_id,
                                               _visible_with_survivor(actor))).mappings().first()
    if row is None:
        raise NotFound("customer_not_found")
    return dict(row)


# --- masking --------------------------------------------------------------------------------

def mask_birthday(value: dt.date | None) -> str | None:
    """Month and day stay (birthday offers need them); the year, which dates a person, goes."""
    return None if value is None else f"****-{value.month:02d}-{value.day:02d}"


def _summary(row: Mapping[str, Any], store_codes: dict[int, str]) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "member_code": row["member_code"],
        "is_member": bool(row["is_member"]),
        "name": mask_name(row["name"]),
        "phone": mask_phone(row["phone"]),
        "email": mask_email(row["email"]),
        "gender": row["gender"],
        "language": row["language"],
        "registration_store": store_codes.get(row["registration_store_id"] or 0),
        "created_at": row["created_at"],
        "order_count": int(row["order_count"] or 0),
        "net_spend": row["net_spend"] if row["net_spend"] is not None else Decimal("0.00"),
        "last_order_at": row["last_order_at"],
        "merged_into_id": row["merged_into_id"],
    }


def _summary_select() -> Select[Any]:
    return (select(customers, customer_figures.c.order_count, customer_figures.c.net_spend,
                   customer_figures.c.last_order_at)
            .outerjoin(customer_figures, customer_figures.c.customer_id == customers.c.id))


def _store_codes(conn: Connection) -> dict[int, str]:
    return {int(r.id): r.code for r in conn.execute(select(stores.c.id, stores.c.code))}


# --- search ---------------------------------------------------------------------------------

def _identifier_candidates(q: str) -> set[str]:
    """The stored forms ``q`` may take: as typed, as a phone number (E.164), as a member code
    (upper case), as an email (lower case)."""
    out = {q, q.upper(), q.lower()}
    try:
        out.add(normalize_phone(q))
    except IdentifierError:
        pass
    return out


def search_customers(conn: Connection, *, actor: Actor, q: str, limit: int = 20
                     ) -> list[dict[str, Any]]:
    """Find customers by phone (any format), member code, any identifier value (exact), or the
    beginning of the name. Identifier matches come first, then names in order. Every lookup is
    an index range: identities.value, customers.member_code, customers.name."""
    _need(actor, "customers.read")
    q = (q or "").strip()[:128]
    if not q:
        return []
    limit = max(1, min(int(limit), 100))
    scope = visible_clause(actor)
    candidates = sorted(_identifier_candidates(q))
    # A value matches at most one identity per kind and namespace: a handful of rows, sorted
    # here. Asked for with ORDER BY customer_id LIMIT, PostgreSQL without fresh statistics (a
    # bulk import before autovacuum's ANALYZE) walked the customer_id index and filtered every
    # row: 42 ms at 300,000 identities, 156 ms after a million-order import.
    exact_ids = sorted(int(i) for i in conn.execute(
        select(identities.c.customer_id).where(identity_in(candidates))).scalars())[:limit]
    exact_ids += [int(i) for i in conn.execute(
        select(customers.c.id).where(customers.c.member_code == q.upper())).scalars()]
    found: list[int] = list(dict.fromkeys(exact_ids))
    if found:
        found = [int(i) for i in conn.execute(
            select(customers.c.id).where(customers.c.id.in_(found),
                                         customers.c.merged_into_id.is_(None), scope)).scalars()]
        found.sort(key=lambda i: exact_ids.index(i))
    # Names are encrypted: a query matches a whole name or a surname through their blind
    # indexes (docs/customers.md#search), whole names first.
    whole, surname = name_search_indexes(q) or [None, None]
    for column, index in ((customers.c.name_index, whole), (customers.c.surname_index, surname)):
        if len(found) >= limit or index is None:
            break
        rows = conn.execute(
            select(customers.c.id).where(column == index, customers.c.merged_into_id.is_(None),
                                         scope)
            .order_by(customers.c.id).limit(limit)).scalars()
        for cid in rows:
            if int(cid) not in found:
                found.append(int(cid))
    found = found[:limit]
    if not found:
        return []
    codes = _store_codes(conn)
    rows_by_id = {int(r["id"]): r for r in conn.execute(
        _summary_select().where(customers.c.id.in_(found))).mappings()}
    return [_summary(rows_by_id[i], codes) for i in found if i in rows_by_id]


def lookup_member(conn: Connection, *, actor: Actor, kind: str, value: str,
                  platform: str = "") -> dict[str, Any]:
    """At the till: an exact identifier to a short, masked member summary. Membership is
    chain-wide, so a cashier recognises a member who registered at another store; the answer
    carries nothing but the id, member code and masked name and phone."""
    from patron.customers.model import normalize_identity

    _need(actor, "customers.lookup")
    try:
        ident = normalize_identity(kind, value, platform=platform)
    except IdentifierError as exc:
        field_name = "kind" if exc.reason == "identifier_kind_unknown" else "value"
        raise ValidationFailed("validation_failed",
                               fields=[FieldError(field_name, exc.reason)]) from exc
    row = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.is_member,
               customers.c.name, customers.c.phone)
        .join(identities, identities.c.customer_id == customers.c.id)
        .where(identities.c.kind == ident.kind, identities.c.namespace == ident.namespace,
               identity_is(ident.value))).mappings().first()
    if row is None:
        raise NotFound("customer_not_found")
    return {"id": int(row["id"]), "member_code": row["member_code"],
            "is_member": bool(row["is_member"]), "name": mask_name(row["name"]),
            "phone": mask_phone(row["phone"])}


# --- list -----------------------------------------------------------------------------------

@dataclass
class CustomerFilters:
    """What the customer list (and its export) can be narrowed by. Dates are local dates in the
    organisation's default time zone; ``custom`` maps a custom field key to a value (text,
    choice: equal; multi_choice: contains) or a ``{"min": .., "max": ..}`` range (number, date).
    """

    store: str | None = None  # store code: registered there or bought there
    channel: str | None = None  # channel code: registered through it or bought through it
    member: bool | None = None
    created_from: dt.date | None = None
    created_to: dt.date | None = None
    last_purchase_from: dt.date | None = None
    last_purchase_to: dt.date | None = None
    min_orders: int | None = None
    max_orders: int | None = None
    min_net_spend: Decimal | None = None
    max_net_spend: Decimal | None = None
    # A marketing channel (sms, wechat, app, email): customers whose consent to it is in
    # force in at least one of their memberships.
    consent: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: CustomerFilters | Mapping[str, Any] | None) -> CustomerFilters:
        if value is None:
            return cls()
        if isinstance(value, CustomerFilters):
            return value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValidationFailed("validation_failed",
                                   fields=[FieldError(k, "extra_forbidden") for k in unknown])
        return cls(**{k: v for k, v in value.items() if v is not None})

    def as_audit(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v not in (None, {}, ""):
                out[f.name] = v if isinstance(v, bool | int | str | dict) else str(v)
        return out


def _local_day_start(day: dt.date, tz: str | None = None) -> dt.datetime:
    zone = ZoneInfo(tz or get_settings().default_timezone)
    return dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.UTC)


def _store_id(conn: Connection, code: str, field_name: str = "store") -> int:
    sid = conn.execute(select(stores.c.id).where(stores.c.code == code)).scalar()
    if sid is None:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError(field_name, "unknown_store", {"value": code})])
    return int(sid)


def _channel_id(conn: Connection, code: str, field_name: str = "channel") -> int:
    cid = conn.execute(select(channels.c.id).where(channels.c.code == code)).scalar()
    if cid is None:
        raise ValidationFailed("validation_failed", fields=[
            FieldError(field_name, "unknown_channel", {"value": code})])
    return int(cid)


def active_field_defs(conn: Connection) -> dict[str, dict[str, Any]]:
    return {r["key"]: dict(r) for r in conn.execute(
        select(custom_field_defs).where(custom_field_defs.c.active.is_(True))
        .order_by(custom_field_defs.c.id)).mappings()}


def _number(value: Any, field_name: str) -> float:
    """A custom number field's bound: compared with the JSON-stored number."""
    return float(_decimal(value, field_name))


def _date_text(value: Any, field_name: str) -> str:
    try:
        return (value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
                ).isoformat()
    except ValueError as exc:
        raise ValidationFailed("validation_failed", fields=[
            FieldError(field_name, "date_parsing")]) from exc


def _custom_clause(conn: Connection, key: str, wanted: Any, definition: dict[str, Any]
                   ) -> ColumnElement[bool]:
    """One custom field condition on the JSON column, written so both databases can run it."""
    name = f"custom.{key}"
    kind = definition["type"]
    element = customers.c.custom_fields[key]
    if kind in ("number", "date"):
        if not isinstance(wanted, Mapping):
            wanted = {"min": wanted, "max": wanted}
        conds: list[ColumnElement[bool]] = []
        for bound, op in (("min", "__ge__"), ("max", "__le__")):
            if wanted.get(bound) in (None, ""):
                continue
            if kind == "number":
                conds.append(getattr(element.as_float(), op)(
                    _number(wanted[bound], f"{name}.{bound}")))
            else:
                conds.append(getattr(element.as_string(), op)(
                    _date_text(wanted[bound], f"{name}.{bound}")))
        return and_(true(), *conds)
    if kind == "multi_choice":
        if conn.dialect.name == "postgresql":
            # json has no containment operator; jsonb does
            from sqlalchemy import cast

            return cast(customers.c.custom_fields, JSONB)[key].contains([str(wanted)])
        each = func.json_each(customers.c.custom_fields, f'$."{key}"').table_valued("value")
        return exists(select(literal(1)).select_from(each).where(each.c.value == str(wanted)))
    return element.as_string() == str(wanted)


def _filter_conditions(conn: Connection, f: CustomerFilters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [customers.c.merged_into_id.is_(None)]
    fig = customer_figures.c
    if f.store:
        sid = _store_id(conn, f.store)
        conds.append(or_(customers.c.registration_store_id == sid, customers.c.id.in_(
            select(orders.c.customer_id).where(orders.c.store_id == sid))))
    if f.channel:
        chid = _channel_id(conn, f.channel)
        conds.append(or_(customers.c.registration_channel_id == chid, customers.c.id.in_(
            select(orders.c.customer_id).where(orders.c.channel_id == chid))))
    if f.member is not None:
        conds.append(customers.c.is_member.is_(bool(f.member)))
    if f.created_from:
        conds.append(customers.c.created_at >= _local_day_start(f.created_from))
    if f.created_to:
        conds.append(customers.c.created_at < _local_day_start(f.created_to + dt.timedelta(1)))
    if f.last_purchase_from:
        conds.append(fig.last_order_at >= _local_day_start(f.last_purchase_from))
    if f.last_purchase_to:
        conds.append(fig.last_order_at < _local_day_start(f.last_purchase_to + dt.timedelta(1)))
    orders_col = func.coalesce(fig.order_count, 0)
    if f.min_orders is not None:
        conds.append(orders_col >= int(f.min_orders))
    if f.max_orders is not None:
        conds.append(orders_col <= int(f.max_orders))
    spend_col = func.coalesce(customer_figures.c.net_spend, 0)
    if f.min_net_spend is not None:
        conds.append(spend_col >= _money(f.min_net_spend, "min_net_spend"))
    if f.max_net_spend is not None:
        conds.append(spend_col <= _money(f.max_net_spend, "max_net_spend"))
    if f.consent:
        from patron.privacy.service import MARKETING_CHANNELS, consented_select

        if f.consent not in MARKETING_CHANNELS:
            raise ValidationFailed("validation_failed", fields=[FieldError(
                "consent", "literal_error", {"expected": ", ".join(MARKETING_CHANNELS)})])
        conds.append(customers.c.id.in_(consented_select(f.consent)))
    if f.custom:
        defs = active_field_defs(conn)
        for key, wanted in sorted(f.custom.items()):
            if key not in defs:
                raise ValidationFailed("validation_failed", fields=[
                    FieldError(f"custom.{key}", "custom_field_unknown")])
            conds.append(_custom_clause(conn, key, wanted, defs[key]))
    return conds


def _money(value: Any, field_name: str) -> Decimal:
    """A yuan amount; the column's Money type turns it into fen for the comparison."""
    return _decimal(value, field_name)


def _decimal(value: Any, field_name: str) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValidationFailed("validation_failed", fields=[
            FieldError(field_name, "decimal_parsing")]) from exc
    if not amount.is_finite():
        raise ValidationFailed("validation_failed", fields=[
            FieldError(field_name, "decimal_parsing")])
    return amount


def _sort(sort: str) -> list[Any]:
    desc = sort.startswith("-")
    key = sort.lstrip("-+")
    if key not in SORTS:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("sort", "literal_error", {"expected": ", ".join(SORTS)})])
    col = {"id": customers.c.id,
           "created_at": customers.c.created_at,
           "last_order_at": customer_figures.c.last_order_at,
           "net_spend": customer_figures.c.net_spend,
           "order_count": customer_figures.c.order_count}[key]
    ordered = [col.desc() if desc else col.asc(),
               customers.c.id.desc() if desc else customers.c.id.asc()]
    if key in ("id", "created_at"):
        return ordered  # never blank, so the index on the column can give the order
    # Blanks last on both databases.
    return [col.desc().nulls_last() if desc else col.asc().nulls_last(), *ordered[1:]]


def customers_query(conn: Connection, actor: Actor,
                    filters: CustomerFilters | Mapping[str, Any] | None) -> Select[Any]:
    """The filtered, scoped customer rows (with figures), unsorted: the list and the export
    share it."""
    f = CustomerFilters.of(filters)
    return _summary_select().where(visible_clause(actor), *_filter_conditions(conn, f))


def list_customers(conn: Connection, *, actor: Actor,
                   filters: CustomerFilters | Mapping[str, Any] | None = None, page: int = 1,
                   page_size: int = 20, sort: str = "-created_at") -> dict[str, Any]:
    """One page of the customer list, masked, with the number of matches for the filters
    (``total``, exact up to ``COUNT_CAP``; ``total_capped`` says there are more)."""
    _need(actor, "customers.read")
    page, page_size = max(1, int(page)), max(1, min(int(page_size), MAX_PAGE_SIZE))
    base = customers_query(conn, actor, filters)
    order_by = _sort(sort)
    # Counting stops past COUNT_CAP: an exact count of a million scoped rows costs seconds and
    # a list page does not need it ("10,000+" is what the page shows).
    counted = conn.execute(select(func.count()).select_from(
        base.with_only_columns(customers.c.id).limit(COUNT_CAP + 1).subquery())).scalar_one()
    total = min(int(counted), COUNT_CAP)
    rows = conn.execute(base.order_by(*order_by).limit(page_size)
                        .offset((page - 1) * page_size)).mappings().all()
    codes = _store_codes(conn)
    return {"items": [_summary(r, codes) for r in rows], "total": total,
            "total_capped": counted > COUNT_CAP, "page": page, "page_size": page_size,
            "sort": sort}


# --- profile --------------------------------------------------------------------------------

def favourites(conn: Connection, customer_id: int) -> dict[str, Any]:
    """Favourite store, channel and hour, and the top three categories: the keys with the most
    orders (more spend, then the smaller key, break ties), from the running counters."""
    counters = read_counters(conn, [customer_id]).get(customer_id, {})
    store = next(iter(ranked(counters, "store")), None)
    channel = next(iter(ranked(counters, "channel")), None)
    hour = next(iter(ranked(counters, "hour")), None)
    cats = ranked(counters, "category")
    store_name = channel_name = None
    if store is not None:
        store_name = conn.execute(select(stores.c.name).where(stores.c.code == store[0])
                                  ).scalar()
    if channel is not None:
        channel_name = conn.execute(select(channels.c.name).where(
            channels.c.code == channel[0])).scalar()
    return {
        "store": None if store is None else {"code": store[0], "name": store_name,
                                             "orders": store[1]},
        "channel": None if channel is None else {"code": channel[0], "name": channel_name,
                                                 "orders": channel[1]},
        "categories": [{"code": key, "orders": n, "spend": spend}
                       for key, n, spend in cats[:3]],
        "hour": None if hour is None else int(hour[0]),
    }


def get_customer(conn: Connection, *, actor: Actor, customer_id: int) -> dict[str, Any]:
    """Everything the customer page shows, masked; ``NotFound`` outside the actor's scope."""
    _need(actor, "customers.read")
    c = visible_customer(conn, actor, customer_id)
    codes = _store_codes(conn)
    channel_codes = {int(r.id): r.code for r in conn.execute(select(channels.c.id,
                                                                    channels.c.code))}
    idents = [{"id": int(r.id), "kind": r.kind, "namespace": r.namespace,
               "value": r.value if r.kind == "member_code" else mask_identifier(r.kind, r.value),
               "created_at": r.created_at}
              for r in conn.execute(select(identities).where(
                  identities.c.customer_id == customer_id).order_by(identities.c.id))]
    fig = conn.execute(select(customer_figures).where(
        customer_figures.c.customer_id == customer_id)).mappings().first()
    figures = {k: v for k, v in dict(fig).items()
               if k not in ("customer_id", "counters", "first_purchase_day",
                            "last_purchase_day")} if fig else {
        "order_count": 0, "purchase_days": 0, "total_spend": Decimal("0.00"),
        "refunded": Decimal("0.00"), "net_spend": Decimal("0.00"), "first_order_at": None,
        "last_order_at": None}
    count = figures["order_count"]
    figures["average_order_value"] = (
        (figures["net_spend"] / count).quantize(Decimal("0.01")) if count else Decimal("0.00"))
    values = c["custom_fields"] or {}
    lang = actor.language if actor.language in ("zh", "en") else "zh"
    custom = [{"key": d["key"], "label": d[f"label_{lang}"], "type": d["type"],
               "options": d["options"] or [], "required": bool(d["required"]),
               "value": values.get(d["key"])}
              for d in active_field_defs(conn).values()]
    can_undo = actor.can("customers.undo_merge") and c["merged_into_id"] is None
    merges = [{"merge_id": int(m.id), "merged_id": int(m.merged_id), "reason": m.reason,
               "at": m.created_at, "by": m.actor, "undone_at": m.undone_at,
               "can_undo": can_undo and m.undone_at is None}
              for m in conn.execute(select(customer_merges).where(
                  customer_merges.c.survivor_id == customer_id)
                  .order_by(customer_merges.c.id.desc()))]
    merged_by = conn.execute(select(customer_merges.c.id).where(
        customer_merges.c.merged_id == customer_id, customer_merges.c.undone_at.is_(None))
        .order_by(customer_merges.c.id.desc())).scalar()
    return {
        "id": int(c["id"]),
        "member_code": c["member_code"],
        "is_member": bool(c["is_member"]),
        "name": mask_name(c["name"]),
        "gender": c["gender"],
        "birthday": mask_birthday(c["birthday"]),
        "phone": mask_phone(c["phone"]),
        "email": mask_email(c["email"]),
        "registration_store": codes.get(c["registration_store_id"] or 0),
        "registration_channel": channel_codes.get(c["registration_channel_id"] or 0),
        # None: messages go out in PATRON_DEFAULT_LANGUAGE (docs/messaging.md#languages)
        "language": c["language"],
        "created_at": c["created_at"],
        "updated_at": c["updated_at"],
        "identities": idents,
        "custom_fields": custom,
        "figures": figures,
        "favourites": favourites(conn, customer_id),
        "merged_into_id": c["merged_into_id"],
        "merged_by_merge_id": merged_by,
        "merges": merges,
        "can_reveal": actor.can("personal_data.reveal"),
    }


# --- timeline -------------------------------------------------------------------------------

def _local_date_range(conn: Connection, date_from: dt.date | None, date_to: dt.date | None
                      ) -> ColumnElement[bool]:
    """Orders whose purchase falls between two local dates of their own store. Stores are
    grouped by time zone so that each group is one UTC range on the purchase time."""
    if date_from is None and date_to is None:
        return true()
    default_tz = get_settings().default_timezone
    by_tz: dict[str, list[int]] = {}
    for r in conn.execute(select(stores.c.id, stores.c.timezone)):
        by_tz.setdefault(r.timezone or default_tz, []).append(int(r.id))

    def window(tz: str) -> ColumnElement[bool]:
        conds = []
        if date_from is not None:
            conds.append(orders.c.purchased_at >= _local_day_start(date_from, tz))
        if date_to is not None:
            conds.append(orders.c.purchased_at < _local_day_start(date_to + dt.timedelta(1), tz))
        return and_(*conds)

    parts = [and_(orders.c.store_id.in_(ids), window(tz)) for tz, ids in sorted(by_tz.items())]
    parts.append(and_(orders.c.store_id.is_(None), window(default_tz)))
    return or_(*parts)


def order_conditions(conn: Connection, actor: Actor, *, date_from: dt.date | None = None,
                     date_to: dt.date | None = None, store: str | None = None,
                     channel: str | None = None, category: str | None = None
                     ) -> list[ColumnElement[bool]]:
    """Conditions on ``orders`` shared by the timeline and the order export."""
    if date_from and date_to and date_from > date_to:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("date_to", "date_range_reversed")])
    conds: list[ColumnElement[bool]] = [_local_date_range(conn, date_from, date_to)]
    if actor.store_ids is not None:
        conds.append(orders.c.store_id.in_(sorted(actor.store_ids)))
    if store:
        conds.append(orders.c.store_id == _store_id(conn, store))
    if channel:
        conds.append(orders.c.channel_id == _channel_id(conn, channel))
    if category:
        conds.append(exists().where(order_lines.c.order_id == orders.c.id,
                                    order_lines.c.category == category))
    return conds


def customer_timeline(conn: Connection, *, actor: Actor, customer_id: int,
                      date_from: dt.date | None = None, date_to: dt.date | None = None,
                      store: str | None = None, channel: str | None = None,
                      category: str | None = None, page: int = 1, page_size: int = 20
                      ) -> dict[str, Any]:
    """The customer's orders, newest first, each with its lines, payments and returns."""
    _need(actor, "customers.read")
    visible_customer(conn, actor, customer_id)
    page, page_size = max(1, int(page)), max(1, min(int(page_size), MAX_PAGE_SIZE))
    conds = [orders.c.customer_id == customer_id,
             *order_conditions(conn, actor, date_from=date_from, date_to=date_to, store=store,
                               channel=channel, category=category)]
    total = conn.execute(select(func.count()).select_from(orders).where(*conds)).scalar_one()
    default_tz = get_settings().default_timezone
    rows = conn.execute(
        select(orders, stores.c.code.label("store_code"), stores.c.name.label("store_name"),
               stores.c.timezone, channels.c.code.label("channel_code"),
               channels.c.name.label("channel_name"))
        .join(channels, channels.c.id == orders.c.channel_id)
        .outerjoin(stores, stores.c.id == orders.c.store_id)
        .where(*conds).order_by(orders.c.purchased_at.desc(), orders.c.id.desc())
        .limit(page_size).offset((page - 1) * page_size)).mappings().all()
    ids = [int(r["id"]) for r in rows]
    lines: dict[int, list[dict[str, Any]]] = {}
    pays: dict[int, list[dict[str, Any]]] = {}
    rets: dict[int, list[dict[str, Any]]] = {}
    if ids:
        for ln in conn.execute(select(order_lines).where(order_lines.c.order_id.in_(ids))
                               .order_by(order_lines.c.order_id, order_lines.c.line_no)
                               ).mappings():
            lines.setdefault(int(ln["order_id"]), []).append({
                "line_no": ln["line_no"], "sku": ln["sku"], "name": ln["name"],
                "category": ln["category"], "quantity": ln["quantity"],
                "unit_price": ln["unit_price"], "discount": ln["discount"],
                "amount": ln["amount"], "returned_quantity": ln["returned_quantity"]})
        for p in conn.execute(select(order_payments).where(order_payments.c.order_id.in_(ids))
                              .order_by(order_payments.c.id)).mappings():
            pays.setdefault(int(p["order_id"]), []).append({"method": p["method"],
                                                            "amount": p["amount"]})
        ret_rows = conn.execute(select(returns).where(returns.c.order_id.in_(ids))
                                .order_by(returns.c.returned_at, returns.c.id)).mappings().all()
        ret_lines: dict[int, list[dict[str, Any]]] = {}
        if ret_rows:
            for rl in conn.execute(
                    select(return_lines, order_lines.c.line_no, order_lines.c.sku)
                    .join(order_lines, order_lines.c.id == return_lines.c.order_line_id)
                    .where(return_lines.c.return_id.in_([int(r["id"]) for r in ret_rows]))
                    .order_by(return_lines.c.id)).mappings():
                ret_lines.setdefault(int(rl["return_id"]), []).append({
                    "line_no": rl["line_no"], "sku": rl["sku"], "quantity": rl["quantity"],
                    "amount": rl["amount"]})
        for r in ret_rows:
            rets.setdefault(int(r["order_id"]), []).append({
                "id": int(r["id"]), "external_id": r["external_id"],
                "returned_at": r["returned_at"], "amount": r["amount"], "reason": r["reason"],
                "lines": ret_lines.get(int(r["id"]), [])})
    items = []
    for r in rows:
        oid = int(r["id"])
        tz = ZoneInfo(r["timezone"] or default_tz)
        items.append({
            "id": oid, "external_id": r["external_id"], "purchased_at": r["purchased_at"],
            "local_time": r["purchased_at"].astimezone(tz).isoformat(timespec="seconds"),
            "store": r["store_code"], "store_name": r["store_name"],
            "channel": r["channel_code"], "channel_name": r["channel_name"],
            "gross_amount": r["gross_amount"], "discount_amount": r["discount_amount"],
            "total_amount": r["total_amount"], "refunded_amount": r["refunded_amount"],
            "lines": lines.get(oid, []), "payments": pays.get(oid, []),
            "returns": rets.get(oid, []),
        })
    return {"items": items, "total": int(total), "page": page, "page_size": page_size}


# --- reveal ---------------------------------------------------------------------------------

def reveal_personal_data(*, uow: UnitOfWork, actor: Actor, customer_id: int, field: str) -> str:
    """The full value of one personal field (``phone``, ``email``, ``name``, ``birthday`` or
    ``identity:<id>``). Audited as ``customer.revealed`` with the field, never the value."""
    _need(actor, "personal_data.reveal")
    conn = uow.c
    c = visible_customer(conn, actor, customer_id)
    details: dict[str, Any] = {"field": field}
    if field in REVEALABLE:
        raw = c[field]
        value = raw.isoformat() if isinstance(raw, dt.date) else (raw or "")
    elif field.startswith("identity:") and field[9:].isdigit():
        ident = conn.execute(select(identities.c.kind, identities.c.value).where(
            identities.c.id == int(field[9:]), identities.c.customer_id == customer_id)).first()
        if ident is None:
            raise NotFound("identity_not_found")
        value = ident.value
        details["kind"] = ident.kind
    else:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError("field", "field_not_revealable")])
    audit.record(conn, actor, "customer.revealed", entity="customer", entity_id=customer_id,
                 details=details)
    from patron.security import alerts

    alerts.after_reveal(conn, actor_id=actor.id, actor_name=actor.name)
    uow.commit()
    return value
