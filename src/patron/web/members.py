"""Member pages: one page per program membership (``/members/{id}``) with the points balance,
the ledger with each entry's cause, lots and their expiry, tier and progress to the next tier,
tier history, coupons, stored value and rewards; the manual points adjustment form; consent
withdrawal; and enrolling a customer from the customer 360 page. Every figure is read through
the loyalty, coupons, stored-value and rewards services (their permissions and store scope
apply); every write goes through their services, which audit it."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection, select

from patron.coupons import service as coupons
from patron.customers import queries as customer_queries
from patron.customers.tables import customers
from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import RecentAuth, UowDep, declare_guard
from patron.errors import Forbidden, NotFound, PatronError
from patron.i18n import t
from patron.loyalty import queries, service
from patron.loyalty.schemas import AdjustIn, ConsentIn, EnrolIn
from patron.loyalty.tables import loyalty_members, loyalty_operations, loyalty_programs
from patron.orders.tables import orders, returns
from patron.org.tables import stores
from patron.rewards import service as rewards
from patron.security.model import Actor
from patron.storedvalue import queries as sv_queries
from patron.storedvalue import service as storedvalue
from patron.web.forms import service_errors, validate, values
from patron.web.render import (
    PageRoute,
    need,
    page_language,
    path_id,
    posted_form,
    redirect,
    render,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

LEDGER_PAGE_SIZE = 20
SV_PAGE_SIZE = 20
MARKETING = ("sms", "wechat", "app", "email")
CONSENT_KINDS = ("privacy", *MARKETING)


# --- shared by the loyalty pages ------------------------------------------------------------

def new_key(prefix: str) -> str:
    """An idempotency key made when a form is rendered: submitting the same form twice sends
    the same key, so the service does the work once."""
    return f"{prefix}-{secrets.token_hex(12)}"


def store_options(conn: Connection, actor: Actor) -> list[tuple[str, str]]:
    q = select(stores.c.id, stores.c.code, stores.c.name).order_by(stores.c.code)
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(q)
            if actor.sees_store(int(r.id))]


def program_options(conn: Connection) -> list[tuple[str, str]]:
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(
        select(loyalty_programs.c.code, loyalty_programs.c.name)
        .order_by(loyalty_programs.c.code))]


def page_number(raw: str | None) -> int:
    return min(max(int(raw), 1), 100000) if raw and raw.isdigit() and len(raw) < 7 else 1


def memberships_for(conn: Connection, actor: Actor, customer_id: int) -> dict[str, Any]:
    """The customer 360's loyalty section: the customer's memberships (for users who read
    loyalty) and whether an enrolment form is on offer."""
    if not actor.can("loyalty.read"):
        return {"visible": False, "items": [], "can_enrol": False}
    m, p = loyalty_members.c, loyalty_programs.c
    rows = conn.execute(select(m.id, m.member_code, m.status, m.points_available,
                               m.points_pending, m.tier_id, p.code, p.name)
                        .join(loyalty_programs, p.id == m.program_id)
                        .where(m.customer_id == customer_id).order_by(p.code)).all()
    items = []
    for r in rows:
        member = queries.get_member(conn, actor=actor, member_id=int(r.id))
        items.append({"id": int(r.id), "program": r.code, "program_name": r.name,
                      "member_code": r.member_code, "status": r.status,
                      "available": int(r.points_available), "pending": int(r.points_pending),
                      "tier": member["tier"]})
    joined = {r.code for r in rows}
    open_programs = [c for c in conn.execute(select(p.code).where(p.status == "active")
                                             ).scalars() if c not in joined]
    return {"visible": True, "items": items,
            "can_enrol": actor.can("loyalty.enrol") and bool(open_programs)}


# --- reading a member ---------------------------------------------------------------------

def _causes(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Each ledger entry's cause in words: the order's number, the return's, the operation's
    kind and reference."""
    order_ids = {int(e["order_id"]) for e in entries if e["order_id"] is not None}
    order_ids |= {int(e["cause"]["id"]) for e in entries
                  if e["cause"]["type"] == "order" and str(e["cause"]["id"]).isdigit()}
    numbers = {int(r.id): r.external_id for r in conn.execute(
        select(orders.c.id, orders.c.external_id).where(orders.c.id.in_(sorted(order_ids))))
    } if order_ids else {}
    return_ids = {int(e["cause"]["id"]) for e in entries
                  if e["cause"]["type"] == "return" and str(e["cause"]["id"]).isdigit()}
    return_numbers = {int(r.id): r.external_id for r in conn.execute(
        select(returns.c.id, returns.c.external_id).where(returns.c.id.in_(sorted(return_ids))))
    } if return_ids else {}
    op_ids = {int(e["cause"]["id"]) for e in entries
              if e["cause"]["type"] == "operation" and str(e["cause"]["id"]).isdigit()}
    ops = {int(r.id): r for r in conn.execute(
        select(loyalty_operations.c.id, loyalty_operations.c.kind,
               loyalty_operations.c.reference, loyalty_operations.c.status)
        .where(loyalty_operations.c.id.in_(sorted(op_ids))))} if op_ids else {}
    for e in entries:
        kind, raw = e["cause"]["type"], str(e["cause"]["id"])
        ref = int(raw) if raw.isdigit() else None
        e["order_number"] = numbers.get(int(e["order_id"])) if e["order_id"] else None
        if kind == "order" and ref is not None:
            e["order_number"] = e["order_number"] or numbers.get(ref)
        e["return_number"] = return_numbers.get(ref) if kind == "return" and ref else None
        op = ops.get(ref) if kind == "operation" and ref else None
        e["operation"] = None if op is None else {"id": int(op.id), "kind": op.kind,
                                                  "reference": op.reference,
                                                  "status": op.status}


def _progress(member: dict[str, Any]) -> dict[str, Any]:
    """Where the member stands against the next tier's threshold on the program's basis."""
    q = member["qualification"]
    nxt = q["next_tier"]
    if nxt is None:
        return {"basis": q["basis"], "next": None}
    if q["basis"] == "spend_12m":
        have, need_ = q["spend_12m"], nxt["min_spend"]
    else:
        have, need_ = q["growth_value"], nxt["min_growth"]
    share = 1.0 if not need_ else min(1.0, float(have) / float(need_))
    return {"basis": q["basis"], "next": nxt["code"], "have": have, "need": need_,
            "missing": max(need_ - have, 0), "share": share}


def member_view(conn: Connection, actor: Actor, member_id: int, *, ledger_page: int = 1,
                sv_page: int = 1) -> dict[str, Any]:
    """Everything the member page shows, each part read through its own service."""
    now = utcnow()
    member = queries.get_member(conn, actor=actor, member_id=member_id)
    program = service.get_program(conn, actor=actor, code=member["program"]) if actor.can(
        "loyalty.lookup") else {"code": member["program"]}
    balance = queries.balance(conn, actor=actor, member_id=member_id, now=now)
    ledger = queries.ledger(conn, actor=actor, member_id=member_id, page=ledger_page,
                            page_size=LEDGER_PAGE_SIZE)
    _causes(conn, ledger["items"])
    view: dict[str, Any] = {
        "m": member, "program": program, "balance": balance, "ledger": ledger,
        "progress": _progress(member),
        "tiers": queries.tier_history(conn, actor=actor, member_id=member_id),
        "consent_history": queries.consent_history(conn, actor=actor, member_id=member_id),
        "coupons": None, "coupon_counts": None, "stored_value": None, "sv_ops": None,
        "rewards": None,
    }
    if actor.can("coupons.redeem"):
        items = coupons.member_coupons(conn, actor=actor, member_id=member_id, now=now)
        for c in items:
            c["state"] = ("usable" if c["usable"] else "expired"
                          if c["expired"] and c["status"] in ("available", "held")
                          else c["status"])
        counts = {"issued": len(items),
                  "usable": sum(1 for c in items if c["state"] == "usable"),
                  "redeemed": sum(1 for c in items if c["status"] == "redeemed"),
                  "expired": sum(1 for c in items if c["state"] == "expired")}
        view["coupons"], view["coupon_counts"] = items, counts
    if actor.can("stored_value.lookup"):
        view["stored_value"] = storedvalue.balance(conn, actor=actor, member_id=member_id,
                                                   now=now)
    if actor.can("stored_value.read"):
        view["sv_ops"] = sv_queries.operations(conn, actor=actor, member_id=member_id,
                                               page=sv_page, page_size=SV_PAGE_SIZE)
    if actor.can("rewards.read"):
        view["rewards"] = rewards.member_redemptions(conn, actor=actor, member_id=member_id)
    return view


def _member_page(request: Request, actor: Actor, member_id: int, *,
                 adjust_form: dict[str, Any] | None = None,
                 adjust_errors: dict[str, str] | None = None,
                 consent_error: str | None = None, status_code: int = 200) -> Response:
    params = request.query_params
    with UnitOfWork(get_engine(), readonly=True) as uow:
        view = member_view(uow.c, actor, member_id,
                           ledger_page=page_number(params.get("page")),
                           sv_page=page_number(params.get("sv_page")))
        options = store_options(uow.c, actor)
    view["ledger_has_next"] = view["ledger"]["page"] * LEDGER_PAGE_SIZE < view["ledger"]["total"]
    form = {"points": "", "bucket": "available", "reason": "", "store": "",
            "idempotency_key": new_key("web-adjust"), **(adjust_form or {})}
    return render(request, "members/detail.html", {
        **view, "adjust": form, "adjust_errors": adjust_errors or {},
        "consent_error": consent_error, "store_options": options,
        "can_adjust": actor.can("loyalty.adjust"),
        "can_consent": actor.can("loyalty.enrol"),
        "done": params.get("done"),
    }, actor=actor, status_code=status_code)


def _member_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("member_not_found")
    return int(raw)


# --- writing --------------------------------------------------------------------------------

@router.post("/members/{member_id}/adjustments", dependencies=[RecentAuth])
async def adjust_points(request: Request, member_id: str, uow: UowDep,
                        actor: Annotated[Actor, Depends(need("loyalty.adjust"))]) -> Response:
    """The manual adjustment form: signed points (or growth value) with a reason; the key
    was made when the form was rendered, so a double submit adjusts once."""
    form = await posted_form(request)
    mid = _member_id(member_id)
    lang = page_language(request, actor)
    data = values(form, ("points", "bucket", "reason", "store", "idempotency_key"))
    typed = {k: v or "" for k, v in data.items()}
    if not actor.can("loyalty.read"):
        raise Forbidden("forbidden", params={"permission": "loyalty.read"})
    body, errors = validate(AdjustIn, data, lang)
    if body is not None:
        try:
            service.adjust(uow=uow, actor=actor, member_id=mid, body=body)
        except PatronError as exc:
            if exc.status in (401, 403, 404):
                raise
            errors = service_errors(exc, lang, default_field="points")
            return _member_page(request, actor, mid, adjust_form=typed, adjust_errors=errors,
                                status_code=exc.status)
        return redirect(f"/members/{mid}?done=adjusted#ledger")
    return _member_page(request, actor, mid, adjust_form=typed, adjust_errors=errors,
                        status_code=422)


@router.post("/members/{member_id}/consents")
async def change_consent(request: Request, member_id: str, uow: UowDep,
                         actor: Annotated[Actor, Depends(need("loyalty.enrol"))]) -> Response:
    """Withdraw (or give again, for marketing channels) one consent; the history keeps every
    change and the service audits it."""
    form = await posted_form(request)
    mid = _member_id(member_id)
    lang = page_language(request, actor)
    if not actor.can("loyalty.read"):
        raise Forbidden("forbidden", params={"permission": "loyalty.read"})
    kind = str(form.get("kind") or "")
    granted = form.get("granted") == "1"
    if kind not in CONSENT_KINDS or (kind == "privacy" and granted):
        return _member_page(request, actor, mid, consent_error=t(
            "web.members.consent_invalid", lang), status_code=422)
    try:
        service.record_consent(uow=uow, actor=actor, member_id=mid, body=ConsentIn(
            kind=kind, granted=granted, source="web"))  # type: ignore[arg-type]
    except PatronError as exc:
        uow.rollback()
        if exc.status in (401, 403, 404):
            raise
        return _member_page(request, actor, mid, consent_error=t(exc.message, lang,
                                                                 **exc.params),
                            status_code=exc.status)
    return redirect(f"/members/{mid}?done={'granted' if granted else 'withdrawn'}#consents")


# --- enrolment from the customer 360 ------------------------------------------------------------

def _enrol_context(conn: Connection, actor: Actor, customer_id: int) -> dict[str, Any]:
    customer = customer_queries.get_customer(conn, actor=actor, customer_id=customer_id)
    joined = set(conn.execute(select(loyalty_programs.c.code).join(
        loyalty_members, loyalty_members.c.program_id == loyalty_programs.c.id).where(
        loyalty_members.c.customer_id == customer_id)).scalars())
    programs = [dict(r) for r in conn.execute(
        select(loyalty_programs.c.code, loyalty_programs.c.name,
               loyalty_programs.c.privacy_version)
        .where(loyalty_programs.c.status == "active").order_by(loyalty_programs.c.code)
    ).mappings() if r["code"] not in joined]
    return {"c": customer, "programs": programs, "store_options": store_options(conn, actor),
            "program_choices": [(p["code"], f"{p['code']} · {p['name']}") for p in programs],
            "versions": "、".join(f"{p['code']} v{p['privacy_version']}" for p in programs),
            "store_required": actor.store_ids is not None}


def _enrol_page(request: Request, actor: Actor, customer_id: int, *,
                form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        ctx = _enrol_context(uow.c, actor, customer_id)
    default_store = ctx["store_options"][0][0] if (
        ctx["store_required"] and ctx["store_options"]) else ""
    typed = {"program": ctx["programs"][0]["code"] if ctx["programs"] else "",
             "store": default_store, "privacy": False, **{k: False for k in MARKETING},
             **(form or {})}
    return render(request, "members/enrol.html", {**ctx, "form": typed,
                                                  "errors": errors or {},
                                                  "marketing": MARKETING},
                  actor=actor, status_code=status_code)


def _customer_param(request: Request) -> int:
    raw = request.query_params.get("customer") or ""
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("customer_not_found")
    return int(raw)


def _enroller(request: Request) -> Actor:
    actor = need("loyalty.enrol")(request)
    if not (actor.can("customers.read") and actor.can("loyalty.read")):
        raise Forbidden("forbidden", params={"permission": "customers.read"})
    return actor


declare_guard(_enroller, "permission", "loyalty.enrol")


@router.get("/members/enrol")
def enrol_form(request: Request, actor: Annotated[Actor, Depends(_enroller)]) -> Response:
    return _enrol_page(request, actor, _customer_param(request))


@router.post("/members/enrol")
async def enrol_submit(request: Request, uow: UowDep,
                       actor: Annotated[Actor, Depends(_enroller)]) -> Response:
    """Enrol the customer with the phone on their profile (read here, never shown), the
    privacy consent the staff member confirms and the marketing channels ticked."""
    form = await posted_form(request)
    customer_id = _customer_param(request)
    lang = page_language(request, actor)
    data = values(form, ("program", "store"), flags=("privacy", *MARKETING))
    errors: dict[str, str] = {}
    with UnitOfWork(get_engine(), readonly=True) as read:
        # The profile must be one this user sees (404 otherwise) before anything is read.
        customer_queries.get_customer(read.c, actor=actor, customer_id=customer_id)
        program = read.c.execute(select(loyalty_programs).where(
            loyalty_programs.c.code == (data["program"] or ""))).mappings().first()
        phone = read.c.execute(select(customers.c.phone).where(
            customers.c.id == customer_id)).scalar()
    if program is None:
        errors["program"] = t("missing" if not data["program"] else "program_not_found", lang,
                              code=data["program"])
    if not data["privacy"]:
        errors["privacy"] = t("web.members.privacy_required", lang)
    if not phone:
        errors["form"] = t("web.members.no_phone", lang)
    if actor.store_ids is not None and not data["store"]:
        errors["store"] = t("store_required_in_scope", lang)
    typed = {k: (v if v is not None else "") for k, v in data.items()}
    if errors:
        return _enrol_page(request, actor, customer_id, form=typed, errors=errors,
                           status_code=422)
    assert program is not None
    body = EnrolIn.model_validate({
        "phone": phone, "store": data["store"], "source": "web",
        "privacy": {"version": program["privacy_version"]},
        "marketing": {k: bool(data[k]) for k in MARKETING}})
    try:
        member, _created = service.enrol(uow=uow, actor=actor, program_code=program["code"],
                                         body=body)
    except PatronError as exc:
        if exc.status in (401, 403, 404):
            raise
        return _enrol_page(request, actor, customer_id, form=typed,
                           errors=service_errors(exc, lang, default_field="form"),
                           status_code=exc.status)
    return redirect(f"/members/{member['id']}?done=enrolled")


# Registered last: ``/members/enrol`` above must not be read as a member id.
@router.get("/members/{member_id}")
def member_detail(request: Request, member_id: str,
                  actor: Annotated[Actor, Depends(need("loyalty.read"))]) -> Response:
    return _member_page(request, actor, _member_id(member_id))


__all__ = ["memberships_for", "member_view", "new_key", "page_number", "path_id",
           "program_options", "router", "store_options"]
