"""Staff pages for messages: the outbox (/messages, newest first, filtered, with the count per
state), one message with its attempts and the retry of a failed one, templates (list, page with
a preview, new, edit, delete) and the frequency caps and quiet hours (/messages/limits).

The pages parse the form and call :mod:`patron.messaging.service` (which checks the permission
again, writes the audit entry and commits); what they show is the service's view, so addresses
are masked and one-time codes hidden exactly as in the API. Refusals come back beside their
fields, in the page's language. (The customer's unsubscribe page is
:mod:`patron.messaging.pages`: no login.)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from patron.automations.editor import shape_errors
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, FieldError, PatronError, ValidationFailed
from patron.i18n import t
from patron.messaging import limits as limits_model
from patron.messaging import model, service
from patron.messaging.schemas import TemplateIn, TemplateUpdate
from patron.security.model import Actor
from patron.web.render import PageRoute, need, page_language, path_id, posted_form, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Reader = Annotated[Actor, Depends(need("messages.read"))]
Manager = Annotated[Actor, Depends(need("messages.manage"))]

PAGE_SIZE = 50
FILTERS = (("state", model.STATES), ("channel", model.CHANNELS), ("purpose", model.PURPOSES))
TEXT_FIELDS = ("description", "subject_zh", "subject_en", "body_zh", "body_en",
               "sms_template_id", "wechat_template_id", "wechat_page")


def _merge(errors: dict[str, str], field: str, message: str) -> None:
    errors[field] = f"{errors[field]} {message}" if field in errors else message


def _by_form_field(fields: dict[str, str]) -> dict[str, str]:
    """``variables.2`` or ``wechat_fields.thing1`` (as the schema and the service name them)
    -> the form's field (``variables``, ``wechat_fields``), messages joined."""
    out: dict[str, str] = {}
    for name, message in fields.items():
        _merge(out, name.split(".")[0], message)
    return out


def _field_errors(exc: PatronError, lang: str, *, default: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in exc.fields or [FieldError(default, exc.message, exc.params)]:
        _merge(out, f.field, t(f.reason, lang, **f.params))
    return out


# --- the outbox ----------------------------------------------------------------------------------

def _page_number(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 100000 else 1


@router.get("/messages")
def outbox(request: Request, actor: Reader) -> Response:
    """Newest first, 50 a page; ``?state=failed`` for what needs a look. A filter value the
    service does not know is refused beside its filter (422)."""
    lang = page_language(request, actor)
    q = request.query_params
    filters = {name: q.get(name) or None for name, _ in FILTERS}
    raw_customer = q.get("customer_id") or ""
    errors: dict[str, str] = {}
    customer_id = None
    if raw_customer:
        if raw_customer.isdigit() and 0 < len(raw_customer) < 19:
            customer_id = int(raw_customer)
        else:
            errors["customer_id"] = t("web.messages.error.customer_id", lang)
    page = _page_number(q.get("page"))
    result: dict[str, Any] | None = None
    if not errors:
        try:
            with UnitOfWork(get_engine(), readonly=True) as uow:
                result = service.list_messages(uow.c, actor=actor, customer_id=customer_id,
                                               page=page, page_size=PAGE_SIZE, **filters)
        except ValidationFailed as exc:
            errors = _by_form_field(_field_errors(exc, lang, default="state"))
    if result is None:
        with UnitOfWork(get_engine(), readonly=True) as uow:  # the counts, unfiltered
            result = service.list_messages(uow.c, actor=actor, page_size=1)
        result["items"], result["total"] = [], 0
    return render(request, "messages/outbox.html", {
        "result": result, "filters": {**filters, "customer_id": raw_customer},
        "choices": {name: [(v, t(f"web.messages.{name}.{v}", lang)) for v in values]
                    for name, values in FILTERS},
        "errors": errors, "page": page, "has_next": page * PAGE_SIZE < result["total"],
    }, actor=actor, status_code=422 if errors else 200)


def _message_page(request: Request, actor: Actor, message_id: int, *,
                  error: str | None = None, status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        msg = service.get_message(uow.c, actor=actor, message_id=message_id)
    return render(request, "messages/message.html", {"m": msg, "error": error},
                  actor=actor, status_code=status_code)


# --- templates ---------------------------------------------------------------------------------

@router.get("/messages/templates")
def templates_page(request: Request, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = service.list_templates(uow.c, actor=actor)
    return render(request, "messages/templates.html", {"items": items}, actor=actor)


def _typed_from(view: dict[str, Any]) -> dict[str, str]:
    """A template as the form shows it: variables comma-separated, WeChat fields one
    ``field = source`` a line."""
    typed = {k: "" if view.get(k) is None else str(view[k]) for k in TEXT_FIELDS}
    typed["code"] = view["code"]
    typed["variables"] = ", ".join(view.get("variables") or [])
    typed["wechat_kind"] = view.get("wechat_kind") or "template"
    typed["wechat_fields"] = "\n".join(f"{k} = {v}" for k, v in
                                       (view.get("wechat_fields") or {}).items())
    return typed


def template_input(form: FormData, lang: str) -> tuple[dict[str, str], dict[str, Any],
                                                       dict[str, str]]:
    """(what was typed; the data for the schema; refusals the page finds itself: a WeChat
    line without ``=``)."""
    typed = {k: str(form.get(k) or "").strip() for k in
             (*TEXT_FIELDS, "code", "variables", "wechat_kind", "wechat_fields")}
    errors: dict[str, str] = {}
    data: dict[str, Any] = {k: typed[k] or None for k in TEXT_FIELDS}
    data["code"] = typed["code"]
    data["variables"] = [v.strip() for v in typed["variables"].replace("，", ",").split(",")
                         if v.strip()]
    data["wechat_kind"] = typed["wechat_kind"] or None
    fields: dict[str, str] = {}
    for n, line in enumerate(typed["wechat_fields"].splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, source = line.partition("=")
        if not sep or not key.strip():
            _merge(errors, "wechat_fields", t("web.messages.error.wechat_line", lang, line=n))
            continue
        fields[key.strip()] = source.strip()
    data["wechat_fields"] = fields
    return typed, data, errors


def _samples(variables: list[str] | tuple[str, ...], form: Any = None) -> dict[str, str]:
    """Sample values for the preview: as typed (``sample_<name>``), else ``[name]``."""
    out = {}
    for name in variables:
        raw = form.get(f"sample_{name}") if form is not None else None
        out[name] = str(raw).strip()[:200] if raw else f"[{name}]"
    return out


def preview(view: dict[str, Any], samples: dict[str, str]) -> list[dict[str, Any]]:
    """The template rendered in each language it has, with the sample values, as an
    transactional email would be (no unsubscribe footer): what the model's renderer sends."""
    tpl = model.Template(
        code=view["code"], variables=tuple(view.get("variables") or ()),
        body={"zh": view.get("body_zh"), "en": view.get("body_en")},
        subject={"zh": view.get("subject_zh"), "en": view.get("subject_en")},
        wechat_template_id=view.get("wechat_template_id"),
        wechat_fields=dict(view.get("wechat_fields") or {}),
        wechat_kind=view.get("wechat_kind") or "template", wechat_page=view.get("wechat_page"))
    out = []
    for lang in model.LANGS:
        if not view.get(f"body_{lang}"):
            continue
        try:
            r = model.render(tpl, channel="email", lang=lang, purpose="transactional",
                             variables=samples, unsubscribe_url="https://…/unsubscribe")
            fields = {}
            if tpl.wechat_fields:
                fields = model.render(tpl, channel="wechat", lang=lang,
                                      purpose="transactional", variables=samples,
                                      unsubscribe_url=None).data["fields"]
            out.append({"lang": lang, "subject": r.subject, "body": r.body,
                        "wechat_fields": fields, "error": None})
        except model.RenderError as exc:
            out.append({"lang": lang, "subject": None, "body": None, "wechat_fields": {},
                        "error": str(exc)})
    return out


def _form_page(request: Request, actor: Actor, *, typed: dict[str, str],
               editing: dict[str, Any] | None, errors: dict[str, str] | None = None,
               shown: list[dict[str, Any]] | None = None, samples: dict[str, str] | None = None,
               status_code: int = 200) -> Response:
    return render(request, "messages/template_form.html", {
        "form": typed, "editing": editing, "errors": errors or {}, "preview": shown,
        "samples": samples or {}}, actor=actor, status_code=status_code)


@router.get("/messages/templates/new")
def new_template_page(request: Request, actor: Manager) -> Response:
    typed = _typed_from({"code": "", "wechat_kind": "template"})
    return _form_page(request, actor, typed=typed, editing=None)


@router.post("/messages/templates/new")
async def create_template(request: Request, actor: Manager) -> Response:
    return await _submit(request, actor, editing=None)


async def _submit(request: Request, actor: Actor, *, editing: dict[str, Any] | None
                  ) -> Response:
    """Create, or change (a built-in code is saved as a new template with its wording), or
    with ``intent=preview`` only render it; refusals beside their fields."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    typed, data, errors = template_input(form, lang)
    if editing is not None:  # the code is not the form's to change
        typed["code"] = data["code"] = editing["code"]
    samples = _samples(data["variables"], form)
    try:
        body = TemplateIn.model_validate(data)
    except ValidationError as exc:
        for name, message in _by_form_field(shape_errors(exc, lang)).items():
            _merge(errors, name, message)
    if errors:
        return _form_page(request, actor, typed=typed, editing=editing, errors=errors,
                          samples=samples, status_code=422)
    if form.get("intent") == "preview":
        # The same check as saving, then the rendering; nothing is written.
        try:
            service.check_template(body.model_dump())
        except ValidationFailed as exc:
            return _form_page(request, actor, typed=typed, editing=editing, samples=samples,
                              errors=_by_form_field(_field_errors(exc, lang, default="code")),
                              status_code=422)
        return _form_page(request, actor, typed=typed, editing=editing, samples=samples,
                          shown=preview(body.model_dump(), samples))
    try:
        with UnitOfWork(get_engine()) as uow:
            if editing is None or editing["builtin"]:
                service.create_template(uow=uow, actor=actor, values=body.model_dump())
            else:
                changes = TemplateUpdate.model_validate(
                    body.model_dump(exclude={"code"})).model_dump()
                service.update_template(uow=uow, actor=actor, code=body.code, changes=changes)
    except PatronError as exc:
        if exc.status not in (409, 422):
            raise
        return _form_page(request, actor, typed=typed, editing=editing, samples=samples,
                          errors=_by_form_field(_field_errors(exc, lang, default="code")),
                          status_code=exc.status)
    return redirect(f"/messages/templates/{body.code}?saved=1")


def _template(actor: Actor, code: str) -> dict[str, Any]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        return service.get_template(uow.c, actor=actor, code=code)


@router.get("/messages/templates/{code}")
def template_page(code: str, request: Request, actor: Reader) -> Response:
    view = _template(actor, code)
    return render(request, "messages/template.html", {
        "tpl": view, "preview": preview(view, _samples(view["variables"]))}, actor=actor)


@router.get("/messages/templates/{code}/edit")
def edit_template_page(code: str, request: Request, actor: Manager) -> Response:
    view = _template(actor, code)
    return _form_page(request, actor, typed=_typed_from(view), editing=view,
                      samples=_samples(view["variables"]))


@router.post("/messages/templates/{code}/edit")
async def edit_template(code: str, request: Request, actor: Manager) -> Response:
    return await _submit(request, actor, editing=_template(actor, code))


@router.post("/messages/templates/{code}/delete",
             dependencies=[Depends(need("records.delete"))])
async def delete_template(code: str, request: Request, actor: Manager) -> Response:
    """A saved template goes (a built-in code back to Patron's wording); queued messages keep
    their text."""
    await posted_form(request)
    with UnitOfWork(get_engine()) as uow:
        service.delete_template(uow=uow, actor=actor, code=code)
    return redirect(f"/messages/templates?deleted={code}")


# --- limits ------------------------------------------------------------------------------------

def _typed_limits(value: dict[str, Any]) -> dict[str, str]:
    typed = {f"cap_{ch}_{w}": str((value["caps"].get(ch) or {}).get(w, ""))
             for ch in limits_model.CAPPED_CHANNELS for w in limits_model.WINDOWS}
    quiet = value.get("quiet_hours") or {}
    typed["quiet_start"], typed["quiet_end"] = quiet.get("start", ""), quiet.get("end", "")
    return typed


def _limits_page(request: Request, actor: Actor, typed: dict[str, str], *,
                 errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "messages/limits.html", {
        "form": typed, "errors": errors or {}, "channels": limits_model.CAPPED_CHANNELS,
        "windows": tuple(limits_model.WINDOWS), "max_cap": limits_model.MAX_CAP},
        actor=actor, status_code=status_code)


@router.get("/messages/limits")
def limits_page(request: Request, actor: Reader) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        value = service.get_limits(uow.c, actor=actor)
    return _limits_page(request, actor, _typed_limits(value))


@router.post("/messages/limits")
async def save_limits(request: Request, actor: Manager) -> Response:
    """Blank cap: none; both quiet-hour times blank: no quiet hours. The service checks the
    rest (day above week, a time that is not HH:MM, an empty window) and names the field."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    typed = {k: str(form.get(k) or "").strip() for k in _typed_limits({"caps": {}})}
    errors: dict[str, str] = {}
    caps: dict[str, dict[str, int]] = {}
    for ch in limits_model.CAPPED_CHANNELS:
        for w in limits_model.WINDOWS:
            raw = typed[f"cap_{ch}_{w}"]
            if not raw:
                continue
            if not raw.isdigit() or len(raw) > 6:
                errors[f"cap_{ch}_{w}"] = t("web.messages.limits.whole_number", lang,
                                            max=limits_model.MAX_CAP)
                continue
            caps.setdefault(ch, {})[w] = int(raw)
    quiet = None
    if typed["quiet_start"] or typed["quiet_end"]:
        quiet = {"start": typed["quiet_start"], "end": typed["quiet_end"]}
    if errors:
        return _limits_page(request, actor, typed, errors=errors, status_code=422)
    try:
        with UnitOfWork(get_engine()) as uow:
            service.set_limits(uow=uow, actor=actor, values={"caps": caps, "quiet_hours": quiet})
    except ValidationFailed as exc:
        for f in exc.fields:
            parts = f.field.split(".")
            name = (f"cap_{parts[1]}_{parts[2]}" if parts[0] == "caps" and len(parts) == 3
                    else f"quiet_{parts[1]}" if parts[0] == "quiet_hours" and len(parts) == 2
                    else "form")
            _merge(errors, name, t(f.reason, lang, **f.params))
        return _limits_page(request, actor, typed, errors=errors, status_code=422)
    return redirect("/messages/limits?saved=1")


# --- one message (after the literal paths above: /messages/templates is not an id) -------------

@router.get("/messages/{message_id}")
def message_page(message_id: str, request: Request, actor: Reader) -> Response:
    return _message_page(request, actor, path_id(message_id))


@router.post("/messages/{message_id}/retry")
async def retry(message_id: str, request: Request, actor: Manager) -> Response:
    """A failed message, due again now; any other state (or an expired code) is a 409 shown
    on the message's page."""
    mid = path_id(message_id)
    await posted_form(request)
    lang = page_language(request, actor)
    try:
        with UnitOfWork(get_engine()) as uow:
            service.retry_message(uow=uow, actor=actor, message_id=mid)
    except Conflict as exc:
        return _message_page(request, actor, mid, error=t(exc.message, lang, **exc.params),
                             status_code=409)
    return redirect(f"/messages/{mid}?retried=1")
