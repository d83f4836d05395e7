"""Request bodies of the segments API. The definition itself is checked by
:func:`patron.segments.service.validate`, which names the bad part of it by its path."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SegmentBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentCreate(SegmentBase):
    name: str = Field(min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    definition: dict[str, Any]


class SegmentUpdate(SegmentBase):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=2000)
    definition: dict[str, Any] | None = None


class PreviewIn(SegmentBase):
    definition: dict[str, Any]
    limit: int = Field(default=20, ge=1, le=100)
