"""Pages for access control: re-authentication, the permission matrix (custom roles),
security alerts and export approvals (issue 6 §2, §3). See docs/security.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from patron.db import UnitOfWork, get_engine
from patron.deps import RecentAuth, UowDep, rate_limited, signed_in_only
from patron.errors import PatronError, Unauthorized
from patron.i18n import t
from patron.security import alerts, exports, roles, service
from patron.security.model import COARSE, SCOPES, Actor
from patron.web.render import (
    PageRoute,
    need,
    page_language,
    path_id,
    posted_form,
    redirect,
    render,
    safe_next,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Anyone = Annotated[Actor, Depends(signed_in_only("re-entering one's own password"))]
RoleAdmin = Annotated[Actor, Depends(need("admin.users"))]


# --- re-authentication ------------------------------------------------------------------------

@router.get("/reauth")
def reauth_form(request: Request, actor: Anyone) -> Response:
    return render(request, "reauth.html", {"next": safe_next(request.query_params.get("next")),
                                           "error": None}, actor=actor)


@router.post("/reauth", dependencies=[Depends(rate_limited("login"))])
async def reauth_submit(request: Request, uow: UowDep, actor: Anyone) -> Response:
    form = await posted_form(request)
    target = safe_next(str(form.get("next") or "/"))
    try:
        service.reauthenticate(uow=uow, actor=actor, password=str(form.get("password") or ""),
                               totp=str(form.get("totp") or "") or None)
    except Unauthorized as exc:
        return render(request, "reauth.html", {
            "next": target, "error": t(exc.message, page_language(request, actor))},
            actor=actor, status_code=401)
    return redirect(target)


# --- the permission matrix --------------------------------------------------------------------

def _roles_page(request: Request, actor: Actor, *, errors: dict[str, str] | None = None,
                form: dict[str, Any] | None = None, error: str | None = None,
                status_code: int = 200) -> Response:
    from sqlalchemy import select

    from patron.org.tables import brands, regions

    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = roles.list_roles(uow.c)
        brand_list = [(int(r.id), f"{r.code} · {r.name}") for r in uow.c.execute(
            select(brands.c.id, brands.c.code, brands.c.name).order_by(brands.c.code))]
        region_list = [(int(r.id), f"{r.code} · {r.name}") for r in uow.c.execute(
            select(regions.c.id, regions.c.code, regions.c.name).order_by(regions.c.code))]
    return render(request, "admin/roles.html", {
        "roles": rows, "permissions": list(COARSE), "scopes": list(SCOPES),
        "brands": brand_list, "regions": region_list, "errors": errors or {},
        "form": form or {"name": "", "permissions": [], "scope": "own_stores"},
        "error": error}, actor=actor, status_code=status_code)


@router.get("/admin/roles")
def roles_page(request: Request, actor: RoleAdmin) -> Response:
    return _roles_page(request, actor)


def _role_fields(form: Any) -> dict[str, Any]:
    def number(name: str) -> int | None:
        raw = str(form.get(name) or "").strip()
        return int(raw) if raw.isdigit() and len(raw) < 19 else None

    return {"permissions": [p for p in form.getlist("permissions") if isinstance(p, str)],
            "scope": str(form.get("scope") or "own_stores"),
            "brand_id": number("brand_id"), "region_id": number("region_id")}


@router.post("/admin/roles", dependencies=[RecentAuth])
async def create_role(request: Request, uow: UowDep, actor: RoleAdmin) -> Response:
    form = await posted_form(request)
    fields = {"name": str(form.get("name") or "").strip(), **_role_fields(form)}
    try:
        roles.create_role(uow=uow, actor=actor, **fields)
    except PatronError as exc:
        return _form_error(request, actor, exc, fields)
    return redirect("/admin/roles")


@router.post("/admin/roles/{role_id}", dependencies=[RecentAuth])
async def update_role(request: Request, role_id: str, uow: UowDep,
                      actor: RoleAdmin) -> Response:
    form = await posted_form(request)
    fields = _role_fields(form)
    try:
        if form.get("delete"):
            if not actor.can("records.delete"):
                from patron.errors import Forbidden

                raise Forbidden("forbidden", params={"permission": "records.delete"})
            roles.delete_role(uow=uow, actor=actor, role_id=path_id(role_id))
        else:
            roles.update_role(uow=uow, actor=actor, role_id=path_id(role_id), **fields)
    except PatronError as exc:
        if exc.status in (403, 404):
            raise
        return _form_error(request, actor, exc, None)
    return redirect("/admin/roles")


def _form_error(request: Request, actor: Actor, exc: PatronError,
                form: dict[str, Any] | None) -> Response:
    lang = page_language(request, actor)
    errors = {f.field: t(f.reason, lang, **f.params) for f in exc.fields}
    return _roles_page(request, actor, errors=errors, form=form,
                       error=None if errors else t(exc.message, lang, **exc.params),
                       status_code=exc.status)


# --- alerts and export approvals -------------------------------------------------------------

@router.get("/admin/alerts")
def alerts_page(request: Request,
                actor: Annotated[Actor, Depends(need("audit.read"))]) -> Response:
    page = request.query_params.get("page", "1")
    number = int(page) if page.isdigit() and len(page) < 7 else 1
    with UnitOfWork(get_engine(), readonly=True) as uow:
        data = alerts.list_alerts(uow.c, page=number)
    return render(request, "admin/alerts.html", {
        "alerts": data["items"], "page": number,
        "has_next": data["total"] > number * 50}, actor=actor)


@router.post("/admin/alerts/{alert_id}/acknowledge")
async def acknowledge_alert(request: Request, alert_id: str, uow: UowDep,
                            actor: Annotated[Actor, Depends(need("audit.read"))]) -> Response:
    await posted_form(request)
    alerts.acknowledge(uow=uow, actor=actor, alert_id=path_id(alert_id))
    return redirect("/admin/alerts")


Approver = Annotated[Actor, Depends(need("exports.approve"))]


@router.get("/admin/export-requests")
def export_requests_page(request: Request, actor: Approver) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = exports.list_requests(uow.c)
    return render(request, "admin/export_requests.html", {"requests": rows}, actor=actor)


@router.post("/admin/export-requests/{request_id}/approve", dependencies=[RecentAuth])
async def approve_export(request: Request, request_id: str, uow: UowDep,
                         actor: Approver) -> Response:
    await posted_form(request)
    exports.decide(uow=uow, actor=actor, request_id=path_id(request_id), approve=True)
    return redirect("/admin/export-requests")


@router.post("/admin/export-requests/{request_id}/refuse")
async def refuse_export(request: Request, request_id: str, uow: UowDep,
                        actor: Approver) -> Response:
    await posted_form(request)
    exports.decide(uow=uow, actor=actor, request_id=path_id(request_id), approve=False)
    return redirect("/admin/export-requests")
