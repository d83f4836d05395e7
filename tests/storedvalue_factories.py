"""Builders for stored value tests: a program offering stored value with bonus tiers, members,
and short calls for each operation (all as the system actor unless told)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from patron.db import UnitOfWork
from patron.security.model import SYSTEM, Actor
from patron.storedvalue import service
from patron.storedvalue.schemas import (
    AdjustIn,
    BonusRulesIn,
    CashoutIn,
    HoldIn,
    RefundIn,
    SettingsIn,
    SpendIn,
    TopUpIn,
)
from tests.factories import T0, make_org
from tests.loyalty_factories import START, enrol, make_program

# 500 get 50, 1000 get 120
TIERS = [{"min": "500", "bonus": "50"}, {"min": "1000", "bonus": "120"}]


def setup(uow: UnitOfWork, *, spend_order: str = "proportional", now: dt.datetime = START,
          phones: tuple[str, ...] = ("13812345678",)) -> dict[str, Any]:
    org = make_org(uow)
    make_program(uow, now=now)
    service.configure(uow=uow, actor=SYSTEM, code="BB",
                      body=SettingsIn(spend_order=spend_order, hold_minutes=15), now=now)
    service.add_bonus_rules(uow=uow, actor=SYSTEM, code="BB",
                            body=BonusRulesIn.model_validate({"tiers": TIERS}), now=now)
    members = [enrol(uow, p, now=now)["id"] for p in phones]
    return {"org": org, "members": members, "member": members[0]}


def topup(uow: UnitOfWork, member: int, amount: str, key: str, *, store: str | None = "SH01",
          at: dt.datetime = T0, actor: Actor = SYSTEM, **extra: Any) -> dict[str, Any]:
    body = TopUpIn.model_validate({"idempotency_key": key, "amount": amount, "store": store,
                                   **extra})
    return service.topup(uow=uow, actor=actor, member_id=member, body=body, now=at)


def spend(uow: UnitOfWork, member: int, amount: str, key: str, *, store: str | None = "SH01",
          at: dt.datetime = T0, actor: Actor = SYSTEM) -> dict[str, Any]:
    body = SpendIn(idempotency_key=key, amount=Decimal(amount), store=store)
    return service.spend(uow=uow, actor=actor, member_id=member, body=body, now=at)


def hold(uow: UnitOfWork, member: int, amount: str, key: str, *, store: str | None = "SH01",
         at: dt.datetime = T0, minutes: int | None = None,
         actor: Actor = SYSTEM) -> dict[str, Any]:
    body = HoldIn(idempotency_key=key, amount=Decimal(amount), store=store, minutes=minutes)
    return service.hold(uow=uow, actor=actor, member_id=member, body=body, now=at)


def refund(uow: UnitOfWork, spend_id: int, amount: str, key: str, *, at: dt.datetime = T0,
           actor: Actor = SYSTEM, store: str | None = "SH01") -> dict[str, Any]:
    body = RefundIn(idempotency_key=key, amount=Decimal(amount), store=store)
    return service.refund(uow=uow, actor=actor, spend_id=spend_id, body=body, now=at)


def cashout(uow: UnitOfWork, topup_id: int, key: str, amount: str | None = None, *,
            at: dt.datetime = T0, actor: Actor = SYSTEM,
            reason: str = "customer moving away") -> dict[str, Any]:
    body = CashoutIn(idempotency_key=key, amount=None if amount is None else Decimal(amount),
                     reason=reason, store="SH01")
    return service.cashout(uow=uow, actor=actor, topup_id=topup_id, body=body, now=at)


def adjust(uow: UnitOfWork, member: int, amount: str, key: str, *, bucket: str = "principal",
           at: dt.datetime = T0, actor: Actor = SYSTEM, reason: str = "till error",
           store: str | None = None) -> dict[str, Any]:
    body = AdjustIn.model_validate({"idempotency_key": key, "amount": amount, "bucket": bucket,
                                    "reason": reason, "store": store})
    return service.adjust(uow=uow, actor=actor, member_id=member, body=body, now=at)


def money(balance: dict[str, Any]) -> tuple[str, str, str, str]:
    """(principal, bonus, principal held, bonus held) as strings."""
    return (str(balance["principal"]), str(balance["bonus"]), str(balance["principal_held"]),
            str(balance["bonus_held"]))
