from sqlalchemy import BigInteger, Column, Date, Index, String, Table

from patron.db import IdType, UTCDateTime, metadata
from patron.protection.redact import Redacted

# One row per backup taken by `patron backup` or the daily schedule. A scheduled backup claims
# its night by the unique `scheduled_for`, so that one server process of many takes it.
backup_runs = Table(
    "backup_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("trigger", String(16), nullable=False),  # manual | scheduled
    Column("scheduled_for", Date, nullable=True, unique=True),
    Column("requested_by", String(120), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("file", String(400), nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("error", Redacted(), nullable=True),
    Index("ix_backup_runs_started_at", "started_at"),
)
