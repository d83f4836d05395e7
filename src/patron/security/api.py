"""Sign-in, users and API keys over HTTP."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from patron.config import get_settings
from patron.deps import (
    SESSION_COOKIE,
    RecentAuth,
    UowDep,
    client_ip,
    public,
    rate_limited,
    require,
    signed_in_only,
)
from patron.security import alerts, exports, roles, service
from patron.security.model import Actor
from patron.security.schemas import (
    ActorRead,
    ApiKeyCreate,
    Id,
    LoginIn,
    PasswordChange,
    ReauthIn,
    RoleCreate,
    RoleUpdate,
    TotpConfirm,
    UserCreate,
    UserUpdate,
)

router = APIRouter(tags=["security"])
# One's own session: every signed-in caller may see and end it.
OwnSession = Annotated[Actor, Depends(signed_in_only("the caller's own session"))]


def set_session_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, max_age=settings.session_hours * 3600)


@router.post("/auth/login", response_model=ActorRead,
             dependencies=[Depends(public("sign-in; failures slow down and lock the account")),
                           Depends(rate_limited("login"))])
def login(body: LoginIn, uow: UowDep, request: Request, response: Response) -> Any:
    token, actor = service.login(uow=uow, username=body.username, password=body.password,
                                 ip=client_ip(request), totp=body.totp)
    set_session_cookie(response, token)
    return _actor_read(actor)


@router.post("/auth/logout", status_code=204)
def logout(uow: UowDep, actor: OwnSession, response: Response) -> None:
    service.logout(uow=uow, actor=actor)
    response.delete_cookie(SESSION_COOKIE)


@router.get("/auth/me", response_model=ActorRead)
def me(actor: OwnSession) -> Any:
    return _actor_read(actor)


def _actor_read(actor: Actor) -> ActorRead:
    return ActorRead(type=actor.type, id=actor.id, name=actor.name, role=actor.role,
                     store_ids=sorted(actor.store_ids) if actor.store_ids is not None else None,
                     language=actor.language)


@router.post("/auth/reauth", status_code=204, dependencies=[Depends(rate_limited("login"))])
def reauthenticate(body: ReauthIn, uow: UowDep, actor: OwnSession) -> None:
    """Type the password again: sensitive actions are allowed for PATRON_REAUTH_MINUTES."""
    service.reauthenticate(uow=uow, actor=actor, password=body.password, totp=body.totp)


@router.post("/auth/password", status_code=204)
def change_password(body: PasswordChange, uow: UowDep, actor: OwnSession,
                    response: Response) -> None:
    """A new password ends every session of the user; the caller gets a new one."""
    token, _fresh = service.change_password(uow=uow, actor=actor, current=body.current_password,
                                            new=body.new_password)
    set_session_cookie(response, token)


@router.post("/auth/totp", dependencies=[RecentAuth])
def start_totp(uow: UowDep, actor: Annotated[Actor, Depends(require("admin.users"))]
               ) -> dict[str, str]:
    """A second factor for an owner: the secret (and otpauth URI for a QR code), active once a
    code from the app is confirmed. Shown once."""
    return service.start_totp(uow=uow, actor=actor)


@router.post("/auth/totp/confirm", status_code=204)
def confirm_totp(body: TotpConfirm, uow: UowDep,
                 actor: Annotated[Actor, Depends(require("admin.users"))]) -> None:
    service.confirm_totp(uow=uow, actor=actor, code=body.code)


UserAdmin = Annotated[Actor, Depends(require("admin.users"))]


@router.get("/users")
def list_users(uow: UowDep, actor: UserAdmin) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from patron.security.tables import user_stores, users

    stores: dict[int, list[int]] = {}
    for r in uow.c.execute(select(user_stores)):
        stores.setdefault(int(r.user_id), []).append(int(r.store_id))
    return [{"id": int(r.id), "username": r.username, "display_name": r.display_name,
             "role": r.role, "role_id": r.role_id, "active": bool(r.active),
             "totp": r.totp_secret is not None, "store_ids": sorted(stores.get(int(r.id), []))}
            for r in uow.c.execute(select(users).order_by(users.c.id))]


@router.patch("/users/{user_id}", status_code=204, dependencies=[RecentAuth])
def update_user(user_id: Id, body: UserUpdate, uow: UowDep, actor: UserAdmin) -> None:
    """Disable or enable a user (disabling ends their sessions), change their role (built-in
    ``role`` or custom ``role_id``) and stores."""
    service.update_user(uow=uow, actor=actor, user_id=user_id,
                        **body.model_dump(exclude_unset=True))


@router.post("/users/{user_id}/sessions/end")
def end_sessions(user_id: Id, uow: UowDep, actor: UserAdmin) -> dict[str, int]:
    """Sign a user out everywhere."""
    return {"ended": service.end_user_sessions(uow=uow, actor=actor, user_id=user_id)}


@router.post("/users/{user_id}/totp/disable", status_code=204, dependencies=[RecentAuth])
def disable_totp(user_id: Id, uow: UowDep, actor: UserAdmin) -> None:
    service.disable_totp(uow=uow, actor=actor, user_id=user_id)


@router.get("/roles")
def list_roles(uow: UowDep, actor: UserAdmin) -> list[dict[str, Any]]:
    """The permission matrix: built-in roles (read-only) and custom roles."""
    return roles.list_roles(uow.c)


@router.post("/roles", status_code=201, dependencies=[RecentAuth])
def create_role(body: RoleCreate, uow: UowDep, actor: UserAdmin) -> dict[str, int]:
    return {"id": roles.create_role(uow=uow, actor=actor, **body.model_dump())}


@router.patch("/roles/{role_id}", status_code=204, dependencies=[RecentAuth])
def update_role(role_id: Id, body: RoleUpdate, uow: UowDep, actor: UserAdmin) -> None:
    roles.update_role(uow=uow, actor=actor, role_id=role_id,
                      **body.model_dump(exclude_unset=True))


@router.delete("/roles/{role_id}", status_code=204,
               dependencies=[RecentAuth, Depends(require("records.delete"))])
def delete_role(role_id: Id, uow: UowDep, actor: UserAdmin) -> None:
    roles.delete_role(uow=uow, actor=actor, role_id=role_id)


@router.get("/security/alerts")
def list_alerts(uow: UowDep, actor: Annotated[Actor, Depends(require("audit.read"))],
                page: Annotated[int, Query(ge=1, le=100000)] = 1,
                unacknowledged: bool = False) -> dict[str, Any]:
    """Alerts to owners, newest first (docs/security.md#alerts)."""
    return alerts.list_alerts(uow.c, page=page, unacknowledged=unacknowledged)


@router.post("/security/alerts/{alert_id}/acknowledge", status_code=204)
def acknowledge_alert(alert_id: Id, uow: UowDep,
                      actor: Annotated[Actor, Depends(require("audit.read"))]) -> None:
    alerts.acknowledge(uow=uow, actor=actor, alert_id=alert_id)


Approver = Annotated[Actor, Depends(require("exports.approve"))]


@router.get("/export-requests")
def list_export_requests(uow: UowDep, actor: Approver,
                         status: Literal["pending", "approved", "refused", "used"] | None = None
                         ) -> list[dict[str, Any]]:
    return exports.list_requests(uow.c, status=status)


@router.post("/export-requests/{request_id}/approve", status_code=204,
             dependencies=[RecentAuth])
def approve_export(request_id: Id, uow: UowDep, actor: Approver) -> None:
    exports.decide(uow=uow, actor=actor, request_id=request_id, approve=True)


@router.post("/export-requests/{request_id}/refuse", status_code=204)
def refuse_export(request_id: Id, uow: UowDep, actor: Approver) -> None:
    exports.decide(uow=uow, actor=actor, request_id=request_id, approve=False)


@router.post("/users", status_code=201, dependencies=[RecentAuth])
def create_user(body: UserCreate, uow: UowDep,
                actor: Annotated[Actor, Depends(require("admin.users"))]) -> dict[str, int]:
    user_id = service.create_user(uow=uow, actor=actor, **body.model_dump())
    return {"id": user_id}


@router.post("/api-keys", status_code=201, dependencies=[RecentAuth])
def create_api_key(body: ApiKeyCreate, uow: UowDep,
                   actor: Annotated[Actor, Depends(require("admin.api_keys"))]
                   ) -> dict[str, Any]:
    """The key is shown in this response only; Patron keeps a hash of it."""
    key_id, key = service.create_api_key(uow=uow, actor=actor, **body.model_dump())
    return {"id": key_id, "key": key}


@router.delete("/api-keys/{key_id}", status_code=204,
               dependencies=[Depends(require("records.delete"))])
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
