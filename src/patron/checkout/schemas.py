"""Request shapes of the POS checkout API. Amounts are integer fen (``*_fen``); field
constraints give the till a 422 naming the field; rules needing the database are the
service's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

IdempotencyKey = Annotated[str, Field(min_length=1, max_length=64,
                                      pattern=r"^[A-Za-z0-9_\-.:]+$")]
Fen = Annotated[int, Field(ge=0, le=10**12)]
Tender = Literal["cash", "bank_card", "wechat_pay", "alipay", "other"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MemberIdIn(Strict):
    """Exactly one way to name the member: a phone, a member code, or the payload of the
    member's QR card (self-service)."""

    phone: str | None = Field(default=None, min_length=1, max_length=32)
    member_code: str | None = Field(default=None, min_length=1, max_length=32)
    qr: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one(self) -> MemberIdIn:
        given = [v for v in (self.phone, self.member_code, self.qr) if v is not None]
        if len(given) != 1:
            raise PydanticCustomError("member_identifier_one", "give exactly one identifier")
        return self


class BasketLineIn(Strict):
    sku: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=64)
    quantity: Decimal = Field(gt=0, le=100000, max_digits=12, decimal_places=3)
    # What the till charges per unit, its own promotions included.
    unit_price_fen: Fen


class TenderIn(Strict):
    method: Tender
    amount_fen: Fen


class BasketIn(Strict):
    store: str = Field(min_length=1, max_length=32)
    channel: str = Field(default="pos", min_length=1, max_length=32)
    # Defaults to now; a till syncing offline sales gives the purchase time (with its offset, or
    # naive in the store's time zone).
    purchased_at: dt.datetime | None = None
    member: MemberIdIn | None = None
    lines: list[BasketLineIn] = Field(min_length=1, max_length=500)
    coupons: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=10)
    redeem_points: int = Field(default=0, ge=0, le=100_000_000)
    stored_value_fen: Fen = 0


class QuoteIn(BasketIn):
    pass


class CommitIn(BasketIn):
    idempotency_key: IdempotencyKey
    # The till's receipt / document number: the order's external id.
    order_number: str = Field(min_length=1, max_length=64)
    # What the till takes for the rest (after points and stored value); must add up to it.
    payments: list[TenderIn] = Field(default_factory=list, max_length=10)
    # Pay with what a two-phase hold reserved (its points, stored value and coupons).
    hold_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


class HoldIn(BasketIn):
    idempotency_key: IdempotencyKey
    minutes: int | None = Field(default=None, ge=1, le=1440)


class OfflineBatchIn(Strict):
    """Checkouts a till queued while offline, each with its purchase time."""

    entries: list[CommitIn] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _timed(self) -> OfflineBatchIn:
        for entry in self.entries:
            if entry.purchased_at is None:
                raise PydanticCustomError("purchased_at_required",
                                          "every offline entry needs its purchase time")
            if entry.hold_id is not None:
                raise PydanticCustomError("offline_hold", "an offline entry cannot use a hold")
        return self


class RefundLineIn(Strict):
    line_no: int = Field(ge=1, le=500)
    quantity: Decimal = Field(gt=0, max_digits=12, decimal_places=3)


class RefundIn(Strict):
    idempotency_key: IdempotencyKey
    full: bool = False
    lines: list[RefundLineIn] = Field(default_factory=list, max_length=500)
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _what(self) -> RefundIn:
        if self.full == bool(self.lines):
            raise PydanticCustomError("refund_full_or_lines", "give full or lines, not both")
        return self
