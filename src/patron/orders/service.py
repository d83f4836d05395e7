"""Recording purchases from every channel: idempotent, identity-resolving, set-based.

One code path serves the single-order API, the batch API and file import: a list of orders is
checked in Python, then written with a handful of set-based statements per chunk (existing
orders and identities looked up with one query each, ids reserved, rows inserted in bulk, figures
updated by one additive upsert). Any database error rolls the whole chunk back and the chunk is
tried again, so no order is ever half-applied; a concurrent writer's order or identity is then
found by the retry and treated as the duplicate or the known identity it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from patron.config import get_settings
from patron.customers import figures as figs
from patron.customers.model import Identity, UnionFind
from patron.customers.protect import identity_indexes, identity_row, profile_values
from patron.customers.service import merge_into
from patron.customers.tables import customers, identities
from patron.db import (
    PreparedRows,
    UnitOfWork,
    allocate_ids_many,
    bulk_insert_many,
    driver_datetime,
    sqlite_fetchall,
    utcnow,
)
from patron.errors import FieldError
from patron.gc_pause import collection_paused
from patron.orders import hooks
from patron.orders.fast_validation import normalized_plain_order, plain_order
from patron.orders.model import (
    NormalizedOrder,
    canonical_content,
    differences,
    fen,
    fen_int,
    normalize_order,
)
from patron.orders.schemas import OrderIn, OrderOutcome, trusted_outcome
from patron.orders.tables import order_lines, order_payments, orders
from patron.org.service import ChannelRef, Reference, StoreRef
from patron.org.tables import channels, stores
from patron.security import audit
from patron.security.model import Actor
from patron.webhooks import service as webhooks

# The columns each recorded order writes, in the order of the tuples _record_chunk builds.
ORDER_COLUMNS = ("id", "channel_id", "scope_store_id", "external_id", "store_id", "customer_id",
                 "purchased_at", "gross_amount", "discount_amount", "total_amount", "line_count",
                 "identifiers", "content_hash", "source", "created_at")
LINE_COLUMNS = ("order_id", "line_no", "sku", "name", "category", "quantity", "unit_price",
                "discount", "amount")
PAYMENT_COLUMNS = ("order_id", "method", "amount")

TEMP_BASE = 10**15  # temporary ids for customers this chunk creates, above any real id
MAX_ATTEMPTS = 4


@dataclass(slots=True)
class _Item:
    index: int
    order: NormalizedOrder | None = None
    errors: list[FieldError] | None = None
    channel: ChannelRef | None = None
    store: StoreRef | None = None
    key: tuple[int, int, str] | None = None
    status: str = "rejected"
    order_id: int | None = None
    customer_id: int | None = None
    diffs: list[dict[str, Any]] | None = None


def validation_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
        out.append(FieldError(loc or "body", err["type"], ctx))
    return out


def record_orders(*, uow: UnitOfWork, orders_in: Sequence[OrderIn | dict[str, Any]], source: str,
                  actor: Actor, now: dt.datetime | None = None, audit_each: bool = True,
                  request_ips: Sequence[str | None] | None = None,
                  before_commit: Callable[[Connection, list[OrderOutcome]], None] | None = None,
                  ) -> list[OrderOutcome]:
    """Record a chunk of orders in one transaction and say what happened to each.

    With ``audit_each`` every created order gets its own audit entry (``request_ips`` gives
    each order's caller address when the chunk gathers several requests); bulk paths (file
    import, the generator) pass False and write one entry for the whole job.
    ``before_commit`` writes the caller's own record of the chunk (a file import's progress
    and bad rows) in the same transaction; it runs again if the chunk is retried.
    """
    with collection_paused():
        for attempt in range(MAX_ATTEMPTS):
            try:
                outcomes = record_orders_in(uow.c, orders_in, source=source, actor=actor,
                                            now=now or utcnow(), audit_each=audit_each,
                                            request_ips=request_ips)
                if before_commit is not None:
                    before_commit(uow.c, outcomes)
                uow.commit()
                return outcomes
            except (IntegrityError, DBAPIError) as exc:
                uow.rollback()
                if attempt == MAX_ATTEMPTS - 1 or not _retryable(exc):
                    raise
    raise AssertionError("unreachable")


def record_orders_in(conn: Connection, orders_in: Sequence[OrderIn | dict[str, Any]], *,
                     source: str, actor: Actor, now: dt.datetime, audit_each: bool = True,
                     request_ips: Sequence[str | None] | None = None) -> list[OrderOutcome]:
    """:func:`record_orders` inside the caller's open transaction (the POS checkout records
    its order together with the redemptions that pay for it): never commits, never retries;
    on a database error the caller rolls back and runs its whole transaction again."""
    outcomes, created = _record_chunk(conn, orders_in, source=source, actor=actor, now=now)
    if audit_each and created:
        audit.record_many(conn, [
            (actor if request_ips is None else replace(actor, ip=request_ips[o.index]),
             "orders.recorded", "order", o.order_id,
             {"source": source, "external_id": o.external_id})
            for o in outcomes if o.status == "created"])
    return outcomes


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # a concurrent writer recorded the same order or identity first
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")  # serialization failure, deadlock


def _prepare(conn: Connection, ref: Reference, raw: Sequence[OrderIn | dict[str, Any]],
             actor: Actor, now: dt.datetime) -> list[_Item]:
    items = []
    default_tz = get_settings().default_timezone

    def store_tz(code: str | None) -> str:
        store = ref.store(code) if code else None
        return store.timezone if store else default_tz

    for index, payload in enumerate(raw):
        item = _Item(index)
        items.append(item)
        # Plain payloads (file rows, most batch bodies) are checked and normalised in one pass
        # without Pydantic; anything that pass cannot vouch for takes the usual path below.
        fast = (normalized_plain_order(payload, store_tz=store_tz, now=now)
                if type(payload) is dict else None)
        if fast is not None and _admit(item, fast, ref, actor):
            continue
        order_in = payload if isinstance(payload, OrderIn) else plain_order(payload)
        if order_in is None:
            try:
                order_in = OrderIn.model_validate(payload)
            except ValidationError as exc:
                item.errors = validation_errors(exc)
                continue
        errors: list[FieldError] = []
        channel = ref.channel(order_in.channel)
        store = ref.store(order_in.store)
        if channel is None:
            errors.append(FieldError("channel", "unknown_channel", {"value": order_in.channel}))
        elif actor.channel_codes is not None and channel.code not in actor.channel_codes:
            errors.append(FieldError("channel", "channel_out_of_scope"))
        if order_in.store and store is None:
            errors.append(FieldError("store", "unknown_store", {"value": order_in.store}))
        if channel is not None and channel.requires_store and not order_in.store:
            errors.append(FieldError("store", "store_required"))
        if actor.store_ids is not None and (store is None or store.id not in actor.store_ids):
            errors.append(FieldError("store", "store_out_of_scope"))
        normalized, order_errors = normalize_order(
            order_in, store_tz=store.timezone if store else default_tz, now=now)
        errors.extend(order_errors)
        if errors or channel is None or normalized is None:
            item.errors = errors
            continue
        item.order, item.channel, item.store = normalized, channel, store
        scope = store.id if (channel.requires_store and store) else 0
        item.key = (channel.id, scope, normalized.external_id)
    return items


def _admit(item: _Item, order: NormalizedOrder, ref: Reference, actor: Actor) -> bool:
    """Take an order normalised by the one-pass check when its channel and store pass the
    checks :func:`_prepare` makes; False leaves it to the usual path, which names the
    reasons."""
    channel = ref.channel(order.channel)
    if channel is None or (actor.channel_codes is not None
                           and channel.code not in actor.channel_codes):
        return False
    store = ref.store(order.store) if order.store else None
    if (order.store and store is None) or (channel.requires_store and not order.store):
        return False
    if actor.store_ids is not None and (store is None or store.id not in actor.store_ids):
        return False
    item.order, item.channel, item.store = order, channel, store
    item.key = (channel.id, store.id if (channel.requires_store and store) else 0,
                order.external_id)
    return True


def _record_chunk(conn: Connection, raw: Sequence[OrderIn | dict[str, Any]], *, source: str,
                  actor: Actor, now: dt.datetime) -> tuple[list[OrderOutcome], list[int]]:
    ref = Reference(conn)
    items = _prepare(conn, ref, raw, actor, now)
    valid = [it for it in items if it.order is not None]

    # 1. Orders already recorded under the same channel (+ store) and external id, and on
    # PostgreSQL in the same round trip the owners of the identifiers these orders carry.
    order_keys = list({it.key for it in valid if it.key})
    known: list[tuple[tuple[str, str, str], int]] | None = None
    index_of: dict[str, str] = {}  # identifier value -> its blind index, as the lookups find them
    if conn.dialect.name == "postgresql":
        rows, known = _pg_existing_and_known(
            conn, order_keys, list({i.key for it in valid for i in it.order.identities}),  # type: ignore[union-attr]
            index_of)
    else:
        rows = _existing_orders(conn, order_keys)
    existing: dict[tuple[int, int, str], Any] = {}
    for r in rows:
        existing[(r.channel_id, r.scope_store_id, r.external_id)] = r
    fresh: list[_Item] = []
    first_in_chunk: dict[tuple[int, int, str], _Item] = {}
    repeats: list[tuple[_Item, _Item]] = []
    for it in valid:
        assert it.key and it.order
        h = it.order.content_hash
        if it.key in existing:
            row = existing[it.key]
            it.order_id, it.customer_id = int(row.id), row.customer_id
            if row.content_hash == h:
                it.status = "duplicate"
            else:
                # A different digest can also come from an order recorded before the digest's
                # form changed: only a real difference in the facts is a conflict.
                it.diffs = differences(stored_canonical(conn, int(row.id)), it.order.canonical())
                it.status = "conflict" if it.diffs else "duplicate"
        elif it.key in first_in_chunk:
            first = first_in_chunk[it.key]
            assert first.order
            # Answered with the first's order and customer once they have their ids, as a
            # retry of an order recorded earlier is.
            repeats.append((it, first))
            if first.order.content_hash == h:
                it.status = "duplicate"
            else:
                it.status = "conflict"
                it.diffs = differences(first.order.canonical(), it.order.canonical())
        else:
            first_in_chunk[it.key] = it
            it.status = "created"
            fresh.append(it)

    # 2. Identity resolution: one query for every identifier of the chunk (on PostgreSQL
    # asked above for every valid order: the owners of a duplicate's identifiers are known
    # owners as well, so the superset resolves the fresh orders alike).
    if known is None:
        wanted = list({idn.key for it in fresh for idn in it.order.identities})  # type: ignore[union-attr]
        known = _known_identities(conn, wanted, index_of)
    owner: dict[tuple[str, str, str], int] = dict(known)

    uf = UnionFind()
    new_customers: dict[int, _Item] = {}  # temp id -> the order that introduced the customer
    new_identities: list[tuple[Identity, int]] = []
    merges: list[tuple[int, int, _Item]] = []
    order_customer: dict[int, int] = {}
    next_temp = TEMP_BASE
    for it in fresh:
        assert it.order
        if not it.order.identities:
            continue  # a guest sale
        found = {uf.find(owner[i.key]) for i in it.order.identities if i.key in owner}
        if not found:
            next_temp += 1
            cid = next_temp
            new_customers[cid] = it
        else:
            cid = min(found)
            for other in sorted(found - {cid}):
                if other < TEMP_BASE and cid < TEMP_BASE:
                    merges.append((cid, other, it))
                uf.union(cid, other)
        for idn in it.order.identities:
            if idn.key not in owner:
                owner[idn.key] = cid
                new_identities.append((idn, cid))
        order_customer[it.index] = cid

    # 3. Merges of profiles that already existed, the older one surviving.
    for survivor, merged, it in merges:
        assert it.order and it.channel
        merge_into(conn, survivor_id=uf.find(survivor), merged_id=merged,
                   reason=f"order {it.channel.code}/{it.order.external_id} carried identifiers "
                          "of both", actor=actor)

    # 4. Real ids for the customers this chunk creates, then every row in bulk.
    roots = sorted(t for t in new_customers if uf.find(t) == t)
    customer_ids, order_ids = allocate_ids_many(conn, [(customers, len(roots)),
                                                       (orders, len(fresh))])
    real = dict(zip(roots, customer_ids, strict=True))

    def final(cid: int) -> int:
        root = uf.find(cid)
        return real.get(root, root)

    customer_rows = []
    for temp in roots:
        it = new_customers[temp]
        assert it.order and it.channel
        customer_rows.append(_new_customer_row(real[temp], it, owner, uf, now))
    identity_rows = [identity_row(kind=idn.kind, namespace=idn.namespace, value=idn.value,
                                  index=index_of.get(idn.value), customer_id=final(cid),
                                  created_at=now)
                     for idn, cid in new_identities]

    when = driver_datetime(conn.dialect)
    created_at = when(now)
    # What Sealed((id,), identifiers) binds as, the JSON array of [kind, namespace, value]
    # arrays written by orjson; sealed together (one key lookup, the nonces drawn at once).
    sealed_identifiers = orders.c.identifiers.type.seal_texts(
        [(oid,) for oid in order_ids],
        [orjson.dumps([i.key for i in it.order.identities]).decode()  # type: ignore[union-attr]
         for it in fresh])
    order_rows, line_rows, payment_rows = [], [], []
    deltas: dict[int, figs.RecordedFigures] = {}
    for it, oid, sealed in zip(fresh, order_ids, sealed_identifiers, strict=True):
        o = it.order
        assert o and it.key and it.channel
        cid = final(order_customer[it.index]) if it.index in order_customer else None
        it.order_id, it.customer_id = oid, cid
        purchased_at = when(o.purchased_at)
        order_rows.append((
            oid, it.key[0], it.key[1], o.external_id, it.store.id if it.store else None, cid,
            purchased_at, o.gross_fen, o.discount_fen, o.total_fen, len(o.lines),
            sealed,
            o.content_hash, source, created_at))
        categories: dict[str, int] = {}  # spend per category in fen
        for ln in o.lines:
            line_rows.append((oid, ln.line_no, ln.sku, ln.name, ln.category, ln.quantity_k,
                              ln.unit_price_fen, ln.discount_fen, ln.amount_fen))
            if ln.category:
                categories[ln.category] = categories.get(ln.category, 0) + ln.amount_fen
        for method, amount in o.payments:
            payment_rows.append((oid, method, fen_int(amount)))
        if cid is not None:
            delta = deltas.get(cid)
            if delta is None:
                delta = deltas[cid] = figs.RecordedFigures()
            delta.add(purchased_at, o.local_time, o.total_fen,
                      it.store.code if it.store else None, it.channel.code, categories)
    for it, first in repeats:
        it.order_id, it.customer_id = first.order_id, first.customer_id
    bulk_insert_many(conn, [(customers, customer_rows), (identities, identity_rows),
                            PreparedRows(orders, ORDER_COLUMNS, order_rows),
                            PreparedRows(order_lines, LINE_COLUMNS, line_rows),
                            PreparedRows(order_payments, PAYMENT_COLUMNS, payment_rows)])
    figs.apply_deltas(conn, deltas, new_customer_ids=set(customer_ids),
                      chunk_order_ids=set(order_ids))
    # The hooks' configuration and the webhook endpoints are asked in one statement.
    events = ("customer.created", "order.recorded")
    found = (hooks.orders_recorded(conn, _RecordedOrders(fresh, source), actor=actor, now=now,
                                   also={"webhooks": webhooks.any_active_endpoint()})
             if fresh else {"webhooks": False})  # nothing created: no hook, no event

    created = [it for it in items if it.status == "created"]
    subs = (webhooks.subscribers(conn, events) if found["webhooks"]
            else {event: [] for event in events})
    if subs["customer.created"]:
        webhooks.enqueue(conn, "customer.created",
                         [{"customer_id": r["id"]} for r in customer_rows],
                         endpoints=subs["customer.created"])
    if subs["order.recorded"]:
        webhooks.enqueue(conn, "order.recorded", [
            {"order_id": it.order_id, "external_id": it.order.external_id,  # type: ignore[union-attr]
             "channel": it.channel.code, "customer_id": it.customer_id,  # type: ignore[union-attr]
             "total": str(it.order.total)} for it in created],  # type: ignore[union-attr]
            endpoints=subs["order.recorded"])
    # Not validated: these values are ours and already valid; validating them again cost as
    # much as validating the orders (and model_construct's generic steps a tenth of that).
    outcomes = [trusted_outcome(
        it.index, it.status,
        it.order.external_id if it.order else _raw_external_id(raw[it.index]),
        it.order_id, it.customer_id,
        [e.as_dict() for e in it.errors] if it.errors else [], it.diffs or [],
    ) for it in items]
    return outcomes, [int(it.order_id) for it in created if it.order_id]


# One probe of the unique index per key. As a plain join the planner hashed the whole orders
# table for every chunk while it thought the table small (measured at 20,000 orders: 69 ms a
# chunk, growing with the table, against 22 ms for the probes); LIMIT 1 (there is at most
# one order per key) keeps the lateral subquery from being flattened back into that join.
_PG_EXISTING_ORDERS = text("""
SELECT o.id, o.channel_id, o.scope_store_id, o.external_id, o.content_hash, o.customer_id
FROM unnest(CAST(:c AS bigint[]), CAST(:s AS bigint[]), CAST(:e AS text[])) AS k(c, s, e)
CROSS JOIN LATERAL (
  SELECT o.id, o.channel_id, o.scope_store_id, o.external_id, o.content_hash, o.customer_id
  FROM orders o
  WHERE o.channel_id = k.c AND o.scope_store_id = k.s AND o.external_id = k.e
  LIMIT 1) AS o
""")

_PG_KNOWN_IDENTITIES = text("""
SELECT i.kind, i.namespace, i.value_index, i.customer_id
FROM unnest(CAST(:k AS text[]), CAST(:n AS text[]), CAST(:v AS text[])) AS w(k, n, v)
JOIN identities i ON i.kind = w.k AND i.namespace = w.n AND i.value_index = w.v
""")


# Both lookups of a chunk in one round trip: the orders' rows (``src`` 'o') and the
# identities' owners ('i'); each identity is one probe of its unique index too.
_PG_EXISTING_AND_KNOWN = text("""
SELECT 'o' AS src, o.id, o.channel_id, o.scope_store_id, o.external_id, o.content_hash,
       o.customer_id, NULL AS kind, NULL AS namespace, NULL AS value_index
FROM unnest(CAST(:c AS bigint[]), CAST(:s AS bigint[]), CAST(:e AS text[])) AS k(c, s, e)
CROSS JOIN LATERAL (
  SELECT o.id, o.channel_id, o.scope_store_id, o.external_id, o.content_hash, o.customer_id
  FROM orders o
  WHERE o.channel_id = k.c AND o.scope_store_id = k.s AND o.external_id = k.e
  LIMIT 1) AS o
UNION ALL
SELECT 'i', NULL, NULL, NULL, NULL, NULL, i.customer_id, i.kind, i.namespace, i.value_index
FROM unnest(CAST(:k AS text[]), CAST(:n AS text[]), CAST(:v AS text[])) AS w(k, n, v)
CROSS JOIN LATERAL (
  SELECT i.customer_id, i.kind, i.namespace, i.value_index
  FROM identities i
  WHERE i.kind = w.k AND i.namespace = w.n AND i.value_index = w.v
  LIMIT 1) AS i
""")


_SQLITE_EXISTING_ORDERS = text("""
SELECT o.id, o.channel_id, o.scope_store_id, o.external_id, o.content_hash, o.customer_id
FROM json_each(:keys) AS k
JOIN orders o ON o.channel_id = json_extract(k.value, '$[0]')
 AND o.scope_store_id = json_extract(k.value, '$[1]')
 AND o.external_id = json_extract(k.value, '$[2]')
""")

# By the blind index alone (its own index): half the time of a join on the three columns
# pulled out of each key with json_extract (2,200 keys at 20,000 orders: 5.6 ms against 11).
# An index is the value's whatever its kind, so the caller keeps only the kinds it asked for.
_SQLITE_KNOWN_IDENTITIES = """
SELECT i.kind, i.namespace, i.value_index, i.customer_id
FROM json_each(?) AS k
JOIN identities i ON i.value_index = k.value
"""


class _RecordedOrders(Sequence[hooks.RecordedOrder]):
    """The chunk's new orders as the hooks see them, each built when a hook first reads it:
    a chunk that meets no loyalty program (the hook stops at its first member order to look
    for one) builds one or two instead of thousands."""

    def __init__(self, items: list[_Item], source: str) -> None:
        self._items = items
        self._source = source
        self._built: list[hooks.RecordedOrder | None] = [None] * len(items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> hooks.RecordedOrder: ...

    @overload
    def __getitem__(self, index: slice) -> list[hooks.RecordedOrder]: ...

    def __getitem__(self, index: int | slice) -> hooks.RecordedOrder | list[hooks.RecordedOrder]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        built = self._built[index]
        if built is None:
            built = self._built[index] = _recorded(self._items[index], self._source)
        return built


def _recorded(it: _Item, source: str) -> hooks.RecordedOrder:
    o = it.order
    assert o is not None and it.channel is not None and it.order_id is not None
    return hooks.RecordedOrder(
        order_id=it.order_id, customer_id=it.customer_id, channel_code=it.channel.code,
        store_id=it.store.id if it.store else None, store_code=it.store.code if it.store else None,
        purchased_at=o.purchased_at, local_time=o.local_time, total=o.total,
        discount=o.discount,
        lines=tuple(hooks.RecordedLine(None, ln.line_no, ln.sku, ln.category, ln.quantity,
                                       ln.amount) for ln in o.lines),
        payments=tuple(o.payments), source=source)


def _existing_orders(conn: Connection, keys: list[tuple[int, int, str]]) -> list[Any]:
    """Orders already recorded under any of these (channel, store scope, external id)."""
    if not keys:
        return []
    if conn.dialect.name == "postgresql":
        # Arrays joined against the unique index: one fast plan whatever the chunk size.
        return list(conn.execute(_PG_EXISTING_ORDERS, {
            "c": [k[0] for k in keys], "s": [k[1] for k in keys], "e": [k[2] for k in keys]}))
    # SQLite scans a whole index for a row-value IN list; a join from json_each searches the
    # unique index once per key.
    return list(conn.execute(_SQLITE_EXISTING_ORDERS, {"keys": orjson.dumps(keys).decode()}))


def _pg_existing_and_known(conn: Connection, order_keys: list[tuple[int, int, str]],
                           identity_keys: list[tuple[str, str, str]],
                           index_of: dict[str, str] | None = None,
                           ) -> tuple[list[Any], list[tuple[tuple[str, str, str], int]]]:
    """:func:`_existing_orders` and :func:`_known_identities` on PostgreSQL, in one statement."""
    if not order_keys:
        return [], []
    indexes = identity_indexes([v for _k, _n, v in identity_keys])
    if index_of is not None:
        index_of.update(zip([v for _k, _n, v in identity_keys], indexes, strict=True))
    by_index = {index: key[2] for index, key in zip(indexes, identity_keys, strict=True)}
    rows = conn.execute(_PG_EXISTING_AND_KNOWN, {
        "c": [k[0] for k in order_keys], "s": [k[1] for k in order_keys],
        "e": [k[2] for k in order_keys],
        "k": [k[0] for k in identity_keys], "n": [k[1] for k in identity_keys],
        "v": indexes}).all()
    return ([r for r in rows if r.src == "o"],
            [((r.kind, r.namespace, by_index[r.value_index]), int(r.customer_id))
             for r in rows if r.src == "i"])


def _known_identities(conn: Connection, keys: list[tuple[str, str, str]],
                      index_of: dict[str, str] | None = None,
                      ) -> list[tuple[tuple[str, str, str], int]]:
    """The owners of the identities already known among ``keys``: (key, customer id). Found by
    their blind indexes (the values are encrypted); ``index_of`` receives each value's."""
    if not keys:
        return []
    indexes = identity_indexes([v for _k, _n, v in keys])
    if index_of is not None:
        index_of.update(zip([v for _k, _n, v in keys], indexes, strict=True))
    indexed = [(k, n, i) for (k, n, _v), i in zip(keys, indexes, strict=True)]
    by_index = {i[2]: key[2] for i, key in zip(indexed, keys, strict=True)}
    if conn.dialect.name == "postgresql":
        rows = conn.execute(_PG_KNOWN_IDENTITIES, {
            "k": [k[0] for k in indexed], "n": [k[1] for k in indexed],
            "v": [k[2] for k in indexed]})
        return [((r.kind, r.namespace, by_index[r.value_index]), int(r.customer_id))
                for r in rows]
    wanted = set(indexed)
    found = {}
    # Through the driver: plain columns, nothing for SQLAlchemy's result processing to do.
    for kind, namespace, index, customer_id in sqlite_fetchall(
            conn, _SQLITE_KNOWN_IDENTITIES, (orjson.dumps(list(by_index)).decode(),)):
        if (kind, namespace, index) in wanted:
            found[(kind, namespace, by_index[index])] = int(customer_id)
    return list(found.items())


def _raw_external_id(payload: Any) -> str | None:
    if isinstance(payload, OrderIn):
        return payload.external_id
    if isinstance(payload, dict):
        value = payload.get("external_id")
        return str(value) if value is not None else None
    return None


def _new_customer_row(cid: int, it: _Item, owner: dict[tuple[str, str, str], int],
                      uf: UnionFind, now: dt.datetime) -> dict[str, Any]:
    assert it.order and it.channel
    by_kind = {i.kind: i.value for i in it.order.identities}
    hint = it.order.customer_hint
    return {
        "id": cid,
        **profile_values(cid, {"name": hint.get("name"), "birthday": hint.get("birthday"),
                               "phone": by_kind.get("phone"), "email": by_kind.get("email")}),
        "gender": hint.get("gender"),
        "language": hint.get("language"),
        "member_code": by_kind.get("member_code"),
        "is_member": "member_code" in by_kind,
        "registration_store_id": it.store.id if it.store else None,
        "registration_channel_id": it.channel.id,
        "custom_fields": {},
        # A profile born from history (an import, a till's backlog) dates from its first
        # purchase, so acquisition cohorts are right.
        "created_at": min(now, it.order.purchased_at),
        "updated_at": now,
    }


def stored_canonical(conn: Connection, order_id: int) -> dict[str, Any]:
    """An order's canonical content rebuilt from its rows (for telling a retry what differs)."""
    o = conn.execute(select(orders, channels.c.code.label("channel_code"),
                            stores.c.code.label("store_code"))
                     .join(channels, channels.c.id == orders.c.channel_id)
                     .outerjoin(stores, stores.c.id == orders.c.store_id)
                     .where(orders.c.id == order_id)).mappings().one()
    lines = conn.execute(select(order_lines).where(order_lines.c.order_id == order_id)
                         .order_by(order_lines.c.line_no)).mappings().all()
    pays = conn.execute(select(order_payments.c.method, order_payments.c.amount)
                        .where(order_payments.c.order_id == order_id)).all()
    return canonical_content(
        external_id=o["external_id"], channel=o["channel_code"], store=o["store_code"],
        purchased_at=o["purchased_at"],
        identities=[tuple(i) for i in o["identifiers"]],  # type: ignore[misc]
        lines=[(ln["sku"], ln["category"], ln["quantity"], ln["unit_price"], ln["discount"],
                ln["amount"]) for ln in lines],
        payments=[(m, a) for m, a in pays],
        discount=o["discount_amount"], total=o["total_amount"],
    )


__all__ = ["record_orders", "record_orders_in", "stored_canonical", "fen", "update"]
