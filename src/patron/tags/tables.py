"""Tags: manual ones applied by people, rule-based ones kept current by Patron (a segment
definition), who carries each, and the history of every addition and removal."""

from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.redact import Redacted

tags = Table(
    "tags",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("description", Text, nullable=True),
    Column("kind", String(8), nullable=False),  # manual | rule
    # A rule tag's segment definition (docs/segments.md); None for a manual tag.
    Column("definition", JSONType, nullable=True),
    # When the rule was last evaluated for every customer, and how many carried it then.
    Column("refreshed_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Who carries a tag now. One row per (tag, customer); the count per tag reads the primary key.
customer_tags = Table(
    "customer_tags",
    metadata,
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    Column("added_by", String(120), nullable=False),
    PrimaryKeyConstraint("tag_id", "customer_id", name="pk_customer_tags"),
    Index("ix_customer_tags_customer_id", "customer_id", "tag_id"),
)

# Every addition and removal: who (a user, an API key, "rule" for Patron itself), why (manual,
# bulk from a segment or a pasted list, a rule's evaluation after an order, return or refresh).
tag_events = Table(
    "tag_events",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
    Column("customer_id", IdType, nullable=False),
    Column("action", String(8), nullable=False),  # added | removed
    Column("source", String(16), nullable=False),  # manual | bulk | rule
    Column("actor", String(120), nullable=False),
    Column("note", Redacted(200), nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_tag_events_tag_id", "tag_id", "id"),
    Index("ix_tag_events_customer_id", "customer_id", "id"),
)

# Daily count per tag, for the history chart (written by `patron segments snapshot`).
tag_counts = Table(
    "tag_counts",
    metadata,
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
    Column("day", Date, nullable=False),  # local date
    Column("customers", Integer, nullable=False),
    PrimaryKeyConstraint("tag_id", "day", name="pk_tag_counts"),
)
