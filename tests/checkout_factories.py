"""Builders for checkout tests: a program whose tiers have benefits, a member with points, and
baskets as a till sends them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from patron.db import UnitOfWork, metadata
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn
from patron.security.model import SYSTEM
from tests.factories import T0, make_org
from tests.loyalty_factories import PHONE, START, enrol, make_program

TIERS = [
    {"code": "SILVER", "name": "银卡", "rank": 0, "min_growth": 0, "min_spend": "0",
     "points_multiplier": "1"},
    {"code": "GOLD", "name": "金卡", "rank": 1, "min_growth": 1000, "min_spend": "1000",
     "points_multiplier": "1.5",
     "benefits": {"member_discount_percent": "10",
                  "birthday_gift": {"description": "生日蛋糕一块"},
                  "free_items": [{"sku": "WATER", "name": "矿泉水", "quantity": 1}]}},
]

LINES = [{"sku": "LATTE", "category": "coffee", "quantity": "2", "unit_price_fen": 2800},
         {"sku": "CROISSANT", "category": "bakery", "quantity": "1", "unit_price_fen": 1500}]


def setup_member(uow: UnitOfWork, *, points: int = 800, gold: bool = True,
                 phone: str = PHONE, with_org: bool = True, since: dt.datetime = START,
                 **program: Any) -> dict[str, Any]:
    """A program with benefit tiers, and a member (enrolled ``since``) holding ``points`` (and
    GOLD by growth)."""
    if with_org:
        make_org(uow)
        make_program(uow, tiers=TIERS, now=since, **program)
    member = enrol(uow, phone, now=since)
    if points:
        loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"],
                       body=AdjustIn(idempotency_key=f"seed-{phone}", points=points,
                                     reason="opening balance", store="SH01"),
                       now=since + dt.timedelta(days=1))
    if gold:
        loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"],
                       body=AdjustIn(idempotency_key=f"growth-{phone}", points=1000,
                                     bucket="growth", reason="tier for the test"),
                       now=since + dt.timedelta(days=1))
    return member


def basket(member_code: str | None = None, *, lines: list[dict[str, Any]] | None = None,
           **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"store": "SH01", "lines": lines or LINES}
    if member_code is not None:
        body["member"] = {"member_code": member_code}
    body.update(extra)
    return body


def sale(member_code: str | None, key: str, number: str, *, tender: int | None = None,
         **extra: Any) -> dict[str, Any]:
    """A commit request; ``tender`` fen paid in cash (the rest after points)."""
    body = basket(member_code, idempotency_key=key, order_number=number, **extra)
    if tender is not None:
        body["payments"] = [{"method": "cash", "amount_fen": tender}]
    return body


def row_counts(uow: UnitOfWork) -> dict[str, int]:
    return {t.name: int(uow.c.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables}


NOW = T0
