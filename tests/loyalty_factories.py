"""Builders for loyalty tests: a program for the test brand, members, purchases and returns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from patron.db import UnitOfWork
from patron.loyalty import service
from patron.loyalty.schemas import EnrolIn, ProgramIn
from patron.loyalty.tables import loyalty_members
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import T0, order

# The program starts well before the test purchases (T0 = 2026-03-02 10:30 +08:00).
START = T0 - dt.timedelta(days=60)
PHONE = "13812345678"

TIERS = [
    {"code": "SILVER", "name": "银卡", "rank": 0, "min_growth": 0, "min_spend": "0",
     "points_multiplier": "1"},
    {"code": "GOLD", "name": "金卡", "rank": 1, "min_growth": 1000, "min_spend": "1000",
     "points_multiplier": "1.5"},
    {"code": "PLATINUM", "name": "白金卡", "rank": 2, "min_growth": 5000, "min_spend": "5000",
     "points_multiplier": "2"},
]


def make_program(uow: UnitOfWork, *, now: dt.datetime = START, code: str = "BB",
                 brand: str = "B1", **settings: Any) -> dict[str, Any]:
    body = {"code": code, "brand": brand, "name": "Bean Club", "privacy_version": "2026-01",
            "pending_days": 0, "expiry_mode": "rolling_months", "expiry_months": 12,
            "tiers": TIERS, **settings}
    return service.create_program(uow=uow, actor=SYSTEM, data=ProgramIn.model_validate(body),
                                  now=now)


def enrol(uow: UnitOfWork, phone: str = PHONE, *, program: str = "BB",
          now: dt.datetime = START, **extra: Any) -> dict[str, Any]:
    body = EnrolIn.model_validate({"phone": phone, "privacy": {"version": "2026-01"},
                                   "source": "pos", **extra})
    member, _created = service.enrol(uow=uow, actor=SYSTEM, program_code=program, body=body,
                                     now=now)
    return member


def buy(uow: UnitOfWork, external_id: str, *, phone: str = PHONE, at: dt.datetime = T0,
        now: dt.datetime | None = None, **extra: Any) -> Any:
    (out,) = record_orders(uow=uow, orders_in=[order(external_id, at=at,
                                                     identifiers={"phone": phone}, **extra)],
                           source="api", actor=SYSTEM, now=now or at + dt.timedelta(minutes=1))
    assert out.status in ("created", "duplicate"), out
    return out


def give_back(uow: UnitOfWork, external_id: str, order_external_id: str, *,
              at: dt.datetime, lines: list[dict[str, Any]] | None = None,
              full: bool = False) -> dict[str, Any]:
    ret = ReturnIn.model_validate({
        "external_id": external_id, "channel": "pos", "store": "SH01",
        "order_external_id": order_external_id, "returned_at": at.isoformat(),
        "full": full, "lines": lines or []})
    return record_return(uow=uow, ret=ret, actor=SYSTEM)


def member_row(uow: UnitOfWork, member_id: int) -> dict[str, Any]:
    return dict(uow.c.execute(select(loyalty_members).where(
        loyalty_members.c.id == member_id)).mappings().one())


def points(uow: UnitOfWork, member_id: int) -> dict[str, int]:
    r = member_row(uow, member_id)
    return {"available": r["points_available"], "pending": r["points_pending"],
            "held": r["points_held"], "owed": r["points_owed"], "growth": r["growth_value"]}


def money(text: str) -> Decimal:
    return Decimal(text)
