"""Request bodies of the tags API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TagBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TagCreate(TagBase):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    # a segment definition makes a rule tag that Patron keeps current
    definition: dict[str, Any] | None = None


class TagUpdate(TagBase):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    definition: dict[str, Any] | None = None


class TagApply(TagBase):
    """One target: ``customer_ids``, a saved ``segment_id``, a ``definition`` or ``pasted``
    text (member codes or phones, one per line)."""

    action: Literal["add", "remove"] = "add"
    customer_ids: list[int] | None = Field(default=None, max_length=50_000)
    segment_id: int | None = Field(default=None, ge=1)
    definition: dict[str, Any] | None = None
    pasted: str | None = Field(default=None, max_length=2_000_000)
    note: str | None = Field(default=None, max_length=200)
