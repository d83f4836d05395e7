"""Customer use cases: merge and undo, figures rebuild, profile reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from patron.customers import figures
from patron.customers.model import PROFILE_FIELDS, merged_profile
from patron.customers.protect import identity_is, identity_row, profile_values
from patron.customers.tables import (
    customer_figures,
    customer_merges,
    customers,
    identities,
)
from patron.db import UnitOfWork, allocate_ids, utcnow
from patron.errors import Conflict, NotFound
from patron.orders.tables import orders
from patron.protection.fields import Sealed
from patron.security import audit
from patron.security.model import Actor
from patron.webhooks import service as webhooks


def lock_customers(conn: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Read (and on PostgreSQL lock) customers in id order, so two merges cannot deadlock."""
    q = select(customers).where(customers.c.id.in_(sorted(ids))).order_by(customers.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return {int(r["id"]): dict(r) for r in conn.execute(q).mappings()}


def merge_into(conn: Connection, *, survivor_id: int, merged_id: int, reason: str,
               actor: Actor) -> int:
    """Merge one profile into another, inside the caller's transaction.

    The rule (docs/merging.md): the older profile (smaller id) survives; the merged profile's
    identities, orders (with their returns) and figures move to it; profile and custom fields
    of the survivor stand and the merged profile only fills blanks. The merged row stays, marked
    ``merged_into_id``, so the merge can be undone from its snapshot.
    """
    rows = lock_customers(conn, [survivor_id, merged_id])
    if survivor_id not in rows or merged_id not in rows:
        raise NotFound("customer")
    survivor, merged = rows[survivor_id], rows[merged_id]
    if merged["merged_into_id"] is not None or survivor["merged_into_id"] is not None:
        raise Conflict("customer_already_merged")
    moved_identities = [int(i) for i in conn.execute(
        select(identities.c.id).where(identities.c.customer_id == merged_id)).scalars()]
    moved_orders = [int(i) for i in conn.execute(
        select(orders.c.id).where(orders.c.customer_id == merged_id)).scalars()]
    before = {f: _jsonable(survivor[f]) for f in (*PROFILE_FIELDS, "custom_fields")}
    merged_before = {f: _jsonable(merged[f]) for f in (*PROFILE_FIELDS, "custom_fields")}
    profile = merged_profile(survivor, merged)
    now = utcnow()
    # The member code is unique per profile: free it on the merged row before the survivor
    # may take it over.
    conn.execute(update(customers).where(customers.c.id == merged_id)
                 .values(merged_into_id=survivor_id, member_code=None, updated_at=now))
    conn.execute(update(customers).where(customers.c.id == survivor_id)
                 .values(**profile_values(survivor_id, profile), updated_at=now))
    conn.execute(update(identities).where(identities.c.customer_id == merged_id)
                 .values(customer_id=survivor_id))
    conn.execute(update(orders).where(orders.c.customer_id == merged_id)
                 .values(customer_id=survivor_id))
    conn.execute(customer_figures.delete().where(customer_figures.c.customer_id == merged_id))
    figures.rebuild(conn, [survivor_id])
    # The snapshot holds both profiles' personal data: sealed to the merge's id, known first.
    (merge_id,) = allocate_ids(conn, customer_merges, 1)
    conn.execute(insert(customer_merges).values(
        id=merge_id, survivor_id=survivor_id, merged_id=merged_id, reason=reason,
        actor=actor.name, created_at=now,
        snapshot=Sealed((merge_id,), {"identity_ids": moved_identities,
                                      "order_ids": moved_orders,
                                      "survivor_before": before,
                                      "merged_before": merged_before})))
    audit.record(conn, actor, "customers.merged", entity="customer", entity_id=survivor_id,
                 details={"merged_id": merged_id, "merge_id": int(merge_id), "reason": reason,
                          "identities": len(moved_identities), "orders": len(moved_orders)})
    webhooks.enqueue(conn, "customers.merged", [{"survivor_id": survivor_id,
                                                 "merged_id": merged_id,
                                                 "merge_id": int(merge_id)}])
    return int(merge_id)


def merge_customers(*, uow: UnitOfWork, survivor_id: int, merged_id: int, reason: str,
                    actor: Actor) -> int:
    """An owner merges two profiles by hand: the same rule as an order that links them."""
    if survivor_id == merged_id:
        raise Conflict("cannot_merge_with_itself")
    survivor, merged = sorted((survivor_id, merged_id))
    merge_id = merge_into(uow.c, survivor_id=survivor, merged_id=merged, reason=reason,
                          actor=actor)
    uow.commit()
    return merge_id


def undo_merge(*, uow: UnitOfWork, merge_id: int, actor: Actor) -> None:
    """Give the merged profile back what it brought. Orders and identities that arrived after
    the merge stay with the survivor: they were recorded against it."""
    conn = uow.c
    m = conn.execute(select(customer_merges).where(customer_merges.c.id == merge_id)
                     ).mappings().first()
    if m is None:
        raise NotFound("merge")
    survivor_id, merged_id = int(m["survivor_id"]), int(m["merged_id"])
    if actor.store_ids is not None:
        # A store-scoped actor (a custom role with "edit") undoes only merges of customers it
        # sees; anything else is as unknown to it as a missing merge.
        from patron.customers.queries import visible_customer

        try:
            visible_customer(conn, actor, survivor_id)
        except NotFound as exc:
            raise NotFound("merge") from exc
    if m["undone_at"] is not None:
        raise Conflict("merge_already_undone")
    rows = lock_customers(conn, [survivor_id, merged_id])
    if rows[survivor_id]["merged_into_id"] is not None:
        raise Conflict("survivor_merged_since")
    later = conn.execute(select(customer_merges.c.id).where(
        customer_merges.c.merged_id == survivor_id, customer_merges.c.undone_at.is_(None),
        customer_merges.c.id > merge_id)).first()
    if later:
        raise Conflict("survivor_merged_since")
    snap = m["snapshot"]
    now = utcnow()
    if snap["identity_ids"]:
        conn.execute(update(identities).where(identities.c.id.in_(snap["identity_ids"]),
                                              identities.c.customer_id == survivor_id)
                     .values(customer_id=merged_id))
    if snap["order_ids"]:
        conn.execute(update(orders).where(orders.c.id.in_(snap["order_ids"]),
                                          orders.c.customer_id == survivor_id)
                     .values(customer_id=merged_id))
    before = _from_json(snap["survivor_before"])
    merged_before = _from_json(snap["merged_before"])
    # Survivor first gives back a member code it took over, then the merged row gets its own.
    conn.execute(update(customers).where(customers.c.id == survivor_id)
                 .values(**profile_values(survivor_id, before), updated_at=now))
    conn.execute(update(customers).where(customers.c.id == merged_id)
                 .values(**profile_values(merged_id, merged_before), merged_into_id=None,
                         updated_at=now))
    figures.rebuild(conn, [survivor_id, merged_id])
    conn.execute(update(customer_merges).where(customer_merges.c.id == merge_id)
                 .values(undone_at=now, undone_by=actor.name))
    audit.record(conn, actor, "customers.merge_undone", entity="customer",
                 entity_id=survivor_id, details={"merge_id": merge_id, "merged_id": merged_id})
    webhooks.enqueue(conn, "customers.unmerged", [{"survivor_id": survivor_id,
                                                   "merged_id": merged_id,
                                                   "merge_id": merge_id}])
    uow.commit()


def _jsonable(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, dt.date):
        return {"__date__": value.isoformat()}
    return value


def _from_json(values: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt

    out = {}
    for k, v in values.items():
        if isinstance(v, dict) and "__date__" in v:
            v = dt.date.fromisoformat(v["__date__"])
        out[k] = v
    return out


def rebuild_figures(*, uow: UnitOfWork, fix: bool, actor: Actor) -> list[dict[str, Any]]:
    """Compare the incrementally kept figures with the orders; with ``fix``, rebuild them."""
    diffs = figures.compare(uow.c)
    if fix and diffs:
        figures.rebuild(uow.c)
        audit.record(uow.c, actor, "customers.figures_rebuilt",
                     details={"differences": len(diffs)})
        uow.commit()
    return diffs


def find_or_create_by_phone(conn: Connection, *, phone: str, name: str | None = None,
                            store_id: int | None = None, channel_id: int | None = None,
                            now: Any = None) -> tuple[int, bool]:
    """The live profile that owns this phone, or a new profile with it, inside the caller's
    transaction: ``(customer_id, created)``. The phone is normalised as an order's would be
    (``IdentifierError`` when it cannot be used). A concurrent creation of the same phone fails
    on the identity's unique key; the caller's retry then finds it."""
    from patron.customers.model import normalize_identity

    ident = normalize_identity("phone", phone)
    owner = conn.execute(select(identities.c.customer_id).where(
        identities.c.kind == ident.kind, identities.c.namespace == ident.namespace,
        identity_is(ident.value))).scalar()
    if owner is not None:
        return int(owner), False  # merges move identities, so the owner is the live profile
    now = now or utcnow()
    (customer_id,) = allocate_ids(conn, customers, 1)  # the id seals the personal data
    conn.execute(insert(customers).values(
        id=customer_id, **profile_values(customer_id, {"name": name, "phone": ident.value}),
        is_member=False, registration_store_id=store_id, registration_channel_id=channel_id,
        custom_fields={}, created_at=now, updated_at=now))
    conn.execute(insert(identities).values(customer_id=customer_id, created_at=now,
                                           **identity_row(kind=ident.kind,
                                                          namespace=ident.namespace,
                                                          value=ident.value)))
    webhooks.enqueue(conn, "customer.created", [{"customer_id": customer_id}])
    return customer_id, True


def add_member_code(conn: Connection, *, customer_id: int, member_code: str,
                    now: Any = None) -> None:
    """Register a membership code as the customer's identifier (so that orders and till lookups
    carrying it find the profile) and mark the profile a member; the first code becomes the
    profile's member code."""
    now = now or utcnow()
    conn.execute(insert(identities).values(customer_id=customer_id, created_at=now,
                                           **identity_row(kind="member_code", namespace="",
                                                          value=member_code)))
    conn.execute(update(customers).where(customers.c.id == customer_id)
                 .values(is_member=True, updated_at=now,
                         member_code=func.coalesce(customers.c.member_code, member_code)))
