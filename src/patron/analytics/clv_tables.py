"""Tables of the lifetime-value models: fitted runs and per-customer predictions."""

from sqlalchemy import Column, Date, Float, ForeignKey, Index, Integer, String, Table

from patron.db import IdType, JSONType, Money, UTCDateTime, metadata

# Every fit (`patron analytics clv`, `patron analytics predict`): the fitted parameters and,
# when there was a holdout period, how well the predictions matched it.
clv_model_runs = Table(
    "clv_model_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("fitted_at", UTCDateTime, nullable=False),
    Column("calibration_end", Date, nullable=False),
    Column("holdout_end", Date, nullable=True),
    Column("period", String(8), nullable=False),  # day | week: the time unit of the parameters
    Column("customers", Integer, nullable=False),
    Column("bgnbd", JSONType, nullable=False),  # {"r", "alpha", "a", "b"}
    Column("gamma_gamma", JSONType, nullable=True),  # {"p", "q", "gamma"}
    Column("holdout", JSONType, nullable=True),  # mae, rmse, totals, correlation
    Column("purpose", String(16), nullable=False),  # evaluate | predict
    Column("actor", String(120), nullable=False),
)

# One row per customer, replaced wholesale by each `refresh_predictions`. Expected purchases
# count purchase days; the next purchase date is the local day by which one more purchase is
# expected (null when not within two years).
customer_predictions = Table(
    "customer_predictions",
    metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("run_id", ForeignKey("clv_model_runs.id"), nullable=False, index=True),
    Column("fitted_at", UTCDateTime, nullable=False),
    Column("calibration_end", Date, nullable=False),
    # Null where the numerics could not reach a value (never seen on real histories).
    Column("probability_alive", Float, nullable=True),
    Column("expected_purchases_30d", Float, nullable=True),
    Column("expected_purchases_90d", Float, nullable=True),
    Column("expected_next_purchase", Date, nullable=True),
    Column("expected_average_spend", Money, nullable=True),
    Column("clv_12m", Money, nullable=True),
    Index("ix_customer_predictions_clv_12m", "clv_12m"),
)
