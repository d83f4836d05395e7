"""The privacy pages for owners: people's requests with their deadlines (overdue first), one
request with the action its kind needs (a copy to download, a correction form, erasure with a
confirmation, refusal with a reason), and the retention job's runs."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response

from patron.db import UnitOfWork, get_engine
from patron.deps import UowDep
from patron.errors import PatronError
from patron.i18n import t
from patron.privacy import service
from patron.privacy.schemas import RequestIn
from patron.security.model import Actor
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
Owner = Annotated[Actor, Depends(need("privacy.manage"))]
CORRECTABLE = ("name", "gender", "birthday", "email")


def _list_page(request: Request, actor: Actor, *, form: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    status = request.query_params.get("status") or None
    if status not in (None, "open", "done", "refused"):
        status = None
    overdue = request.query_params.get("overdue") == "1"
    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = service.list_requests(uow.c, actor=actor, status=status, overdue=overdue)
        runs = service.retention_runs(uow.c, actor=actor, limit=10)
    return render(request, "privacy/requests.html", {
        "rows": rows, "runs": runs, "status": status or "", "overdue": overdue,
        "form": form or {}, "errors": errors or {}, "kinds": service.KINDS,
        "sources": service.SOURCES,
    }, actor=actor, status_code=status_code)


@router.get("/privacy")
def requests_page(request: Request, actor: Owner) -> Response:
    return _list_page(request, actor)


@router.post("/privacy/requests")
async def create_request(request: Request, uow: UowDep, actor: Owner) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    data = values(submitted, ("customer_id", "kind", "source", "note"))
    model, errors = validate(RequestIn, data, lang)
    if model is not None and not errors:
        try:
            out = service.create_request(uow=uow, actor=actor, customer_id=model.customer_id,
                                         kind=model.kind, source=model.source, note=model.note)
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="customer_id")
        else:
            return redirect(f"/privacy/requests/{out['id']}")
    return _list_page(request, actor, form=data, errors=errors, status_code=422)


def _detail(request: Request, actor: Actor, request_id: int, *,
            errors: dict[str, str] | None = None, form: dict[str, Any] | None = None,
            status_code: int = 200) -> Response:
    from patron.customers.queries import get_customer

    with UnitOfWork(get_engine(), readonly=True) as uow:
        r = service.get_request(uow.c, actor=actor, request_id=request_id)
        customer = get_customer(uow.c, actor=actor, customer_id=r["customer_id"])
    response = render(request, "privacy/request.html", {
        "r": r, "customer": customer, "errors": errors or {}, "form": form or {},
        "fields": CORRECTABLE,
    }, actor=actor, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/privacy/requests/{request_id}")
def request_page(request: Request, request_id: str, actor: Owner) -> Response:
    return _detail(request, actor, path_id(request_id))


@router.post("/privacy/requests/{request_id}/copy")
async def download_copy(request: Request, request_id: str, uow: UowDep,
                        actor: Owner) -> Response:
    """The copy as a JSON file; answering the access request."""
    await posted_form(request)
    rid = path_id(request_id)
    r = service.get_request(uow.c, actor=actor, request_id=rid)
    data = service.person_copy(uow=uow, actor=actor, customer_id=r["customer_id"],
                               request_id=rid)
    body = json.dumps(jsonable_encoder(data), ensure_ascii=False, indent=1)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="patron-person-{r["customer_id"]}.json"',
        "Cache-Control": "no-store"})


@router.post("/privacy/requests/{request_id}/correction")
async def correct(request: Request, request_id: str, uow: UowDep, actor: Owner) -> Response:
    submitted = await posted_form(request)
    rid = path_id(request_id)
    lang = page_language(request, actor)
    data = values(submitted, CORRECTABLE)
    changes = {k: v for k, v in data.items() if v is not None}
    try:
        service.correct(uow=uow, actor=actor, request_id=rid, changes=changes)
    except PatronError as exc:
        uow.rollback()
        return _detail(request, actor, rid, form=data, status_code=exc.status if exc.status
                       != 400 else 422,
                       errors=service_errors(exc, lang, default_field="changes"))
    return redirect(f"/privacy/requests/{rid}")


@router.post("/privacy/requests/{request_id}/erasure")
async def erase(request: Request, request_id: str, uow: UowDep, actor: Owner) -> Response:
    submitted = await posted_form(request)
    rid = path_id(request_id)
    lang = page_language(request, actor)
    if submitted.get("confirm") != "yes":
        return _detail(request, actor, rid, status_code=422,
                       errors={"confirm": t("web.privacy.confirm_needed", lang)})
    try:
        service.erase(uow=uow, actor=actor, request_id=rid)
    except PatronError as exc:
        uow.rollback()
        return _detail(request, actor, rid, status_code=exc.status,
                       errors=service_errors(exc, lang, default_field="confirm"))
    return redirect(f"/privacy/requests/{rid}")


@router.post("/privacy/requests/{request_id}/refusal")
async def refuse(request: Request, request_id: str, uow: UowDep, actor: Owner) -> Response:
    submitted = await posted_form(request)
    rid = path_id(request_id)
    lang = page_language(request, actor)
    reason = str(submitted.get("reason") or "")
    try:
        service.refuse(uow=uow, actor=actor, request_id=rid, reason=reason)
    except PatronError as exc:
        uow.rollback()
        return _detail(request, actor, rid, status_code=exc.status, form={"reason": reason},
                       errors=service_errors(exc, lang, default_field="reason"))
    return redirect(f"/privacy/requests/{rid}")


@router.post("/privacy/retention")
async def retention(request: Request, uow: UowDep, actor: Owner) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    try:
        service.retention_run(uow=uow, actor=actor, dry_run=submitted.get("dry_run") == "1")
    except PatronError as exc:
        uow.rollback()
        return _list_page(request, actor, status_code=exc.status,
                          errors={"retention": t(exc.message, lang, **exc.params)})
    return redirect("/privacy")
