"""A campaign as it is defined: audience (segment), channel, template or A/B templates, an
optional coupon per recipient, a control group, when to send, a budget."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from patron.automations.schemas import Code

Yuan = Annotated[Decimal, Field(ge=0, le=100_000_000, decimal_places=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
    share: Annotated[Decimal, Field(gt=0, le=1, decimal_places=6)]
    template: Annotated[str, Field(min_length=2, max_length=64)]


class CampaignIn(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200)]
    program: Annotated[str, Field(min_length=1, max_length=32)]
    segment: dict[str, Any] | None = None
    channel: Literal["sms", "email", "wechat", "app"]
    template: Annotated[str, Field(min_length=2, max_length=64)] | None = None
    variants: Annotated[list[Arm], Field(min_length=2, max_length=6)] | None = None
    control_share: Annotated[Decimal, Field(ge=0, le=Decimal("0.9"), decimal_places=6)] = (
        Decimal(0))
    coupon_template_id: int | None = None
    scheduled_at: AwareDatetime | None = None
    budget_messages: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    budget_value: Yuan | None = None
    message_cost: Yuan = Decimal(0)

    @model_validator(mode="after")
    def _template_or_variants(self) -> CampaignIn:
        if (self.template is None) == (self.variants is None):
            raise ValueError("give either template or variants")
        if self.variants is not None:
            if sum(v.share for v in self.variants) != 1:
                raise ValueError("the variants' shares must add up to 1")
            if len({v.code for v in self.variants}) != len(self.variants):
                raise ValueError("variant codes must differ")
            if any(v.code == "control" for v in self.variants):
                raise ValueError("'control' is the held-out group's name")
        return self

    def arms(self) -> list[dict[str, str]]:
        if self.variants is not None:
            return [{"code": v.code, "share": str(v.share), "template": v.template}
                    for v in self.variants]
        assert self.template is not None
        return [{"code": "main", "share": "1", "template": self.template}]


class Launch(_Strict):
    confirm_audience: Annotated[int, Field(ge=0)] | None = None


def scheduled_utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value is not None else None
