from __future__ import annotations

from decimal import Decimal
from typing import Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

Code = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-]+$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BrandCreate(_In):
    code: str = Code
    name: str = Field(min_length=1, max_length=120)


class RegionCreate(BrandCreate):
    pass


class StoreCreate(_In):
    code: str = Code
    name: str = Field(min_length=1, max_length=120)
    city: str = Field(default="", max_length=64)
    timezone: str = "Asia/Shanghai"
    brand_id: int | None = None
    region_id: int | None = None

    @field_validator("timezone")
    @classmethod
    def known_timezone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError("unknown time zone")
        return value


class ChannelCreate(_In):
    code: str = Code
    name: str = Field(min_length=1, max_length=120)
    kind: Literal["pos", "mini_program", "app", "online_mall", "platform"]
    requires_store: bool = False


class CategoryCreate(_In):
    code: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=120)
    parent_id: int | None = None


class ProductCreate(_In):
    sku: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    category_id: int | None = None
    brand_id: int | None = None
    list_price: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)
