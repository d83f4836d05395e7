from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["owner", "analyst", "manager", "cashier"]


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=8, max_length=200)
    role: Role
    display_name: str | None = Field(default=None, max_length=120)
    store_ids: list[int] = Field(default_factory=list)
    language: Literal["zh", "en"] = "zh"


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    store_ids: list[int] = Field(default_factory=list)
    channel_codes: list[str] = Field(default_factory=list)
    role: Literal["cashier", "manager"] = "cashier"


class ActorRead(BaseModel):
    type: str
    id: int | None
    name: str
    role: str
    store_ids: list[int] | None
    language: str
