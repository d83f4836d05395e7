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
    with UnitOfWork(get_engine(), readonly=True) as uow:
        if auth.lower().startswith("bearer "):
            actor = security.actor_for_api_key(uow.c, auth[7:].strip(), ip)
            if actor is None:
                raise Unauthorized("invalid_api_key")
        else:
            token = request.cookies.get(SESSION_COOKIE)
            if token:
                actor = security.actor_for_session(uow.c, token, ip)
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


def require(permission: str) -> Callable[[Request], Awaitable[Actor]]:
    async def check(request: Request) -> Actor:
        actor = await current_actor(request)
        if not actor.can(permission):
            raise Forbidden("forbidden", params={"permission": permission})
        return actor

    check.__name__ = f"require_{permission.replace('.', '_')}"
    return check
