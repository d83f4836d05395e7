from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
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

# One row per customer and scope ("overall", "store:SH01", "region:EAST", "brand:B1"): the
# customer's values there. A refresh recomputes every row and writes only those whose values
# changed: recency is not stored (it grows by a day every night for everyone) but read as the
# whole days from ``last_order_at`` to the end of the scope's as-of day (``rfm_refreshes``),
# and neither are the scores and segment, computed on read from the scope's cut points
# (``rfm_refreshes.r_cut2`` ...; patron.analytics.rfm_read, migration 0011): a day's buyers
# move the cut points, which re-scored some 24k unchanged rows a night at a million
# customers. ``computed_at``: when the row's values last changed.
# No foreign key to ``customers`` (nor in the lifecycle tables below): every row is derived
# from a customer's figures or orders, customers are never deleted, and checking each of the
# millions of rows a first refresh writes cost a quarter of its time (migration 0007).
# Keyed customer first: a nightly refresh reads and writes each touched customer's rows of
# every scope, which then sit side by side (migration 0005; the key also serves reading one
# customer's rows, so no other index on ``customer_id`` is kept up).
rfm_scores = Table(
    "rfm_scores",
    metadata,
    Column("scope", String(48), nullable=False),
    Column("customer_id", IdType, nullable=False),
    Column("last_order_at", UTCDateTime, nullable=False),
    Column("frequency", Integer, nullable=False),
    Column("monetary", Money, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("customer_id", "scope"),
    # A nightly refresh moves each quantile's cut point by walking these from where it was
    # (docs/analytics.md, "How it is computed"), instead of ranking the whole scope again.
    Index("ix_rfm_scores_scope_last_order_at", "scope", "last_order_at"),
    Index("ix_rfm_scores_scope_frequency", "scope", "frequency"),
    Index("ix_rfm_scores_scope_monetary", "scope", "monetary"),
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
    # What the next refresh of the scope continues from (patron.analytics.rfm_refresh): the
    # thresholds and stores it was computed with, each quantile's cut points with the number
    # of customers below and up to them, and per segment the sums behind the averages.
    Column("state", JSONType, nullable=True),
    # The scope's scores as cut points: a value scores 1 + the number of these it is strictly
    # above (NULL: nobody scores that high). Recency as moments (a later purchase is better),
    # monetary in fen. Written with every refresh, read by every reader of scores and segments.
    *(Column(f"{d}_cut{level}", t, nullable=True)
      for d, t in (("r", UTCDateTime), ("f", Integer), ("m", BigInteger))
      for level in (2, 3, 4, 5)),
)

# Customers whose figures changed since the last refresh of every RFM scope: a trigger on
# ``customer_figures`` (migration 0003) adds one row per written figures row, whatever wrote
# it (ingestion, returns, merges and their undo, a rebuild); the refresh takes the rows it
# sees (``DELETE ... RETURNING``) and re-scores only those customers and the ones whose
# quantile moved. No key: inserting must cost ingestion as little as possible.
rfm_changed_customers = Table(
    "rfm_changed_customers",
    metadata,
    Column("customer_id", BigInteger, nullable=False),
)

# The current stage of every customer with a purchase; written only when it changes.
lifecycle_stages = Table(
    "lifecycle_stages",
    metadata,
    Column("customer_id", IdType, primary_key=True, autoincrement=False),
    Column("stage", String(16), nullable=False),
    Column("since", Date, nullable=False),
    # The last purchase when the stage was entered: a later one ends "reactivated".
    Column("entered_last_order_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    # The local day (days since 1970-01-01) on which the stage may next change if the customer
    # buys nothing: the nightly refresh looks at the customers due, not at everyone. None:
    # never by itself (churned), or only through the population's interval (one-time buyers
    # are found by their last purchase then). See docs/analytics.md, "Refreshing at night".
    Column("due_day", Integer, nullable=True),
    Index("ix_lifecycle_stages_stage", "stage"),
    Index("ix_lifecycle_stages_due_day", "due_day"),
)

# Every live repeat buyer's usual interval (days), kept by the lifecycle refresh for the
# customers whose figures changed, so that the population's middle interval is read from an
# index instead of computed over every customer's figures each night.
lifecycle_intervals = Table(
    "lifecycle_intervals",
    metadata,
    Column("customer_id", IdType, primary_key=True, autoincrement=False),
    Column("usual_interval", Float, nullable=False),
    Index("ix_lifecycle_intervals_usual_interval", "usual_interval"),
)

# The last lifecycle refresh: what the next one continues from (one row, key "lifecycle").
lifecycle_refreshes = Table(
    "lifecycle_refreshes",
    metadata,
    Column("key", String(16), primary_key=True),
    Column("as_of", UTCDateTime, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("state", JSONType, nullable=False),
)

# Customers whose figures changed since the last lifecycle refresh (the same trigger as
# rfm_changed_customers writes both: each refresh takes its own).
lifecycle_changed_customers = Table(
    "lifecycle_changed_customers",
    metadata,
    Column("customer_id", BigInteger, nullable=False),
)

# Every change of stage with its (local) date: the flows between stages come from here.
lifecycle_transitions = Table(
    "lifecycle_transitions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("customer_id", IdType, nullable=False, index=True),
    Column("from_stage", String(16), nullable=True),  # None: the customer's first stage
    Column("to_stage", String(16), nullable=False),
    Column("changed_on", Date, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Index("ix_lifecycle_transitions_changed_on", "changed_on"),
)

# Stage changes per local day and from -> to (from "": the customer's first stage), kept by
# triggers on ``lifecycle_transitions`` (migration 0012), whatever writes it: the flows
# between stages over any period are summed from a row per day and flow instead of counted
# from the transitions (a first refresh alone records one per customer).
lifecycle_flow_counts = Table(
    "lifecycle_flow_counts",
    metadata,
    Column("changed_on", Date, nullable=False),
    Column("from_stage", String(16), nullable=False),
    Column("to_stage", String(16), nullable=False),
    Column("customers", Integer, nullable=False),
    PrimaryKeyConstraint("changed_on", "from_stage", "to_stage"),
)
