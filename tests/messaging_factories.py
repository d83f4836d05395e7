"""Builders for message tests: a member with chosen consents, messages queued in their own
transaction, a provider that records what it was asked to send."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy import Engine, select

from patron.db import UnitOfWork
from patron.messaging.adapters import FOREVER, Outgoing, Result, delivered
from patron.messaging.service import enqueue_in
from patron.messaging.tables import message_attempts, messages
from tests.factories import make_org
from tests.loyalty_factories import enrol, make_program

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
PHONE = "13812345678"
E164 = "+8613812345678"


def member_with(engine: Engine, *, sms: bool = False, email: bool = False,
                wechat: bool = False, app: bool = False) -> dict[str, Any]:
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow)
        return enrol(uow, PHONE, marketing={"sms": sms, "email": email, "wechat": wechat,
                                            "app": app})


def queue(engine: Engine, *, customer_id: int | None, channel: str = "sms",
          purpose: str = "transactional", key: str = "k1", template: str = "points_expiring",
          variables: dict[str, Any] | None = None, now: dt.datetime = NOW,
          **extra: Any) -> int:
    if variables is None and template == "points_expiring":
        variables = {"program": "Bean Club", "member_code": "M1", "points": 71,
                     "expires_on": "2027-03-02", "balance": 120}
    if variables is None and template == "otp_login":
        variables = {"code": "482913", "minutes": 10}
    with UnitOfWork(engine) as uow:
        mid = enqueue_in(uow.c, customer_id=customer_id, channel=channel, template=template,
                         variables=variables or {}, purpose=purpose, dedupe_key=key, now=now,
                         **extra)
        uow.commit()
    return mid


def message(engine: Engine, message_id: int) -> dict[str, Any]:
    with UnitOfWork(engine, readonly=True) as uow:
        return dict(uow.c.execute(select(messages).where(messages.c.id == message_id)
                                  ).mappings().one())


def attempts(engine: Engine, message_id: int) -> list[dict[str, Any]]:
    a = message_attempts.c
    with UnitOfWork(engine, readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(select(message_attempts).where(
            a.message_id == message_id).order_by(a.number)).mappings()]


class RecordingProvider:
    """A provider that answers as told and remembers every message it was handed. With
    ``dedupes`` it behaves like a provider honouring idempotency keys: a message id it has
    seen is accepted again but not sent again."""

    name = "recording"

    def __init__(self, answers: list[Result] | None = None, *, dedupes: bool = False) -> None:
        self.answers = list(answers or [])
        self.received: list[Outgoing] = []
        self.sent: list[int] = []
        self.idempotency_window = FOREVER if dedupes else None
        self._lock = threading.Lock()

    def send(self, message: Outgoing) -> Result:
        with self._lock:
            self.received.append(message)
            if self.idempotency_window is None or message.id not in self.sent:
                self.sent.append(message.id)
            return self.answers.pop(0) if self.answers else delivered(f"p-{message.id}")


class WorkerDied(BaseException):
    """Stands for the process being killed: not an ``Exception``, so nothing catches it."""


class DiesAfterSending:
    """Hands the message to the provider, then the worker dies before it hears back."""

    def __init__(self, provider: RecordingProvider) -> None:
        self.provider = provider
        self.name = provider.name
        self.idempotency_window = provider.idempotency_window

    def send(self, message: Outgoing) -> Result:
        self.provider.send(message)
        raise WorkerDied
