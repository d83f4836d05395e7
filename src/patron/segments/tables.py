"""Saved segments and their daily size history."""

from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata

segments = Table(
    "segments",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("description", Text, nullable=True),
    # The definition as validated (docs/segments.md); evaluated in the database when read.
    Column("definition", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
)

# One row per segment and local day: its size then, over every customer (no store scope).
segment_sizes = Table(
    "segment_sizes",
    metadata,
    Column("segment_id", ForeignKey("segments.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("segment_id", "day", name="pk_segment_sizes"),
)
