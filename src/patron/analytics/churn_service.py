"""Churn-risk use cases: features as of a cut-off day, fit, evaluate on a holdout, score, read.

Features come set-based from SQL, one row per customer: the CLV module's purchase summary
(:func:`patron.analytics.clv_service.purchase_summary`: local purchase days, first and last,
and purchase days after a date) is reused twice, once for the cut-off itself and once from the
start of the trend window, and one more ``GROUP BY`` adds spend, refunds and channels. The
label of a customer as of a cut-off is "no purchase day within the horizon after it". The model
(:mod:`patron.analytics.churn`) is fitted on customers as of ``cutoff - horizon`` whose outcome
is known by ``cutoff``. See docs/churn.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Connection, delete, distinct, func, insert, select, text

from patron.analytics import churn, clv
from patron.analytics.churn_tables import churn_model_runs, customer_churn_scores
from patron.analytics.clv_service import purchase_summary
from patron.config import get_settings
from patron.customers.queries import visible_customer
from patron.db import UnitOfWork, bulk_insert, utcnow
from patron.errors import FieldError, Forbidden, ValidationFailed
from patron.orders.tables import orders, returns
from patron.security import audit
from patron.security.model import Actor

DEFAULT_HORIZON_DAYS = 90
MIN_HORIZON_DAYS, MAX_HORIZON_DAYS = 7, 730
TREND_DAYS = 90  # "recent" activity: purchase days in the 90 days up to the cut-off
DEFAULT_POPULATION_INTERVAL = 30.0
L2 = 1e-3
INSERT_CHUNK = 5000
MAX_EVALUATIONS = 100


@dataclass(frozen=True)
class Snapshot:
    """Every customer with a purchase by ``cutoff``: their features and, when the period
    after the cut-off was given, whether they churned (no purchase day within it)."""

    cutoff: dt.date
    customer_id: np.ndarray
    features: churn.CustomerFeatures
    churned: np.ndarray  # bool; meaningful only when the outcome was observed

    def __len__(self) -> int:
        return int(self.customer_id.size)


def _zone() -> ZoneInfo:
    return ZoneInfo(get_settings().default_timezone)


def _local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), _zone()).astimezone(dt.UTC)


def _align(ids: np.ndarray, other_ids: np.ndarray, values: np.ndarray, fill: float
           ) -> np.ndarray:
    """``values`` (rows of ``other_ids``, ascending) in the order of ``ids``; ``fill`` where
    a customer has no row."""
    out = np.full(ids.shape, fill, dtype=np.float64)
    if other_ids.size == 0:
        return out
    pos = np.clip(np.searchsorted(other_ids, ids), 0, other_ids.size - 1)
    found = other_ids[pos] == ids
    out[found] = values[pos[found]]
    return out


def _spend_and_channels(conn: Connection, before: dt.datetime
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per customer (ascending ids): spend, distinct channels and refunds recorded before the
    moment ``before`` (refunds by their own date, so none from after the cut-off leaks in).
    Amounts in yuan."""
    spend = conn.execute(
        select(orders.c.customer_id, func.sum(orders.c.total_amount),
               func.count(distinct(orders.c.channel_id)))
        .where(orders.c.customer_id.is_not(None), orders.c.purchased_at < before)
        .group_by(orders.c.customer_id).order_by(orders.c.customer_id)).all()
    refunds = conn.execute(
        select(orders.c.customer_id, func.sum(returns.c.amount))
        .join(orders, orders.c.id == returns.c.order_id)
        .where(orders.c.customer_id.is_not(None), orders.c.purchased_at < before,
               returns.c.returned_at < before)
        .group_by(orders.c.customer_id).order_by(orders.c.customer_id)).all()
    ids = np.array([r[0] for r in spend], dtype=np.int64)
    gross = np.array([float(r[1] or 0) for r in spend], dtype=np.float64)
    channels = np.array([int(r[2]) for r in spend], dtype=np.float64)
    refunded = _align(ids, np.array([r[0] for r in refunds], dtype=np.int64),
                      np.array([float(r[1] or 0) for r in refunds], dtype=np.float64), 0.0)
    return ids, gross, channels, refunded


def snapshot(*, uow: UnitOfWork, cutoff: dt.date, horizon_days: int,
             outcome_known: bool) -> Snapshot:
    """Features of every customer as of the end of ``cutoff`` (a local day) and, when
    ``outcome_known``, whether each made no purchase within ``horizon_days`` after it."""
    outcome_end = cutoff + dt.timedelta(days=horizon_days) if outcome_known else cutoff
    summary = purchase_summary(uow=uow, calibration_end=cutoff, holdout_end=outcome_end)
    if len(summary) == 0:
        params = {"cutoff": cutoff.isoformat()}
        raise ValidationFailed("churn_no_customers", params=params, fields=[
            FieldError("cutoff", "churn_no_customers", params)])
    ids = summary.customer_id
    end = (cutoff - dt.date(1970, 1, 1)).days
    n = summary.purchase_days.astype(np.float64)
    recency = (end - summary.last_day).astype(np.float64)
    tenure = (end - summary.first_day).astype(np.float64)

    # Purchase days in the trend window: the same summary, its "holdout" being the window.
    window_start = cutoff - dt.timedelta(days=TREND_DAYS)
    earlier = purchase_summary(uow=uow, calibration_end=window_start, holdout_end=cutoff)
    recent = _align(ids, earlier.customer_id, earlier.holdout_days.astype(np.float64), -1.0)
    recent = np.where(recent < 0, n, recent)  # first purchase within the window: all recent

    spend_ids, gross, channels, refunded = _spend_and_channels(
        uow.c, _local_midnight(cutoff + dt.timedelta(days=1)))
    gross_a = _align(ids, spend_ids, gross, 0.0)
    refunded_a = _align(ids, spend_ids, refunded, 0.0)
    channels_a = _align(ids, spend_ids, channels, 1.0)

    x, t_x, age = summary.model_inputs("week")
    try:
        bg = clv.fit_bgnbd(x, t_x, age)
        alive = clv.probability_alive(bg, x, t_x, age)
        expected = clv.expected_purchases(bg, horizon_days / 7.0, x, t_x, age)
    except clv.FitFailed:
        alive = np.full(ids.shape, np.nan)  # the features fall back to neutral values
        expected = np.full(ids.shape, np.nan)

    repeat = n > 1
    intervals = (tenure - recency)[repeat] / (n[repeat] - 1)
    population = float(np.median(intervals)) if intervals.size else DEFAULT_POPULATION_INTERVAL
    features = churn.CustomerFeatures(
        recency_days=recency, purchase_days=n, tenure_days=tenure,
        net_spend=gross_a - refunded_a, gross_spend=gross_a, refunded=refunded_a,
        channels=channels_a, recent_purchase_days=recent, probability_alive=alive,
        expected_purchases=expected, population_interval=max(population, 1.0))
    return Snapshot(cutoff=cutoff, customer_id=ids, features=features,
                    churned=summary.holdout_days == 0)


@dataclass(frozen=True)
class FittedChurnModels:
    model: churn.LogisticModel
    naive: churn.LogisticModel  # log(1 + days since last purchase) alone, for probabilities
    train: Snapshot


def _naive_inputs(s: Snapshot) -> np.ndarray:
    return np.log1p(s.features.recency_days).reshape(-1, 1)


def fit(*, uow: UnitOfWork, cutoff: dt.date, horizon_days: int) -> FittedChurnModels:
    """Fit on the customers as of ``cutoff - horizon`` with their outcome up to ``cutoff``."""
    train = snapshot(uow=uow, cutoff=cutoff - dt.timedelta(days=horizon_days),
                     horizon_days=horizon_days, outcome_known=True)
    try:
        model = churn.fit_logistic(train.features.matrix(), train.churned, l2=L2)
        naive = churn.fit_logistic(_naive_inputs(train), train.churned, l2=L2)
    except churn.FitFailed as exc:
        raise ValidationFailed("churn_fit_failed", params={"reason": str(exc)}) from exc
    return FittedChurnModels(model, naive, train)


def _check_horizon(horizon_days: int) -> None:
    if not MIN_HORIZON_DAYS <= horizon_days <= MAX_HORIZON_DAYS:
        raise ValidationFailed(fields=[FieldError(
            "horizon_days", "churn_bad_horizon",
            {"min": MIN_HORIZON_DAYS, "max": MAX_HORIZON_DAYS})])


def _check_may_analyse(actor: Actor) -> None:
    if not actor.can("dashboard.read") or actor.store_ids is not None:
        raise Forbidden("churn_forbidden")


def _check_fit_after_first_purchase(conn: Connection, cutoff: dt.date, horizon_days: int,
                                    field: str) -> None:
    """The model learns from customers as of ``cutoff - horizon``: someone must have bought by
    then. Refused with the earliest cut-off that works."""
    from patron.analytics.service import first_purchase_day

    first = first_purchase_day(conn)
    if first is not None and cutoff - dt.timedelta(days=horizon_days) < first:
        params = {"first": first.isoformat(), "horizon_days": horizon_days,
                  "earliest": (first + dt.timedelta(days=horizon_days)).isoformat()}
        raise ValidationFailed("churn_cutoff_too_early", params=params,
                               fields=[FieldError(field, "churn_cutoff_too_early", params)])


def _last_purchase_day(conn: Connection) -> dt.date | None:
    last = conn.execute(select(func.max(orders.c.purchased_at))).scalar_one()
    return None if last is None else last.astimezone(_zone()).date()


def _model_json(fitted: FittedChurnModels) -> dict[str, Any]:
    return {"features": list(churn.FEATURES),
            "logistic": fitted.model.as_dict(churn.FEATURES),
            "naive": fitted.naive.as_dict(("log_recency",))}


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    def r(v: Any) -> Any:
        return float(f"{v:.6g}") if isinstance(v, float) else v
    return {"auc": r(metrics["auc"]), "brier": r(metrics["brier"]),
            "calibration": [{k: r(v) for k, v in row.items()} for row in metrics["calibration"]]}


def evaluate_churn(*, uow: UnitOfWork, actor: Actor, cutoff: dt.date,
                   horizon_days: int = DEFAULT_HORIZON_DAYS) -> dict[str, Any]:
    """Fit as of ``cutoff - horizon`` (outcomes up to ``cutoff``), score every customer as of
    ``cutoff`` and compare with what happened in the ``horizon`` days after it: AUC, Brier
    score and calibration by deciles, for the model and for the naive rule (days since the
    last purchase). Needs purchases recorded up to ``cutoff + horizon``. Stored and audited."""
    _check_horizon(horizon_days)
    _check_may_analyse(actor)
    holdout_end = cutoff + dt.timedelta(days=horizon_days)
    last = _last_purchase_day(uow.c)
    if last is None or last < holdout_end:
        params = {"needed": holdout_end.isoformat(), "last": last.isoformat() if last else "-"}
        raise ValidationFailed("churn_holdout_incomplete", params=params, fields=[
            FieldError("cutoff", "churn_holdout_incomplete", params)])
    _check_fit_after_first_purchase(uow.c, cutoff, horizon_days, "cutoff")
    fitted = fit(uow=uow, cutoff=cutoff, horizon_days=horizon_days)
    test = snapshot(uow=uow, cutoff=cutoff, horizon_days=horizon_days, outcome_known=True)
    predicted = fitted.model.predict(test.features.matrix())
    naive_probability = fitted.naive.predict(_naive_inputs(test))
    metrics = {
        "model": _rounded(churn.evaluate(predicted, test.churned)),
        "naive": _rounded(churn.evaluate(naive_probability, test.churned,
                                         scores=test.features.recency_days)),
    }
    train = fitted.train
    result: dict[str, Any] = {
        "cutoff": cutoff, "horizon_days": horizon_days,
        "train": {"cutoff": train.cutoff, "outcome_to": cutoff, "customers": len(train),
                  "churn_rate": round(float(train.churned.mean()), 6)},
        "test": {"cutoff": cutoff, "outcome_to": holdout_end, "customers": len(test),
                 "churn_rate": round(float(test.churned.mean()), 6)},
        **metrics,
        "coefficients": {k: round(v, 6) for k, v in zip(
            churn.FEATURES, fitted.model.coefficients.tolist(), strict=True)},
    }
    run_id = _store_run(uow, actor, fitted, purpose="evaluate", cutoff=cutoff,
                        horizon_days=horizon_days, test_customers=len(test), metrics=metrics)
    result["run_id"] = run_id
    audit.record(uow.c, actor, "analytics.churn_evaluated", entity="churn_model_run",
                 entity_id=run_id, details={"cutoff": cutoff.isoformat(),
                                            "horizon_days": horizon_days,
                                            "auc": metrics["model"]["auc"],
                                            "naive_auc": metrics["naive"]["auc"]})
    uow.commit()
    return result


def _store_run(uow: UnitOfWork, actor: Actor, fitted: FittedChurnModels, *, purpose: str,
               cutoff: dt.date, horizon_days: int, test_customers: int | None,
               metrics: dict[str, Any] | None) -> int:
    return int(uow.c.execute(insert(churn_model_runs).values(
        fitted_at=utcnow(), purpose=purpose, cutoff=cutoff, horizon_days=horizon_days,
        train_customers=len(fitted.train),
        train_churn_rate=float(fitted.train.churned.mean()), test_customers=test_customers,
        model=_model_json(fitted), metrics=metrics, actor=actor.name[:120],
    ).returning(churn_model_runs.c.id)).scalar_one())


def refresh_churn_scores(*, uow: UnitOfWork, actor: Actor, as_of: dt.date | None = None,
                         horizon_days: int = DEFAULT_HORIZON_DAYS) -> dict[str, Any]:
    """Fit as of ``as_of - horizon`` (outcomes up to ``as_of``, default today local) and
    replace every customer's score as of ``as_of``: the probability of no purchase within
    the horizon. Idempotent (the same day gives the same rows); stored and audited."""
    _check_horizon(horizon_days)
    _check_may_analyse(actor)
    as_of = as_of or dt.datetime.now(_zone()).date()
    _check_fit_after_first_purchase(uow.c, as_of, horizon_days, "as_of")
    if uow.dialect == "postgresql":
        # Concurrent refreshes take turns (each replaces every row); readers are not blocked.
        uow.c.execute(text("LOCK TABLE customer_churn_scores IN SHARE ROW EXCLUSIVE MODE"))
    fitted = fit(uow=uow, cutoff=as_of, horizon_days=horizon_days)
    current = snapshot(uow=uow, cutoff=as_of, horizon_days=horizon_days, outcome_known=False)
    probability = fitted.model.predict(current.features.matrix())
    run_id = _store_run(uow, actor, fitted, purpose="score", cutoff=as_of,
                        horizon_days=horizon_days, test_customers=None, metrics=None)
    scored_at = utcnow()
    f = current.features
    interval = f.usual_interval()
    uow.c.execute(delete(customer_churn_scores))
    ids = current.customer_id.tolist()
    for start in range(0, len(ids), INSERT_CHUNK):
        stop = min(start + INSERT_CHUNK, len(ids))
        bulk_insert(uow.c, customer_churn_scores, [
            {"customer_id": ids[i], "run_id": run_id, "scored_at": scored_at, "as_of": as_of,
             "horizon_days": horizon_days, "probability": float(probability[i]),
             "days_since_last_purchase": int(f.recency_days[i]),
             "usual_interval_days": round(float(interval[i]), 2),
             "probability_alive": (float(f.probability_alive[i])
                                   if np.isfinite(f.probability_alive[i]) else None)}
            for i in range(start, stop)])
    high = int((probability >= 0.5).sum())
    audit.record(uow.c, actor, "analytics.churn_scores_refreshed", entity="churn_model_run",
                 entity_id=run_id, details={"as_of": as_of.isoformat(),
                                            "horizon_days": horizon_days,
                                            "customers": len(ids)})
    uow.commit()
    return {"run_id": run_id, "as_of": as_of, "horizon_days": horizon_days,
            "customers": len(ids), "train_customers": len(fitted.train),
            "train_churn_rate": round(float(fitted.train.churned.mean()), 6),
            "mean_probability": round(float(probability.mean()), 6) if ids else None,
            "at_least_half": high}


# --- readers ----------------------------------------------------------------------------------

def customer_churn(conn: Connection, *, actor: Actor, customer_id: int) -> dict[str, Any]:
    """One customer's current churn score (``score`` is null before the first refresh or for
    a customer without purchases); ``NotFound`` outside the actor's scope."""
    if not actor.can("dashboard.read"):
        raise Forbidden("forbidden", params={"permission": "dashboard.read"})
    visible_customer(conn, actor, customer_id)
    row = conn.execute(select(customer_churn_scores).where(
        customer_churn_scores.c.customer_id == customer_id)).mappings().first()
    score = None
    if row is not None:
        score = {k: row[k] for k in ("probability", "as_of", "horizon_days",
                                     "days_since_last_purchase", "usual_interval_days",
                                     "probability_alive", "scored_at", "run_id")}
    return {"customer_id": customer_id, "churn": score}


def churn_evaluations(conn: Connection, *, actor: Actor, limit: int = 10) -> dict[str, Any]:
    """The latest evaluation runs, newest first, with their holdout measures."""
    _check_may_analyse(actor)
    limit = max(1, min(limit, MAX_EVALUATIONS))
    r = churn_model_runs.c
    rows = conn.execute(select(churn_model_runs).where(r.purpose == "evaluate")
                        .order_by(r.fitted_at.desc(), r.id.desc()).limit(limit)).mappings()
    return {"evaluations": [
        {"run_id": row["id"], "fitted_at": row["fitted_at"], "cutoff": row["cutoff"],
         "horizon_days": row["horizon_days"], "train_customers": row["train_customers"],
         "train_churn_rate": row["train_churn_rate"], "test_customers": row["test_customers"],
         "model": (row["metrics"] or {}).get("model"),
         "naive": (row["metrics"] or {}).get("naive"), "actor": row["actor"]}
        for row in rows]}
