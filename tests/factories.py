"""Small builders for test data (stores, orders) on a real database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from patron.db import UnitOfWork
from patron.org import service as org
from patron.security.model import SYSTEM

T0 = dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def make_org(uow: UnitOfWork) -> dict[str, int]:
    brand = org.create_brand(uow=uow, actor=SYSTEM, code="B1", name="Bean Brothers")
    east = org.create_region(uow=uow, actor=SYSTEM, code="EAST", name="华东")
    north = org.create_region(uow=uow, actor=SYSTEM, code="NORTH", name="华北")
    s1 = org.create_store(uow=uow, actor=SYSTEM, code="SH01", name="上海人民广场店",
                          city="上海", brand_id=brand, region_id=east)
    s2 = org.create_store(uow=uow, actor=SYSTEM, code="BJ01", name="北京国贸店", city="北京",
                          brand_id=brand, region_id=north)
    return {"brand": brand, "east": east, "north": north, "SH01": s1, "BJ01": s2}


def order(external_id: str, *, channel: str = "pos", store: str | None = "SH01",
          at: dt.datetime = T0, identifiers: dict[str, str] | None = None,
          lines: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    if lines is None:
        lines = [{"sku": "LATTE", "category": "coffee", "quantity": "2", "unit_price": "28.00"},
                 {"sku": "CROISSANT", "category": "bakery", "quantity": "1",
                  "unit_price": "16.50", "discount": "1.50"}]
    body: dict[str, Any] = {"external_id": external_id, "channel": channel,
                            "purchased_at": at.isoformat(), "identifiers": identifiers or {},
                            "lines": lines}
    if store is not None:
        body["store"] = store
    body.update(extra)
    return body


def money(text: str) -> Decimal:
    return Decimal(text)
