"""Loyalty administration pages, what a program offers: coupon templates (create, edit, issue
to a member or a pasted list, counts and budget use), stored value (settings, bonus-rule
versions, accounts by store, masked) and the rewards catalog (items, stock, redemptions).

As on the other loyalty pages the routes parse the form and call the area's service, which
checks the permission again, audits and commits. Reading needs ``coupons.read``,
``stored_value.read`` or ``rewards.read``; changing needs the area's ``.manage`` (owners);
issuing coupons ``coupons.issue`` (owners, and managers at their stores)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, and_, exists, func, select

from patron.coupons import service as coupons
from patron.coupons.schemas import IssueIn, TemplateIn, TemplateUpdate, TermsIn
from patron.coupons.tables import coupons as coupon_rows
from patron.customers.model import IdentifierError, mask_name, mask_phone, normalize_identity
from patron.customers.protect import identity_in
from patron.customers.queries import visible_clause
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, get_engine
from patron.deps import UowDep
from patron.errors import Forbidden, NotFound, PatronError
from patron.i18n import t
from patron.loyalty.tables import loyalty_members
from patron.org.tables import stores
from patron.rewards import service as rewards
from patron.rewards.schemas import ItemIn, ItemUpdate
from patron.rewards.tables import rewards_redemptions
from patron.security.model import Actor
from patron.storedvalue import service as stored_value
from patron.storedvalue.schemas import BonusRulesIn, SettingsIn
from patron.storedvalue.tables import sv_accounts, sv_lots
from patron.web import plots
from patron.web.forms import service_errors
from patron.web.loyalty_admin import _suggestions, frame, program_in_scope, scoped_stores
from patron.web.loyalty_admin_forms import (
    error_text,
    local_input,
    map_errors,
    parse_local,
    text,
    texts,
    words,
)
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

PAGE_SIZE = 50
KINDS = ("amount", "percent", "threshold", "free_item", "shipping")
TEMPLATE_STATUSES = ("active", "paused", "ended")
MONEY = ("amount_off", "cap", "threshold", "reduction", "item_value", "min_spend")
NUMBERS = ("percent_off", "max_repeats", "item_quantity", "valid_days")
FLAGS = ("repeat", "restore_on_refund", "with_coupons", "with_tier_discount", "with_points")
LIMITS = ("total_limit", "budget_value", "per_member_limit")
# The terms' own consistency checks name no field; each reason belongs beside one.
TERMS_REASON_FIELD = {"unknown_coupon_kind": "kind", "coupon_amount_required": "amount_off",
                      "coupon_percent_range": "percent_off",
                      "coupon_threshold_required": "threshold",
                      "coupon_reduction_not_below_threshold": "reduction",
                      "coupon_item_required": "item_sku", "coupon_validity_one_of": "valid_days",
                      "coupon_validity_reversed": "valid_to", "timezone_required": "valid_from"}
MAX_PASTED = 5000  # members per issue, as the API


def _field_errors(exc: PatronError, lang: str, default: str) -> dict[str, str]:
    """A service's refusal beside the form field: ``terms.stores.0`` is the stores field."""
    errors = service_errors(exc, lang, default_field=default)
    if exc.fields:
        errors = {}
        for f in exc.fields:
            parts = f.field.split(".")
            name = parts[1] if parts[0] == "terms" and len(parts) > 1 else parts[0]
            errors.setdefault(name, t(f.reason, lang, **f.params))
    return errors


# --- coupon templates ---------------------------------------------------------------------------

def terms_form(terms: dict[str, Any] | None, tz: str) -> dict[str, Any]:
    """Stored terms (or none: a new template's defaults) as the form shows them."""
    terms = terms or {"kind": "amount", "valid_days": 30, "restore_on_refund": True,
                      "with_tier_discount": True, "with_points": True, "item_quantity": 1,
                      "min_spend": 0}
    form: dict[str, Any] = {"kind": terms.get("kind", "amount")}
    for name in (*MONEY, *NUMBERS):
        value = terms.get(name)
        form[name] = "" if value in (None, 0) and name != "item_quantity" else str(value)
    for name in FLAGS:
        form[name] = bool(terms.get(name, False))
    form["stores"] = list(terms.get("stores") or [])
    form["channels"] = list(terms.get("channels") or [])
    form["categories"] = ", ".join(terms.get("categories") or [])
    form["skus"] = ", ".join(terms.get("skus") or [])
    for name in ("valid_from", "valid_to"):
        value = terms.get(name)
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        form[name] = local_input(value, tz)
    return form


def parse_terms(form: Any, lang: str, tz: str) -> tuple[dict[str, Any], dict[str, Any],
                                                         dict[str, str]]:
    """The typed terms (to show again), the terms as TermsIn takes them, errors by field."""
    shown: dict[str, Any] = {"kind": text(form, "kind")}
    body: dict[str, Any] = {"kind": shown["kind"]}
    errors: dict[str, str] = {}
    for name in (*MONEY, *NUMBERS):
        shown[name] = text(form, name)
        if shown[name]:
            body[name] = shown[name]
    for name in FLAGS:
        shown[name] = body[name] = form.get(name) in ("on", "1", "true")
    shown["stores"] = body["stores"] = [s for s in texts(form, "stores") if s]
    shown["channels"] = body["channels"] = [c for c in texts(form, "channels") if c]
    for name in ("categories", "skus"):
        shown[name] = text(form, name)
        body[name] = words(shown[name])
    for name in ("valid_from", "valid_to"):
        shown[name] = text(form, name)
        if shown[name]:
            try:
                body[name] = parse_local(shown[name], tz)
            except ValueError:
                errors[name] = t("datetime_parsing", lang)
    return shown, body, errors


def _terms_field(loc: tuple[Any, ...], err_type: str | None = None) -> str:
    if loc[:1] == ("terms",):
        loc = loc[1:]
    if not loc:
        return TERMS_REASON_FIELD.get(err_type or "", "kind")
    return str(loc[0])


def _map_terms_errors(exc: ValidationError, lang: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        errors.setdefault(_terms_field(tuple(err["loc"]), err["type"]), error_text(err, lang))
    return errors


def _limits(form: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    shown = {name: text(form, name) for name in LIMITS}
    return shown, {name: (value or None) for name, value in shown.items()}


def _template_stats(conn: Connection, template_ids: list[int]) -> dict[int, dict[str, int]]:
    """Coupons of each template by status (available, held, redeemed, revoked)."""
    c = coupon_rows.c
    stats: dict[int, dict[str, int]] = {tid: {} for tid in template_ids}
    if template_ids:
        for tid, status, n in conn.execute(
                select(c.template_id, c.status, func.count()).where(
                    c.template_id.in_(template_ids)).group_by(c.template_id, c.status)):
            stats[int(tid)][status] = int(n)
    return stats


def _budget_use(tpl: dict[str, Any]) -> dict[str, Any]:
    count = None if tpl["total_limit"] in (None, 0) else \
        Decimal(tpl["issued_count"]) / Decimal(tpl["total_limit"])
    value = None if not tpl["budget_value"] else \
        Decimal(tpl["issued_value"]) / Decimal(tpl["budget_value"])
    return {"count": count, "value": value}


Reader = Annotated[Actor, Depends(need("coupons.read"))]
Manager = Annotated[Actor, Depends(need("coupons.manage"))]
Issuer = Annotated[Actor, Depends(need("coupons.issue"))]


def _coupons_context(conn: Connection, program: dict[str, Any]) -> dict[str, Any]:
    suggestions = _suggestions(conn)
    # Any store of the brand may be named in a template's terms, whoever edits it.
    return {"kinds": KINDS, "statuses": TEMPLATE_STATUSES,
            "store_options": scoped_stores(conn, None, program),
            "channel_options": [(c, c) for c in suggestions["channel"]],
            "suggestions": suggestions}


@router.get("/loyalty/programs/{code}/coupons")
def coupons_page(request: Request, code: str, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
        rows = coupons.list_templates(uow.c, actor=actor, program=code)
        stats = _template_stats(uow.c, [r["id"] for r in rows])
    for row in rows:
        row["stats"] = stats[row["id"]]
        row["use"] = _budget_use(row)
    lang = page_language(request, actor)
    chart = None
    if rows:
        def status_count(row: dict[str, Any], *names: str) -> int:
            return sum(row["stats"].get(n, 0) for n in names)

        chart = plots.bar([r["code"] for r in rows], [
            plots.Series(t("web.loyalty_admin.redeemed", lang),
                         [status_count(r, "redeemed") for r in rows]),
            plots.Series(t("web.loyalty_admin.unused", lang),
                         [status_count(r, "available", "held") for r in rows]),
            plots.Series(t("web.loyalty_admin.revoked", lang),
                         [status_count(r, "revoked") for r in rows])],
            stacked=True, fmt="int", height=260, id="coupons-chart",
            y_title=t("web.loyalty_admin.issued", lang))
    return render(request, "loyalty_admin/coupons.html", {
        **frame(actor, program, "coupons"), "rows": rows, "chart": chart,
        "may_manage": actor.can("coupons.manage"),
        "notice": _notice(request, actor)}, actor=actor)


def _notice(request: Request, actor: Actor) -> str | None:
    lang = page_language(request, actor)
    q = request.query_params
    if q.get("created"):
        return t("web.loyalty_admin.created", lang, code=q["created"])
    if q.get("saved"):
        return t("web.loyalty_admin.saved", lang)
    if q.get("issued") is not None and q.get("issued", "").isdigit():
        return t("web.loyalty_admin.coupons_issued", lang, issued=q["issued"],
                 skipped=q.get("skipped", "0"))
    return None


def _new_template_page(request: Request, actor: Actor, program: dict[str, Any], *,
                       form: dict[str, Any], errors: dict[str, str],
                       status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        ctx = _coupons_context(uow.c, program)
    return render(request, "loyalty_admin/coupon_new.html", {
        **frame(actor, program, "coupons"), **ctx, "form": form, "errors": errors},
        actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/coupons/new")
def new_template_page(request: Request, code: str, actor: Manager) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    form = {"code": "", "name": "", "total_limit": "", "budget_value": "",
            "per_member_limit": "", **terms_form(None, program["timezone"])}
    return _new_template_page(request, actor, program, form=form, errors={})


@router.post("/loyalty/programs/{code}/coupons/new")
async def create_template(request: Request, code: str, uow: UowDep, actor: Manager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    shown, terms, errors = parse_terms(submitted, lang, program["timezone"])
    limits_shown, limits = _limits(submitted)
    shown.update(limits_shown, code=text(submitted, "code"), name=text(submitted, "name"))
    body = {"program": code, "code": shown["code"], "name": shown["name"], "terms": terms,
            **{k: v for k, v in limits.items() if v is not None}}
    try:
        model = TemplateIn.model_validate(body)
    except ValidationError as exc:
        errors = {**_map_terms_errors(exc, lang), **errors}
    else:
        if not errors:
            try:
                coupons.create_template(uow=uow, actor=actor, data=model)
            except PatronError as exc:
                errors = _field_errors(exc, lang, "code")
            else:
                return redirect(f"/loyalty/programs/{code}/coupons?created={model.code}")
    uow.rollback()
    return _new_template_page(request, actor, program, form=shown, errors=errors,
                              status_code=422)


def _template_in_program(conn: Connection, actor: Actor, program: dict[str, Any],
                         raw_id: str) -> dict[str, Any]:
    template = coupons.get_template(conn, actor=actor, template_id=path_id(raw_id))
    if template["program"] != program["code"]:
        raise NotFound("coupon_template_not_found")
    return template


def _template_page(request: Request, actor: Actor, program: dict[str, Any], raw_id: str, *,
                   form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                   issue_form: dict[str, Any] | None = None,
                   issue_errors: dict[str, str] | None = None,
                   status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        template = _template_in_program(uow.c, actor, program, raw_id)
        ctx = _coupons_context(uow.c, program)
        issue_stores = scoped_stores(uow.c, actor, program)
        stats = _template_stats(uow.c, [template["id"]])[template["id"]]
    current = next(v for v in template["versions"] if v["version"] == template["version"])
    if form is None:
        form = {"name": template["name"], "status": template["status"], "note": "",
                **{k: "" if template[k] is None else str(template[k]) for k in LIMITS},
                **terms_form(current["terms"], program["timezone"])}
    issue_form = issue_form or {"members": "", "quantity": "1",
                                "store": issue_stores[0][0] if actor.store_ids and issue_stores
                                else ""}
    issue_form["idempotency_key"] = issue_form.get("idempotency_key") or \
        "web-" + secrets.token_urlsafe(12)
    return render(request, "loyalty_admin/coupon.html", {
        **frame(actor, program, "coupons"), **ctx, "template": template, "stats": stats,
        "use": _budget_use(template), "form": form, "errors": errors or {},
        "issue": issue_form, "issue_errors": issue_errors or {}, "issue_stores": issue_stores,
        "may_manage": actor.can("coupons.manage"), "may_issue": actor.can("coupons.issue"),
        "notice": _notice(request, actor)}, actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/coupons/{template_id}")
def template_page(request: Request, code: str, template_id: str, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    return _template_page(request, actor, program, template_id)


@router.post("/loyalty/programs/{code}/coupons/{template_id}")
async def update_template(request: Request, code: str, template_id: str, uow: UowDep,
                          actor: Manager) -> Response:
    """Name, status and limits in place; terms that differ from the current version's make a
    new version (coupons already issued keep theirs)."""
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    template = _template_in_program(uow.c, actor, program, template_id)
    shown, terms, errors = parse_terms(submitted, lang, program["timezone"])
    limits_shown, limits = _limits(submitted)
    shown.update(limits_shown, name=text(submitted, "name"), status=text(submitted, "status"),
                 note=text(submitted, "note"))
    body: dict[str, Any] = {"name": shown["name"] or None, "status": shown["status"] or None,
                            **limits, "note": shown["note"] or None}
    try:
        new_terms = TermsIn.model_validate(terms)
        current = next(v for v in template["versions"]
                       if v["version"] == template["version"])["terms"]
        if coupons.terms_out(new_terms.terms()) != current:
            body["terms"] = terms
        model = TemplateUpdate.model_validate({k: v for k, v in body.items()
                                               if v is not None or k in LIMITS})
    except ValidationError as exc:
        errors = {**_map_terms_errors(exc, lang), **errors}
    else:
        if not errors:
            try:
                coupons.update_template(uow=uow, actor=actor, template_id=template["id"],
                                        changes=model)
            except PatronError as exc:
                errors = _field_errors(exc, lang, "name")
            else:
                return redirect(f"/loyalty/programs/{code}/coupons/{template['id']}?saved=1")
    uow.rollback()
    return _template_page(request, actor, program, template_id, form=shown, errors=errors,
                          status_code=422)


def pasted_entries(value: str) -> list[str]:
    """One member per line (or between commas, semicolons, tabs): a phone keeps its spaces
    (``138 1234 5678`` is one phone), a member code loses them."""
    return [e.strip() for e in re.split(r"[\r\n,，;；、\t]+", value) if e.strip()]


def resolve_members(conn: Connection, actor: Actor, program: dict[str, Any],
                    entries: list[str]) -> tuple[list[int], list[str]]:
    """Member codes or phones (as pasted) to member ids of the program, in the order given,
    and the entries that name no member the user may see."""
    m = loyalty_members.c
    visible = visible_clause(actor)
    codes = {entry: entry.replace(" ", "") for entry in entries}
    found_codes = {r.member_code: int(r.id) for r in conn.execute(
        select(m.id, m.member_code).join(customers, customers.c.id == m.customer_id).where(
            m.program_id == program["id"], m.member_code.in_(set(codes.values())), visible))}
    by_code = {entry: found_codes[code] for entry, code in codes.items() if code in found_codes}
    phones: dict[str, str] = {}
    for entry in entries:
        if entry not in by_code:
            try:
                phones[entry] = normalize_identity("phone", entry).value
            except IdentifierError:
                continue
    by_phone: dict[str, int] = {}
    if phones:
        by_phone = {r.value: int(r.id) for r in conn.execute(
            select(m.id, identities.c.value)
            .join(identities, identities.c.customer_id == m.customer_id)
            .join(customers, customers.c.id == m.customer_id)
            .where(m.program_id == program["id"], identities.c.kind == "phone",
                   identities.c.namespace == "",
                   # values are encrypted: matched through their blind indexes
                   identity_in(sorted(set(phones.values()))),
                   visible))}
    ids: list[int] = []
    unknown: list[str] = []
    for entry in entries:
        found = by_code.get(entry) or by_phone.get(phones.get(entry, ""))
        if found is None:
            unknown.append(entry)
        elif found not in ids:
            ids.append(found)
    return ids, unknown


@router.post("/loyalty/programs/{code}/coupons/{template_id}/issue")
async def issue_coupons(request: Request, code: str, template_id: str, uow: UowDep,
                        actor: Issuer) -> Response:
    """Issue to the members pasted (member codes or phones). The form carries an idempotency
    key made when it was shown, so sending it twice issues once."""
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    template = _template_in_program(uow.c, actor, program, template_id)
    shown = {name: text(submitted, name) for name in ("members", "quantity", "store",
                                                      "idempotency_key")}
    entries = pasted_entries(shown["members"])
    errors: dict[str, str] = {}
    if not entries:
        errors["members"] = t("missing", lang)
    elif len(entries) > MAX_PASTED:
        errors["members"] = t("too_long", lang, max_length=MAX_PASTED)
    else:
        member_ids, unknown = resolve_members(uow.c, actor, program, entries)
        if unknown:
            errors["members"] = t("web.loyalty_admin.members_unknown", lang,
                                  count=len(unknown), entries="、".join(unknown[:20]))
    if not errors:
        try:
            body = IssueIn.model_validate({
                "idempotency_key": shown["idempotency_key"], "member_ids": member_ids,
                "quantity": shown["quantity"] or "1", "store": shown["store"] or None})
        except ValidationError as exc:
            errors = map_errors(exc, lang, lambda loc: {"member_ids": "members"}.get(
                str(loc[0]), str(loc[0])) if loc else "members")
        else:
            try:
                out = coupons.issue(uow=uow, actor=actor, template_id=template["id"], body=body)
            except PatronError as exc:
                errors = {{"member_ids": "members"}.get(k, k): v
                          for k, v in _field_errors(exc, lang, "members").items()}
            else:
                return redirect(f"/loyalty/programs/{code}/coupons/{template['id']}"
                                f"?issued={out['issued']}&skipped={len(out['skipped'])}")
    uow.rollback()
    return _template_page(request, actor, program, template_id, issue_form=shown,
                          issue_errors=errors, status_code=422)


# --- stored value -------------------------------------------------------------------------------

SVReader = Annotated[Actor, Depends(need("stored_value.read"))]
SVManager = Annotated[Actor, Depends(need("stored_value.manage"))]
SPEND_ORDERS = ("proportional", "bonus_first", "principal_first")


def _accounts(conn: Connection, actor: Actor, program: dict[str, Any], store_code: str | None,
              page: int) -> tuple[list[dict[str, Any]], bool, dict[str, Any]]:
    """Accounts of the program (masked), largest balance first; with a store: those with money
    topped up there, and how much of it is left."""
    a, lt = sv_accounts.c, sv_lots.c
    m = loyalty_members.c
    q = (select(a.id, a.principal, a.bonus, a.principal_held, a.bonus_held, a.updated_at,
                m.member_code, customers.c.name, customers.c.phone)
         .join(loyalty_members, m.id == a.member_id)
         .join(customers, customers.c.id == m.customer_id)
         .where(a.program_id == program["id"]))
    store_id = None
    if store_code:
        store_id = conn.execute(select(stores.c.id).where(stores.c.code == store_code)).scalar()
        q = q.where(exists(select(lt.id).where(and_(lt.account_id == a.id,
                                                    lt.store_id == store_id))))
    rows = conn.execute(q.order_by((a.principal + a.bonus).desc(), a.id)
                        .limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)).mappings().all()
    has_next = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    here: dict[int, tuple[Any, Any]] = {}
    if store_id is not None and rows:
        here = {int(r.account_id): (r.p, r.b) for r in conn.execute(
            select(lt.account_id, func.sum(lt.principal_left).label("p"),
                   func.sum(lt.bonus_left).label("b"))
            .where(lt.account_id.in_([int(r["id"]) for r in rows]), lt.store_id == store_id)
            .group_by(lt.account_id))}
    out = [{"member_code": r["member_code"], "name": mask_name(r["name"]),
            "phone": mask_phone(r["phone"]), "principal": r["principal"], "bonus": r["bonus"],
            "held": r["principal_held"] + r["bonus_held"], "updated_at": r["updated_at"],
            "here": here.get(int(r["id"]))} for r in rows]
    totals_q = select(func.count(), func.coalesce(func.sum(a.principal), 0),
                      func.coalesce(func.sum(a.bonus), 0)).where(a.program_id == program["id"])
    if store_id is not None:
        totals_q = totals_q.where(exists(select(lt.id).where(and_(lt.account_id == a.id,
                                                                  lt.store_id == store_id))))
    # sum() and coalesce() keep the Money type: yuan as Decimal, as the columns.
    n, principal, bonus = conn.execute(totals_q).one()
    totals = {"accounts": int(n), "principal": principal, "bonus": bonus}
    return out, has_next, totals


def _sv_page(request: Request, actor: Actor, program: dict[str, Any], *,
             settings_form: dict[str, Any] | None = None,
             settings_errors: dict[str, str] | None = None,
             bonus_form: dict[str, Any] | None = None,
             bonus_errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    q = request.query_params
    page = int(q["page"]) if (q.get("page") or "").isdigit() and int(q["page"]) > 0 else 1
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        info = stored_value.program_out(conn, program)
        versions = stored_value.list_bonus_rules(conn, actor=actor, code=program["code"])
        store_choices = scoped_stores(conn, actor, program)
        store = q.get("store") or (store_choices[0][0] if actor.store_ids is not None
                                   and store_choices else "")
        if store and store not in {c for c, _label in store_choices}:
            raise Forbidden("web.loyalty_admin.store_out_of_scope", params={"store": store})
        if actor.store_ids is not None and not store:
            raise Forbidden("web.loyalty_admin.store_out_of_scope", params={"store": "–"})
        accounts, has_next, totals = _accounts(conn, actor, program, store or None, page)
    in_force = info["bonus_rules_in_force"]["version"] if info["bonus_rules_in_force"] else None
    notice = t("web.loyalty_admin.saved", lang) if q.get("saved") else None
    latest = versions[-1]["tiers"] if versions else []
    return render(request, "loyalty_admin/stored_value.html", {
        **frame(actor, program, "stored_value"), "info": info, "versions": versions,
        "in_force": in_force, "stores": store_choices, "store": store, "accounts": accounts,
        "totals": totals, "page": page, "has_next": has_next, "notice": notice,
        "spend_orders": SPEND_ORDERS, "may_manage": actor.can("stored_value.manage"),
        "settings": settings_form or {
            "spend_order": info["spend_order"] or "proportional",
            "hold_minutes": str(info["hold_minutes"] or 15),
            "bonus_expiry_months": "" if info["bonus_expiry_months"] is None else str(
                info["bonus_expiry_months"])},
        "settings_errors": settings_errors or {},
        "bonus": bonus_form or {"rows": [(r["min"], r["bonus"]) for r in latest],
                                "effective_from": "", "note": ""},
        "bonus_errors": bonus_errors or {}, "blank_rows": 2,
    }, actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/stored-value")
def stored_value_page(request: Request, code: str, actor: SVReader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    return _sv_page(request, actor, program)


@router.post("/loyalty/programs/{code}/stored-value/settings")
async def configure_stored_value(request: Request, code: str, uow: UowDep,
                                 actor: SVManager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    shown = {name: text(submitted, name) for name in ("spend_order", "hold_minutes",
                                                      "bonus_expiry_months")}
    try:
        model = SettingsIn.model_validate({k: v for k, v in shown.items() if v})
    except ValidationError as exc:
        errors = map_errors(exc, lang, lambda loc: str(loc[0]) if loc else "spend_order")
    else:
        try:
            stored_value.configure(uow=uow, actor=actor, code=code, body=model)
        except PatronError as exc:
            errors = _field_errors(exc, lang, "spend_order")
        else:
            return redirect(f"/loyalty/programs/{code}/stored-value?saved=1")
    uow.rollback()
    return _sv_page(request, actor, program, settings_form=shown, settings_errors=errors,
                    status_code=422)


@router.post("/loyalty/programs/{code}/stored-value/bonus-rules")
async def add_bonus_rules(request: Request, code: str, uow: UowDep,
                          actor: SVManager) -> Response:
    """A new version of the top-up bonus tiers (top up at least X, get Y), from now or later."""
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    rows = [r for r in zip(texts(submitted, "bonus_min"), texts(submitted, "bonus_amount"),
                           strict=False) if any(r)]
    shown = {"rows": rows, "effective_from": text(submitted, "effective_from"),
             "note": text(submitted, "note")}
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"tiers": [{"min": a or None, "bonus": b or None} for a, b in rows],
                            "note": shown["note"] or None}
    if shown["effective_from"]:
        try:
            body["effective_from"] = parse_local(shown["effective_from"], program["timezone"])
        except ValueError:
            errors["effective_from"] = t("datetime_parsing", lang)

    def field_of(loc: tuple[Any, ...]) -> str:
        if loc[:1] == ("tiers",) and len(loc) > 1:
            return f"tiers.{loc[1]}"
        return str(loc[0]) if loc else "tiers"

    try:
        model = BonusRulesIn.model_validate(body)
    except ValidationError as exc:
        errors = {**map_errors(exc, lang, field_of), **errors}
    else:
        if not errors:
            try:
                stored_value.add_bonus_rules(uow=uow, actor=actor, code=code, body=model)
            except PatronError as exc:
                errors = _field_errors(exc, lang, "tiers")
            else:
                return redirect(f"/loyalty/programs/{code}/stored-value?saved=1")
    uow.rollback()
    return _sv_page(request, actor, program, bonus_form=shown, bonus_errors=errors,
                    status_code=422)


# --- rewards catalog ----------------------------------------------------------------------------

RWReader = Annotated[Actor, Depends(need("rewards.read"))]
RWManager = Annotated[Actor, Depends(need("rewards.manage"))]
ITEM_TEXT = ("code", "name", "description", "points_price", "cash_price", "stock",
             "limit_per_member", "limit_per_period", "limit_period", "valid_from", "valid_until",
             "hold_minutes")
PERIODS = ("day", "week", "month", "year")


def item_form(item: dict[str, Any] | None, tz: str) -> dict[str, Any]:
    item = item or {"cash_price": "0", "active": True}
    form: dict[str, Any] = {}
    for name in ITEM_TEXT:
        value = item.get(name)
        if name in ("valid_from", "valid_until"):
            form[name] = local_input(value, tz) if value else ""
        else:
            form[name] = "" if value is None else str(value)
    form["active"] = bool(item.get("active", True))
    return form


def parse_item(form: Any, lang: str, tz: str, *, new: bool
               ) -> tuple[dict[str, Any], ItemIn | ItemUpdate | None, dict[str, str]]:
    shown: dict[str, Any] = {name: text(form, name) for name in ITEM_TEXT}
    shown["active"] = form.get("active") in ("on", "1", "true")
    errors: dict[str, str] = {}
    body: dict[str, Any] = {}
    for name in ITEM_TEXT:
        if name == "code" and not new:
            continue
        value: Any = shown[name] or None
        if value is not None and name in ("valid_from", "valid_until"):
            try:
                value = parse_local(value, tz)
            except ValueError:
                errors[name] = t("datetime_parsing", lang)
                continue
        if value is not None or (not new and name not in ("name", "points_price", "cash_price",
                                                             "valid_from")):
            body[name] = value
    body["active"] = shown["active"]
    try:
        model: ItemIn | ItemUpdate = (ItemIn if new else ItemUpdate).model_validate(body)
    except ValidationError as exc:
        errors = {**map_errors(exc, lang, lambda loc: str(loc[0]) if loc else "limit_period"),
                  **errors}
        return shown, None, errors
    return shown, (None if errors else model), errors


def _redemption_counts(conn: Connection, item_ids: list[int]) -> dict[int, dict[str, int]]:
    r = rewards_redemptions.c
    out: dict[int, dict[str, int]] = {i: {} for i in item_ids}
    if item_ids:
        for item_id, status, n, units in conn.execute(
                select(r.item_id, r.status, func.count(), func.sum(r.quantity))
                .where(r.item_id.in_(item_ids)).group_by(r.item_id, r.status)):
            out[int(item_id)][status] = int(n)
            out[int(item_id)][status + "_units"] = int(units or 0)
    return out


def _rewards_page(request: Request, actor: Actor, program: dict[str, Any], *,
                  form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                  status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = rewards.list_items(uow.c, actor=actor, program_code=program["code"])
        counts = _redemption_counts(uow.c, [i["id"] for i in items])
    for item in items:
        item["redemptions"] = counts[item["id"]]
    lang = page_language(request, actor)
    stocked = [i for i in items if i["stock"] is not None]
    chart = None
    if stocked:
        chart = plots.bar([i["code"] for i in stocked], [
            plots.Series(t("web.loyalty_admin.sold", lang), [i["sold"] for i in stocked]),
            plots.Series(t("web.loyalty_admin.reserved", lang),
                         [i["reserved"] for i in stocked]),
            plots.Series(t("web.loyalty_admin.available", lang),
                         [i["available"] for i in stocked])],
            stacked=True, fmt="int", height=260, id="rewards-chart",
            y_title=t("web.loyalty_admin.f.stock", lang))
    return render(request, "loyalty_admin/rewards.html", {
        **frame(actor, program, "rewards"), "items": items, "periods": PERIODS,
        "chart": chart,
        "form": form or item_form(None, program["timezone"]), "errors": errors or {},
        "may_manage": actor.can("rewards.manage"), "notice": _notice(request, actor)},
        actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/rewards")
def rewards_page(request: Request, code: str, actor: RWReader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    return _rewards_page(request, actor, program)


@router.post("/loyalty/programs/{code}/rewards")
async def create_item(request: Request, code: str, uow: UowDep, actor: RWManager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    shown, model, errors = parse_item(submitted, lang, program["timezone"], new=True)
    if isinstance(model, ItemIn):
        try:
            rewards.create_item(uow=uow, actor=actor, program_code=code, data=model)
        except PatronError as exc:
            errors = _field_errors(exc, lang, "code")
        else:
            return redirect(f"/loyalty/programs/{code}/rewards?created={model.code}")
    uow.rollback()
    return _rewards_page(request, actor, program, form=shown, errors=errors, status_code=422)


def _item_in_program(conn: Connection, actor: Actor, program: dict[str, Any],
                     raw_id: str) -> dict[str, Any]:
    item = rewards.get_item(conn, actor=actor, item_id=path_id(raw_id))
    if item["program"] != program["code"]:
        raise NotFound("reward_not_found")
    return item


def _item_page(request: Request, actor: Actor, program: dict[str, Any], raw_id: str, *,
               form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
               status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        item = _item_in_program(uow.c, actor, program, raw_id)
        counts = _redemption_counts(uow.c, [item["id"]])[item["id"]]
        r, m = rewards_redemptions.c, loyalty_members.c
        recent = [dict(row) for row in uow.c.execute(
            select(r.id, r.quantity, r.points, r.cash, r.status, r.created_at,
                   m.member_code).join(loyalty_members, m.id == r.member_id)
            .where(r.item_id == item["id"]).order_by(r.id.desc()).limit(20)).mappings()]
    return render(request, "loyalty_admin/reward.html", {
        **frame(actor, program, "rewards"), "item": item, "counts": counts, "recent": recent,
        "periods": PERIODS, "form": form or item_form(item, program["timezone"]),
        "errors": errors or {}, "may_manage": actor.can("rewards.manage"),
        "notice": _notice(request, actor)}, actor=actor, status_code=status_code)


@router.get("/loyalty/programs/{code}/rewards/{item_id}")
def item_page(request: Request, code: str, item_id: str, actor: RWReader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        program = program_in_scope(uow.c, actor, code)
    return _item_page(request, actor, program, item_id)


@router.post("/loyalty/programs/{code}/rewards/{item_id}")
async def update_item(request: Request, code: str, item_id: str, uow: UowDep,
                      actor: RWManager) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    program = program_in_scope(uow.c, actor, code)
    item = _item_in_program(uow.c, actor, program, item_id)
    shown, model, errors = parse_item(submitted, lang, program["timezone"], new=False)
    if isinstance(model, ItemUpdate):
        try:
            rewards.update_item(uow=uow, actor=actor, item_id=item["id"], changes=model)
        except PatronError as exc:
            errors = _field_errors(exc, lang, "name")
        else:
            return redirect(f"/loyalty/programs/{code}/rewards/{item['id']}?saved=1")
    uow.rollback()
    shown["code"] = item["code"]
    return _item_page(request, actor, program, item_id, form=shown, errors=errors,
                      status_code=422)


