"""Dashboard rollups (docs/dashboards.md): derived from the orders by
``patron.analytics.dashboards_service.refresh_dashboards``, never written anywhere else.

Days are store-local day numbers (days since 1970-01-01), months ``year * 12 + month - 1``,
money integer fen (``Money``). Keys of the cell tables are text: a store, region, brand or
channel id ("0": orders without a store), a category code, or "" for the whole chain.
"""

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

from patron.db import IdType, JSONType, Money, Quantity, UTCDateTime, metadata

# One row per identified customer, local day, store and channel. For each kind of key (the
# whole chain, the store, region, brand, channel) the row carries the customer's previous two
# purchase days there (p1, p2; -1 when none) and the month of their first purchase there (c).
# Only one row of a customer's day per key carries the marks; the others repeat the day itself,
# so that "p1 < from" counts every customer once: that is how distinct customers of any period
# are counted without a DISTINCT over the whole period.
KINDS = ("all", "store", "region", "brand", "channel")
_marks = [Column(f"{k}_{m}", Integer, nullable=False) for k in KINDS for m in ("p1", "p2", "c")]

dashboard_activity = Table(
    "dashboard_activity",
    metadata,
    Column("customer_id", IdType, primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("store_id", Integer, primary_key=True),  # 0: no store (online)
    Column("channel_id", Integer, primary_key=True),
    Column("month", Integer, nullable=False),
    Column("mstart", Integer, nullable=False),  # the day number of the month's first day
    Column("region_id", Integer, nullable=False),  # 0: none
    Column("brand_id", Integer, nullable=False),
    Column("member", SmallInteger, nullable=False),  # the customer's membership at refresh
    Column("orders", Integer, nullable=False),
    Column("sales", Money, nullable=False),
    Column("refunds", Money, nullable=False),  # each order's refunds, at most its total
    *_marks,
    Index("ix_dashboard_activity_day", "day"),
    # A store manager's figures read their stores' rows of the period, not every store's
    # (migration 0013): at a million customers a month of one store is 26k of 220k rows.
    Index("ix_dashboard_activity_store_id_day", "store_id", "day"),
)

# The same per category bought (order lines), with marks within the category.
dashboard_category_activity = Table(
    "dashboard_category_activity",
    metadata,
    Column("customer_id", IdType, primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("category", String(64), primary_key=True),  # "": lines without a category
    Column("store_id", Integer, primary_key=True),
    Column("channel_id", Integer, primary_key=True),
    Column("month", Integer, nullable=False),
    Column("mstart", Integer, nullable=False),
    Column("region_id", Integer, nullable=False),
    Column("brand_id", Integer, nullable=False),
    Column("member", SmallInteger, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("quantity", Quantity, nullable=False),
    Column("amount", Money, nullable=False),  # line amounts, after line discounts
    Column("refunds", Money, nullable=False),  # returned line amounts, at most the line's
    Column("category_p1", Integer, nullable=False),
    Column("category_p2", Integer, nullable=False),
    Column("category_c", Integer, nullable=False),
    Index("ix_dashboard_category_activity_day", "day"),
)

# Sales per local day, store, channel and buyer: m(ember), n(on-member customer), g(uest).
dashboard_sales_daily = Table(
    "dashboard_sales_daily",
    metadata,
    Column("day", Integer, primary_key=True),
    Column("store_id", Integer, primary_key=True),
    Column("channel_id", Integer, primary_key=True),
    Column("buyer", String(1), primary_key=True),
    Column("month", Integer, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("sales", Money, nullable=False),
    Column("refunds", Money, nullable=False),
)

dashboard_category_daily = Table(
    "dashboard_category_daily",
    metadata,
    Column("day", Integer, primary_key=True),
    Column("store_id", Integer, primary_key=True),
    Column("channel_id", Integer, primary_key=True),
    Column("buyer", String(1), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("month", Integer, nullable=False),
    Column("orders", Integer, nullable=False),
    Column("quantity", Quantity, nullable=False),
    Column("amount", Money, nullable=False),
    Column("refunds", Money, nullable=False),
)

# Distinct customers per whole calendar bucket (grain d, w, m; bucket: the day number, the
# Monday's day number, the month index) per kind and key.
dashboard_reach_buckets = Table(
    "dashboard_reach_buckets",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("grain", String(1), primary_key=True),
    Column("bucket", Integer, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("member", SmallInteger, primary_key=True),
    Column("customers", Integer, nullable=False),
    Column("new_customers", Integer, nullable=False),
    Column("repeat_customers", Integer, nullable=False),
)

# Monthly cells for ranges of many months: customers counted per month by their first row in
# the month and its previous purchase day (ref "p1"), the day before that ("p2"), and the
# customers with a second purchase day in the month by the first row's previous day ("m").
# Coarse: the reference day's month (-1: none); fine: the reference day itself.
dashboard_reach_months = Table(
    "dashboard_reach_months",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("month", Integer, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("member", SmallInteger, primary_key=True),
    Column("ref", String(2), primary_key=True),
    Column("ref_month", Integer, primary_key=True),
    Column("customers", Integer, nullable=False),
)

dashboard_reach_month_days = Table(
    "dashboard_reach_month_days",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("ref_day", Integer, primary_key=True),
    Column("month", Integer, primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("member", SmallInteger, primary_key=True),
    Column("ref", String(2), primary_key=True),
    Column("customers", Integer, nullable=False),
)

# Acquisition cohorts: customers whose first purchase at the key was in ``cohort`` and who
# bought there again ``k`` months later (k = 0: the cohort's size).
dashboard_cohorts = Table(
    "dashboard_cohorts",
    metadata,
    Column("kind", String(8), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("cohort", Integer, primary_key=True),
    Column("member", SmallInteger, primary_key=True),
    Column("k", Integer, primary_key=True),
    Column("customers", Integer, nullable=False),
)

# Customers per RFM segment (of the scope) and lifecycle stage, from the last analytics refresh.
dashboard_structure = Table(
    "dashboard_structure",
    metadata,
    Column("scope", String(48), primary_key=True),
    Column("segment", String(24), primary_key=True),
    Column("stage", String(16), primary_key=True),  # "none": no stage computed yet
    Column("member", SmallInteger, primary_key=True),
    Column("customers", Integer, nullable=False),
)

# Every refresh: when, how (full or incremental), what it touched, how long it took. The last
# one's ``as_of`` is where the next incremental refresh looks for changes.
dashboard_refreshes = Table(
    "dashboard_refreshes",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("as_of", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("mode", String(12), nullable=False),  # full | incremental
    Column("customers", Integer, nullable=False, server_default="0"),
    Column("guest_days", Integer, nullable=False, server_default="0"),
    Column("duration_ms", Integer, nullable=False, server_default="0"),
    Column("signature", JSONType, nullable=False),  # stores and zones; RFM/lifecycle state
    Column("actor", String(120), nullable=False),
)

# Promotions an owner defines, compared on the dashboards with the same number of days before.
promotions = Table(
    "promotions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(120), nullable=False),
    Column("starts_on", Date, nullable=False),
    Column("ends_on", Date, nullable=False),
    Column("store_id", ForeignKey("stores.id"), nullable=True, index=True),
    Column("brand_id", ForeignKey("brands.id"), nullable=True, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
    Index("ix_promotions_starts_on", "starts_on"),
)
