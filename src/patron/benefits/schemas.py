"""Request shapes for birthday, anniversary and referral settings and for enrolment with an
invite code."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from patron.loyalty.schemas import EnrolIn


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BenefitSettingsIn(Strict):
    birthday_mode: Literal["none", "points", "multiplier", "coupon"] = "none"
    birthday_points: int = Field(default=0, ge=0, le=1_000_000)
    birthday_multiplier: Decimal | None = Field(default=None, gt=1, le=10, max_digits=6,
                                                decimal_places=3)
    birthday_coupon_template_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    anniversary_points: int = Field(default=0, ge=0, le=1_000_000)
    referral_referrer_points: int = Field(default=0, ge=0, le=1_000_000)
    referral_referee_points: int = Field(default=0, ge=0, le=1_000_000)
    referral_min_spend: Decimal = Field(default=Decimal(0), ge=0, le=Decimal("1000000"),
                                        max_digits=9, decimal_places=2)
    referral_days: int = Field(default=30, ge=1, le=365)

    @model_validator(mode="after")
    def _birthday(self) -> BenefitSettingsIn:
        if self.birthday_mode == "points" and self.birthday_points <= 0:
            raise PydanticCustomError("birthday_points_required",
                                      "a birthday bonus needs its points")
        if self.birthday_mode == "multiplier" and self.birthday_multiplier is None:
            raise PydanticCustomError("birthday_multiplier_required",
                                      "a birthday multiplier needs its factor")
        if self.birthday_mode == "coupon" and self.birthday_coupon_template_id is None:
            raise PydanticCustomError("birthday_coupon_required",
                                      "a birthday coupon needs its template")
        return self


class ReferredEnrolIn(EnrolIn):
    invite_code: str = Field(min_length=4, max_length=16)
