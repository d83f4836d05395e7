"""Request bodies of the privacy API."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["access", "correction", "deletion"]
Source = Literal["store", "phone", "email", "app", "web", "api", "letter"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RequestIn(Strict):
    customer_id: int = Field(ge=1, le=2**63 - 1)
    kind: Kind
    source: Source
    note: str | None = Field(default=None, max_length=2000)
    # When the person asked; the deadline counts from it. Defaults to now.
    received_at: dt.datetime | None = None


class CorrectionIn(Strict):
    # The corrected profile fields (name, gender, birthday, email, custom_fields), validated
    # like any profile edit.
    changes: dict[str, Any] = Field(min_length=1, max_length=50)


class RefusalIn(Strict):
    reason: str = Field(min_length=3, max_length=500)


class RetentionIn(Strict):
    dry_run: bool = False
    inactive_days: int | None = Field(default=None, ge=1, le=36500)


class PersonalisationIn(Strict):
    allowed: bool
    source: Source
    policy_version: str | None = Field(default=None, min_length=1, max_length=32)
