"""The automation editor pages: /automations/new and /automations/{code}/edit build the same
definition the JSON API accepts (trigger with its parameters, conditions from the segment
builder, an ordered list of actions and waits, or A/B variants of them, the re-entry period and
the control group), save it as a draft, dry-run it, and activate, pause or archive it.

The form is a plain POST with its CSRF token; ``static/patron-automations.js`` keeps the
definition in a hidden field as the user clicks, and shows each refusal of the service next to
the control it names (``definition.steps.2.template``...), in the page's language.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, select

from patron.automations import model
from patron.automations import service as automations
from patron.automations.engine import definition_of
from patron.automations.schemas import AutomationIn, AutomationUpdate
from patron.config import get_settings
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, NotFound, PatronError
from patron.i18n import t
from patron.security.model import SYSTEM, Actor
from patron.web.render import PageRoute, need, page_language, posted_form, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

TRIGGERS = ("first_purchase", "every_order", "spend_threshold", "tier_changed", "birthday",
            "days_since_last_purchase", "lifecycle_stage", "points_expiring", "coupon_expiring",
            "joined_segment", "schedule")
ACTIONS = ("issue_coupon", "grant_points", "add_tag", "remove_tag", "send_message",
           "call_webhook", "wait")
CHANNELS = ("sms", "email", "wechat", "app")
STAGES = ("new", "active", "dormant", "churn_risk", "churned", "reactivated")
# Shares the forms take in percent (the definition holds fractions): limits are shown in %.
PERCENT_FIELDS = ("control_share", "share")
# What pydantic says of a definition as a whole (its model validators), as message keys.
SHAPE_ERRORS = {
    "give either steps or variants": "web.autoedit.error.steps_or_variants",
    "the variants' shares must add up to 1": "web.autoedit.error.shares_sum",
    "variant codes must differ": "web.autoedit.error.variant_codes",
    "'control' is the held-out group's name": "web.autoedit.error.variant_control",
    "a wait of nothing": "web.autoedit.error.empty_wait",
    "give either template or variants": "web.autoedit.error.template_or_variants",
}


# --- errors beside their fields --------------------------------------------------------------

def shape_errors(exc: ValidationError, lang: str, *, tags: tuple[str, ...] = ()
                 ) -> dict[str, str]:
    """Pydantic's refusal as ``{dotted path: message}`` in ``lang``, the path as the service
    names fields (``definition.steps.1.days``): the discriminator's tag that pydantic puts in
    a union member's location is left out."""
    out: dict[str, str] = {}
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if str(p) not in tags]
        path = ".".join(parts) or "form"
        reason = err["type"]
        ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
        if parts and parts[-1] in PERCENT_FIELDS:  # typed in %, kept as a fraction
            ctx = {k: _percent(v) if k in ("ge", "gt", "le", "lt") else v
                   for k, v in ctx.items()}
        if reason == "value_error":
            text = str(err.get("msg", "")).removeprefix("Value error, ")
            message = t(SHAPE_ERRORS.get(text, "web.error.invalid_value"), lang)
        elif reason == "union_tag_invalid":
            message = t("web.autoedit.error.choose", lang)
        else:
            message = t(reason, lang, **ctx)
        out.setdefault(path, message)
    return out


def _percent(fraction: str) -> str:
    try:
        return f"{Decimal(fraction) * 100:f}".rstrip("0").rstrip(".") + "%"
    except InvalidOperation:
        return fraction


def service_errors(exc: PatronError, lang: str, *, default: str) -> dict[str, str]:
    """A service's refusal as ``{field path: message}``; one without fields under
    ``default``."""
    if exc.fields:
        out: dict[str, str] = {}
        for f in exc.fields:
            message = t(f.reason, lang, **f.params)
            out[f.field] = f"{out[f.field]} {message}" if f.field in out else message
        return out
    return {default: t(exc.message, lang, **exc.params)}


# --- what the editor offers ------------------------------------------------------------------

def _opts(values: Any, prefix: str, lang: str) -> list[list[str]]:
    return [[v, t(f"{prefix}.{v}", lang)] for v in values]


def catalog(conn: Connection, lang: str, actor: Actor) -> dict[str, Any]:
    """Trigger types and actions with their parameters, the choices they offer (tiers, coupon
    templates, message templates, manual tags, webhook endpoints, saved segments), the segment
    builder's own catalogue, and the labels, in ``lang``. Configuration only: no customer."""
    from patron.coupons.tables import coupon_templates
    from patron.loyalty.tables import loyalty_programs, loyalty_tiers
    from patron.messaging.service import list_templates
    from patron.segments import pages as segment_pages
    from patron.tags.tables import tags
    from patron.webhooks.tables import webhook_endpoints

    def p(name: str, kind: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "kind": kind, "label": t(f"web.autoedit.param.{name}", lang),
                **more}

    programs = {int(r.id): r.code for r in conn.execute(
        select(loyalty_programs.c.id, loyalty_programs.c.code))}
    tiers = [[r.code, f"{programs.get(int(r.program_id), '?')} · {r.name}"]
             for r in conn.execute(select(loyalty_tiers.c.code, loyalty_tiers.c.name,
                                          loyalty_tiers.c.program_id)
                                   .order_by(loyalty_tiers.c.program_id, loyalty_tiers.c.rank))]
    coupons = [[str(r.id), f"{programs.get(int(r.program_id), '?')} · {r.code} · {r.name}"]
               for r in conn.execute(select(coupon_templates.c.id, coupon_templates.c.code,
                                            coupon_templates.c.name,
                                            coupon_templates.c.program_id)
                                     .where(coupon_templates.c.status == "active")
                                     .order_by(coupon_templates.c.id))]
    messages = [[m["code"], m["code"] + (f" ({', '.join(m['variables'])})"
                                         if m["variables"] else "")]
                for m in list_templates(conn, actor=SYSTEM)]
    manual_tags = [[r.code, f"{r.code} · {r.name}"] for r in conn.execute(
        select(tags.c.code, tags.c.name).where(tags.c.kind == "manual").order_by(tags.c.code))]
    endpoints = [[str(r.id), r.url] for r in conn.execute(
        select(webhook_endpoints.c.id, webhook_endpoints.c.url).order_by(webhook_endpoints.c.id))]
    saved = saved_segments(conn, actor)
    stages = _opts(STAGES, "analytics.stage", lang)
    days = p("days", "int")
    triggers: dict[str, list[dict[str, Any]]] = {
        "first_purchase": [], "every_order": [],
        "spend_threshold": [p("amount", "decimal", default="1000")],
        "tier_changed": [p("direction", "select", options=_opts(
            ("up", "down"), "web.autoedit.direction", lang)),
            p("tier", "select", options=tiers, optional=True)],
        "birthday": [p("days_before", "int", default=0)],
        "days_since_last_purchase": [{**days, "default": 60},
                                     p("within_days", "int", default=30)],
        "lifecycle_stage": [p("to", "select", options=stages),
                            p("from", "select", options=stages, optional=True)],
        "points_expiring": [{**days, "default": 30}, p("min_points", "int", default=1)],
        "coupon_expiring": [{**days, "default": 7},
                            p("coupon_template_id", "select", options=coupons, optional=True,
                              numeric=True)],
        "joined_segment": [p("segment", "segment")],
        "schedule": [p("cron", "text", default="0 10 * * *",
                       hint=t("web.autoedit.cron_hint", lang))],
    }
    actions: dict[str, list[dict[str, Any]]] = {
        "issue_coupon": [p("coupon_template_id", "select", options=coupons, numeric=True)],
        "grant_points": [p("points", "int", default=100),
                         p("reason", "text", default="automation")],
        "add_tag": [p("tag", "select", options=manual_tags)],
        "remove_tag": [p("tag", "select", options=manual_tags)],
        "send_message": [p("channel", "select", options=_opts(
            CHANNELS, "web.autoedit.channel", lang)),
            p("template", "select", options=messages)],
        "call_webhook": [p("endpoint_id", "select", options=endpoints, optional=True,
                           numeric=True),
                         p("data", "json", hint='{"offer": "spring"}')],
        "wait": [p("days", "int", default=1), p("hours", "int", default=0),
                 p("minutes", "int", default=0)],
    }
    labels = {k: t(f"web.autoedit.ui.{k}", lang) for k in (
        "add_step", "move_up", "move_down", "remove", "variants", "add_variant", "arm",
        "share", "steps", "no_steps", "conditions_on", "load_segment", "none", "counting",
        "customers", "everyone")}
    return {
        "triggers": [{"type": k, "label": t(f"web.autoedit.trigger.{k}", lang), "params": v}
                     for k, v in triggers.items()],
        "actions": [{"action": k, "label": t(f"web.autoedit.action.{k}", lang), "params": v}
                    for k, v in actions.items()],
        "tags": list(TRIGGERS) + list(ACTIONS),
        "saved_segments": saved,
        "segments": segment_pages.catalog(conn, lang),
        "labels": labels,
    }


def saved_segments(conn: Connection, actor: Actor) -> dict[str, dict[str, Any]]:
    """Saved segments to start conditions from, for users who may read them."""
    from patron.segments.tables import segments

    if not actor.can("segments.read"):
        return {}
    return {str(r.id): {"name": r.name, "definition": r.definition} for r in conn.execute(
        select(segments.c.id, segments.c.name, segments.c.definition).order_by(segments.c.name))}


def _program_options(conn: Connection) -> list[tuple[str, str]]:
    from patron.loyalty.tables import loyalty_programs

    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(
        select(loyalty_programs.c.code, loyalty_programs.c.name)
        .order_by(loyalty_programs.c.code))]


EMPTY = {"trigger": {"type": "first_purchase"}, "conditions": None,
         "steps": [], "reentry_days": None, "control_share": "0"}


def _editor(request: Request, actor: Actor, *, automation: dict[str, Any] | None,
            form: dict[str, Any], definition: Any, errors: dict[str, str] | None = None,
            dry: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    errors = errors or {}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        context = {
            "automation": automation, "form": form, "catalog": catalog(uow.c, lang, actor),
            "definition": definition,
            # the definition's own errors are placed by the script; the form's beside it
            "definition_errors": {k: v for k, v in errors.items()
                                  if k == "definition" or k.startswith("definition.")},
            "errors": {k: v for k, v in errors.items() if not k.startswith("definition")},
            "programs": _program_options(uow.c), "dry": dry,
        }
    return render(request, "automations/editor.html", context, actor=actor,
                  status_code=status_code)


def _dry_run(conn: Connection, actor: Actor, lang: str, *, body: AutomationIn | None = None,
             code: str | None = None) -> dict[str, Any]:
    """The service's dry run, with the flow in the page's language and the audience counted
    against the confirmation limit (a warning before anything is activated)."""
    dry = automations.dry_run(conn, actor=actor, body=body, code=code, sample=10)
    if body is not None:
        program_id = _program_id(conn, body.program)
        definition = body.definition
    else:
        assert code is not None
        row = automations.get_automation(conn, actor=actor, code=code)
        definition = definition_of(conn, int(row["id"]), int(row["version"]))
        program_id = _program_id(conn, row["program"])
    dry["flow"] = model.flow(definition, lang)
    for sample in dry["sample"]:  # the service describes steps in English
        for item, step in zip(sample["steps"], definition.steps_of(sample["arm"]), strict=False):
            item["description"] = model.describe_step(step, lang)
    dry["audience"] = automations.audience_size(conn, program_id, definition)
    limit = get_settings().audience_confirm_above
    dry["too_large"] = dry["audience"] > limit
    dry["limit"] = limit
    return dry


def _program_id(conn: Connection, code: str) -> int:
    from patron.loyalty.service import _program

    return int(_program(conn, code)["id"])


def _parse(raw: str, lang: str) -> tuple[Any, dict[str, str]]:
    try:
        return json.loads(raw or "null"), {}
    except ValueError:
        return None, {"definition": t("json_invalid", lang)}


def _form_values(form: Any) -> dict[str, Any]:
    return {k: str(form.get(k) or "").strip() for k in ("code", "name", "program")}


# --- pages -----------------------------------------------------------------------------------

@router.get("/automations/new")
def new_page(request: Request,
             actor: Annotated[Actor, Depends(need("automations.manage"))]) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        programs = _program_options(uow.c)
    form = {"code": "", "name": "", "program": programs[0][0] if programs else ""}
    return _editor(request, actor, automation=None, form=form, definition=EMPTY)


@router.post("/automations/new")
async def create(request: Request,
                 actor: Annotated[Actor, Depends(need("automations.manage"))]) -> Response:
    """Save as a draft (``intent=save``) or dry-run the unsaved definition
    (``intent=dry_run``); either way every refusal comes back beside its field."""
    form = await posted_form(request)
    values = _form_values(form)

    def save(uow: UnitOfWork, body: AutomationIn) -> None:
        automations.create(uow=uow, actor=actor, body=body)

    return _submit(request, actor, form, automation=None, values=values, fallback=EMPTY,
                   dry_run=lambda conn, lang, body: _dry_run(conn, actor, lang, body=body),
                   save=save, default_field="code", not_found_field="program")


def _submit(request: Request, actor: Actor, form: Any, *, automation: dict[str, Any] | None,
            values: dict[str, Any], fallback: dict[str, Any],
            dry_run: Callable[[Connection, str, AutomationIn], dict[str, Any]],
            save: Callable[[UnitOfWork, AutomationIn], None], default_field: str,
            not_found_field: str | None = None) -> Response:
    """What a new and an edited automation share: the definition parsed and checked for
    shape, then dry-run (``intent=dry_run``) or saved; every refusal is shown beside its
    field on the editor again, and a saved one goes to its page."""
    lang = page_language(request, actor)
    definition, errors = _parse(str(form.get("definition") or ""), lang)
    state = definition if isinstance(definition, dict) else fallback

    def again(**more: Any) -> Response:
        return _editor(request, actor, automation=automation, form=values, definition=state,
                       **more)

    if errors:
        return again(errors=errors, status_code=422)
    try:
        body = AutomationIn.model_validate({**values, "definition": definition})
    except ValidationError as exc:
        return again(errors=shape_errors(exc, lang, tags=TRIGGERS + ACTIONS), status_code=422)
    try:
        if form.get("intent") == "dry_run":
            with UnitOfWork(get_engine(), readonly=True) as uow:
                dry = dry_run(uow.c, lang, body)
            return again(dry=dry)
        with UnitOfWork(get_engine()) as uow:
            save(uow, body)
    except PatronError as exc:
        if exc.status not in (404, 409, 422):
            raise
        default = (not_found_field if isinstance(exc, NotFound) and not_found_field
                   else default_field)
        return again(errors=service_errors(exc, lang, default=default), status_code=exc.status)
    return redirect(f"/automations/{body.code}?saved=1")


def _saved(code: str, actor: Actor) -> tuple[dict[str, Any], dict[str, Any]]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        a = automations.get_automation(uow.c, actor=actor, code=code)
        a["definition_model"] = definition_of(uow.c, a["id"], a["version"])
    return a, a["definition"]


@router.get("/automations/{code}/edit")
def edit_page(code: str, request: Request,
              actor: Annotated[Actor, Depends(need("automations.manage"))]) -> Response:
    a, definition = _saved(code, actor)
    return _editor(request, actor, automation=a,
                   form={"code": a["code"], "name": a["name"], "program": a["program"]},
                   definition=definition)


@router.post("/automations/{code}/edit")
async def edit(code: str, request: Request,
               actor: Annotated[Actor, Depends(need("automations.manage"))]) -> Response:
    """Save the changed definition as a new version, or dry-run it first."""
    form = await posted_form(request)
    a, saved = _saved(code, actor)
    values = {"code": a["code"], "name": str(form.get("name") or "").strip(),
              "program": a["program"]}

    def dry_run(conn: Connection, lang: str, body: AutomationIn) -> dict[str, Any]:
        # unchanged: the saved automation's own dry run, which knows who entered it
        if body.definition == a["definition_model"]:
            return _dry_run(conn, actor, lang, code=code)
        return _dry_run(conn, actor, lang, body=body)

    def save(uow: UnitOfWork, body: AutomationIn) -> None:
        automations.update_automation(uow=uow, actor=actor, code=code, body=AutomationUpdate(
            name=body.name, definition=body.definition))

    return _submit(request, actor, form, automation=a, values=values, fallback=saved,
                   dry_run=dry_run, save=save, default_field="form")


@router.post("/automations/{code}/status")
async def change_status(code: str, request: Request,
                        actor: Annotated[Actor, Depends(need("automations.manage"))]
                        ) -> Response:
    """Activate (a large audience must be confirmed with its size), pause or archive."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    target = {"activate": "active", "pause": "paused", "archive": "archived"}.get(
        str(form.get("action") or ""))
    if target is None:
        raise NotFound("not_found")
    raw = str(form.get("confirm_audience") or "")
    confirm = int(raw) if raw.isdigit() and len(raw) < 12 else None
    try:
        with UnitOfWork(get_engine()) as uow:
            automations.set_status(uow=uow, actor=actor, code=code, status=target,
                                   confirm_audience=confirm)
    except Conflict as exc:
        if exc.message == "audience_confirmation_required":
            return redirect(f"/automations/{code}?confirm={int(exc.params['count'])}")
        a, definition = _saved(code, actor)
        return _editor(request, actor, automation=a,
                       form={"code": a["code"], "name": a["name"], "program": a["program"]},
                       definition=definition,
                       errors=service_errors(exc, lang, default="status"), status_code=409)
    except PatronError as exc:
        if exc.status != 422:
            raise
        # a template or coupon changed since the draft was saved: show where
        a, definition = _saved(code, actor)
        return _editor(request, actor, automation=a,
                       form={"code": a["code"], "name": a["name"], "program": a["program"]},
                       definition=definition,
                       errors={"status": t(exc.message, lang),
                               **service_errors(exc, lang, default="status")},
                       status_code=422)
    return redirect(f"/automations/{code}?status={target}")

