"""Server-rendered pages: sign-in and the dashboard here; customers, imports and administration
in their own modules, all gathered into ``router`` (included at the site root by the app)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import SESSION_COOKIE, UowDep, client_ip, optional_actor, public, rate_limited
from patron.errors import TooManyAttempts, Unauthorized
from patron.i18n import t
from patron.org.tables import stores
from patron.security import service as security
from patron.security.api import set_session_cookie
from patron.security.model import Actor
from patron.web import (
    admin,
    analytics,
    cashier,
    customers,
    imports,
    loyalty_admin,
    loyalty_admin_offers,
    loyalty_reports,
    members,
    plots,
    security_pages,
)
from patron.web import dashboard as dash
from patron.web import dashboards as dashboard_pages
from patron.web.render import (
    PageRoute,
    fmt_time,
    local_tz,
    need,
    page_language,
    posted_form,
    redirect,
    render,
    safe_next,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/login", dependencies=[Depends(public("the sign-in form"))])
def login_form(request: Request) -> Response:
    actor = optional_actor(request)
    if actor is not None and actor.type == "user":
        return redirect(safe_next(request.query_params.get("next")))
    return render(request, "login.html", {"next": safe_next(request.query_params.get("next")),
                                          "username": "", "errors": {}, "error": None})


@router.post("/login", dependencies=[Depends(public("sign-in; CSRF token, failures lock")),
                                     Depends(rate_limited("login"))])
async def login_submit(request: Request, uow: UowDep) -> Response:
    form = await posted_form(request)
    lang = page_language(request)
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    target = safe_next(str(form.get("next") or "/"))
    errors = {}
    if not username:
        errors["username"] = t("missing", lang)
    if not password:
        errors["password"] = t("missing", lang)
    error = None
    status = 422
    if not errors:
        try:
            token, _actor = security.login(uow=uow, username=username, password=password,
                                           ip=client_ip(request),
                                           totp=str(form.get("totp") or "").strip() or None)
        except (Unauthorized, TooManyAttempts) as exc:
            error, status = t(exc.message, lang, **_local_until(exc.params)), exc.status
        else:
            if target == "/" and not _actor.can("dashboard.read") and _actor.can(
                    "checkout.sell"):
                target = "/cashier"  # a cashier's one page
            response = redirect(target)
            set_session_cookie(response, token)
            return response
    return render(request, "login.html", {"next": target, "username": username,
                                          "errors": errors, "error": error},
                  status_code=status)


def _local_until(params: dict[str, Any]) -> dict[str, Any]:
    """A lock's end in the shop's local time rather than the service's UTC timestamp."""
    until = params.get("until")
    if not isinstance(until, str):
        return params
    try:
        moment = dt.datetime.fromisoformat(until)
    except ValueError:
        return params
    return {**params, "until": fmt_time(moment)}


@router.get("/logout", dependencies=[Depends(public("asks to sign out"))])
def logout_confirm(request: Request) -> Response:
    actor = optional_actor(request)
    if actor is None:
        return redirect("/login")
    return render(request, "logout.html", actor=actor)


@router.post("/logout", dependencies=[Depends(public("ends the caller's own session; CSRF token"))])
async def logout_submit(request: Request, uow: UowDep) -> Response:
    await posted_form(request)
    actor = optional_actor(request)
    if actor is not None:
        security.logout(uow=uow, actor=actor)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def home(request: Request,
         actor: Annotated[Actor, Depends(need("dashboard.read"))]) -> Response:
    tz = local_tz()
    today = utcnow().astimezone(tz).date()
    with UnitOfWork(get_engine(), readonly=True) as uow:
        data = dash.dashboard(uow.c, actor=actor, today=today, tz=tz)
        scope = None
        if actor.store_ids is not None:
            names = uow.c.execute(stores.select().with_only_columns(stores.c.name)
                                  .where(stores.c.id.in_(sorted(actor.store_ids) or [-1]))
                                  .order_by(stores.c.code)).scalars()
            scope = "、".join(names) or "–"
    lang = page_language(request, actor)
    chart = plots.bar([p.day for p in data.trend],
                      [plots.Series(t("web.dashboard.sales", lang), [p.sales for p in data.trend]),
                       plots.Series(t("web.dashboard.orders", lang),
                                    [p.orders for p in data.trend], kind="line",
                                    secondary=True)],
                      fmt="money", dates=True, y2_fmt="int", height=300, id="trend-chart")
    return render(request, "dashboard.html", {"data": data, "chart": chart, "scope": scope},
                  actor=actor)


router.include_router(plots.router)
router.include_router(customers.router)
router.include_router(dashboard_pages.router)
router.include_router(analytics.router)
router.include_router(imports.router)
router.include_router(admin.router)
router.include_router(loyalty_admin.router)
router.include_router(loyalty_admin_offers.router)
router.include_router(security_pages.router)
router.include_router(members.router)
router.include_router(cashier.router)
router.include_router(loyalty_reports.router)
