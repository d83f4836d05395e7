"""Tables of cross-sell: association rules, per-customer next-best products and the
evaluation runs of the recommender against a popularity baseline."""

from sqlalchemy import (
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata

# Replaced per (scope, level) by each refresh. scope: "overall" or "store:CODE"; level: sku |
# category. Counts are distinct orders (baskets).
crosssell_rules = Table(
    "crosssell_rules",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("scope", String(80), nullable=False),
    Column("level", String(8), nullable=False),
    Column("antecedent", String(64), nullable=False),
    Column("consequent", String(64), nullable=False),
    Column("support", Float, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("lift", Float, nullable=False),
    Column("pair_count", Integer, nullable=False),
    Column("antecedent_count", Integer, nullable=False),
    Column("consequent_count", Integer, nullable=False),
    Column("basket_count", Integer, nullable=False),
    Column("min_support", Float, nullable=False),
    Column("min_confidence", Float, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
    UniqueConstraint("scope", "level", "antecedent", "consequent",
                     name="uq_crosssell_rules_pair"),
    Index("ix_crosssell_rules_scope_level_lift", "scope", "level", "lift"),
)

# The top products per customer, replaced wholesale by each `refresh_recommendations`.
# source: rules (scored from the rules their purchases trigger) | popular (the fallback).
customer_recommendations = Table(
    "customer_recommendations",
    metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("sku", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("source", String(8), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("computed_at", UTCDateTime, nullable=False),
)

# Every `patron analytics recommend-evaluate`: hit rate at k of the recommender and of the
# popularity baseline on the customers who bought in the holdout period.
crosssell_evaluation_runs = Table(
    "crosssell_evaluation_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("computed_at", UTCDateTime, nullable=False),
    Column("cutoff", Date, nullable=False),
    Column("holdout_days", Integer, nullable=False),
    Column("k", Integer, nullable=False),
    Column("customers", Integer, nullable=False),
    Column("hit_rate", Float, nullable=True),
    Column("baseline_hit_rate", Float, nullable=True),
    Column("details", JSONType, nullable=False, default=dict),
    Column("actor", String(120), nullable=False),
)
