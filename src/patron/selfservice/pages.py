"""The member self-service pages under ``/m/``: a mobile layout, Chinese first, served by the
same app as the staff UI but with their own session.

The member session is a separate cookie (``patron_member``, path ``/m``, HttpOnly, SameSite=Lax,
``PATRON_MEMBER_SESSION_MINUTES`` long) that staff pages and the API never read; a staff
session gives no access here. Every POST form carries a CSRF token, an HMAC of the member
session token (before sign-in, of a random ``patron_member_csrf`` cookie), as the staff pages
do. Pages send a Content-Security-Policy that allows nothing from another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData

from patron.config import get_settings
from patron.db import UnitOfWork, get_engine
from patron.deps import UowDep, client_ip, declare_guard, public, rate_limited
from patron.errors import Forbidden, NotFound, PatronError, Unauthorized
from patron.i18n import LANGUAGE_NAMES, LANGUAGES, t
from patron.selfservice import service
from patron.selfservice.service import MemberSession
from patron.web.render import (
    CSRF_FIELD,
    fmt_money,
    fmt_time,
    page_language,
    remember_language,
    templates,
    url_with,
)

MEMBER_COOKIE = "patron_member"
PRELOGIN_COOKIE = "patron_member_csrf"
COOKIE_PATH = "/m"
MONEY_PARAMS = frozenset({"amount", "cap", "threshold", "reduction"})
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


# --- the session --------------------------------------------------------------------------------

def current_member(request: Request) -> MemberSession | None:
    if hasattr(request.state, "member_session"):
        return request.state.member_session  # type: ignore[no-any-return]
    token = request.cookies.get(MEMBER_COOKIE)
    found = None
    if token:
        with UnitOfWork(get_engine(), readonly=True) as uow:
            found = service.session_for_token(uow.c, token, client_ip(request))
    request.state.member_session = found
    return found


def signed_in_member(request: Request) -> MemberSession:
    found = current_member(request)
    if found is None:
        raise Unauthorized("selfservice.signed_out")
    return found


declare_guard(signed_in_member, "member", "the signed-in member's own data only")
MemberDep = Annotated[MemberSession, Depends(signed_in_member)]
# Pages before sign-in: one-time codes are rate-limited by the service.
OPEN = [Depends(public("member sign-in with a one-time code"))]
# Asking for and typing one-time codes: per address too (the service limits per phone).
CODES = [*OPEN, Depends(rate_limited("one_time_codes"))]


# --- CSRF ---------------------------------------------------------------------------------------

def _anchor(request: Request) -> str | None:
    return request.cookies.get(MEMBER_COOKIE) or request.cookies.get(PRELOGIN_COOKIE)


def _token_for(anchor: str) -> str:
    return hmac.new(anchor.encode(), b"patron-member-csrf", hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    anchor = getattr(request.state, "member_anchor", None) or _anchor(request)
    if anchor is None:
        anchor = secrets.token_urlsafe(24)
        request.state.new_member_prelogin = anchor
    request.state.member_anchor = anchor
    return _token_for(anchor)


async def posted_form(request: Request) -> FormData:
    """The submitted form, after the CSRF check (and a refusal of another site's Origin)."""
    form = await request.form()
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("web.error.csrf")
    sent, anchor = form.get(CSRF_FIELD), _anchor(request)
    if not isinstance(sent, str) or anchor is None or not hmac.compare_digest(
            sent, _token_for(anchor)):
        raise Forbidden("web.error.csrf")
    return form


# --- rendering ----------------------------------------------------------------------------------

def render(request: Request, name: str, context: dict[str, Any] | None = None, *,
           member: MemberSession | None = None, status_code: int = 200) -> HTMLResponse:
    lang = page_language(request)

    def _(message_key: str, /, **params: Any) -> str:
        return t(message_key, lang, **params)

    def local(value: Any, tz: str | None = None) -> str:
        return fmt_time(value, tz)

    def offer(coupon: dict[str, Any]) -> str:
        params = {k: fmt_money(v) if k in MONEY_PARAMS else v
                  for k, v in coupon["offer"].items()}
        return t(coupon["offer_key"], lang, **params)

    ctx = {"lang": lang, "_": _, "csrf": csrf_token(request), "csrf_field": CSRF_FIELD,
           "path": request.url.path, "member_session": member, "local": local, "offer": offer,
           "url_with": lambda **kw: url_with(request, **kw), **(context or {})}
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    remember_language(request, response)
    new_anchor = getattr(request.state, "new_member_prelogin", None)
    if new_anchor:
        response.set_cookie(PRELOGIN_COOKIE, new_anchor, httponly=True, samesite="lax",
                            path=COOKIE_PATH, secure=get_settings().cookie_secure)
    secure_headers(response)
    return response


def secure_headers(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"


def redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    secure_headers(response)
    return response


def error_page(request: Request, exc: PatronError) -> Response:
    if exc.status == 401:
        return redirect("/m/login")
    lang = page_language(request)
    title = {403: "web.error.forbidden", 404: "web.error.not_found"}.get(
        exc.status, "web.error.title")
    return render(request, "selfservice/error.html",
                  {"title_key": title, "message": t(exc.message, lang, **exc.params)},
                  member=getattr(request.state, "member_session", None),
                  status_code=exc.status)


class MemberPageRoute(APIRoute):
    """A service's error becomes a member page (or the way back to the code login), never the
    API's JSON or the staff login."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except PatronError as exc:
                return error_page(request, exc)

        return guarded


router = APIRouter(prefix="/m", route_class=MemberPageRoute, include_in_schema=False)


def _member_param(request: Request) -> int | None:
    raw = request.query_params.get("member")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("member_not_found")
    return int(raw)


def _form_member(form: FormData) -> int:
    raw = str(form.get("member") or "")
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("member_not_found")
    return int(raw)


def _field_errors(exc: PatronError, lang: str) -> tuple[dict[str, str], str | None]:
    fields = {f.field: t(f.reason, lang, **f.params) for f in exc.fields}
    return fields, (None if fields else t(exc.message, lang, **exc.params))


# --- signing in and out -------------------------------------------------------------------------

@router.get("", dependencies=OPEN)
@router.get("/", dependencies=OPEN)
def start(request: Request) -> Response:
    return redirect("/m/home" if current_member(request) else "/m/login")


@router.get("/login", dependencies=OPEN)
def login_form(request: Request) -> Response:
    if current_member(request) is not None:
        return redirect("/m/home")
    return render(request, "selfservice/login.html", {"phone": "", "errors": {},
                                                       "error": None})


@router.post("/login", dependencies=CODES)
async def send_code(request: Request, uow: UowDep) -> Response:
    """Step 1: a code to the phone. The next page is the same whether or not the phone
    belongs to a customer."""
    form = await posted_form(request)
    lang = page_language(request)
    phone = str(form.get("phone") or "").strip()
    if not phone:
        return render(request, "selfservice/login.html",
                      {"phone": phone, "errors": {"phone": t("missing", lang)}, "error": None},
                      status_code=422)
    try:
        sent = service.request_code(uow=uow, phone=phone, ip=client_ip(request), lang=lang)
    except PatronError as exc:
        errors, error = _field_errors(exc, lang)
        return render(request, "selfservice/login.html",
                      {"phone": phone, "errors": errors, "error": error},
                      status_code=exc.status)
    return render(request, "selfservice/code.html",
                  {"phone": phone, "masked": sent.masked_phone, "errors": {}, "error": None,
                   "expires_at": sent.expires_at})


@router.post("/verify", dependencies=CODES)
async def verify(request: Request, uow: UowDep) -> Response:
    """Step 2: the code opens a member session."""
    form = await posted_form(request)
    lang = page_language(request)
    phone = str(form.get("phone") or "").strip()
    code = str(form.get("code") or "").strip()
    try:
        token, _session = service.verify_code(uow=uow, phone=phone, code=code,
                                              ip=client_ip(request))
    except PatronError as exc:
        errors, error = _field_errors(exc, lang)
        from patron.customers.model import IdentifierError, mask_phone, normalize_identity

        try:
            masked = mask_phone(normalize_identity("phone", phone).value)
        except IdentifierError:
            masked = phone
        return render(request, "selfservice/code.html",
                      {"phone": phone, "masked": masked, "errors": errors, "error": error,
                       "expires_at": None}, status_code=exc.status)
    response = redirect("/m/home")
    response.set_cookie(MEMBER_COOKIE, token, httponly=True, samesite="lax", path=COOKIE_PATH,
                        secure=get_settings().cookie_secure,
                        max_age=get_settings().member_session_minutes * 60)
    response.delete_cookie(PRELOGIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/logout", dependencies=OPEN)
async def logout(request: Request, uow: UowDep) -> Response:
    await posted_form(request)
    found = current_member(request)
    if found is not None:
        service.logout(uow=uow, session=found)
    response = redirect("/m/login")
    response.delete_cookie(MEMBER_COOKIE, path=COOKIE_PATH)
    return response


# --- the member's pages -------------------------------------------------------------------------

@router.get("/home")
def home(request: Request, member: MemberDep) -> Response:
    member_id = _member_param(request)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        mine = service.memberships(uow.c, member)
        if not mine and member_id is None:
            return redirect("/m/enrol")
        data = service.overview(uow.c, session=member, member_id=member_id)
        coupons = service.member_coupons(uow.c, session=member,
                                         member_id=data["member"]["id"])
        card_money = service.stored_value(uow.c, session=member,
                                          member_id=data["member"]["id"])
        can_enrol = bool(service.enrolable_programs(uow.c, member))
    return render(request, "selfservice/home.html",
                  {**data, "coupons": coupons, "stored_value": card_money, "memberships": mine,
                   "can_enrol": can_enrol, "notice": request.query_params.get("done"),
                   "language_options": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES]},
                  member=member)


@router.get("/orders")
def purchase_history(request: Request, member: MemberDep) -> Response:
    raw_page = request.query_params.get("page") or "1"
    page = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1
    with UnitOfWork(get_engine(), readonly=True) as uow:
        data = service.purchases(uow.c, session=member, member_id=_member_param(request),
                                 page=page)
        mine = service.memberships(uow.c, member)
    current = next(m for m in mine if m["id"] == data["member_id"])
    return render(request, "selfservice/orders.html", {**data, "membership": current},
                  member=member)


@router.get("/card")
def card(request: Request, member: MemberDep) -> Response:
    # Read-only: a page members keep open and refresh must not queue behind SQLite's writer.
    engine = get_engine()
    key = service.card_key(engine)
    with UnitOfWork(engine, readonly=True) as uow:
        data = service.member_card(uow=uow, session=member, member_id=_member_param(request),
                                   key=key)
        mine = service.memberships(uow.c, member)
    current = next(m for m in mine if m["id"] == data["member_id"])
    return render(request, "selfservice/card.html",
                  {"card": data, "membership": current,
                   "refresh_seconds": max(10, get_settings().member_card_seconds - 30)},
                  member=member)


@router.get("/enrol")
def enrol_form(request: Request, member: MemberDep) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        programs = service.enrolable_programs(uow.c, member)
        mine = service.memberships(uow.c, member)
    chosen = request.query_params.get("program") or (programs[0]["code"] if programs else "")
    return render(request, "selfservice/enrol.html",
                  {"programs": programs, "memberships": mine, "chosen": chosen, "errors": {},
                   "error": None, "form": {}}, member=member)


@router.post("/enrol")
async def enrol_submit(request: Request, member: MemberDep, uow: UowDep) -> Response:
    form = await posted_form(request)
    lang = page_language(request)
    program = str(form.get("program") or "")
    values = {"program": program, "name": str(form.get("name") or ""),
              "privacy_version": str(form.get("privacy_version") or ""),
              "privacy": form.get("privacy") == "yes",
              "marketing": {k: form.get(f"marketing_{k}") == "yes"
                            for k in ("sms", "wechat", "app", "email")}}
    try:
        joined = service.enrol(uow=uow, session=member, program=program,
                               privacy_version=values["privacy_version"],
                               privacy_accepted=values["privacy"],
                               marketing=values["marketing"], name=values["name"])
    except PatronError as exc:
        if exc.status in (401, 403):
            raise
        errors, error = _field_errors(exc, lang)
        with UnitOfWork(get_engine(), readonly=True) as ro:
            programs = service.enrolable_programs(ro.c, member)
            mine = service.memberships(ro.c, member)
        return render(request, "selfservice/enrol.html",
                      {"programs": programs, "memberships": mine, "chosen": program,
                       "errors": errors, "error": error, "form": values},
                      member=member, status_code=exc.status)
    return redirect(f"/m/home?member={joined['id']}&done=enrolled")


@router.post("/language")
async def language_submit(request: Request, member: MemberDep, uow: UowDep) -> Response:
    form = await posted_form(request)
    member_id = _member_param_of(form)
    service.change_language(uow=uow, session=member,
                            language=str(form.get("language") or "") or None)
    suffix = f"member={member_id}&" if member_id is not None else ""
    return redirect(f"/m/home?{suffix}done=language_saved#language")


def _member_param_of(form: FormData) -> int | None:
    raw = str(form.get("member") or "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


@router.post("/consents")
async def consent_submit(request: Request, member: MemberDep, uow: UowDep) -> Response:
    form = await posted_form(request)
    member_id = _form_member(form)
    kind = str(form.get("kind") or "")
    granted = form.get("granted") == "yes"
    service.change_consent(uow=uow, session=member, member_id=member_id, kind=kind,
                           granted=granted)
    done = "consent_granted" if granted else "consent_withdrawn"
    return redirect(f"/m/home?member={member_id}&done={done}#consents")
