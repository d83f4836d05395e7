"""Builders for rewards catalog tests: a program with members holding points, and items."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from patron.db import UnitOfWork
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn
from patron.rewards import service
from patron.rewards.schemas import ItemIn, RedemptionIn
from patron.rewards.tables import rewards_items
from patron.security.model import SYSTEM
from tests.factories import T0, make_org
from tests.loyalty_factories import START, enrol, make_program

NOW = T0


def setup_program(uow: UnitOfWork, phones_points: dict[str, int], *,
                  at: dt.datetime = START) -> dict[str, int]:
    """The test org, program BB and one member per phone holding the given points (from
    ``at``)."""
    make_org(uow)
    make_program(uow, now=at)
    out = {}
    for phone, pts in phones_points.items():
        member = enrol(uow, phone, now=at)
        if pts:
            loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], now=at,
                           body=AdjustIn(idempotency_key=f"seed-{phone}", points=pts,
                                         reason="opening balance"))
        out[phone] = member["id"]
    return out


def add_item(uow: UnitOfWork, code: str = "MUG", *, now: dt.datetime = START,
             **fields: Any) -> dict[str, Any]:
    body = {"code": code, "name": "Bean mug", "points_price": 100, "stock": 5, **fields}
    return service.create_item(uow=uow, actor=SYSTEM, program_code="BB",
                               data=ItemIn.model_validate(body), now=now)


def redeem(uow: UnitOfWork, item_id: int, member_id: int, key: str, *,
           now: dt.datetime = NOW, **extra: Any) -> dict[str, Any]:
    body = RedemptionIn.model_validate({"idempotency_key": key, "member_id": member_id,
                                        "store": "SH01", **extra})
    return service.redeem(uow=uow, actor=SYSTEM, item_id=item_id, body=body, now=now)


def stock(uow: UnitOfWork, item_id: int) -> dict[str, int]:
    r = uow.c.execute(select(rewards_items).where(rewards_items.c.id == item_id)).mappings().one()
    return {"stock": r["stock"], "reserved": int(r["reserved"]), "sold": int(r["sold"])}
