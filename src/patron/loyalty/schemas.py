"""Request shapes for the loyalty API and CLI. Field constraints here give the caller a 422 naming
the field and the reason; rules that need the database are checked by the service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from patron.customers.schemas import LanguageCode

Factor = Annotated[Decimal, Field(gt=0, le=100, max_digits=8, decimal_places=3)]
Key = Annotated[str, Field(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]
Points = Annotated[int, Field(gt=0, le=100_000_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DateFactor(Strict):
    from_: dt.date = Field(alias="from")
    to: dt.date
    factor: Factor

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _ordered(self) -> DateFactor:
        if self.to < self.from_:
            raise PydanticCustomError("date_range_reversed", "the end date lies before the start")
        return self


class Multipliers(Strict):
    category: dict[Key, Factor] = Field(default_factory=dict, max_length=500)
    sku: dict[Key, Factor] = Field(default_factory=dict, max_length=2000)
    store: dict[Key, Factor] = Field(default_factory=dict, max_length=2000)
    channel: dict[Key, Factor] = Field(default_factory=dict, max_length=100)
    weekday: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], Factor] = Field(
        default_factory=dict)
    dates: list[DateFactor] = Field(default_factory=list, max_length=100)


class Exclusions(Strict):
    categories: list[Key] = Field(default_factory=list, max_length=500)
    skus: list[Key] = Field(default_factory=list, max_length=2000)
    # None: the default, no points on points or stored-value payments.
    payment_methods: list[Literal["cash", "bank_card", "wechat_pay", "alipay", "stored_value",
                                  "points", "coupon", "other"]] | None = None


class Caps(Strict):
    per_order: int | None = Field(default=None, ge=0, le=100_000_000)
    per_day: int | None = Field(default=None, ge=0, le=100_000_000)


class EarningRulesIn(Strict):
    points_per_yuan: Decimal = Field(default=Decimal(1), ge=0, le=1000, max_digits=8,
                                     decimal_places=3)
    growth_per_yuan: Decimal = Field(default=Decimal(1), ge=0, le=1000, max_digits=8,
                                     decimal_places=3)
    min_spend: Decimal = Field(default=Decimal(0), ge=0, max_digits=12, decimal_places=2)
    multipliers: Multipliers = Field(default_factory=Multipliers)
    exclude: Exclusions = Field(default_factory=Exclusions)
    caps: Caps = Field(default_factory=Caps)
    tier_multiplier: bool = True

    def as_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        return data


class RuleVersionIn(Strict):
    # Defaults to now; may lie in the future, never in the past (orders already earned by the
    # rules then in force).
    effective_from: dt.datetime | None = None
    rules: EarningRulesIn
    note: str | None = Field(default=None, max_length=500)


class BirthdayGiftIn(Strict):
    """Shown to the cashier during the member's birthday month (docs/checkout.md)."""

    description: str = Field(min_length=1, max_length=200)
    coupon_template: Key | None = None


class FreeItemIn(Strict):
    sku: Key
    name: str | None = Field(default=None, max_length=120)
    quantity: int = Field(default=1, ge=1, le=100)


class TierBenefitsIn(Strict):
    """A tier's benefits at the till (docs/checkout.md, "Tier benefits"): the member discount
    applied by the checkout to every line, and the birthday gift and free items shown to the
    cashier. ``{}`` (no benefit) stays valid, as tiers created before this schema
    hold it."""

    member_discount_percent: Decimal = Field(default=Decimal(0), ge=0, lt=100, max_digits=5,
                                             decimal_places=2)
    birthday_gift: BirthdayGiftIn | None = None
    free_items: list[FreeItemIn] = Field(default_factory=list, max_length=20)

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


class TierIn(Strict):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=120)
    rank: int = Field(ge=0, le=50)
    min_growth: int = Field(default=0, ge=0, le=10**12)
    min_spend: Decimal = Field(default=Decimal(0), ge=0, max_digits=14, decimal_places=2)
    points_multiplier: Factor = Decimal(1)
    benefits: TierBenefitsIn = Field(default_factory=TierBenefitsIn)

    @field_serializer("benefits")
    def _benefits(self, value: TierBenefitsIn) -> dict[str, Any]:
        return value.as_json()


class TierUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    min_growth: int | None = Field(default=None, ge=0, le=10**12)
    min_spend: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)
    points_multiplier: Factor | None = None
    benefits: TierBenefitsIn | None = None

    @field_serializer("benefits")
    def _benefits(self, value: TierBenefitsIn | None) -> dict[str, Any] | None:
        return None if value is None else value.as_json()


class ProgramSettings(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    status: Literal["active", "closed"] | None = None
    storeless_channels: list[Key] | None = Field(default=None, max_length=50)
    timezone: str | None = Field(default=None, max_length=64)
    expiry_mode: Literal["rolling_months", "end_of_next_year"] | None = None
    expiry_months: int | None = Field(default=None, ge=1, le=120)
    pending_days: int | None = Field(default=None, ge=0, le=90)
    reminder_days: int | None = Field(default=None, ge=0, le=90)
    hold_minutes: int | None = Field(default=None, ge=1, le=10080)
    redeem_points_per_yuan: int | None = Field(default=None, ge=1, le=100000)
    clawback_policy: Literal["owe", "write_off", "deduct_from_refund"] | None = None
    tier_basis: Literal["growth", "spend_12m"] | None = None
    tier_grace_days: int | None = Field(default=None, ge=0, le=3660)
    tier_max_downgrade: int | None = Field(default=None, ge=1, le=20)
    privacy_version: str | None = Field(default=None, min_length=1, max_length=32)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PydanticCustomError("timezone_unknown", "unknown time zone") from exc
        return value


class ProgramIn(ProgramSettings):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-]+$")
    brand: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=120)  # type: ignore[assignment]
    privacy_version: str = Field(min_length=1, max_length=32)  # type: ignore[assignment]
    code_prefix: str = Field(default="", max_length=4, pattern=r"^[0-9]*$")
    rules: EarningRulesIn = Field(default_factory=EarningRulesIn)
    tiers: list[TierIn] = Field(default_factory=list, max_length=50)


class PrivacyConsentIn(Strict):
    version: str = Field(min_length=1, max_length=32)


class MarketingConsentIn(Strict):
    sms: bool = False
    wechat: bool = False
    app: bool = False
    email: bool = False


Source = Literal["pos", "mini_program", "app", "online_mall", "web", "api", "self_service",
                 "phone", "paper"]


class EnrolIn(Strict):
    phone: str = Field(min_length=1, max_length=32)
    name: str | None = Field(default=None, max_length=120)
    # The language of Patron's messages to the member: set on a profile that has none.
    language: LanguageCode | None = None
    store: str | None = Field(default=None, max_length=32)
    source: Source = "api"
    privacy: PrivacyConsentIn
    marketing: MarketingConsentIn = Field(default_factory=MarketingConsentIn)


class ConsentIn(Strict):
    kind: Literal["privacy", "sms", "wechat", "app", "email"]
    granted: bool
    source: Source = "api"
    version: str | None = Field(default=None, min_length=1, max_length=32)
    store: str | None = Field(default=None, max_length=32)


class RedeemIn(Strict):
    idempotency_key: IdempotencyKey
    points: Points
    store: str | None = Field(default=None, max_length=32)
    reference: str | None = Field(default=None, max_length=64)


class HoldIn(RedeemIn):
    minutes: int | None = Field(default=None, ge=1, le=10080)


class AdjustIn(Strict):
    idempotency_key: IdempotencyKey
    points: int = Field(ge=-100_000_000, le=100_000_000)
    bucket: Literal["available", "growth"] = "available"
    reason: str = Field(min_length=3, max_length=500)
    store: str | None = Field(default=None, max_length=32)

    @field_validator("points")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise PydanticCustomError("points_zero", "points must not be zero")
        return value


class TransferIn(Strict):
    idempotency_key: IdempotencyKey
    to_member_id: int = Field(ge=1, le=2**63 - 1)
    points: Points
    reason: str = Field(min_length=3, max_length=500)


class TierGrantIn(Strict):
    tier: str = Field(min_length=1, max_length=32)
    until: dt.datetime
    reason: str = Field(min_length=3, max_length=500)
