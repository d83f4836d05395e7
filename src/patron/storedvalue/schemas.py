"""Request shapes for the stored-value API and CLI. Field constraints give the caller a 422
naming the field and the reason; rules that need the database are checked by the service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

IdempotencyKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]
# Yuan to the fen; one operation moves at most a million yuan.
Amount = Annotated[Decimal, Field(gt=0, le=1_000_000, max_digits=9, decimal_places=2)]
Store = Annotated[str | None, Field(default=None, max_length=32)]
Reference = Annotated[str | None, Field(default=None, max_length=64)]
Reason = Annotated[str, Field(min_length=3, max_length=500)]
SpendOrder = Literal["bonus_first", "principal_first", "proportional"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SettingsIn(Strict):
    spend_order: SpendOrder = "proportional"
    hold_minutes: int = Field(default=15, ge=1, le=1440)
    # Months after its top-up that bonus expires (None: never). Principal never expires.
    bonus_expiry_months: int | None = Field(default=None, ge=1, le=120)


class BonusTierIn(Strict):
    min: Amount
    bonus: Decimal = Field(ge=0, le=1_000_000, max_digits=9, decimal_places=2)


class BonusRulesIn(Strict):
    # Defaults to now; may lie in the future, never in the past (top-ups already earned by the
    # rules then in force).
    effective_from: dt.datetime | None = None
    tiers: list[BonusTierIn] = Field(max_length=50)
    note: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _increasing(self) -> BonusRulesIn:
        mins = [t.min for t in self.tiers]
        if len(set(mins)) != len(mins):
            raise PydanticCustomError("bonus_tier_duplicate", "two tiers have the same minimum")
        return self


class TopUpIn(Strict):
    idempotency_key: IdempotencyKey
    amount: Amount
    store: Store
    # Where the money came in when there is no store (mini-program, app, ...).
    channel: str | None = Field(default=None, max_length=32)
    reference: Reference


class SpendIn(Strict):
    idempotency_key: IdempotencyKey
    amount: Amount
    store: Store
    reference: Reference


class HoldIn(SpendIn):
    minutes: int | None = Field(default=None, ge=1, le=1440)


class RefundIn(Strict):
    """A refund to the card of (part of) a spend."""

    idempotency_key: IdempotencyKey
    amount: Amount
    store: Store
    reference: Reference


class CashoutIn(Strict):
    """Paying back unused principal of a top-up in cash; ``amount`` None: all that is left."""

    idempotency_key: IdempotencyKey
    amount: Amount | None = None
    reason: Reason
    store: Store


class AdjustIn(Strict):
    idempotency_key: IdempotencyKey
    bucket: Literal["principal", "bonus"]
    amount: Decimal = Field(ge=-1_000_000, le=1_000_000, max_digits=9, decimal_places=2)
    reason: Reason
    store: Store

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, value: Decimal) -> Decimal:
        if value == 0:
            raise PydanticCustomError("amount_zero", "the amount must not be zero")
        return value
