"""Readers for the analytics pages that the model services do not offer: the lifetime-value
runs, how predicted value and churn scores spread over the customers. Set-based: one grouped
query each, whatever the number of customers.

Like the model services they need ``dashboard.read`` and every store: the models are fitted on
the whole customer base, so a store manager does not get them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Date, case, func, literal, select, type_coerce

from patron.analytics.churn_tables import customer_churn_scores
from patron.analytics.clv_tables import clv_model_runs, customer_predictions
from patron.db import Money, UTCDateTime
from patron.errors import Forbidden
from patron.security.model import Actor

# Bands of predicted 12-month value (yuan): [lower, upper); the last has no upper bound.
CLV_BANDS = (Decimal(0), Decimal(50), Decimal(100), Decimal(200), Decimal(500), Decimal(1000),
             Decimal(2000))
CHURN_BANDS = 10  # probability deciles 0-10 %, ..., 90-100 %


def _latest(column: Any) -> Any:
    """``max()`` of a timestamp, read back as an aware datetime on SQLite too."""
    return type_coerce(func.max(column), UTCDateTime)


def _check(actor: Actor, code: str) -> None:
    if not actor.can("dashboard.read") or actor.store_ids is not None:
        raise Forbidden(code)


def clv_runs(conn: Connection, *, actor: Actor, limit: int = 10) -> list[dict[str, Any]]:
    """The latest model fits, newest first: parameters and, for evaluations, holdout accuracy."""
    _check(actor, "clv_forbidden")
    r = clv_model_runs.c
    rows = conn.execute(select(clv_model_runs).order_by(r.fitted_at.desc(), r.id.desc())
                        .limit(max(1, min(int(limit), 100)))).mappings()
    return [{"run_id": int(row["id"]), "fitted_at": row["fitted_at"],
             "calibration_end": row["calibration_end"], "holdout_end": row["holdout_end"],
             "period": row["period"], "customers": int(row["customers"]),
             "purpose": row["purpose"], "actor": row["actor"],
             "bgnbd": dict(row["bgnbd"] or {}),
             "gamma_gamma": dict(row["gamma_gamma"]) if row["gamma_gamma"] else None,
             "holdout": dict(row["holdout"]) if row["holdout"] else None} for row in rows]


def clv_overview(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    """The stored predictions at a glance: how many customers, their mean probability of being
    active, the total and mean 12-month value, and customers per value band."""
    _check(actor, "clv_forbidden")
    p = customer_predictions.c
    total = conn.execute(select(
        func.count(), func.avg(p.probability_alive),
        type_coerce(func.sum(p.clv_12m), Money), func.count(p.clv_12m),
        _latest(p.fitted_at), type_coerce(func.max(p.calibration_end), Date))).one()
    customers, alive, value, valued, fitted_at, calibration_end = total
    band = case(*((p.clv_12m < upper, literal(i))
                  for i, upper in enumerate(CLV_BANDS[1:])), else_=literal(len(CLV_BANDS) - 1))
    counts = {int(b): (int(n), v) for b, n, v in conn.execute(
        select(band.label("band"), func.count(), type_coerce(func.sum(p.clv_12m), Money))
        .where(p.clv_12m.is_not(None)).group_by(band))}
    bands = []
    for i, lower in enumerate(CLV_BANDS):
        upper = CLV_BANDS[i + 1] if i + 1 < len(CLV_BANDS) else None
        n, v = counts.get(i, (0, None))
        bands.append({"lower": lower, "upper": upper, "customers": n,
                      "value": v if v is not None else Decimal("0.00")})
    mean_value = (value / valued).quantize(Decimal("0.01")) if valued and value is not None \
        else None
    return {"customers": int(customers), "fitted_at": fitted_at,
            "calibration_end": calibration_end,
            "mean_probability_alive": round(float(alive), 4) if alive is not None else None,
            "total_clv_12m": value if value is not None else Decimal("0.00"),
            "mean_clv_12m": mean_value, "bands": bands}


def churn_score_bands(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    """Customers per decile of churn probability in the current scores."""
    _check(actor, "churn_forbidden")
    s = customer_churn_scores.c
    customers, as_of, horizon, scored_at, mean = conn.execute(select(
        func.count(), type_coerce(func.max(s.as_of), Date), func.max(s.horizon_days),
        _latest(s.scored_at), func.avg(s.probability))).one()
    band = case((s.probability >= 1, literal(CHURN_BANDS - 1)),
                else_=func.floor(s.probability * CHURN_BANDS))
    found = {int(b): int(n) for b, n in conn.execute(
        select(band.label("band"), func.count()).group_by(band))}
    return {"customers": int(customers), "as_of": as_of, "horizon_days": horizon,
            "scored_at": scored_at,
            "mean_probability": round(float(mean), 4) if mean is not None else None,
            "bands": [{"lower": i / CHURN_BANDS, "upper": (i + 1) / CHURN_BANDS,
                       "customers": found.get(i, 0)} for i in range(CHURN_BANDS)]}
