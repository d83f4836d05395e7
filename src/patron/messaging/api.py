"""Messages over HTTP under /api/v1: the outbox (list, one message with its attempts, retry),
templates, and the SMS gateway's inbound replies (STOP)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import ValidationError

from patron.db import utcnow
from patron.deps import UowDep, public, rate_limited, require
from patron.errors import FieldError, Unauthorized, ValidationFailed
from patron.messaging import model, service
from patron.messaging.schemas import InboundSms, TemplateIn, TemplateUpdate
from patron.security.model import Actor

router = APIRouter(tags=["messages"])

Reader = Annotated[Actor, Depends(require("messages.read"))]
Manager = Annotated[Actor, Depends(require("messages.manage"))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
State = Literal["pending", "sending", "delivered", "failed", "suppressed"]
Channel = Literal["sms", "email", "wechat", "app", "webhook"]
Purpose = Literal["otp", "transactional", "marketing"]


@router.get("/messages")
def list_messages(uow: UowDep, actor: Reader, state: State | None = None,
                  channel: Channel | None = None, purpose: Purpose | None = None,
                  customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                  page: Annotated[int, Query(ge=1, le=100000)] = 1,
                  page_size: Annotated[int, Query(ge=1, le=service.MAX_PAGE_SIZE)] = 50) -> Any:
    """Messages, newest first, with the count in each state; ``?state=failed`` for what needs
    a look."""
    return service.list_messages(uow.c, actor=actor, state=state, channel=channel,
                                 purpose=purpose, customer_id=customer_id, page=page,
                                 page_size=page_size)


@router.get("/messages/templates")
def list_templates(uow: UowDep, actor: Reader) -> Any:
    return {"items": service.list_templates(uow.c, actor=actor)}


@router.post("/messages/templates", status_code=201)
def create_template(body: TemplateIn, uow: UowDep, actor: Manager) -> Any:
    """A template using a variable it does not declare is refused (422, naming both)."""
    return service.create_template(uow=uow, actor=actor, values=body.model_dump())


@router.get("/messages/templates/{code}")
def get_template(code: str, uow: UowDep, actor: Reader) -> Any:
    return service.get_template(uow.c, actor=actor, code=code)


@router.patch("/messages/templates/{code}")
def update_template(code: str, body: TemplateUpdate, uow: UowDep, actor: Manager) -> Any:
    return service.update_template(uow=uow, actor=actor, code=code,
                                   changes=body.model_dump(exclude_unset=True))


@router.delete("/messages/templates/{code}", status_code=204,
               dependencies=[Depends(require("records.delete"))])
def delete_template(code: str, uow: UowDep, actor: Manager) -> None:
    service.delete_template(uow=uow, actor=actor, code=code)


@router.get("/messages/limits")
def get_limits(uow: UowDep, actor: Reader) -> Any:
    """Frequency caps (per customer, channel, day and week) and quiet hours."""
    return service.get_limits(uow.c, actor=actor)


@router.put("/messages/limits")
def set_limits(body: dict[str, Any], uow: UowDep, actor: Manager) -> Any:
    """Replace the caps and quiet hours: ``{"caps": {"sms": {"day": 1, "week": 3}},
    "quiet_hours": {"start": "21:00", "end": "09:00"}}`` (null: none)."""
    return service.set_limits(uow=uow, actor=actor, values=body)


@router.post("/messages/inbound/sms",
             dependencies=[Depends(public("the SMS gateway, its requests signed")),
                           Depends(rate_limited("public"))])
async def inbound_sms(request: Request, uow: UowDep) -> Any:
    """A reply the SMS gateway received, signed with PATRON_SMS_GATEWAY_SECRET like Patron's own
    requests (``X-Patron-Timestamp``, ``X-Patron-Signature``). A STOP word withdraws the
    sender's SMS marketing consent. An unsigned or badly signed call is a 401."""
    from patron.config import get_settings

    raw = await request.body()
    secret = get_settings().sms_gateway_secret
    if not model.signature_ok(secret, request.headers.get("x-patron-timestamp", ""), raw,
                              request.headers.get("x-patron-signature", ""), now=utcnow()):
        raise Unauthorized("unauthorized")
    try:
        body = InboundSms.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed("validation_failed", fields=[
            FieldError(".".join(str(p) for p in e["loc"]) or "body", e["type"])
            for e in exc.errors()]) from exc
    actor = Actor(type="system", id=None, name="sms-gateway", role="owner")
    return service.stop_reply(uow=uow, actor=actor, phone=body.from_, text=body.text)


@router.get("/messages/{message_id}")
def get_message(message_id: Id, uow: UowDep, actor: Reader) -> Any:
    """One message with every attempt (adapter, times, outcome, provider id, error)."""
    return service.get_message(uow.c, actor=actor, message_id=message_id)


@router.post("/messages/{message_id}/retry")
def retry_message(message_id: Id, uow: UowDep, actor: Manager) -> Any:
    """Queue a failed message again, due now (409 for a message that has not failed)."""
    return service.retry_message(uow=uow, actor=actor, message_id=message_id)

