"""Request and response shapes for file imports and column mappings."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "done", "failed"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ColumnMappingBase(Strict):
    # {canonical column: the file's column}, e.g. {"order_id": "订单号"}
    columns: dict[str, str] = Field(default_factory=dict)
    # {canonical column: constant}, e.g. {"channel": "meituan"}; used where the file has none
    defaults: dict[str, str] = Field(default_factory=dict)
    # The file's columns to skip
    ignored: list[str] = Field(default_factory=list)
    # strptime format of purchased_at, e.g. "%Y年%m月%d日 %H:%M"
    datetime_format: str | None = Field(default=None, max_length=64)


class ColumnMappingCreate(ColumnMappingBase):
    name: str = Field(min_length=1, max_length=120)


class ColumnMappingUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    columns: dict[str, str] | None = None
    defaults: dict[str, str] | None = None
    ignored: list[str] | None = None
    datetime_format: str | None = Field(default=None, max_length=64)


class ColumnMappingRead(ColumnMappingBase):
    id: int
    name: str
    created_at: dt.datetime
    updated_at: dt.datetime | None = None


class ImportErrorRead(BaseModel):
    row: int  # as the user sees it in the file: the header is row 1
    column: str | None  # the file's column name
    reason: str  # message key
    message: str  # in the reader's language
    params: dict[str, str] = Field(default_factory=dict)
    value: str | None = None


class ImportJobRead(BaseModel):
    id: int
    filename: str
    mapping: str | None
    status: JobStatus
    rows_total: int | None
    rows_read: int
    orders_created: int
    orders_duplicate: int
    rows_rejected: int
    error: str | None = None  # message key when the whole job failed
    error_message: str | None = None
    created_by: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    errors_stored: int = 0  # at most MAX_STORED_ERRORS per job; rows_rejected keeps counting
    errors: list[ImportErrorRead] = Field(default_factory=list)
