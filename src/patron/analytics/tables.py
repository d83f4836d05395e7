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

# One row per customer and scope ("overall", "store:SH01", "region:EAST", "brand:B1"). A refresh
# recomputes every row and writes only those that changed: recency is not stored (it grows by a
# day every night for everyone) but read as the whole days from ``last_order_at`` to the end of
# the scope's as-of day (``rfm_refreshes``). ``computed_at``: when the row last changed.
rfm_scores = Table(
    "rfm_scores",
    metadata,
    Column("scope", String(48), primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("last_order_at", UTCDateTime, nullable=False),
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

# The last refresh of each RFM scope: what its scores are as of.
rfm_refreshes = Table(
    "rfm_refreshes",
    metadata,
    Column("scope", String(48), primary_key=True),
    Column("as_of", UTCDateTime, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("changed", Integer, nullable=False),  # rows written by that refresh
    # Per segment, over the whole scope: [customers, average recency days, frequency,
    # monetary (fen), R, F, M] (what the summary shows those who see every customer).
    Column("segments", JSONType, nullable=True),
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
