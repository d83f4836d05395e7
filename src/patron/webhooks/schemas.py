"""Request and response shapes for webhook endpoints and deliveries.

URLs and event names are checked by the service (``patron.webhooks.model``) so that the API
and the CLI refuse the same things with the same reasons.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class WebhookCreate(_In):
    url: str = Field(min_length=1, max_length=500)
    events: list[str] = Field(max_length=20)
    description: str | None = Field(default=None, max_length=200)


class WebhookUpdate(_In):
    url: str | None = Field(default=None, min_length=1, max_length=500)
    events: list[str] | None = Field(default=None, max_length=20)
    description: str | None = Field(default=None, max_length=200)
    active: bool | None = None


class DeliveryCounts(BaseModel):
    pending: int = 0
    sending: int = 0
    delivered: int = 0
    failed: int = 0


class WebhookRead(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str | None
    active: bool
    secret_hint: str
    created_at: dt.datetime
    updated_at: dt.datetime | None
    deliveries: DeliveryCounts
    last_delivered_at: dt.datetime | None


class WebhookCreated(WebhookRead):
    # Shown in this response only: keep it in the receiver's configuration.
    secret: str


class SecretRotated(BaseModel):
    secret: str


class DeliveryRead(BaseModel):
    id: int
    endpoint_id: int
    event: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    last_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    redelivery_of: int | None


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
    total: int
    page: int
    page_size: int


class Redelivered(BaseModel):
    id: int
    redelivery_of: int
