"""Tables of the churn-risk model: fitted runs (evaluations and score refreshes) and each
customer's current score."""

from sqlalchemy import Column, Date, Float, ForeignKey, Index, Integer, String, Table

from patron.db import IdType, JSONType, UTCDateTime, metadata

# Every fit: `patron analytics churn-evaluate` (purpose "evaluate", with the holdout measures
# of the model and of the naive days-since-last-purchase rule) and `patron analytics
# churn-score` (purpose "score").
churn_model_runs = Table(
    "churn_model_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("fitted_at", UTCDateTime, nullable=False),
    Column("purpose", String(16), nullable=False),  # evaluate | score
    Column("cutoff", Date, nullable=False),  # scored (or evaluated) as of this local day
    Column("horizon_days", Integer, nullable=False),
    Column("train_customers", Integer, nullable=False),
    Column("train_churn_rate", Float, nullable=False),
    Column("test_customers", Integer, nullable=True),
    Column("model", JSONType, nullable=False),  # intercept, coefficients, standardisation
    Column("metrics", JSONType, nullable=True),  # {"model": {...}, "naive": {...}}
    Column("actor", String(120), nullable=False),
    Index("ix_churn_model_runs_purpose_fitted_at", "purpose", "fitted_at"),
)

# One row per customer with a purchase by the as-of day, replaced wholesale by each
# `refresh_churn_scores`.
customer_churn_scores = Table(
    "customer_churn_scores",
    metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("run_id", ForeignKey("churn_model_runs.id"), nullable=False, index=True),
    Column("scored_at", UTCDateTime, nullable=False),
    Column("as_of", Date, nullable=False),
    Column("horizon_days", Integer, nullable=False),
    Column("probability", Float, nullable=False),  # of no purchase within the horizon
    Column("days_since_last_purchase", Integer, nullable=False),
    Column("usual_interval_days", Float, nullable=False),
    Column("probability_alive", Float, nullable=True),
    Index("ix_customer_churn_scores_probability", "probability"),
)
