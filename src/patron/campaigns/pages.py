"""Campaign editor pages: /campaigns/new (audience from the segment builder, template or A/B
templates, an optional coupon per recipient, when to send, control share, budget) saves a
draft whose page shows the preview (audience, sample messages, estimated cost) and launches
it; /campaigns/{code}/edit changes a draft in the same form; /campaigns/approvals lists the
campaigns whose audience needs a second person, who approves them there. Every form posts
with its CSRF token; refusals come back beside their fields, in the page's language."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, select

from patron.automations.editor import CHANNELS, saved_segments, service_errors, shape_errors
from patron.campaigns import service as campaigns
from patron.campaigns.schemas import CampaignIn
from patron.config import get_settings
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, NotFound, PatronError
from patron.i18n import t
from patron.security.model import SYSTEM, Actor
from patron.web.render import PageRoute, need, page_language, posted_form, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

VARIANT_ROWS = 4
FIELDS = ("code", "name", "program", "channel", "arms_mode", "template", "control_share",
          "coupon_template_id", "scheduled_at", "budget_messages", "budget_value",
          "message_cost")


def _options(conn: Connection, lang: str, actor: Actor) -> dict[str, Any]:
    from patron.coupons.tables import coupon_templates
    from patron.loyalty.tables import loyalty_programs
    from patron.messaging.service import list_templates
    from patron.segments import pages as segment_pages

    programs = {int(r.id): (r.code, r.name) for r in conn.execute(
        select(loyalty_programs.c.id, loyalty_programs.c.code, loyalty_programs.c.name)
        .order_by(loyalty_programs.c.code))}
    return {
        "programs": [(code, f"{code} · {name}") for code, name in programs.values()],
        "channels": [(c, t(f"web.autoedit.channel.{c}", lang)) for c in CHANNELS],
        "templates": [(m["code"], m["code"] + (f" ({', '.join(m['variables'])})"
                                               if m["variables"] else ""))
                      for m in list_templates(conn, actor=SYSTEM)],
        "coupons": [(str(r.id), f"{programs.get(int(r.program_id), ('?',))[0]} · {r.code} · "
                                f"{r.name}") for r in conn.execute(
            select(coupon_templates.c.id, coupon_templates.c.code, coupon_templates.c.name,
                   coupon_templates.c.program_id).where(coupon_templates.c.status == "active")
            .order_by(coupon_templates.c.id))],
        "segment_catalog": {
            "segments": segment_pages.catalog(conn, lang),
            "saved_segments": saved_segments(conn, actor),
            "labels": {k: t(f"web.autoedit.ui.{k}", lang)
                       for k in ("load_segment", "customers", "everyone")}},
    }


def _form_page(request: Request, actor: Actor, *, form: dict[str, Any],
               segment: Any, errors: dict[str, str] | None = None,
               status_code: int = 200, editing: str | None = None) -> Response:
    lang = page_language(request, actor)
    errors = errors or {}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        options = _options(uow.c, lang, actor)
    return render(request, "automations/campaign_new.html", {
        "form": form, "segment": segment, "rows": range(VARIANT_ROWS), **options,
        "editing": editing,
        "segment_errors": {k: v for k, v in errors.items()
                           if k == "segment" or k.startswith("segment.")},
        "errors": {k: v for k, v in errors.items() if not k.startswith("segment")},
    }, actor=actor, status_code=status_code)


@router.get("/campaigns/new")
def new_page(request: Request,
             actor: Annotated[Actor, Depends(need("campaigns.manage"))]) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        programs = _options(uow.c, lang, actor)["programs"]
    form = {"program": programs[0][0] if programs else "", "channel": "sms",
            "arms_mode": "single", "control_share": "10", "message_cost": "0.05"}
    return _form_page(request, actor, form=form, segment=None)


def _percent_share(raw: str | None) -> Any:
    """'10' (percent, as typed) -> Decimal('0.1'); what does not parse goes to the model as
    typed, which refuses it beside the field."""
    if raw is None:
        return None
    try:
        return Decimal(raw) / 100
    except InvalidOperation:
        return raw


def _local_time(raw: str | None) -> Any:
    """A datetime-local value, read in the stores' time zone."""
    if raw is None:
        return None
    try:
        naive = dt.datetime.fromisoformat(raw)
    except ValueError:
        return raw
    if naive.tzinfo is None:
        naive = naive.replace(tzinfo=ZoneInfo(get_settings().default_timezone))
    return naive.isoformat()


def campaign_input(form: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(what was typed, for the form again, with ``_rows``: the variant rows kept; the data
    for CampaignIn; the segment)."""
    typed = {k: str(form.get(k) or "").strip() for k in FIELDS}
    for i in range(VARIANT_ROWS):
        for part in ("code", "share", "template"):
            typed[f"variant_{part}_{i}"] = str(form.get(f"variant_{part}_{i}") or "").strip()
    raw_segment = str(form.get("segment") or "").strip()
    try:
        segment = json.loads(raw_segment) if raw_segment else None
    except ValueError:
        segment = raw_segment
    if isinstance(segment, dict) and not segment.get("conditions"):
        segment = None  # no condition: every active member, as the API's null
    data: dict[str, Any] = {k: typed[k] or None for k in (
        "code", "name", "program", "channel", "coupon_template_id", "budget_messages",
        "budget_value", "message_cost")}
    data["segment"] = segment
    data["control_share"] = _percent_share(typed["control_share"] or None)
    data["scheduled_at"] = _local_time(typed["scheduled_at"] or None)
    if typed["arms_mode"] == "variants":
        rows = [i for i in range(VARIANT_ROWS) if typed[f"variant_template_{i}"]]
        typed["_rows"] = rows
        data["variants"] = [
            {"code": typed[f"variant_code_{i}"], "share": _percent_share(
                typed[f"variant_share_{i}"] or "0"), "template": typed[f"variant_template_{i}"]}
            for i in rows]
    else:
        data["template"] = typed["template"] or None
    return typed, {k: v for k, v in data.items() if v is not None}, segment


@router.post("/campaigns/new")
async def create(request: Request,
                 actor: Annotated[Actor, Depends(need("campaigns.manage"))]) -> Response:
    """Save the draft; its page then shows the preview and the launch button."""
    return await _submit(request, actor, editing=None)


def typed_from(row: dict[str, Any]) -> dict[str, Any]:
    """A stored campaign as the form shows it: shares in percent, times in the stores' zone."""
    def plain(value: Any) -> str:
        return "" if value is None else str(value)

    def percent(share: Any) -> str:
        return format((Decimal(str(share)) * 100).normalize(), "f")

    typed: dict[str, Any] = {k: plain(row.get(k)) for k in (
        "code", "name", "program", "channel", "coupon_template_id", "budget_messages",
        "budget_value", "message_cost")}
    typed["control_share"] = percent(row["control_share"])
    at = row.get("scheduled_at")
    if at is not None:
        at = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
        zone = ZoneInfo(get_settings().default_timezone)
        typed["scheduled_at"] = at.astimezone(zone).strftime("%Y-%m-%dT%H:%M")
    else:
        typed["scheduled_at"] = ""
    arms = row["arms"]
    if len(arms) == 1 and arms[0]["code"] == "main":
        typed["arms_mode"], typed["template"] = "single", arms[0]["template"]
    else:
        typed["arms_mode"], typed["template"] = "variants", ""
        for i, arm in enumerate(arms[:VARIANT_ROWS]):
            typed[f"variant_code_{i}"] = arm["code"]
            typed[f"variant_share_{i}"] = percent(arm["share"])
            typed[f"variant_template_{i}"] = arm["template"]
    return typed


def _draft(actor: Actor, code: str) -> dict[str, Any]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        row = campaigns.get_campaign(uow.c, actor=actor, code=code)
    if row["status"] != "draft":
        raise Conflict("campaign_not_editable", params={"code": code, "status": row["status"]})
    return row


@router.get("/campaigns/{code}/edit")
def edit_page(code: str, request: Request,
              actor: Annotated[Actor, Depends(need("campaigns.manage"))]) -> Response:
    """A draft in the form it was made with; launched campaigns are not changed (409)."""
    row = _draft(actor, code)
    return _form_page(request, actor, form=typed_from(row), segment=row["segment"],
                      editing=code)


@router.post("/campaigns/{code}/edit")
async def edit(code: str, request: Request,
               actor: Annotated[Actor, Depends(need("campaigns.manage"))]) -> Response:
    _draft(actor, code)
    return await _submit(request, actor, editing=code)


async def _submit(request: Request, actor: Actor, *, editing: str | None) -> Response:
    """Creating and editing: parse, check the shape, save; refusals beside their fields."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    typed, data, segment = campaign_input(form)
    if editing is not None:  # the code is not the form's to change
        typed["code"] = data["code"] = editing
    try:
        body = CampaignIn.model_validate(data)
    except ValidationError as exc:
        errors = shape_errors(exc, lang)
        if "form" in errors:  # the model's own check: template or variants
            errors["arms"] = errors.pop("form")
        return _form_page(request, actor, form=typed, segment=segment,
                          errors=_form_fields(errors, typed), status_code=422,
                          editing=editing)
    try:
        with UnitOfWork(get_engine()) as uow:
            if editing is None:
                campaigns.create(uow=uow, actor=actor, body=body)
            else:
                campaigns.edit(uow=uow, actor=actor, code=editing, body=body)
    except PatronError as exc:
        if exc.status not in (404, 409, 422):
            raise
        default = "program" if isinstance(exc, NotFound) else "code"
        errors = service_errors(exc, lang, default=default)
        return _form_page(request, actor, form=typed, segment=segment,
                          errors=_form_fields(errors, typed),
                          status_code=exc.status, editing=editing)
    return redirect(f"/campaigns/{body.code}?saved=1")


def _form_fields(errors: dict[str, str], typed: dict[str, Any]) -> dict[str, str]:
    """``variants.1.share`` (the second variant given) -> ``variant_share_3`` (the form's row
    it came from: rows without a template are left out)."""
    rows = typed.get("_rows") or []
    out: dict[str, str] = {}
    for name, message in errors.items():
        parts = name.split(".")
        if parts[0] == "variants" and len(parts) == 3 and parts[1].isdigit() \
                and int(parts[1]) < len(rows):
            name = f"variant_{parts[2]}_{rows[int(parts[1])]}"
        elif parts[0] == "variants":
            name = "arms"
        out[name] = f"{out[name]} {message}" if name in out else message
    return out


@router.post("/campaigns/{code}/launch")
async def launch(code: str, request: Request,
                 actor: Annotated[Actor, Depends(need("campaigns.manage"))]) -> Response:
    """Launch: scheduled at once, or waiting for another user's approval when the audience is
    above PATRON_CAMPAIGN_APPROVAL_ABOVE; above PATRON_AUDIENCE_CONFIRM_ABOVE the size must be
    confirmed first."""
    form = await posted_form(request)
    raw = str(form.get("confirm_audience") or "")
    confirm = int(raw) if raw.isdigit() and len(raw) < 12 else None
    try:
        with UnitOfWork(get_engine()) as uow:
            out = campaigns.launch(uow=uow, actor=actor, code=code, confirm_audience=confirm)
    except Conflict as exc:
        if exc.message == "audience_confirmation_required":
            return redirect(f"/campaigns/{code}?confirm={int(exc.params['count'])}")
        raise
    return redirect(f"/campaigns/{code}?launched={out['status']}")


@router.post("/campaigns/{code}/cancel")
async def cancel(code: str, request: Request,
                 actor: Annotated[Actor, Depends(need("campaigns.manage"))]) -> Response:
    await posted_form(request)
    with UnitOfWork(get_engine()) as uow:
        campaigns.cancel(uow=uow, actor=actor, code=code)
    return redirect(f"/campaigns/{code}?cancelled=1")


def _approvals(request: Request, actor: Actor, *, errors: dict[str, str] | None = None,
               status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        pending = campaigns.list_campaigns(uow.c, actor=actor, status="awaiting_approval")
        for c in pending:
            c["preview"] = campaigns.preview(uow.c, actor=actor, code=c["code"], sample=1,
                                             lang=lang)
    return render(request, "automations/campaign_approvals.html",
                  {"pending": pending, "errors": errors or {}}, actor=actor,
                  status_code=status_code)


@router.get("/campaigns/approvals")
def approvals_page(request: Request,
                   actor: Annotated[Actor, Depends(need("campaigns.approve"))]) -> Response:
    return _approvals(request, actor)


@router.post("/campaigns/{code}/approve")
async def approve(code: str, request: Request,
                  actor: Annotated[Actor, Depends(need("campaigns.approve"))]) -> Response:
    """Another user than the launcher approves; the launcher is told so beside the
    campaign."""
    await posted_form(request)
    lang = page_language(request, actor)
    try:
        with UnitOfWork(get_engine()) as uow:
            campaigns.approve(uow=uow, actor=actor, code=code)
    except PatronError as exc:
        if exc.status not in (403, 409) or exc.message == "forbidden":
            raise
        return _approvals(request, actor, errors={code: t(exc.message, lang, **exc.params)},
                          status_code=exc.status)
    return redirect(f"/campaigns/approvals?approved={code}")
