"""Typed FastAPI dependencies: the unit of work and the acting user or API key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request

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


def optional_actor(request: Request) -> Actor | None:
    """The caller from a bearer API key or the UI session cookie, or None."""
    cached = getattr(request.state, "actor", None)
    if cached is not None:
        return cached
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
        chosen = request.query_params.get("lang") or request.cookies.get("patron_lang")
        lang = request_language(request) if chosen else actor.language
        actor = Actor(**{**actor.__dict__, "language": lang})
        request.state.actor = actor
    return actor


def current_actor(request: Request) -> Actor:
    actor = optional_actor(request)
    if actor is None:
        raise Unauthorized("unauthorized")
    return actor


CurrentActor = Annotated[Actor, Depends(current_actor)]


def require(permission: str) -> Callable[[Request], Actor]:
    def check(request: Request) -> Actor:
        actor = current_actor(request)
        if not actor.can(permission):
            raise Forbidden("forbidden", params={"permission": permission})
        return actor

    check.__name__ = f"require_{permission.replace('.', '_')}"
    return check
