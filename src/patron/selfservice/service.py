"""Self-service use cases: asking for a login code, signing in with it, the member session, and
what a signed-in member may see and do — always about the memberships of the customer who owns
the verified phone, never anyone else's.

A signed-in member acts as a :class:`MemberActor` (type ``member``): it can only enrol itself
and read its own balance, through the loyalty services, after this module has checked that the
membership asked for is the member's own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, literal, or_, select, text, update

from patron.config import get_settings
from patron.customers.model import IdentifierError, mask_phone, normalize_identity
from patron.customers.protect import identity_is
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, allocate_ids, utcnow
from patron.errors import FieldError, NotFound, TooManyAttempts, Unauthorized, ValidationFailed
from patron.loyalty import queries as loyalty_queries
from patron.loyalty import service as loyalty
from patron.loyalty.model import redemption_value
from patron.loyalty.schemas import ConsentIn, EnrolIn
from patron.loyalty.tables import loyalty_members, loyalty_order_earnings, loyalty_programs
from patron.orders.tables import order_lines, orders
from patron.org.tables import brands, channels, stores
from patron.protection.fields import Sealed
from patron.security import audit
from patron.security.model import SYSTEM, Actor
from patron.selfservice import delivery
from patron.selfservice.model import (
    LIMITS,
    CardTokenError,
    LoginLimits,
    TierProgress,
    check_card,
    code_digest,
    code_matches,
    new_code,
    normalize_code,
    parse_card,
    phone_key,
    refuse_code_request,
    refuse_verification,
    sign_card,
    tier_progress,
)
from patron.selfservice.tables import (
    selfservice_card_keys,
    selfservice_codes,
    selfservice_failures,
    selfservice_sessions,
)

MEMBER_PERMISSIONS = frozenset({"loyalty.enrol", "loyalty.lookup", "stored_value.lookup"})
CONSENT_KINDS = ("privacy", "sms", "wechat", "app", "email")
ORDERS_PAGE_SIZE = 10
COUPONS_SHOWN_AFTER_END_DAYS = 90


@dataclass(frozen=True)
class MemberActor(Actor):
    """A member acting on its own account. Its permissions are not a staff role's: no user or
    API key can be given them, and the only code that builds one checks ownership first."""

    def can(self, permission: str) -> bool:
        return permission in MEMBER_PERMISSIONS


@dataclass(frozen=True, slots=True)
class MemberSession:
    id: int
    phone: str  # E.164, proved by the one-time code
    customer_id: int | None  # the profile owning the phone now (None: nobody yet)
    expires_at: dt.datetime
    ip: str | None

    @property
    def masked_phone(self) -> str:
        return mask_phone(self.phone) or ""

    def actor(self) -> MemberActor:
        return MemberActor(type="member", id=self.customer_id,
                           name=f"member:{self.masked_phone}", role="member", ip=self.ip)


@dataclass(frozen=True, slots=True)
class CodeSent:
    masked_phone: str
    expires_at: dt.datetime


def _invalid(field: str, reason: str, **params: Any) -> ValidationFailed:
    return ValidationFailed("validation_failed", fields=[FieldError(field, reason, params)])


def _phone(raw: str) -> str:
    try:
        return normalize_identity("phone", raw).value
    except IdentifierError as exc:
        raise _invalid("phone", exc.reason) from exc


def customer_for_phone(conn: Connection, phone: str) -> int | None:
    """The profile the phone identifies now (merges move identities to the survivor)."""
    found = conn.execute(select(identities.c.customer_id).where(
        identities.c.kind == "phone", identities.c.namespace == "",
        identity_is(phone))).scalar()
    return None if found is None else int(found)


def _anonymous(phone: str | None, ip: str | None, customer_id: int | None = None) -> Actor:
    return Actor(type="member", id=customer_id,
                 name=f"member:{mask_phone(phone) if phone else '?'}", role="member", ip=ip)


def _serialize_on(conn: Connection, *keys: str) -> None:
    """Make concurrent requests about the same phone (and address) take turns, so that two at
    once cannot both pass a rate limit. SQLite has one writer already (BEGIN IMMEDIATE)."""
    if conn.dialect.name != "postgresql":
        return
    for key in keys:
        # A transaction-scoped advisory lock on 64 bits of the key's hash.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                      {"k": int.from_bytes(bytes.fromhex(phone_key(key)[:16]), "big",
                                           signed=True)})


def _times(conn: Connection, column: Any, cond: Any, since: dt.datetime, limit: int
           ) -> list[dt.datetime]:
    """When the most recent rows matching ``cond`` were written since ``since``."""
    return list(conn.execute(select(column).where(cond, column > since)
                             .order_by(column.desc()).limit(limit)).scalars())


# --- signing in ---------------------------------------------------------------------------------

def request_code(*, uow: UnitOfWork, phone: str, ip: str | None, now: dt.datetime | None = None,
                 limits: LoginLimits = LIMITS, lang: str | None = None) -> CodeSent:
    """Send a one-time code to the phone, whether or not it belongs to a customer (the answer
    is the same, so the page cannot be used to find out who is one), through the message
    outbox in the member's language. Refused with a 429 when the phone or the client address
    asked too often."""
    at = now or utcnow()
    e164 = _phone(phone)
    key = phone_key(e164)
    conn = uow.c
    _serialize_on(conn, f"phone:{e164}", f"ip:{ip}")
    since = at - dt.timedelta(hours=1)
    c = selfservice_codes.c
    by_phone = _times(conn, c.created_at, c.phone_key == key, since,
                      limits.codes_per_phone_per_hour + 1)
    by_ip = [] if ip is None else _times(conn, c.created_at, c.ip == ip, since,
                                         limits.codes_per_address_per_hour + 1)
    customer_id = customer_for_phone(conn, e164)
    who = _anonymous(e164, ip, customer_id)
    refusal = refuse_code_request(now=at, sent_to_phone=by_phone, sent_from_address=by_ip,
                                  limits=limits)
    if refusal is not None:
        audit.record(conn, who, "selfservice.code_refused", outcome="denied",
                     entity="customer" if customer_id else None, entity_id=customer_id,
                     details={"reason": refusal.reason})
        uow.commit()
        raise TooManyAttempts(refusal.reason, params={"minutes": refusal.minutes(at)})
    code = new_code()
    salt = secrets.token_hex(16)
    expires = at + dt.timedelta(minutes=limits.code_minutes)
    code_id = int(conn.execute(insert(selfservice_codes).values(
        phone_key=key, salt=salt, code_hash=code_digest(salt, e164, code), created_at=at,
        expires_at=expires, attempts=0, ip=ip).returning(c.id)).scalar_one())
    message_id = delivery.send_login_code(conn, code_id=code_id, phone=e164, code=code,
                                          customer_id=customer_id, minutes=limits.code_minutes,
                                          expires_at=expires, lang=lang, now=at)
    audit.record(conn, who, "selfservice.code_sent", entity="customer" if customer_id else None,
                 entity_id=customer_id, details={"code_id": code_id, "message_id": message_id,
                                                 "known_customer": customer_id is not None})
    uow.commit()
    return CodeSent(mask_phone(e164) or "", expires)


def _fail(uow: UnitOfWork, who: Actor, key: str, at: dt.datetime, reason: str,
          error: Exception) -> Exception:
    conn = uow.c
    conn.execute(insert(selfservice_failures).values(at=at, ip=who.ip, phone_key=key))
    audit.record(conn, who, "selfservice.login_failed", outcome="denied",
                 entity="customer" if who.id else None, entity_id=who.id,
                 details={"reason": reason})
    uow.commit()
    return error


def verify_code(*, uow: UnitOfWork, phone: str, code: str, ip: str | None,
                now: dt.datetime | None = None, limits: LoginLimits = LIMITS
                ) -> tuple[str, MemberSession]:
    """Check the newest code sent to the phone and open a member session: the token for the
    cookie (stored only as a hash) and the session. A code works once, for five minutes and
    five guesses; a wrong guess says how many remain, whatever the phone."""
    at = now or utcnow()
    e164 = _phone(phone)
    digits = normalize_code(code)
    if digits is None:
        raise _invalid("code", "selfservice.code_format")
    key = phone_key(e164)
    conn = uow.c
    customer_id = customer_for_phone(conn, e164)
    who = _anonymous(e164, ip, customer_id)
    f = selfservice_failures.c
    if ip is not None:
        failures = _times(conn, f.at, f.ip == ip, at - dt.timedelta(hours=1),
                          limits.failures_per_address_per_hour + 1)
        refusal = refuse_verification(now=at, failures_from_address=failures, limits=limits)
        if refusal is not None:
            audit.record(conn, who, "selfservice.login_failed", outcome="denied",
                         details={"reason": refusal.reason})
            uow.commit()
            raise TooManyAttempts(refusal.reason, params={"minutes": refusal.minutes(at)})
    c = selfservice_codes.c
    q = select(selfservice_codes).where(c.phone_key == key).order_by(c.created_at.desc(),
                                                                     c.id.desc()).limit(1)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None or row["consumed_at"] is not None or row["expires_at"] <= at:
        raise _fail(uow, who, key, at, "no_open_code",
                    Unauthorized("selfservice.code_invalid_or_expired"))
    if row["attempts"] >= limits.attempts_per_code:
        raise _fail(uow, who, key, at, "attempts_used",
                    TooManyAttempts("selfservice.code_attempts_used"))
    if not code_matches(row["salt"], e164, digits, row["code_hash"]):
        attempts = int(row["attempts"]) + 1
        conn.execute(update(selfservice_codes).where(c.id == row["id"])
                     .values(attempts=attempts))
        left = limits.attempts_per_code - attempts
        error: Exception = (TooManyAttempts("selfservice.code_attempts_used") if left <= 0
                            else Unauthorized("selfservice.code_wrong", params={"left": left}))
        raise _fail(uow, who, key, at, "wrong_code", error)
    conn.execute(update(selfservice_codes).where(c.id == row["id"]).values(consumed_at=at))
    token = secrets.token_urlsafe(32)
    expires = at + dt.timedelta(minutes=get_settings().member_session_minutes)
    token_hash = _token_hash(token)
    session_id = int(conn.execute(insert(selfservice_sessions).values(
        token_hash=token_hash, phone=Sealed((token_hash,), e164), code_id=row["id"],
        created_at=at,
        expires_at=expires, ip=ip).returning(selfservice_sessions.c.id)).scalar_one())
    session = MemberSession(session_id, e164, customer_id, expires, ip)
    audit.record(conn, session.actor(), "selfservice.login",
                 entity="customer" if customer_id else None, entity_id=customer_id,
                 details={"session_id": session_id})
    uow.commit()
    return token, session


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def session_for_token(conn: Connection, token: str, ip: str | None,
                      now: dt.datetime | None = None) -> MemberSession | None:
    """The open session the cookie names, with the customer its phone identifies now."""
    at = now or utcnow()
    s = selfservice_sessions.c
    row = conn.execute(select(s.id, s.phone, s.expires_at).where(
        s.token_hash == _token_hash(token), s.revoked_at.is_(None), s.expires_at > at)).first()
    if row is None:
        return None
    return MemberSession(int(row.id), row.phone, customer_for_phone(conn, row.phone),
                         row.expires_at, ip)


def logout(*, uow: UnitOfWork, session: MemberSession, now: dt.datetime | None = None) -> None:
    at = now or utcnow()
    uow.c.execute(update(selfservice_sessions).where(selfservice_sessions.c.id == session.id)
                  .values(revoked_at=at))
    audit.record(uow.c, session.actor(), "selfservice.logout",
                 entity="customer" if session.customer_id else None,
                 entity_id=session.customer_id, details={"session_id": session.id})
    uow.commit()


# --- the member's own data ----------------------------------------------------------------------

def memberships(conn: Connection, session: MemberSession) -> list[dict[str, Any]]:
    """The memberships of the customer owning the verified phone (none for a stranger)."""
    if session.customer_id is None:
        return []
    m, p = loyalty_members.c, loyalty_programs.c
    rows = conn.execute(
        select(m.id, m.member_code, m.status, p.code, p.name, brands.c.name.label("brand"))
        .join(loyalty_programs, p.id == m.program_id).join(brands, brands.c.id == p.brand_id)
        .where(m.customer_id == session.customer_id).order_by(p.code, m.id)).mappings()
    return [{"id": int(r["id"]), "member_code": r["member_code"], "status": r["status"],
             "program": r["code"], "program_name": r["name"], "brand": r["brand"]}
            for r in rows]


def own_member(conn: Connection, session: MemberSession, member_id: int | None
               ) -> dict[str, Any]:
    """The session's membership with this id (the first one when no id is given). Any other
    member id is 'not found', exactly as an id that does not exist."""
    mine = memberships(conn, session)
    if not mine:
        raise NotFound("member_not_found")
    chosen = mine[0] if member_id is None else next(
        (x for x in mine if x["id"] == member_id), None)
    if chosen is None:
        raise NotFound("member_not_found")
    return dict(conn.execute(select(loyalty_members).where(
        loyalty_members.c.id == chosen["id"])).mappings().one())


def overview(conn: Connection, *, session: MemberSession, member_id: int | None = None,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the member's home page shows: card summary, points with lots and expiry
    dates, pending points, tier and progress to the next one, consents."""
    at = now or utcnow()
    member = own_member(conn, session, member_id)
    mid = int(member["id"])
    program = loyalty._program_by_id(conn, int(member["program_id"]))
    summary = loyalty.member_out(conn, member)
    points = loyalty_queries.balance(conn, actor=session.actor(), member_id=mid, now=at)
    qualification = loyalty.qualification(conn, member, at)
    tiers = loyalty.tiers_out(conn, int(program["id"]))
    points["spendable_value"] = redemption_value(points["spendable"],
                                                 int(program["redeem_points_per_yuan"]))
    return {"member": summary, "program": _program_view(conn, program), "balance": points,
            "qualification": qualification, "tiers": tiers,
            "progress": _progress(qualification, tiers, summary["tier"]),
            "next_tier": _next_tier(qualification, tiers),
            "consents": consents_view(summary["consents"]) + [_personalisation_view(
                conn, int(member["customer_id"]))],
            "language": conn.execute(select(customers.c.language).where(
                customers.c.id == int(member["customer_id"]))).scalar()}


def _personalisation_view(conn: Connection, customer_id: int) -> dict[str, Any]:
    """The person's choice about personalised marketing (PIPL article 24), whatever the
    program: allowed until they opt out."""
    from patron.privacy.service import personalisation

    state = personalisation(conn, customer_id)
    last = state["history"][-1] if state["history"] else None
    return {"kind": "personalisation", "granted": state["allowed"], "version": None,
            "at": last["at"] if last else None}


def _program_view(conn: Connection, program: dict[str, Any]) -> dict[str, Any]:
    brand = conn.execute(select(brands.c.name).where(brands.c.id == program["brand_id"])
                         ).scalar()
    return {"id": int(program["id"]), "code": program["code"], "name": program["name"],
            "brand": brand, "privacy_version": program["privacy_version"],
            "timezone": program["timezone"], "status": program["status"],
            "redeem_points_per_yuan": int(program["redeem_points_per_yuan"])}


def _next_tier(qualification: dict[str, Any], tiers: list[dict[str, Any]]
               ) -> dict[str, Any] | None:
    nxt = qualification.get("next_tier")
    if nxt is None:
        return None
    return next((t for t in tiers if t["code"] == nxt["code"]), None)


def _progress(qualification: dict[str, Any], tiers: list[dict[str, Any]],
              current: dict[str, Any] | None) -> TierProgress | None:
    nxt = _next_tier(qualification, tiers)
    if nxt is None:
        return None
    by_spend = qualification["basis"] == "spend_12m"
    field = "min_spend" if by_spend else "min_growth"
    cur = next((t for t in tiers if current is not None and t["code"] == current["code"]), None)
    value = (Decimal(qualification["spend_12m"]) if by_spend
             else Decimal(qualification["growth_value"]))
    return tier_progress(basis=qualification["basis"], value=value,
                         current_threshold=Decimal(cur[field]) if cur else Decimal(0),
                         next_threshold=Decimal(nxt[field]))


def consents_view(current: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per kind, in a fixed order, with the state in force."""
    out = []
    for kind in CONSENT_KINDS:
        c = current.get(kind)
        out.append({"kind": kind, "granted": bool(c and c["granted"]),
                    "version": c["version"] if c else None, "at": c["at"] if c else None})
    return out


def purchases(conn: Connection, *, session: MemberSession, member_id: int | None = None,
              page: int = 1, page_size: int = ORDERS_PAGE_SIZE) -> dict[str, Any]:
    """The member's orders in the program's brand (its stores, and its store-less channels),
    newest first, with the points each earned and the lines bought."""
    member = own_member(conn, session, member_id)
    program = loyalty._program_by_id(conn, int(member["program_id"]))
    page = max(1, page)
    o, e = orders.c, loyalty_order_earnings.c
    storeless = list(program["storeless_channels"] or [])
    in_brand = stores.c.brand_id == program["brand_id"]
    if storeless:
        in_brand = or_(in_brand, and_(o.store_id.is_(None), channels.c.code.in_(storeless)))
    rows = conn.execute(
        select(o.id, o.purchased_at, o.total_amount, o.refunded_amount, o.line_count,
               stores.c.name.label("store"), stores.c.timezone, channels.c.name.label("channel"),
               func.coalesce(e.points, literal(0)).label("points"),
               func.coalesce(e.points_clawed, literal(0)).label("points_clawed"))
        .select_from(orders)
        .join(channels, channels.c.id == o.channel_id)
        .outerjoin(stores, stores.c.id == o.store_id)
        .outerjoin(loyalty_order_earnings, and_(e.order_id == o.id,
                                                e.member_id == member["id"]))
        .where(o.customer_id == member["customer_id"], in_brand)
        .order_by(o.purchased_at.desc(), o.id.desc())
        .limit(page_size + 1).offset((page - 1) * page_size)).mappings().all()
    has_next = len(rows) > page_size
    rows = rows[:page_size]
    lines: dict[int, list[dict[str, Any]]] = {}
    if rows:
        ol = order_lines.c
        for r in conn.execute(select(ol.order_id, ol.sku, ol.name, ol.quantity, ol.amount)
                              .where(ol.order_id.in_([r["id"] for r in rows]))
                              .order_by(ol.order_id, ol.line_no)).mappings():
            lines.setdefault(int(r["order_id"]), []).append(
                {"name": r["name"] or r["sku"], "quantity": r["quantity"],
                 "amount": r["amount"]})
    items = [{"id": int(r["id"]), "purchased_at": r["purchased_at"],
              "timezone": r["timezone"] or program["timezone"], "store": r["store"],
              "channel": r["channel"], "total": r["total_amount"],
              "refunded": r["refunded_amount"], "points": int(r["points"]),
              "points_clawed": int(r["points_clawed"]), "lines": lines.get(int(r["id"]), [])}
             for r in rows]
    return {"member_id": int(member["id"]), "items": items, "page": page,
            "has_next": has_next}


# --- coupons ------------------------------------------------------------------------------------

def member_coupons(conn: Connection, *, session: MemberSession, member_id: int | None = None,
                   now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The member's coupons: usable ones first (soonest to expire first), then held, used,
    revoked or expired ones of the last 90 days. Read here rather than through the coupons
    service, whose reader is the till's (it needs the permission to redeem, which a member
    does not hold)."""
    from patron.coupons import model as coupon_model
    from patron.coupons.service import terms_out
    from patron.coupons.tables import coupon_template_versions, coupon_templates, coupons

    at = now or utcnow()
    member = own_member(conn, session, member_id)
    c, tpl, ver = coupons.c, coupon_templates.c, coupon_template_versions.c
    rows = conn.execute(
        select(c.id, c.code, c.status, c.face_value, c.valid_from, c.valid_until,
               tpl.name.label("name"), ver.terms)
        .join(coupon_templates, tpl.id == c.template_id)
        .join(coupon_template_versions, ver.id == c.version_id)
        .where(c.member_id == member["id"],
               c.valid_until > at - dt.timedelta(days=COUPONS_SHOWN_AFTER_END_DAYS))
        .order_by(c.valid_until, c.id)).mappings()
    out = []
    for r in rows:
        expired = r["valid_until"] <= at
        usable = r["status"] == "available" and r["valid_from"] <= at < r["valid_until"]
        state = ("usable" if usable else "expired" if expired and r["status"] == "available"
                 else "not_yet" if r["status"] == "available" else r["status"])
        out.append({"id": int(r["id"]), "code": coupon_model.format_code(r["code"]),
                    "name": r["name"], "state": state, "face_value": r["face_value"],
                    "valid_from": r["valid_from"], "valid_until": r["valid_until"],
                    **_offer(terms_out(coupon_model.Terms.from_json(r["terms"])))})
    order = {"usable": 0, "not_yet": 1, "held": 2}
    out.sort(key=lambda x: (order.get(x["state"], 3), x["valid_until"], x["id"]))
    return out


def _offer(terms: dict[str, Any]) -> dict[str, Any]:
    """What a coupon gives, as a message key and its parameters (money in yuan)."""
    kind = terms["kind"]
    params: dict[str, Any] = {}
    if kind == "amount":
        params = {"amount": terms["amount_off"]}
    elif kind == "percent":
        off = Decimal(terms["percent_off"])
        params = {"percent": off.normalize(), "zhe": ((100 - off) / 10).normalize()}
        if terms.get("cap") is not None:
            kind = "percent_capped"
            params["cap"] = terms["cap"]
    elif kind == "threshold":
        kind = "threshold_repeat" if terms.get("repeat") else "threshold"
        params = {"threshold": terms["threshold"], "reduction": terms["reduction"]}
    elif kind == "free_item":
        params = {"sku": terms["item_sku"], "quantity": terms["item_quantity"]}
    return {"offer_key": f"selfservice.coupon.{kind}", "offer": params,
            "min_spend": terms.get("min_spend") or Decimal(0)}


# --- stored value -------------------------------------------------------------------------------

def stored_value(conn: Connection, *, session: MemberSession, member_id: int | None = None,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """The member's stored value card: what can be spent now (principal and bonus), what is
    held by a till, and each top-up's remaining money with the date its bonus expires."""
    from patron.storedvalue import service as storedvalue

    member = own_member(conn, session, member_id)
    return storedvalue.balance(conn, actor=session.actor(), member_id=int(member["id"]),
                               now=now)


# --- the QR member card -------------------------------------------------------------------------

def _card_key(conn: Connection) -> tuple[int, bytes] | None:
    k = selfservice_card_keys.c
    row = conn.execute(select(k.id, k.secret).where(k.retired_at.is_(None))
                       .order_by(k.id.desc()).limit(1)).first()
    return None if row is None else (int(row.id), bytes.fromhex(row.secret))


def ensure_card_key(*, uow: UnitOfWork, now: dt.datetime | None = None) -> tuple[int, bytes]:
    """The key cards are signed with, created on first use (two servers creating one at the
    same moment make two valid keys, which is harmless)."""
    found = _card_key(uow.c)
    if found is not None:
        return found
    secret = secrets.token_hex(32)
    key_id = allocate_ids(uow.c, selfservice_card_keys, 1)[0]
    uow.c.execute(insert(selfservice_card_keys).values(
        id=key_id, secret=Sealed((key_id,), secret), created_at=now or utcnow()))
    audit.record(uow.c, SYSTEM, "selfservice.card_key_created", entity="selfservice_card_key",
                 entity_id=key_id)
    uow.commit()
    return key_id, bytes.fromhex(secret)


def card_key(engine: Engine) -> tuple[int, bytes]:
    """The card-signing key, read without taking SQLite's write lock; only the very first
    card of a database writes (creating the key)."""
    with UnitOfWork(engine, readonly=True) as uow:
        found = _card_key(uow.c)
    if found is not None:
        return found
    with UnitOfWork(engine) as uow:
        return ensure_card_key(uow=uow)


def member_card(*, uow: UnitOfWork, session: MemberSession, member_id: int | None = None,
                now: dt.datetime | None = None, key: tuple[int, bytes] | None = None
                ) -> dict[str, Any]:
    """A freshly signed card payload for one of the member's memberships, valid for
    ``PATRON_MEMBER_CARD_SECONDS``, and its QR code as inline SVG. With ``key`` (from
    :func:`card_key`) it only reads: ``uow`` may be read-only."""
    import segno

    at = now or utcnow()
    member = own_member(uow.c, session, member_id)
    key_id, key_bytes = key if key is not None else ensure_card_key(uow=uow, now=at)
    expires = at + dt.timedelta(seconds=get_settings().member_card_seconds)
    # Whole seconds, so that the expiry shown is the one signed.
    expires = expires.replace(microsecond=0)
    payload = sign_card(member_code=member["member_code"], expires_at=expires, key_id=key_id,
                        key=key_bytes)
    svg = segno.make(payload, error="m").svg_inline(border=4, omitsize=True,
                                                    svgclass="member-qr", dark="#111827")
    return {"member_id": int(member["id"]), "member_code": member["member_code"],
            "payload": payload, "svg": svg, "expires_at": expires}


def check_member_card(conn: Connection, payload: str, *, now: dt.datetime | None = None
                      ) -> dict[str, Any]:
    """For the till: a scanned card payload to its member (id, program, member code), or a
    422 on ``member_card`` saying why it is refused (malformed, bad signature, expired,
    unknown key). Reads only."""
    at = now or utcnow()
    try:
        token, _body, _sig = parse_card(payload)
        k = selfservice_card_keys.c
        secret = conn.execute(select(k.secret).where(k.id == token.key_id,
                                                     k.retired_at.is_(None))).scalar()
        checked = check_card(payload, key=None if secret is None else bytes.fromhex(secret),
                             now=at)
    except CardTokenError as exc:
        raise _invalid("member_card", exc.reason) from exc
    m, p = loyalty_members.c, loyalty_programs.c
    row = conn.execute(select(m.id, m.status, p.code).join(loyalty_programs,
                                                           p.id == m.program_id)
                       .where(m.member_code == checked.member_code)).first()
    if row is None:
        raise NotFound("member_not_found")
    return {"member_id": int(row.id), "program": row.code, "member_code": checked.member_code,
            "status": row.status, "expires_at": checked.expires_at}


# --- enrolment and consent ----------------------------------------------------------------------

def enrolable_programs(conn: Connection, session: MemberSession) -> list[dict[str, Any]]:
    """Active programs the verified phone's customer is not a member of yet."""
    joined = {m["program"] for m in memberships(conn, session)}
    p = loyalty_programs.c
    return [{"code": r.code, "name": r.name, "brand": r.brand,
             "privacy_version": r.privacy_version}
            for r in conn.execute(select(p.code, p.name, p.privacy_version,
                                         brands.c.name.label("brand"))
                                  .join(brands, brands.c.id == p.brand_id)
                                  .where(p.status == "active").order_by(p.code))
            if r.code not in joined]


def enrol(*, uow: UnitOfWork, session: MemberSession, program: str, privacy_version: str,
          privacy_accepted: bool, marketing: dict[str, bool], name: str | None = None,
          now: dt.datetime | None = None) -> dict[str, Any]:
    """Enrol the verified phone in a program (through the loyalty service), with consent to
    the privacy policy version shown and the marketing channels ticked."""
    if not privacy_accepted:
        raise _invalid("privacy", "selfservice.privacy_required")
    body = EnrolIn.model_validate({
        "phone": session.phone, "name": (name or "").strip() or None, "source": "self_service",
        "privacy": {"version": privacy_version},
        "marketing": {k: bool(marketing.get(k)) for k in ("sms", "wechat", "app", "email")}})
    member, _created = loyalty.enrol(uow=uow, actor=session.actor(), program_code=program,
                                     body=body, now=now)
    return member


def change_consent(*, uow: UnitOfWork, session: MemberSession, member_id: int, kind: str,
                   granted: bool, now: dt.datetime | None = None) -> dict[str, Any]:
    """Grant or withdraw one of the member's own consents (the loyalty service keeps the
    history and writes the audit entry)."""
    if kind not in CONSENT_KINDS + ("personalisation",):
        raise _invalid("kind", "selfservice.consent_kind_unknown")
    member = own_member(uow.c, session, member_id)
    if kind == "personalisation":
        from patron.privacy.service import set_personalisation

        return set_personalisation(uow=uow, actor=session.actor(),
                                   customer_id=int(member["customer_id"]), allowed=granted,
                                   source="selfservice", now=now, check_permission=False)
    version = None
    if kind == "privacy" and granted:
        version = loyalty._program_by_id(uow.c, int(member["program_id"]))["privacy_version"]
    body = ConsentIn(kind=kind, granted=granted, source="self_service",  # type: ignore[arg-type]
                     version=version)
    return loyalty.record_consent(uow=uow, actor=session.actor(), member_id=int(member["id"]),
                                  body=body, now=now)


def change_language(*, uow: UnitOfWork, session: MemberSession, language: str | None
                    ) -> str | None:
    """The member chooses the language of the messages Patron sends them (None: the default
    language), for the profile behind their memberships; audited as ``customer.updated``."""
    from patron.customers.custom_fields import change_language_in
    from patron.messaging.service import live_customer

    member = own_member(uow.c, session, None)
    customer_id = live_customer(uow.c, int(member["customer_id"]))
    if customer_id is None:
        raise NotFound("customer_not_found")
    value = change_language_in(uow.c, actor=session.actor(), customer_id=customer_id,
                               language=language, source="self_service")
    uow.commit()
    return value
