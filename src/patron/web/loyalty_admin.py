"""Loyalty administration pages: programs per brand with their settings, earning-rule versions
and tiers (here); coupon templates, stored value and the rewards catalog
(:mod:`patron.web.loyalty_admin_offers`).

Every change goes through the area's service, which checks the permission again, writes the
audit entry and owns the transaction; these routes parse the form, call it and render. Who may
do what: reading needs ``loyalty.read`` (owners, analysts, store managers), changing programs,
rules and tiers ``loyalty.manage`` (owners). A store manager sees only the programs of their
stores' brands (another program is a 403)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, func, select

from patron.coupons.tables import coupon_templates
from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import UowDep
from patron.errors import Forbidden, NotFound, PatronError
from patron.i18n import t
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import (
    EarningRulesIn,
    ProgramIn,
    ProgramSettings,
    RuleVersionIn,
    TierIn,
    TierUpdate,
)
from patron.loyalty.tables import loyalty_members, loyalty_programs, loyalty_rule_versions
from patron.org.tables import brands, categories, channels, products, stores
from patron.security.model import Actor
from patron.web.forms import service_errors, validate, values
from patron.web.loyalty_admin_forms import (
    check_factor,
    map_errors,
    parse_local,
    text,
    texts,
    words,
)
from patron.web.render import PageRoute, need, page_language, posted_form, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Reader = Annotated[Actor, Depends(need("loyalty.read"))]
Manager = Annotated[Actor, Depends(need("loyalty.manage"))]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DIMENSIONS = ("category", "sku", "store", "channel")
PAYMENT_METHODS = ("cash", "bank_card", "wechat_pay", "alipay", "stored_value", "points",
                   "coupon", "other")
DEFAULT_EXCLUDED_PAYMENTS = ("points", "stored_value")
BLANK_ROWS = 2  # empty rows offered under the filled ones of each list on a form

SETTINGS = ("name", "status", "timezone", "expiry_mode", "expiry_months", "pending_days",
            "reminder_days", "hold_minutes", "redeem_points_per_yuan", "clawback_policy",
            "tier_basis", "tier_grace_days", "tier_max_downgrade", "privacy_version")
NEW_ONLY = ("code", "brand", "code_prefix")
CHOICES = {"status": ("active", "closed"), "expiry_mode": ("rolling_months", "end_of_next_year"),
           "clawback_policy": ("owe", "write_off", "deduct_from_refund"),
           "tier_basis": ("growth", "spend_12m")}


# --- scope and page frame -----------------------------------------------------------------------

def visible_brand_ids(conn: Connection, actor: Actor) -> set[int] | None:
    """None: every brand. A store-scoped user: the brands of their stores."""
    if actor.store_ids is None:
        return None
    return {int(b) for b in conn.execute(select(stores.c.brand_id).where(
        stores.c.id.in_(sorted(actor.store_ids) or [-1]))).scalars() if b is not None}


def program_in_scope(conn: Connection, actor: Actor, code: str) -> dict[str, Any]:
    """The program, if the user may open its administration pages: every page of it needs
    ``loyalty.read`` besides the area's own permission (a till's role that reads the rewards
    catalog through the API does not browse the administration)."""
    if not actor.can("loyalty.read"):
        raise Forbidden("forbidden", params={"permission": "loyalty.read"})
    program = loyalty._program(conn, code)
    scope = visible_brand_ids(conn, actor)
    if scope is not None and int(program["brand_id"]) not in scope:
        raise Forbidden("web.loyalty_admin.out_of_scope", params={"code": code})
    return program


def scoped_stores(conn: Connection, actor: Actor | None, program: dict[str, Any]
                  ) -> list[tuple[str, str]]:
    """The program's brand's stores the user may act for (None: all of them), as (code,
    label)."""
    q = select(stores.c.id, stores.c.code, stores.c.name).where(
        stores.c.brand_id == program["brand_id"]).order_by(stores.c.code)
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(q)
            if actor is None or actor.sees_store(int(r.id))]


TABS = (("settings", "", "loyalty.read"), ("rules", "/rules", "loyalty.read"),
        ("tiers", "/tiers", "loyalty.read"), ("coupons", "/coupons", "coupons.read"),
        ("stored_value", "/stored-value", "stored_value.read"),
        ("rewards", "/rewards", "rewards.read"))


def frame(actor: Actor, program: dict[str, Any], tab: str) -> dict[str, Any]:
    """What every program page shows above its content: the program and its tabs."""
    base = f"/loyalty/programs/{program['code']}"
    return {"program": program, "tab": tab,
            "tabs": [(key, base + suffix) for key, suffix, perm in TABS if actor.can(perm)]}


# --- programs -----------------------------------------------------------------------------------

@router.get("/loyalty")
def programs_page(request: Request, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        scope = visible_brand_ids(conn, actor)
        p, m = loyalty_programs.c, loyalty_members.c
        counts = dict(conn.execute(select(m.program_id, func.count()).group_by(m.program_id)
                                   ).all())
        q = select(loyalty_programs, brands.c.code.label("brand_code"),
                   brands.c.name.label("brand_name")).join(brands, brands.c.id == p.brand_id)
        if scope is not None:
            q = q.where(p.brand_id.in_(sorted(scope) or [-1]))
        rows = []
        for r in conn.execute(q.order_by(p.code)).mappings():
            program = loyalty.program_out(conn, dict(r))
            rows.append({**program, "brand_name": r["brand_name"],
                         "members": int(counts.get(r["id"], 0))})
    return render(request, "loyalty_admin/programs.html", {
        "rows": rows, "created": request.query_params.get("created")}, actor=actor)


def _brand_options(conn: Connection) -> list[tuple[str, str]]:
    taken = set(conn.execute(select(loyalty_programs.c.brand_id)).scalars())
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(
        select(brands.c.id, brands.c.code, brands.c.name).order_by(brands.c.code))
        if r.id not in taken]


def _channel_options(conn: Connection) -> list[tuple[str, str]]:
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(
        select(channels.c.code, channels.c.name).order_by(channels.c.id))]


def _settings_page(request: Request, actor: Actor, *, template: str, form: dict[str, Any],
                   errors: dict[str, str], program: dict[str, Any] | None = None,
                   notice: str | None = None, status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        ctx: dict[str, Any] = {
            "form": form, "errors": errors, "choices": CHOICES, "notice": notice,
            "brand_options": _brand_options(uow.c),
            "channel_options": _channel_options(uow.c)}
        if program is not None:
            ctx.update(frame(actor, program, "settings"))
            ctx["facts"] = _program_facts(uow.c, program)
    return render(request, template, ctx, actor=actor, status_code=status_code)


def _program_facts(conn: Connection, program: dict[str, Any]) -> dict[str, Any]:
    m = loyalty_members.c
    row = conn.execute(select(func.count(), func.coalesce(func.sum(m.points_available), 0),
                              func.coalesce(func.sum(m.points_pending), 0))
                       .where(m.program_id == program["id"])).one()
    brand = conn.execute(select(brands.c.code, brands.c.name).where(
        brands.c.id == program["brand_id"])).one()
    return {"members": int(row[0]), "available": int(row[1]), "pending": int(row[2]),
            "brand": f"{brand.code} · {brand.name}"}


def _settings_data(form: Any, *, new: bool) -> dict[str, Any]:
    names = SETTINGS + (NEW_ONLY if new else ())
    data = values(form, names, lists=("storeless_channels",))
    if new:
        data.pop("status")
    return data


@router.get("/loyalty/programs/new")
def new_program_page(request: Request, actor: Manager) -> Response:
    form = {**loyalty.PROGRAM_DEFAULTS, "privacy_version": "v1", "code_prefix": ""}
    return _settings_page(request, actor, template="loyalty_admin/program_new.html",
                          form=form, errors={})


@router.post("/loyalty/programs/new")
async def create_program(request: Request, uow: UowDep, actor: Manager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    data = _settings_data(submitted, new=True)
    model, errors = validate(ProgramIn, data, lang)
    if model is not None:
        try:
            loyalty.create_program(uow=uow, actor=actor, data=model)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="code")
        else:
            return redirect(f"/loyalty/programs/{model.code}?created=1")
    return _settings_page(request, actor, template="loyalty_admin/program_new.html",
                          form=data, errors=errors, status_code=422)


@router.get("/loyalty/programs/{code}")
def program_page(request: Request, code: str, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    lang = page_language(request, actor)
    notice = None
    if request.query_params.get("created"):
        notice = t("web.loyalty_admin.program_created", lang, code=code)
    elif request.query_params.get("saved"):
        notice = t("web.loyalty_admin.saved", lang)
    return _settings_page(request, actor, template="loyalty_admin/program.html",
                          form=dict(program), errors={}, program=program, notice=notice)


@router.post("/loyalty/programs/{code}")
async def update_program(request: Request, code: str, uow: UowDep, actor: Manager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    data = _settings_data(submitted, new=False)
    model, errors = validate(ProgramSettings, data, lang)
    if model is not None:
        try:
            loyalty.update_program(uow=uow, actor=actor, code=code, changes=model)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="name")
        else:
            return redirect(f"/loyalty/programs/{code}?saved=1")
    uow.rollback()
    return _settings_page(request, actor, template="loyalty_admin/program.html",
                          form={**program, **data}, errors=errors, program=program,
                          status_code=422)


# --- earning rules ------------------------------------------------------------------------------

def rules_form(rules: dict[str, Any]) -> dict[str, Any]:
    """A stored version's rules as the form shows them (rows of key and factor)."""
    mult = rules.get("multipliers") or {}
    exclude = rules.get("exclude") or {}
    caps = rules.get("caps") or {}
    payments = exclude.get("payment_methods")
    return {
        "points_per_yuan": str(rules.get("points_per_yuan", "1")),
        "growth_per_yuan": str(rules.get("growth_per_yuan", "1")),
        "min_spend": str(rules.get("min_spend", "0")),
        "cap_per_order": "" if caps.get("per_order") is None else str(caps["per_order"]),
        "cap_per_day": "" if caps.get("per_day") is None else str(caps["per_day"]),
        "tier_multiplier": bool(rules.get("tier_multiplier", True)),
        **{dim: [(k, str(v)) for k, v in (mult.get(dim) or {}).items()] for dim in DIMENSIONS},
        "weekday": {d: str(v) for d, v in (mult.get("weekday") or {}).items()},
        "dates": [(d["from"], d["to"], str(d["factor"])) for d in mult.get("dates") or []],
        "exclude_categories": ", ".join(exclude.get("categories") or []),
        "exclude_skus": ", ".join(exclude.get("skus") or []),
        "exclude_payments": list(DEFAULT_EXCLUDED_PAYMENTS if payments is None else payments),
        "effective_from": "", "note": "",
    }


def parse_rules_form(form: Any, conn: Connection, lang: str, tz: str
                     ) -> tuple[dict[str, Any], RuleVersionIn | None, dict[str, str]]:
    """The typed form (to show again), the new version, and errors by field."""
    errors: dict[str, str] = {}
    shown: dict[str, Any] = {name: text(form, name) for name in (
        "points_per_yuan", "growth_per_yuan", "min_spend", "cap_per_order", "cap_per_day",
        "exclude_categories", "exclude_skus", "effective_from", "note")}
    shown["tier_multiplier"] = form.get("tier_multiplier") in ("on", "1", "true")
    shown["exclude_payments"] = [p for p in texts(form, "exclude_payments")
                                 if p in PAYMENT_METHODS]
    known = {"store": set(conn.execute(select(stores.c.code)).scalars()),
             "channel": set(conn.execute(select(channels.c.code)).scalars())}
    multipliers: dict[str, Any] = {}
    for dim in DIMENSIONS:
        keys, factors = texts(form, f"{dim}_key"), texts(form, f"{dim}_factor")
        rows = [(k, f) for k, f in zip(keys, factors, strict=False) if k or f]
        shown[dim] = rows
        chosen: dict[str, Any] = {}
        for i, (key, raw) in enumerate(rows):
            name = f"{dim}.{i}"
            if not key:
                errors[name] = t("missing", lang)
                continue
            if dim in known and key not in known[dim]:
                errors[name] = t(f"unknown_{dim}", lang, value=key)
                continue
            if key in chosen:
                errors[name] = t("web.loyalty_admin.duplicate_key", lang, value=key)
                continue
            factor, err = check_factor(raw, lang)
            if err:
                errors[name] = err
            else:
                chosen[key] = factor
        multipliers[dim] = chosen
    shown["weekday"] = {d: text(form, f"weekday_{d}") for d in WEEKDAYS}
    multipliers["weekday"] = {}
    for day, raw in shown["weekday"].items():
        if raw:
            factor, err = check_factor(raw, lang)
            if err:
                errors[f"weekday_{day}"] = err
            else:
                multipliers["weekday"][day] = factor
    date_rows = [r for r in zip(texts(form, "date_from"), texts(form, "date_to"),
                                texts(form, "date_factor"), strict=False) if any(r)]
    shown["dates"] = date_rows
    multipliers["dates"] = []
    for i, (start, end, raw) in enumerate(date_rows):
        try:
            first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end or start)
        except ValueError:
            errors[f"dates.{i}"] = t("date_parsing", lang)
            continue
        factor, err = check_factor(raw, lang)
        if err:
            errors[f"dates.{i}"] = err
        elif last < first:
            errors[f"dates.{i}"] = t("date_range_reversed", lang)
        else:
            multipliers["dates"].append({"from": first, "to": last, "factor": factor})
    effective: dt.datetime | None = None
    if shown["effective_from"]:
        try:
            effective = parse_local(shown["effective_from"], tz)
        except ValueError:
            errors["effective_from"] = t("datetime_parsing", lang)
    body = {
        "points_per_yuan": shown["points_per_yuan"] or "0",
        "growth_per_yuan": shown["growth_per_yuan"] or "0",
        "min_spend": shown["min_spend"] or "0",
        "multipliers": multipliers,
        "exclude": {"categories": words(shown["exclude_categories"]),
                    "skus": words(shown["exclude_skus"]),
                    "payment_methods": shown["exclude_payments"]},
        "caps": {"per_order": shown["cap_per_order"] or None,
                 "per_day": shown["cap_per_day"] or None},
        "tier_multiplier": shown["tier_multiplier"],
    }
    try:
        rules = EarningRulesIn.model_validate(body)
    except ValidationError as exc:
        errors.update({k: v for k, v in map_errors(exc, lang, _rules_field).items()
                       if k not in errors})
        return shown, None, errors
    if errors:
        return shown, None, errors
    return shown, RuleVersionIn(effective_from=effective, rules=rules,
                                note=shown["note"] or None), errors


def _rules_field(loc: tuple[Any, ...]) -> str:
    """A nested rule's error location to the form field that holds it."""
    if loc[:1] == ("caps",) and len(loc) > 1:
        return f"cap_{loc[1]}"
    if loc[:1] == ("exclude",) and len(loc) > 1:
        return {"categories": "exclude_categories", "skus": "exclude_skus"}.get(
            str(loc[1]), "exclude_payments")
    if loc[:1] == ("multipliers",) and len(loc) > 1:
        return str(loc[1])
    return str(loc[0]) if loc else "form"


def _version_state(versions: list[dict[str, Any]], now: dt.datetime) -> int | None:
    """The version in force now: the latest that took effect."""
    live = [v for v in versions if v["effective_from"] <= now]
    return max(live, key=lambda v: v["effective_from"])["version"] if live else None


def _suggestions(conn: Connection) -> dict[str, list[str]]:
    """Known codes for the rule and coupon forms' lists (typed freely, suggested here)."""
    return {
        "category": list(conn.execute(select(categories.c.code).order_by(categories.c.code))
                         .scalars()),
        "sku": list(conn.execute(select(products.c.sku).order_by(products.c.sku).limit(2000))
                    .scalars()),
        "store": list(conn.execute(select(stores.c.code).order_by(stores.c.code)).scalars()),
        "channel": list(conn.execute(select(channels.c.code).order_by(channels.c.id))
                        .scalars()),
    }


def _rules_page(request: Request, actor: Actor, program: dict[str, Any], *,
                form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                notice: str | None = None, status_code: int = 200) -> Response:
    now = utcnow()
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        v = loyalty_rule_versions.c
        versions = [dict(r) for r in conn.execute(
            select(v.id, v.version, v.effective_from, v.rules, v.note, v.created_at,
                   v.created_by).where(v.program_id == program["id"]).order_by(v.version.desc())
        ).mappings()]
        suggestions = _suggestions(conn)
    in_force = _version_state(versions, now)
    for version in versions:
        version["state"] = ("in_force" if version["version"] == in_force else
                            "scheduled" if version["effective_from"] > now else "past")
        version["view"] = rules_form(version["rules"])
    if form is None:
        form = rules_form(versions[0]["rules"]) if versions else rules_form({})
    return render(request, "loyalty_admin/rules.html", {
        **frame(actor, program, "rules"), "versions": versions, "form": form,
        "errors": errors or {}, "notice": notice, "weekdays": WEEKDAYS,
        "dimensions": DIMENSIONS, "payment_methods": PAYMENT_METHODS, "blank_rows": BLANK_ROWS,
        "suggestions": suggestions, "may_manage": actor.can("loyalty.manage"),
    }, actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/rules")
def rules_page(request: Request, code: str, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    notice = None
    if request.query_params.get("version"):
        notice = t("web.loyalty_admin.rules_created", page_language(request, actor),
                   version=request.query_params["version"])
    return _rules_page(request, actor, program, notice=notice)


@router.post("/loyalty/programs/{code}/rules")
async def add_rule_version(request: Request, code: str, uow: UowDep,
                           actor: Manager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    shown, body, errors = parse_rules_form(submitted, uow.c, lang, program["timezone"])
    if body is not None:
        try:
            out = loyalty.add_rule_version(uow=uow, actor=actor, code=code, body=body)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="effective_from")
        else:
            return redirect(f"/loyalty/programs/{code}/rules?version={out['version']}")
    uow.rollback()
    return _rules_page(request, actor, program, form=shown, errors=errors, status_code=422)


# --- tiers --------------------------------------------------------------------------------------

def tier_form(tier: dict[str, Any] | None = None) -> dict[str, Any]:
    tier = tier or {}
    benefits = tier.get("benefits") or {}
    gift = benefits.get("birthday_gift") or {}
    return {
        "code": tier.get("code", ""), "name": tier.get("name", ""),
        "rank": "" if tier.get("rank") is None else str(tier["rank"]),
        "min_growth": str(tier.get("min_growth", 0)),
        "min_spend": str(tier.get("min_spend", "0")),
        "points_multiplier": str(tier.get("points_multiplier", "1")),
        "member_discount_percent": str(benefits.get("member_discount_percent", "0")),
        "gift_description": gift.get("description", ""),
        "gift_coupon": gift.get("coupon_template") or "",
        "free_items": [(i["sku"], i.get("name") or "", str(i.get("quantity", 1)))
                       for i in benefits.get("free_items") or []],
    }


def parse_tier_form(form: Any, lang: str, *, new: bool
                    ) -> tuple[dict[str, Any], TierIn | TierUpdate | None, dict[str, str]]:
    shown: dict[str, Any] = {name: text(form, name) for name in (
        "code", "name", "rank", "min_growth", "min_spend", "points_multiplier",
        "member_discount_percent", "gift_description", "gift_coupon")}
    shown["free_items"] = [r for r in zip(texts(form, "item_sku"), texts(form, "item_name"),
                                          texts(form, "item_quantity"), strict=False) if any(r)]
    errors: dict[str, str] = {}
    items = []
    for i, (sku, name, qty) in enumerate(shown["free_items"]):
        if not sku:
            errors[f"free_items.{i}"] = t("missing", lang)
        items.append({"sku": sku, "name": name or None, "quantity": qty or "1"})
    benefits: dict[str, Any] = {
        "member_discount_percent": shown["member_discount_percent"] or "0",
        "free_items": items}
    if shown["gift_description"] or shown["gift_coupon"]:
        benefits["birthday_gift"] = {"description": shown["gift_description"],
                                     "coupon_template": shown["gift_coupon"] or None}
    body: dict[str, Any] = {k: shown[k] for k in ("name", "min_growth", "min_spend",
                                                  "points_multiplier") if shown[k]}
    body["benefits"] = benefits
    if new:
        body.update({k: shown[k] for k in ("code", "rank") if shown[k]})

    def field_of(loc: tuple[Any, ...]) -> str:
        if loc[:1] == ("benefits",) and len(loc) > 1:
            if loc[1] == "free_items" and len(loc) > 2:
                return f"free_items.{loc[2]}"
            if loc[1] == "birthday_gift":
                return "gift_coupon" if "coupon_template" in loc else "gift_description"
            return str(loc[1])
        return str(loc[0]) if loc else "form"

    try:
        model: TierIn | TierUpdate = (TierIn if new else TierUpdate).model_validate(body)
    except ValidationError as exc:
        errors.update({k: v for k, v in map_errors(exc, lang, field_of).items()
                       if k not in errors})
        return shown, None, errors
    return shown, (None if errors else model), errors


def _tiers_page(request: Request, actor: Actor, program: dict[str, Any], *,
                form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                basis_form: dict[str, Any] | None = None,
                basis_errors: dict[str, str] | None = None, notice: str | None = None,
                status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        tiers = loyalty.tiers_out(conn, int(program["id"]))
        m = loyalty_members.c
        counts = dict(conn.execute(select(m.tier_id, func.count()).where(
            m.program_id == program["id"]).group_by(m.tier_id)).all())
        templates = _coupon_template_codes(conn, program)
    for tier in tiers:
        tier["members"] = int(counts.get(tier["id"], 0))
    return render(request, "loyalty_admin/tiers.html", {
        **frame(actor, program, "tiers"), "tiers": tiers, "form": form or tier_form(),
        "errors_new": errors or {}, "basis": basis_form or dict(program),
        "basis_errors": basis_errors or {}, "choices": CHOICES, "notice": notice,
        "coupon_templates": templates, "may_manage": actor.can("loyalty.manage"),
        "blank_rows": BLANK_ROWS,
    }, actor=actor, status_code=status_code)


def _coupon_template_codes(conn: Connection, program: dict[str, Any]) -> list[tuple[str, str]]:
    c = coupon_templates.c
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(
        select(c.code, c.name).where(c.program_id == program["id"]).order_by(c.code))]


@router.get("/loyalty/programs/{code}/tiers")
def tiers_page(request: Request, code: str, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    lang = page_language(request, actor)
    notice = None
    if request.query_params.get("saved"):
        notice = t("web.loyalty_admin.tier_saved", lang, code=request.query_params["saved"])
    elif request.query_params.get("basis"):
        notice = t("web.loyalty_admin.saved", lang)
    return _tiers_page(request, actor, program, notice=notice)


@router.post("/loyalty/programs/{code}/tiers")
async def create_tier(request: Request, code: str, uow: UowDep, actor: Manager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    shown, model, errors = parse_tier_form(submitted, lang, new=True)
    if isinstance(model, TierIn):
        try:
            loyalty.create_tier(uow=uow, actor=actor, code=code, tier=model)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="code")
        else:
            return redirect(f"/loyalty/programs/{code}/tiers?saved={model.code}")
    uow.rollback()
    return _tiers_page(request, actor, program, form=shown, errors=errors, status_code=422)


@router.post("/loyalty/programs/{code}/tiers/qualification")
async def tier_qualification(request: Request, code: str, uow: UowDep,
                             actor: Manager) -> Response:
    """Qualification basis and downgrade rules: program settings, edited beside the tiers."""
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    data = values(submitted, ("tier_basis", "tier_grace_days", "tier_max_downgrade"))
    model, errors = validate(ProgramSettings, data, lang)
    if model is not None:
        try:
            loyalty.update_program(uow=uow, actor=actor, code=code, changes=model)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="tier_basis")
        else:
            return redirect(f"/loyalty/programs/{code}/tiers?basis=1")
    uow.rollback()
    return _tiers_page(request, actor, program, basis_form={**program, **data},
                       basis_errors=errors, status_code=422)


def _tier(program_id: int, tier_code: str) -> dict[str, Any]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        tier = next((x for x in loyalty.tiers_out(uow.c, program_id)
                     if x["code"] == tier_code), None)
    if tier is None:
        raise NotFound("tier_not_found", params={"code": tier_code})
    return tier


def _tier_page(request: Request, actor: Actor, program: dict[str, Any], tier: dict[str, Any],
               *, form: dict[str, Any], errors: dict[str, str],
               status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        templates = _coupon_template_codes(uow.c, program)
    return render(request, "loyalty_admin/tier.html", {
        **frame(actor, program, "tiers"), "tier": tier, "form": form, "errors": errors,
        "coupon_templates": templates, "may_manage": actor.can("loyalty.manage"),
        "blank_rows": BLANK_ROWS}, actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/tiers/{tier_code}")
def tier_page(request: Request, code: str, tier_code: str, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    tier = _tier(int(program["id"]), tier_code)
    return _tier_page(request, actor, program, tier, form=tier_form(tier), errors={})


@router.post("/loyalty/programs/{code}/tiers/{tier_code}")
async def update_tier(request: Request, code: str, tier_code: str, uow: UowDep,
                      actor: Manager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    tier = _tier(int(program["id"]), tier_code)
    shown, model, errors = parse_tier_form(submitted, lang, new=False)
    if isinstance(model, TierUpdate):
        try:
            loyalty.update_tier(uow=uow, actor=actor, code=code, tier_code=tier_code,
                                changes=model)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="min_growth")
        else:
            return redirect(f"/loyalty/programs/{code}/tiers?saved={tier_code}")
    uow.rollback()
    shown.update(code=tier["code"], rank=str(tier["rank"]))
    return _tier_page(request, actor, program, tier, form=shown, errors=errors,
                      status_code=422)



