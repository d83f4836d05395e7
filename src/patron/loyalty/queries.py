"""Reading loyalty data: a member's balance with its lots and expiry dates, the ledger, tier and
consent history, the till's lookup and the member list. Nothing here writes."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select

from patron.customers.model import IdentifierError, normalize_identity
from patron.customers.protect import identity_is
from patron.customers.queries import visible_clause
from patron.customers.tables import customers, identities
from patron.db import utcnow
from patron.errors import NotFound
from patron.loyalty.service import (
    _member,
    _program,
    _program_by_id,
    invalid,
    member_out,
    need,
    qualification,
)
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_entries,
    loyalty_lots,
    loyalty_members,
    loyalty_tier_history,
    loyalty_tiers,
)
from patron.org.tables import stores
from patron.security.model import Actor


def get_member(conn: Connection, *, actor: Actor, member_id: int) -> dict[str, Any]:
    need(actor, "loyalty.read")
    out = member_out(conn, _member(conn, actor, member_id))
    out["qualification"] = qualification(conn, _member(conn, actor, member_id), utcnow())
    return out


def balance(conn: Connection, *, actor: Actor, member_id: int,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """Points by state as of now, with every lot that still holds points and when it expires
    (local dates in the program's time zone). ``spendable`` counts only lots that are available
    and not past their expiry, whether or not the daily job has run."""
    need(actor, "loyalty.lookup")
    now = now or utcnow()
    m = _member(conn, actor, member_id, visible=actor.can("loyalty.read"))
    program = _program_by_id(conn, int(m["program_id"]))
    tz = ZoneInfo(program["timezone"])
    lt = loyalty_lots.c
    lots = []
    spendable = 0
    expiring: dict[str, int] = defaultdict(int)
    for r in conn.execute(select(loyalty_lots).where(
            lt.member_id == member_id, lt.remaining > 0).order_by(lt.expires_at, lt.id)
    ).mappings():
        if not r["activated"] and r["available_at"] > now:
            state = "pending"
        elif r["expires_at"] <= now:
            state = "expired"
        else:
            state = "available"
            spendable += int(r["remaining"])
            expiring[r["expires_at"].astimezone(tz).date().isoformat()] += int(r["remaining"])
        lots.append({"id": int(r["id"]), "points": int(r["points"]),
                     "remaining": int(r["remaining"]), "state": state,
                     "earned_at": r["earned_at"], "available_at": r["available_at"],
                     "expires_at": r["expires_at"],
                     "expires_on": r["expires_at"].astimezone(tz).date().isoformat(),
                     "order_id": r["order_id"]})
    owed = int(m["points_owed"])
    return {"member_id": member_id, "member_code": m["member_code"], "as_of": now,
            "available": int(m["points_available"]), "pending": int(m["points_pending"]),
            "held": int(m["points_held"]), "owed": owed,
            "spendable": max(0, spendable - owed),
            "value_per_yuan": int(program["redeem_points_per_yuan"]),
            "growth_value": int(m["growth_value"]),
            "expiring": [{"on": day, "points": pts} for day, pts in sorted(expiring.items())],
            "lots": lots}


def ledger(conn: Connection, *, actor: Actor, member_id: int, page: int = 1,
           page_size: int = 50) -> dict[str, Any]:
    """The member's entries, newest first, each with its cause."""
    need(actor, "loyalty.read")
    _member(conn, actor, member_id)
    e = loyalty_entries.c
    total = conn.execute(select(func.count()).where(e.member_id == member_id)).scalar_one()
    rows = conn.execute(select(loyalty_entries).where(e.member_id == member_id)
                        .order_by(e.id.desc()).limit(page_size)
                        .offset((page - 1) * page_size)).mappings()
    items = [{"id": int(r["id"]), "kind": r["kind"], "bucket": r["bucket"],
              "points": int(r["points"]), "cause": {"type": r["cause_type"], "id": r["cause_id"]},
              "order_id": r["order_id"], "rule_version_id": r["rule_version_id"],
              "reason": r["reason"], "actor": r["actor"], "at": r["created_at"]} for r in rows]
    return {"items": items, "total": int(total), "page": page, "page_size": page_size}


def tier_history(conn: Connection, *, actor: Actor, member_id: int) -> list[dict[str, Any]]:
    need(actor, "loyalty.read")
    m = _member(conn, actor, member_id)
    codes = {int(r.id): r.code for r in conn.execute(
        select(loyalty_tiers.c.id, loyalty_tiers.c.code).where(
            loyalty_tiers.c.program_id == m["program_id"]))}
    h = loyalty_tier_history.c
    return [{"from": codes.get(r["from_tier_id"]), "to": codes.get(r["to_tier_id"]),
             "reason": r["reason"], "at": r["effective_at"], "manual_until": r["manual_until"],
             "growth_value": r["growth_value"], "spend_12m": r["spend_12m"],
             "note": r["note"], "actor": r["actor"]}
            for r in conn.execute(select(loyalty_tier_history).where(h.member_id == member_id)
                                  .order_by(h.effective_at, h.id)).mappings()]


def consent_history(conn: Connection, *, actor: Actor, member_id: int) -> list[dict[str, Any]]:
    need(actor, "loyalty.read")
    _member(conn, actor, member_id)
    c = loyalty_consents.c
    codes = {int(r.id): r.code for r in conn.execute(select(stores.c.id, stores.c.code))}
    return [{"kind": r["kind"], "granted": bool(r["granted"]), "version": r["policy_version"],
             "source": r["source"], "store": codes.get(r["store_id"]), "at": r["at"],
             "actor": r["actor"]}
            for r in conn.execute(select(loyalty_consents).where(c.member_id == member_id)
                                  .order_by(c.id)).mappings()]


def lookup(conn: Connection, *, actor: Actor, program: str, member_code: str | None = None,
           phone: str | None = None) -> dict[str, Any]:
    """At the till: a member by code or phone to its masked summary, tier with benefits and
    balance (membership is chain-wide: a cashier serves members of every store)."""
    need(actor, "loyalty.lookup")
    p = _program(conn, program)
    m = loyalty_members.c
    if member_code:
        member_id = conn.execute(select(m.id).where(m.program_id == p["id"],
                                                    m.member_code == member_code.strip())
                                 ).scalar()
    elif phone:
        try:
            ident = normalize_identity("phone", phone)
        except IdentifierError as exc:
            raise invalid("phone", exc.reason) from exc
        member_id = conn.execute(
            select(m.id).join(identities, identities.c.customer_id == m.customer_id)
            .where(m.program_id == p["id"], identities.c.kind == "phone",
                   identities.c.namespace == "", identity_is(ident.value))).scalar()
    else:
        raise invalid("member_code", "member_code_or_phone_required")
    if member_id is None:
        raise NotFound("member_not_found")
    out = member_out(conn, _member(conn, actor, int(member_id), visible=False))
    out.pop("consents")
    out["balance"] = balance(conn, actor=actor, member_id=int(member_id))
    out["balance"].pop("lots")
    return out


def list_members(conn: Connection, *, actor: Actor, program: str, page: int = 1,
                 page_size: int = 50, tier: str | None = None) -> dict[str, Any]:
    """A program's members (masked), newest first; store-scoped actors see the members whose
    customer profile they see."""
    from patron.customers.model import mask_name, mask_phone

    need(actor, "loyalty.read")
    p = _program(conn, program)
    m, t = loyalty_members.c, loyalty_tiers.c
    conds = [m.program_id == p["id"], visible_clause(actor)]
    if tier is not None:
        tier_id = conn.execute(select(t.id).where(t.program_id == p["id"], t.code == tier)
                               ).scalar()
        if tier_id is None:
            raise invalid("tier", "tier_not_found", code=tier)
        conds.append(m.tier_id == tier_id)
    base = (select(loyalty_members, customers.c.name, customers.c.phone,
                   t.code.label("tier_code"))
            .join(customers, customers.c.id == m.customer_id)
            .outerjoin(loyalty_tiers, t.id == m.tier_id).where(*conds))
    total = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = conn.execute(base.order_by(m.id.desc()).limit(page_size)
                        .offset((page - 1) * page_size)).mappings()
    return {"items": [{"id": int(r["id"]), "member_code": r["member_code"],
                       "customer_id": int(r["customer_id"]), "name": mask_name(r["name"]),
                       "phone": mask_phone(r["phone"]), "status": r["status"],
                       "tier": r["tier_code"], "points_available": int(r["points_available"]),
                       "points_pending": int(r["points_pending"]),
                       "growth_value": int(r["growth_value"]), "enrolled_at": r["enrolled_at"]}
                      for r in rows],
            "total": int(total), "page": page, "page_size": page_size}
