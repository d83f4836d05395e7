"""Builders for coupon tests: templates, issues, baskets and redemptions for the loyalty test
program (``BB`` on brand ``B1``, stores SH01 and BJ01)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from patron.coupons import service
from patron.coupons.schemas import HoldIn, IssueIn, RedeemIn, TemplateIn
from patron.coupons.tables import coupons
from patron.db import UnitOfWork
from patron.security.model import SYSTEM, Actor

# 2 x 28.00 coffee + 15.00 croissant = 71.00, at SH01 through the POS.
LINES = [{"sku": "LATTE", "category": "coffee", "quantity": "2", "unit_price": "28.00"},
         {"sku": "CROISSANT", "category": "bakery", "quantity": "1", "unit_price": "15.00"}]


def basket(**extra: Any) -> dict[str, Any]:
    return {"lines": LINES, "store": "SH01", "channel": "pos", **extra}


def make_template(uow: UnitOfWork, code: str = "TEN", *, limits: dict[str, Any] | None = None,
                  now: dt.datetime | None = None, **terms: Any) -> dict[str, Any]:
    body = {"program": "BB", "code": code, "name": f"coupon {code}",
            "terms": {"kind": "amount", "amount_off": "10", "valid_days": 30, **terms},
            **(limits or {})}
    return service.create_template(uow=uow, actor=SYSTEM, data=TemplateIn.model_validate(body),
                                   now=now)


def give(uow: UnitOfWork, template_id: int, members: list[int], key: str, *,
         quantity: int = 1, store: str | None = "SH01", now: dt.datetime | None = None,
         actor: Actor = SYSTEM) -> dict[str, Any]:
    return service.issue(uow=uow, actor=actor, template_id=template_id,
                         body=IssueIn(idempotency_key=key, member_ids=members,
                                      quantity=quantity, store=store), now=now)


def redeem(uow: UnitOfWork, member: int, codes: list[str], key: str, *,
           actor: Actor = SYSTEM, now: dt.datetime | None = None, **extra: Any
           ) -> dict[str, Any]:
    body = RedeemIn.model_validate({"idempotency_key": key, "member_id": member,
                                    "codes": codes, "basket": extra.pop("basket", basket()),
                                    **extra})
    return service.redeem(uow=uow, actor=actor, body=body, now=now)


def hold(uow: UnitOfWork, member: int, codes: list[str], key: str, *,
         actor: Actor = SYSTEM, now: dt.datetime | None = None, **extra: Any
         ) -> dict[str, Any]:
    body = HoldIn.model_validate({"idempotency_key": key, "member_id": member,
                                  "codes": codes, "basket": extra.pop("basket", basket()),
                                  **extra})
    return service.hold(uow=uow, actor=actor, body=body, now=now)


def coupon_row(uow: UnitOfWork, code: str) -> dict[str, Any]:
    return dict(uow.c.execute(select(coupons).where(coupons.c.code == code)).mappings().one())
