"""Typed FastAPI dependencies: the unit of work and the acting user or API key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from patron.db import UnitOfWork, get_engine
from patron.errors import Forbidden, Unauthorized
from patron.i18n import pick_language
from patron.security import service as security
from patron.security.model import Actor

SESSION_COOKIE = "patron_session"

# Every route declares who may call it (tests/e2e/test_route_guards.py walks the route table):
# a permission (``require``, ``web.render.need``), a signed-in caller of any role for reference
# data and one's own session (``signed_in_only``), a member of the self-service pages, or an
# explicitly public route (``public``) with its reason. The declaration sits on the dependency.
GUARD_ATTR = "__patron_guard__"


def declare_guard(fn: Callable[..., object], kind: str, detail: str) -> None:
    """Mark a dependency as a route's declared guard: ``(kind, detail)``."""
    setattr(fn, GUARD_ATTR, (kind, detail))


def public(reason: str) -> Callable[[], None]:
    """A route anyone may call, with the reason why (``dependencies=[Depends(public(...))]``).
    The route must then protect itself (a signature, a token, a rate limit)."""

    def open_to_anyone() -> None:
        return None

    declare_guard(open_to_anyone, "public", reason)
    return open_to_anyone


def get_uow() -> Iterator[UnitOfWork]:
    with UnitOfWork(get_engine()) as uow:
        yield uow


UowDep = Annotated[UnitOfWork, Depends(get_uow)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def request_language(request: Request) -> str:
    return pick_language(request.query_params.get("lang") or request.cookies.get("patron_lang"),
                         request.headers.get("accept-language"))


def _remember(request: Request, actor: Actor) -> Actor:
    chosen = request.query_params.get("lang") or request.cookies.get("patron_lang")
    lang = request_language(request) if chosen else actor.language
    actor = replace(actor, language=lang)
    request.state.actor = actor
    return actor


def _cached_key_actor(request: Request) -> Actor | None:
    """A till's API key seen in the last few seconds: no database, no thread, no pool."""
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        return None
    hit, actor = security.cached_api_key_actor(auth[7:].strip(), client_ip(request))
    if not hit:
        return None
    if actor is None:
        raise Unauthorized("invalid_api_key")
    return _remember(request, actor)


def optional_actor(request: Request) -> Actor | None:
    """The caller from a bearer API key or the UI session cookie, or None."""
    cached = getattr(request.state, "actor", None)
    if cached is not None:
        return cached
    fast = _cached_key_actor(request)
    if fast is not None:
        return fast
    ip = client_ip(request)
    auth = request.headers.get("authorization", "")
    actor: Actor | None = None
    refused = False
    with UnitOfWork(get_engine(), readonly=True) as uow:
        if auth.lower().startswith("bearer "):
            actor = security.actor_for_api_key(uow.c, auth[7:].strip(), ip)
            refused = actor is None
        else:
            token = request.cookies.get(SESSION_COOKIE)
            if token:
                actor = security.actor_for_session(uow.c, token, ip)
    if auth.lower().startswith("bearer ") and refused:
        security.note_refused_key(auth[7:].strip(), ip)
        raise Unauthorized("invalid_api_key")
    if actor is not None:
        actor = _remember(request, actor)
    return actor


def current_actor_sync(request: Request) -> Actor:
    actor = optional_actor(request)
    if actor is None:
        raise Unauthorized("unauthorized")
    return actor


async def current_actor(request: Request) -> Actor:
    """Resolved on the event loop when the key is cached; otherwise the database lookup runs
    in the thread pool."""
    actor = getattr(request.state, "actor", None) or _cached_key_actor(request)
    if actor is None:
        actor = await run_in_threadpool(current_actor_sync, request)
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]


async def recent_auth(request: Request) -> Actor:
    """A sensitive action (reveal, export, role and user changes, API key creation, points
    adjustments): a user must have typed their password within PATRON_REAUTH_MINUTES
    (``POST /api/v1/auth/reauth``, the page ``/reauth``). API keys pass: a till has no
    password to type, and its key's own role and stores bound it."""
    from patron.errors import ReauthRequired

    actor = await current_actor(request)
    if not security.recently_authenticated(actor):
        raise ReauthRequired("reauth_required")
    return actor


declare_guard(recent_auth, "reauth", "the password typed within PATRON_REAUTH_MINUTES")
RecentAuth = Depends(recent_auth)


def rate_limited(group: str) -> Callable[[Request], None]:
    """At most PATRON_RATE_LIMIT_PER_MINUTE requests per minute per client address to this
    route group, counted in the database across every server process (security.ratelimit);
    then a 429."""
    from patron.config import get_settings
    from patron.errors import TooManyAttempts

    def limit(request: Request) -> None:
        from patron.security import ratelimit

        wait = ratelimit.hit(get_engine(), group, client_ip(request) or "?",
                             limit=get_settings().rate_limit_per_minute)
        if wait:
            raise TooManyAttempts("rate_limited", params={"seconds": int(wait) + 1})

    limit.__name__ = f"rate_limit_{group}"
    return limit


def signed_in_only(reason: str) -> Callable[[Request], Awaitable[Actor]]:
    """Any signed-in user or API key, whatever its permissions: reference data every till
    needs, one's own session. ``reason`` says why no permission applies."""

    async def any_signed_in(request: Request) -> Actor:
        return await current_actor(request)

    declare_guard(any_signed_in, "signed_in", reason)
    return any_signed_in


def require(permission: str) -> Callable[[Request], Awaitable[Actor]]:
    async def check(request: Request) -> Actor:
        actor = await current_actor(request)
        if not actor.can(permission):
            raise Forbidden("forbidden", params={"permission": permission})
        return actor

    check.__name__ = f"require_{permission.replace('.', '_')}"
    declare_guard(check, "permission", permission)
    return check
