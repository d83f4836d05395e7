"""Request shapes for the rewards catalog API and CLI. Field constraints give the caller a 422
naming the field and the reason; rules needing the database are checked by the service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Code = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-.]+$")]
# Rewards keys leave room for the "rewards:" prefix of the loyalty hold they create.
RewardKey = Annotated[str, Field(min_length=1, max_length=56, pattern=r"^[A-Za-z0-9_\-.:]+$")]
Period = Literal["day", "week", "month", "year"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ItemBase(Strict):
    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    points_price: int = Field(ge=1, le=100_000_000)
    cash_price: Decimal = Field(default=Decimal(0), ge=0, le=Decimal("1000000"), max_digits=9,
                                decimal_places=2)
    stock: int | None = Field(default=None, ge=0, le=10**12)
    limit_per_member: int | None = Field(default=None, ge=1, le=1_000_000)
    limit_per_period: int | None = Field(default=None, ge=1, le=1_000_000)
    limit_period: Period | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    active: bool = True
    hold_minutes: int | None = Field(default=None, ge=1, le=10080)

    @model_validator(mode="after")
    def _consistent(self) -> ItemBase:
        if (self.limit_per_period is None) != (self.limit_period is None):
            raise PydanticCustomError("limit_period_pair",
                                      "a limit per period needs both the number and the period")
        for value in (self.valid_from, self.valid_until):
            if value is not None and value.tzinfo is None:
                raise PydanticCustomError("timezone_required",
                                          "give the time with its offset (e.g. +08:00)")
        if (self.valid_from is not None and self.valid_until is not None
                and self.valid_until <= self.valid_from):
            raise PydanticCustomError("validity_reversed", "the end lies before the start")
        return self


class ItemIn(ItemBase):
    code: Code


class ItemUpdate(Strict):
    """Changes apply to redemptions made from now on; open redemptions keep their price."""
    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    points_price: int | None = Field(default=None, ge=1, le=100_000_000)
    cash_price: Decimal | None = Field(default=None, ge=0, le=Decimal("1000000"), max_digits=9,
                                       decimal_places=2)
    stock: int | None = Field(default=None, ge=0, le=10**12)
    limit_per_member: int | None = Field(default=None, ge=1, le=1_000_000)
    limit_per_period: int | None = Field(default=None, ge=1, le=1_000_000)
    limit_period: Period | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    active: bool | None = None
    hold_minutes: int | None = Field(default=None, ge=1, le=10080)

    @model_validator(mode="after")
    def _aware(self) -> ItemUpdate:
        for value in (self.valid_from, self.valid_until):
            if value is not None and value.tzinfo is None:
                raise PydanticCustomError("timezone_required",
                                          "give the time with its offset (e.g. +08:00)")
        return self


class RedemptionIn(Strict):
    idempotency_key: RewardKey
    member_id: int = Field(ge=1, le=2**63 - 1)
    quantity: int = Field(default=1, ge=1, le=1000)
    store: str | None = Field(default=None, max_length=32)
    reference: str | None = Field(default=None, max_length=64)
