"""Sign-in, users and API keys over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from patron.config import get_settings
from patron.deps import SESSION_COOKIE, CurrentActor, UowDep, client_ip, require
from patron.security import service
from patron.security.model import Actor
from patron.security.schemas import ActorRead, ApiKeyCreate, LoginIn, UserCreate

router = APIRouter(tags=["security"])


def set_session_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, max_age=settings.session_hours * 3600)


@router.post("/auth/login", response_model=ActorRead)
def login(body: LoginIn, uow: UowDep, request: Request, response: Response) -> Any:
    token, actor = service.login(uow=uow, username=body.username, password=body.password,
                                 ip=client_ip(request))
    set_session_cookie(response, token)
    return _actor_read(actor)


@router.post("/auth/logout", status_code=204)
def logout(uow: UowDep, actor: CurrentActor, response: Response) -> None:
    service.logout(uow=uow, actor=actor)
    response.delete_cookie(SESSION_COOKIE)


@router.get("/auth/me", response_model=ActorRead)
def me(actor: CurrentActor) -> Any:
    return _actor_read(actor)


def _actor_read(actor: Actor) -> ActorRead:
    return ActorRead(type=actor.type, id=actor.id, name=actor.name, role=actor.role,
                     store_ids=sorted(actor.store_ids) if actor.store_ids is not None else None,
                     language=actor.language)


@router.post("/users", status_code=201)
def create_user(body: UserCreate, uow: UowDep,
                actor: Annotated[Actor, Depends(require("admin.users"))]) -> dict[str, int]:
    user_id = service.create_user(uow=uow, actor=actor, **body.model_dump())
    return {"id": user_id}


@router.post("/api-keys", status_code=201)
def create_api_key(body: ApiKeyCreate, uow: UowDep,
                   actor: Annotated[Actor, Depends(require("admin.api_keys"))]
                   ) -> dict[str, Any]:
    """The key is shown in this response only; Patron keeps a hash of it."""
    key_id, key = service.create_api_key(uow=uow, actor=actor, **body.model_dump())
    return {"id": key_id, "key": key}


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: int, uow: UowDep,
                   actor: Annotated[Actor, Depends(require("admin.api_keys"))]) -> None:
    service.revoke_api_key(uow=uow, actor=actor, key_id=key_id)


@router.get("/audit")
def audit_log(uow: UowDep, actor: Annotated[Actor, Depends(require("audit.read"))],
              action: str | None = None, actor_name: str | None = None, page: int = 1,
              page_size: int = 50) -> dict[str, Any]:
    """The audit trail, newest first. Owners only."""
    from sqlalchemy import func, select

    from patron.security.tables import audit_log as log

    page, page_size = max(page, 1), min(max(page_size, 1), 500)
    q = select(log)
    if action:
        q = q.where(log.c.action.startswith(action))
    if actor_name:
        q = q.where(log.c.actor_name == actor_name)
    total = uow.c.execute(select(func.count()).select_from(q.subquery())).scalar_one()
    rows = uow.c.execute(q.order_by(log.c.id.desc()).limit(page_size)
                         .offset((page - 1) * page_size)).mappings().all()
    return {"total": total, "page": page, "items": [
        {**dict(r), "at": r["at"].isoformat()} for r in rows]}
