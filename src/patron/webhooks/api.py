"""Webhook endpoints and their deliveries over HTTP (owners: ``admin.webhooks``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from patron.deps import UowDep, require
from patron.security.model import Actor
from patron.webhooks import service
from patron.webhooks.model import EVENTS
from patron.webhooks.schemas import (
    DeliveryPage,
    Redelivered,
    SecretRotated,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)

router = APIRouter(tags=["webhooks"])
Admin = Annotated[Actor, Depends(require("admin.webhooks"))]
Status = Literal["pending", "sending", "delivered", "failed"]


@router.get("/webhook-events")
def list_events(actor: Admin) -> list[str]:
    """The events an endpoint may subscribe to (``*`` subscribes to all)."""
    return list(EVENTS)


@router.get("/webhooks", response_model=list[WebhookRead])
def list_webhooks(uow: UowDep, actor: Admin) -> Any:
    return service.list_endpoints(uow.c)


@router.post("/webhooks", status_code=201, response_model=WebhookCreated)
def create_webhook(body: WebhookCreate, uow: UowDep, actor: Admin) -> Any:
    """The secret is shown in this response only."""
    return service.create_endpoint(uow=uow, actor=actor, **body.model_dump())


@router.get("/webhooks/{endpoint_id}", response_model=WebhookRead)
def get_webhook(endpoint_id: int, uow: UowDep, actor: Admin) -> Any:
    return service.get_endpoint(uow.c, endpoint_id)


@router.patch("/webhooks/{endpoint_id}", response_model=WebhookRead)
def update_webhook(endpoint_id: int, body: WebhookUpdate, uow: UowDep, actor: Admin) -> Any:
    return service.update_endpoint(uow=uow, actor=actor, endpoint_id=endpoint_id,
                                   **body.model_dump(exclude_unset=True))


@router.delete("/webhooks/{endpoint_id}", status_code=204,
               dependencies=[Depends(require("records.delete"))])
def disable_webhook(endpoint_id: int, uow: UowDep, actor: Admin) -> None:
    """Disables the endpoint; its history stays and ``PATCH {"active": true}`` brings it back."""
    service.disable_endpoint(uow=uow, actor=actor, endpoint_id=endpoint_id)


@router.post("/webhooks/{endpoint_id}/rotate-secret", response_model=SecretRotated)
def rotate_webhook_secret(endpoint_id: int, uow: UowDep, actor: Admin) -> Any:
    return {"secret": service.rotate_secret(uow=uow, actor=actor, endpoint_id=endpoint_id)}


@router.get("/webhooks/{endpoint_id}/deliveries", response_model=DeliveryPage)
def list_webhook_deliveries(endpoint_id: int, uow: UowDep, actor: Admin,
                            status: Status | None = None,
                            page: Annotated[int, Query(ge=1)] = 1,
                            page_size: Annotated[int, Query(ge=1, le=service.MAX_PAGE_SIZE)]
                            = 50) -> Any:
    return service.list_deliveries(uow.c, endpoint_id=endpoint_id, status=status, page=page,
                                   page_size=page_size)


@router.get("/webhook-deliveries", response_model=DeliveryPage)
def list_all_deliveries(uow: UowDep, actor: Admin, status: Status | None = None,
                        page: Annotated[int, Query(ge=1)] = 1,
                        page_size: Annotated[int, Query(ge=1, le=service.MAX_PAGE_SIZE)] = 50
                        ) -> Any:
    """Deliveries to every endpoint, newest first; ``?status=failed`` for what needs a look."""
    return service.list_deliveries(uow.c, status=status, page=page, page_size=page_size)


@router.post("/webhook-deliveries/{delivery_id}/redeliver", status_code=202,
             response_model=Redelivered)
def redeliver(delivery_id: int, uow: UowDep, actor: Admin) -> Any:
    new_id = service.redeliver(uow=uow, actor=actor, delivery_id=delivery_id)
    return {"id": new_id, "redelivery_of": delivery_id}
