from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["owner", "analyst", "manager", "cashier"]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Permission = Literal["view", "create", "edit", "delete", "export", "reveal", "adjust_points",
                     "manage_rules", "manage_users"]
Scope = Literal["all", "brand", "region", "own_stores"]


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)
    totp: str | None = Field(default=None, max_length=12)


class ReauthIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=200)
    totp: str | None = Field(default=None, max_length=12)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=200)
    new_password: str = Field(min_length=8, max_length=200)


class TotpConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=6, max_length=12)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: bool | None = None
    role: Role | None = None
    role_id: Id | None = None
    store_ids: list[Id] | None = None


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    permissions: list[Permission] = Field(default_factory=list)
    scope: Scope = "own_stores"
    brand_id: Id | None = None
    region_id: Id | None = None


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=64)
    permissions: list[Permission] | None = None
    scope: Scope | None = None
    brand_id: Id | None = None
    region_id: Id | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    password: str = Field(min_length=8, max_length=200)
    role: Role
    display_name: str | None = Field(default=None, max_length=120)
    store_ids: list[Id] = Field(default_factory=list)
    language: Literal["zh", "en"] = "zh"


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    store_ids: list[Id] = Field(default_factory=list)
    channel_codes: list[str] = Field(default_factory=list)
    role: Literal["cashier", "manager"] = "cashier"


class ActorRead(BaseModel):
    type: str
    id: int | None
    name: str
    role: str
    store_ids: list[int] | None
    language: str
