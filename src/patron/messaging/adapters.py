"""Channel adapters: each sends one rendered message and says what happened.

An adapter answers ``delivered`` (with the provider's id when it gives one), ``retry`` (a
failure that may pass: a timeout, a 5xx, a refused connection) or ``failed`` (the provider
refused this message for good). It never raises for a provider's answer. ``idempotency_window``
says for how long the provider de-duplicates a message sent again under the same id (None: it
does not), which decides whether a message whose worker died mid-send may be sent again
(docs/messaging.md).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from patron.messaging.model import mask_address

log = logging.getLogger("patron.messages")

FOREVER = dt.timedelta(days=36500)


@dataclass(frozen=True)
class Outgoing:
    id: int
    channel: str
    address: str
    purpose: str
    template: str
    lang: str
    subject: str | None
    body: str
    data: dict[str, Any]
    variables: dict[str, Any]
    customer_id: int | None
    unsubscribe_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    status: str  # delivered | retry | failed
    provider_id: str | None = None
    error: str | None = None
    reason: str | None = None  # for 'failed': a stable code


def delivered(provider_id: str | None = None) -> Result:
    return Result("delivered", provider_id=provider_id)


def retry(error: str) -> Result:
    return Result("retry", error=error[:500])


def failed(reason: str, error: str) -> Result:
    return Result("failed", error=error[:500], reason=reason)


class Adapter(Protocol):
    name: str
    idempotency_window: dt.timedelta | None

    def send(self, message: Outgoing) -> Result: ...


class LogAdapter:
    """The demo's adapter: writes the message to the server log (logger ``patron.messages``),
    where a one-time code can be read. Writing a line twice harms nobody, so a message whose
    worker died may be logged again."""

    name = "log"
    idempotency_window: dt.timedelta | None = FOREVER

    def send(self, message: Outgoing) -> Result:
        # The address masked (docs/data-protection.md): logs are not where personal data goes.
        log.info("message %s %s to %s [%s/%s]: %s%s", message.id, message.channel,
                 mask_address(message.channel, message.address), message.purpose,
                 message.template,
                 f"{message.subject} | " if message.subject else "", message.body)
        return delivered(f"log-{message.id}")
