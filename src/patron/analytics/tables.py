from sqlalchemy import (
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
)

from patron.db import IdType, JSONType, Money, UTCDateTime, metadata

# Owner-set thresholds by key ("rfm", "lifecycle"); missing keys mean the defaults.
analytics_settings = Table(
    "analytics_settings",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
)

# One row per customer and scope ("overall", "store:SH01", "region:EAST", "brand:B1"), replaced
# wholesale by each refresh of that scope.
rfm_scores = Table(
    "rfm_scores",
    metadata,
    Column("scope", String(48), primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("recency_days", Integer, nullable=False),
    Column("frequency", Integer, nullable=False),
    Column("monetary", Money, nullable=False),
    Column("r_score", SmallInteger, nullable=False),
    Column("f_score", SmallInteger, nullable=False),
    Column("m_score", SmallInteger, nullable=False),
    Column("segment", String(24), nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Index("ix_rfm_scores_scope_segment", "scope", "segment"),
    Index("ix_rfm_scores_customer_id", "customer_id"),
)

# The current stage of every customer with a purchase; written only when it changes.
lifecycle_stages = Table(
    "lifecycle_stages",
    metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("stage", String(16), nullable=False),
    Column("since", Date, nullable=False),
    # The last purchase when the stage was entered: a later one ends "reactivated".
    Column("entered_last_order_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_lifecycle_stages_stage", "stage"),
)

# Every change of stage with its (local) date: the flows between stages come from here.
lifecycle_transitions = Table(
    "lifecycle_transitions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("from_stage", String(16), nullable=True),  # None: the customer's first stage
    Column("to_stage", String(16), nullable=False),
    Column("changed_on", Date, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Index("ix_lifecycle_transitions_changed_on", "changed_on"),
)
