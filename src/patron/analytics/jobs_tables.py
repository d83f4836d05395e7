"""Analytics refresh jobs: every refresh of every analytics table (on demand, nightly, from the
CLI), with its progress step by step."""

from sqlalchemy import (
    Column,
    Date,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata

analytics_refresh_jobs = Table(
    "analytics_refresh_jobs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("requested_by", String(120), nullable=False),
    Column("trigger", String(16), nullable=False),  # manual | schedule | cli
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("step", String(80), nullable=True),  # the step running now (the last one when over)
    Column("steps_done", Integer, nullable=False),
    Column("steps_total", Integer, nullable=False),
    Column("as_of", UTCDateTime, nullable=True),  # None: the moment the job starts
    Column("requested_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # The process that runs the job ("host:pid") and its last sign of life: a job whose runner
    # is gone is marked failed by whoever notices.
    Column("runner", String(200), nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("error", Text, nullable=True),
    Column("result", JSONType, nullable=True),  # per step: status, seconds, summary
    # 1 while the job is queued or running, NULL after: the unique key lets only one job be
    # under way at a time, whichever process asks (a partial unique index would say the same,
    # but is not portable through Alembic's comparison on both databases).
    Column("active", SmallInteger, nullable=True),
    # The local date of the nightly slot a scheduled job is for: several server processes
    # reaching 03:00 together create one job.
    Column("scheduled_for", Date, nullable=True),
    UniqueConstraint("active", name="uq_analytics_refresh_jobs_active"),
    UniqueConstraint("scheduled_for", name="uq_analytics_refresh_jobs_scheduled_for"),
    Index("ix_analytics_refresh_jobs_requested_at", "requested_at"),
)
