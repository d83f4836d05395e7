"""What every page shares: templates, language, the signed-in actor, CSRF and error pages.

CSRF: the session cookie is ``SameSite=Lax`` (browsers do not send it on a cross-site POST),
and every POST form also carries a token that a page from another site cannot know: an HMAC of
the session token (before login, of a random ``patron_csrf`` cookie). A POST whose ``Origin``
header names another host is refused as well. The token needs no server-side state and no
shared secret, so it survives restarts and works with several workers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from patron.config import get_settings
from patron.deps import SESSION_COOKIE, declare_guard, optional_actor
from patron.errors import Forbidden, NotFound, PatronError, Unauthorized
from patron.i18n import LANGUAGES, pick_language, t
from patron.security.model import Actor
from patron.web import plots

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES)

LANG_COOKIE = "patron_lang"
PRELOGIN_COOKIE = "patron_csrf"
CSRF_FIELD = "csrf_token"

# The navigation bar: (path, message key, permissions). A link shows only if the role has one
# of the permissions (a tuple: any of them).
NAV: tuple[tuple[str, str, str | tuple[str, ...]], ...] = (
    ("/", "web.nav.dashboard", "dashboard.read"),
    ("/customers", "web.nav.customers", "customers.read"),
    ("/dashboards", "web.nav.dashboards", "dashboard.read"),
    ("/analytics", "web.nav.analytics", "dashboard.read"),
    ("/imports", "web.nav.imports", "import"),
    ("/automations", "web.nav.automations", "automations.read"),
    ("/experiments", "web.nav.experiments", ("automations.read", "campaigns.read")),
    ("/loyalty", "web.nav.loyalty_admin", "loyalty.read"),
    ("/segments", "web.nav.segments", "segments.read"),
    ("/tags", "web.nav.tags", "tags.read"),
    ("/messages", "web.nav.messages", "messages.read"),
    ("/cashier", "web.nav.cashier", "checkout.sell"),
    ("/loyalty/reports", "web.nav.loyalty_reports", "loyalty.read"),
    ("/admin/stores", "web.nav.stores", "admin.org"),
    ("/admin/products", "web.nav.products", "admin.org"),
    ("/admin/channels", "web.nav.channels", "admin.org"),
    ("/admin/users", "web.nav.users", "admin.users"),
    ("/admin/audit", "web.nav.audit", "audit.read"),
    ("/privacy", "web.nav.privacy", "privacy.manage"),
    ("/admin/roles", "web.nav.roles", "admin.users"),
    ("/admin/alerts", "web.nav.alerts", "audit.read"),
    ("/admin/export-requests", "web.nav.export_requests", "exports.approve"),
)


# --- language -------------------------------------------------------------------------------

def page_language(request: Request, actor: Actor | None = None) -> str:
    """``?lang=`` first, then the ``patron_lang`` cookie, then the user's own language, then
    Chinese. The browser's Accept-Language is ignored on purpose: shop staff share machines
    set up in English, and Patron's UI is Chinese unless someone picks English."""
    requested = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if requested in LANGUAGES:
        return requested
    if actor is not None and actor.language in LANGUAGES:
        return actor.language
    return pick_language(None, None, default=get_settings().default_language)


# --- the actor --------------------------------------------------------------------------------

def signed_in(request: Request) -> Actor:
    actor = optional_actor(request)
    if actor is None or actor.type != "user":
        raise Unauthorized("unauthorized")
    return actor


def need(permission: str) -> Callable[[Request], Actor]:
    """A dependency: the signed-in user, who must hold ``permission``."""

    def check(request: Request) -> Actor:
        actor = signed_in(request)
        if not actor.can(permission):
            raise Forbidden("forbidden", params={"permission": permission})
        return actor

    check.__name__ = f"page_needs_{permission.replace('.', '_')}"
    declare_guard(check, "permission", permission)
    return check


# --- CSRF -------------------------------------------------------------------------------------

def _anchor(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRELOGIN_COOKIE)


def csrf_token(request: Request) -> str:
    anchor = _anchor(request)
    if anchor is None:
        # First visit (the login page): a random cookie to bind the token to, set by render().
        anchor = getattr(request.state, "new_prelogin", None) or secrets.token_urlsafe(24)
        request.state.new_prelogin = anchor
    return hmac.new(anchor.encode(), b"patron-csrf", hashlib.sha256).hexdigest()


def check_csrf(request: Request, form: FormData) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("web.error.csrf")
    sent = form.get(CSRF_FIELD)
    anchor = _anchor(request)
    if not isinstance(sent, str) or anchor is None:
        raise Forbidden("web.error.csrf")
    expected = hmac.new(anchor.encode(), b"patron-csrf", hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sent, expected):
        raise Forbidden("web.error.csrf")


async def posted_form(request: Request) -> FormData:
    """The submitted form, after the CSRF check."""
    form = await request.form()
    check_csrf(request, form)
    return form


# --- formatting -------------------------------------------------------------------------------

def local_tz() -> ZoneInfo:
    return ZoneInfo(get_settings().default_timezone)


def fmt_money(value: Any) -> str:
    if value is None:
        return "–"
    return f"¥{Decimal(value):,.2f}"


def fmt_time(value: dt.datetime | None, tz: str | None = None) -> str:
    if value is None:
        return "–"
    return value.astimezone(ZoneInfo(tz) if tz else local_tz()).strftime("%Y-%m-%d %H:%M")


def fmt_percent(value: Decimal | float | None) -> str:
    if value is None:
        return "–"
    return f"{Decimal(value) * 100:.1f}%"


templates.env.filters["money"] = fmt_money
templates.env.filters["localtime"] = fmt_time
templates.env.filters["percent"] = fmt_percent
templates.env.filters["chart"] = plots.chart_html
templates.env.globals["chart_scripts"] = plots.chart_scripts
templates.env.globals["static_version"] = plots.static_version
templates.env.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}


def path_id(raw: str) -> int:
    """An id from the URL; anything else is a page that does not exist (not a JSON 422)."""
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("not_found")
    return int(raw)


def safe_next(target: str | None) -> str:
    """Only a path on this site, so the login form cannot send anyone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def url_with(request: Request, **changes: Any) -> str:
    """The current URL with some query parameters replaced (None removes one)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    from urllib.parse import urlencode

    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


# --- rendering ---------------------------------------------------------------------------------

def nav_allows(actor: Actor, permission: str | tuple[str, ...]) -> bool:
    wanted = (permission,) if isinstance(permission, str) else permission
    return any(actor.can(p) for p in wanted)


def render(request: Request, name: str, context: dict[str, Any] | None = None, *,
           actor: Actor | None = None, status_code: int = 200) -> HTMLResponse:
    lang = page_language(request, actor)

    def _(message_key: str, /, **params: Any) -> str:
        return t(message_key, lang, **params)

    nav = [(path, _(key)) for path, key, perm in NAV
           if actor is not None and nav_allows(actor, perm)]
    ctx = {"lang": lang, "_": _, "actor": actor, "nav": nav, "csrf": csrf_token(request),
           "csrf_field": CSRF_FIELD, "path": request.url.path,
           "url_with": lambda **kw: url_with(request, **kw), **(context or {})}
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    remember_language(request, response)
    new_anchor = getattr(request.state, "new_prelogin", None)
    if new_anchor:
        response.set_cookie(PRELOGIN_COOKIE, new_anchor, httponly=True, samesite="lax",
                            secure=get_settings().cookie_secure)
    response.headers["Cache-Control"] = "no-store"
    return response


def remember_language(request: Request, response: Response) -> None:
    lang = request.query_params.get("lang")
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, samesite="lax",
                            secure=get_settings().cookie_secure)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, exc: PatronError) -> Response:
    if exc.status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return redirect(f"/login?next={quote(target, safe='/')}")
    actor = getattr(request.state, "actor", None)
    lang = page_language(request, actor)
    if exc.message == "reauth_required" and actor is not None:
        # The password again, then back to the page the action was started from.
        back = urlsplit(request.headers.get("referer", "")).path or request.url.path
        if request.method == "GET":
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return render(request, "reauth.html", {"next": safe_next(back), "error": None},
                      actor=actor, status_code=403)
    title = {403: "web.error.forbidden", 404: "web.error.not_found"}.get(
        exc.status, "web.error.title")
    message = t(exc.message, lang, **exc.params)
    return render(request, "error.html", {"title_key": title, "message": message,
                                          "status": exc.status},
                  actor=actor, status_code=exc.status)


class PageRoute(APIRoute):
    """Turns a service's :class:`PatronError` into a page (or the login redirect), so a page
    never answers with the API's JSON error or a 500 for a known failure."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except PatronError as exc:
                return error_page(request, exc)

        return guarded
