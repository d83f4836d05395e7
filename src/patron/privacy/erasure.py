"""Erasing a person: everything that identifies them is removed or overwritten, while the
customer row itself stays so that orders, loyalty and stored-value ledgers and every report keep
their sums. What "identifies" means, table by table, is listed here; a test dumps the whole
database after an erasure and finds none of the person's values anywhere.

Never commits: the caller's transaction holds the erasure and everything around it."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import JSON, Connection, delete, func, insert, or_, select, update

from patron.customers.tables import customer_merges, customers, identities
from patron.orders.tables import orders
from patron.privacy.tables import privacy_erasures
from patron.protection.fields import Sealed, blind

# Columns of ``customers`` an erasure keeps: keys, flags and times that carry no personal data.
# Every other column is emptied (NULL, or {} for JSON), so that columns added later (encrypted
# values, blind indexes) are erased too unless someone decides otherwise here.
KEPT_CUSTOMER_COLUMNS = frozenset({
    "id", "is_member", "registration_store_id", "registration_channel_id", "created_at",
    "updated_at", "merged_into_id",
})
# Keys of a merge snapshot's profile copies that hold personal data.
_MERGE_PROFILES = ("survivor_before", "merged_before")


def erased_code(customer_id: int) -> str:
    """The code a membership of an erased customer keeps: unique, and clearly not a card's."""
    return f"ERASED-{customer_id}"


def _pseudonym(value: str) -> str:
    return "sha256:" + hashlib.sha256(f"patron-erased:{value}".encode()).hexdigest()


def customer_ids_of(conn: Connection, customer_id: int) -> list[int]:
    """The customer and every profile merged into it (recursively): one person's rows."""
    found = [customer_id]
    frontier = [customer_id]
    while frontier:
        frontier = [int(r) for r in conn.execute(select(customers.c.id).where(
            customers.c.merged_into_id.in_(frontier))).scalars()]
        found.extend(frontier)
    return sorted(set(found))


def _optional(name: str) -> Any:
    from patron.db import metadata
    return metadata.tables.get(name)


def customer_blanks() -> dict[str, Any]:
    """What an erasure writes into ``customers``: NULL in every nullable column not kept, {} in
    JSON ones; a NOT NULL column of another type would keep its value, so none may hold
    personal data (the erasure test would find it)."""
    out: dict[str, Any] = {}
    for c in customers.columns:
        if c.name in KEPT_CUSTOMER_COLUMNS:
            continue
        if c.nullable:
            out[c.name] = None
        elif isinstance(c.type, JSON):
            out[c.name] = {}
    return out


def erase_in(conn: Connection, *, customer_id: int, reason: str, actor_name: str,
             now: dt.datetime, request_id: int | None = None,
             retention_run_id: int | None = None) -> dict[str, int]:
    """Anonymise one person (the customer and the profiles merged into it). Returns counts of
    what was erased, by kind. The caller checked the customer exists, is visible, is not
    merged into another and has no stored value outstanding."""
    ids = customer_ids_of(conn, customer_id)
    persons = conn.execute(select(customers).where(customers.c.id.in_(ids))).mappings().all()
    phones = {p["phone"] for p in persons if p.get("phone")}
    idents = conn.execute(select(identities.c.kind, identities.c.value).where(
        identities.c.customer_id.in_(ids))).all()
    phones |= {v for k, v in idents if k == "phone"}
    counts: dict[str, int] = {"profiles": len(ids)}

    conn.execute(update(customers).where(customers.c.id.in_(ids))
                 .values(**customer_blanks(), updated_at=now))

    counts["identities"] = conn.execute(
        delete(identities).where(identities.c.customer_id.in_(ids))).rowcount or 0
    # identifiers are encrypted, bound to each order's id (docs/data-protection.md)
    order_ids = conn.execute(select(orders.c.id).where(orders.c.customer_id.in_(ids))
                             ).scalars().all()
    for order_id in order_ids:
        conn.execute(update(orders).where(orders.c.id == order_id)
                     .values(identifiers=Sealed((order_id,), [])))
    counts["orders"] = len(order_ids)

    for m in conn.execute(select(customer_merges.c.id, customer_merges.c.snapshot).where(
            or_(customer_merges.c.survivor_id.in_(ids),
                customer_merges.c.merged_id.in_(ids)))).all():
        snapshot = dict(m.snapshot or {})
        for key in _MERGE_PROFILES:
            if isinstance(snapshot.get(key), dict):
                snapshot[key] = {k: None for k in snapshot[key]}
        conn.execute(update(customer_merges).where(customer_merges.c.id == m.id)
                     .values(snapshot=Sealed((m.id,), snapshot)))

    counts.update(_erase_messages(conn, ids, now))
    counts.update(_erase_loyalty(conn, ids, phones,
                                 [f"{k}:{v}" for k, v in idents if k != "phone"]))
    counts.update(_erase_selfservice(conn, phones))
    conn.execute(insert(privacy_erasures).values(
        customer_id=customer_id, erased_at=now, reason=reason, request_id=request_id,
        retention_run_id=retention_run_id, counts=counts, actor=actor_name))
    return counts


def _erase_messages(conn: Connection, ids: list[int], now: dt.datetime) -> dict[str, int]:
    messages = _optional("messages")
    if messages is None:
        return {}
    m = messages.c
    cancelled = conn.execute(update(messages).where(
        m.customer_id.in_(ids), m.state.in_(("pending", "sending"))).values(
        state="suppressed", reason="erased", finished_at=now)).rowcount or 0
    scrubbed = 0
    for message_id in conn.execute(select(m.id).where(m.customer_id.in_(ids))).scalars().all():
        # encrypted columns, each bound to the message's id
        scrubbed += conn.execute(update(messages).where(m.id == message_id).values(
            to_address=None, address=None, subject=None, error=None,
            body=Sealed((message_id,), ""),
            variables=Sealed((message_id,), {}), data=Sealed((message_id,), {}))
        ).rowcount or 0
    attempts = _optional("message_attempts")
    if attempts is not None:  # a provider's answer may quote the address
        conn.execute(update(attempts).where(attempts.c.message_id.in_(
            select(m.id).where(m.customer_id.in_(ids)))).values(error=None))
    return {"messages": scrubbed, "messages_cancelled": cancelled}


def _erase_loyalty(conn: Connection, ids: list[int], phones: set[str],
                   accounts: list[str]) -> dict[str, int]:
    members = _optional("loyalty_members")
    if members is None:
        return {}
    out = {"memberships": 0}
    for member_id in conn.execute(select(members.c.id).where(
            members.c.customer_id.in_(ids))).scalars().all():
        conn.execute(update(members).where(members.c.id == member_id)
                     .values(member_code=erased_code(int(member_id))))
        out["memberships"] += 1
    claims = _optional("benefits_referral_claims")
    # claims are filed under blind indexes (benefits.service._claim)
    values = sorted(blind("referral-claim", v) for v in phones | set(accounts))
    if claims is not None and values:
        # The claims stop a phone or payment account earning a referral twice; they keep a
        # pseudonym instead of the value.
        n = 0
        for claim_id, value in conn.execute(select(claims.c.id, claims.c.value).where(
                claims.c.value.in_(values))).all():
            conn.execute(update(claims).where(claims.c.id == claim_id)
                         .values(value=_pseudonym(value)))
            n += 1
        out["referral_claims"] = n
    return out


def _erase_selfservice(conn: Connection, phones: set[str]) -> dict[str, int]:
    sessions = _optional("selfservice_sessions")
    codes = _optional("selfservice_codes")
    failures = _optional("selfservice_failures")
    if sessions is None or not phones:
        return {}
    from patron.selfservice.model import phone_key

    keys = [phone_key(p) for p in phones]
    # the sessions' phones are encrypted: found by reading them (debt: a phone_key column
    # would find them by index)
    doomed = [sid for sid, phone in conn.execute(select(sessions.c.id, sessions.c.phone))
              if phone in phones]
    n = conn.execute(delete(sessions).where(sessions.c.id.in_(doomed))).rowcount or 0 \
        if doomed else 0
    if codes is not None:
        used = select(sessions.c.code_id)
        conn.execute(delete(codes).where(codes.c.phone_key.in_(keys),
                                         codes.c.id.not_in(used)))
    if failures is not None:
        conn.execute(delete(failures).where(failures.c.phone_key.in_(keys)))
    return {"selfservice_sessions": n}


def is_erased(conn: Connection, customer_id: int) -> bool:
    return bool(conn.execute(select(func.count()).select_from(privacy_erasures).where(
        privacy_erasures.c.customer_id == customer_id)).scalar_one())
