"""Lifetime-value use cases: summarise purchase histories in SQL, fit, evaluate, store.

The per-customer summary (repeat purchases x, recency t_x, age T, average repeat spend) is one
GROUP BY over ``orders``: a purchase period is a local day (the store's time zone, or the
default one for orders without a store), several orders on one day count as one purchase with
their amounts summed, and repeat purchases are the purchase days after the first. Only the
summary, one row per customer, reaches Python. ``period`` (day | week) is the unit in which
time is measured (at day resolution) and in which the fitted parameters are expressed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, insert, select, text

from patron.analytics import clv
from patron.analytics.clv_tables import clv_model_runs, customer_predictions
from patron.config import get_settings
from patron.db import UnitOfWork, UTCDateTime, bulk_insert, utcnow
from patron.errors import FieldError, Forbidden, ValidationFailed
from patron.security import audit
from patron.security.model import Actor

Period = Literal["day", "week"]
PERIOD_DAYS: dict[str, int] = {"day": 1, "week": 7}
EPOCH = dt.date(1970, 1, 1)
MONTH_DAYS = 365.25 / 12
NEXT_PURCHASE_HORIZON_DAYS = 730
INSERT_CHUNK = 5000
# Local days start at most 14 hours before and 12 after UTC midnight; orders are pre-filtered
# on the indexed UTC timestamp with this margin, then exactly on their local day.
_TZ_MARGIN = dt.timedelta(hours=15)


@dataclass(frozen=True)
class Summary:
    """One row per customer who bought by the calibration end; days are day numbers since
    1970-01-01 (local), spend in yuan."""

    customer_id: np.ndarray
    purchase_days: np.ndarray  # distinct purchase days up to the calibration end
    first_day: np.ndarray
    last_day: np.ndarray
    repeat_spend: np.ndarray  # spend on the purchase days after the first
    holdout_days: np.ndarray  # distinct purchase days after the calibration end
    calibration_end: dt.date
    holdout_end: dt.date | None

    def __len__(self) -> int:
        return int(self.customer_id.size)

    def model_inputs(self, period: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        unit = PERIOD_DAYS[period]
        end = _day_number(self.calibration_end)
        x = (self.purchase_days - 1).astype(np.float64)
        t_x = (self.last_day - self.first_day) / unit
        age = (end - self.first_day) / unit
        return x, t_x.astype(np.float64), age.astype(np.float64)

    def average_repeat_spend(self) -> np.ndarray:
        x = self.purchase_days - 1
        return np.divide(self.repeat_spend, x, out=np.zeros(x.shape), where=x > 0)


def _day_number(day: dt.date) -> int:
    return (day - EPOCH).days


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _sqlite_local_day(stamp: str | None, tz: str) -> int | None:
    """SQLite has no time zone database: the local day of a stored UTC timestamp, computed by
    the engine row by row through this function inside the GROUP BY."""
    if stamp is None:
        return None
    utc = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC)
    return (utc.astimezone(_zone(tz)).date() - EPOCH).days


def _fixed_offsets(conn: Connection, default_tz: str) -> dict[str, int] | None:
    """Each time zone in use and its UTC offset in seconds, when none of them changes offset
    over the span of the orders (no daylight saving: China, and most of Asia); else None."""
    from patron.orders.tables import orders
    from patron.org.tables import stores

    first, last = conn.execute(select(func.min(orders.c.purchased_at),
                                      func.max(orders.c.purchased_at))).one()
    if first is None or last is None:
        return {default_tz: 0}
    names = {default_tz} | {str(z) for z in conn.execute(
        select(stores.c.timezone).distinct()).scalars() if z}
    offsets: dict[str, int] = {}
    days = (last - first).days + 2
    for name in names:
        zone = _zone(name)
        seen = {zone.utcoffset(first + dt.timedelta(days=d)) for d in range(-1, days)}
        if len(seen) != 1:
            return None
        offset = seen.pop()
        offsets[name] = int(offset.total_seconds()) if offset is not None else 0
    return offsets


def _local_day_sql(conn: Connection, default_tz: str) -> tuple[str, dict[str, Any]]:
    """The SQL for an order's local day number, and its parameters."""
    if conn.dialect.name == "postgresql":
        return ("(CAST(o.purchased_at AT TIME ZONE COALESCE(s.timezone, :tz) AS date)"
                " - DATE '1970-01-01')"), {}
    offsets = _fixed_offsets(conn, default_tz)
    if offsets is not None:
        # Integer seconds, so a purchase at local midnight falls on the right day exactly.
        cases = " ".join(f"WHEN :zone_{i} THEN :offset_{i}" for i in range(len(offsets)))
        params: dict[str, Any] = {}
        for i, (name, seconds) in enumerate(sorted(offsets.items())):
            params[f"zone_{i}"], params[f"offset_{i}"] = name, seconds
        return (f"((CAST(strftime('%s', o.purchased_at) AS INTEGER)"
                f" + CASE COALESCE(s.timezone, :tz) {cases} ELSE 0 END) / 86400)"), params
    conn.connection.driver_connection.create_function(  # type: ignore[union-attr]
        "patron_local_day", 2, _sqlite_local_day, deterministic=True)
    return "patron_local_day(o.purchased_at, COALESCE(s.timezone, :tz))", {}


def _summary_sql(conn: Connection, *, bounded: bool, default_tz: str
                 ) -> tuple[Any, dict[str, Any]]:
    day, day_params = _local_day_sql(conn, default_tz)
    holdout_filter = "AND d <= :holdout_end" if bounded else ""
    # Spend is net of refunds, in fen (the integers stored by the Money type).
    return text(f"""
WITH daily AS (
  SELECT o.customer_id AS cid, {day} AS d,
         SUM(o.total_amount - o.refunded_amount) AS spend
  FROM orders o LEFT JOIN stores s ON s.id = o.store_id
  WHERE o.customer_id IS NOT NULL AND o.purchased_at < :upper
  GROUP BY 1, 2
), ranked AS (
  SELECT cid, d, spend, MIN(d) OVER (PARTITION BY cid) AS first_d
  FROM daily WHERE 1 = 1 {holdout_filter}
)
SELECT cid,
       SUM(CASE WHEN d <= :end THEN 1 ELSE 0 END) AS cal_days,
       MIN(first_d) AS first_d,
       MAX(CASE WHEN d <= :end THEN d END) AS last_d,
       SUM(CASE WHEN d > first_d AND d <= :end THEN spend ELSE 0 END) AS repeat_spend,
       SUM(CASE WHEN d > :end THEN 1 ELSE 0 END) AS holdout_days,
       MAX(d) AS last_any
FROM ranked
GROUP BY cid
HAVING MIN(first_d) <= :end
ORDER BY cid
""").bindparams(bindparam("upper", type_=UTCDateTime)), day_params  # noqa: S608


def purchase_summary(*, uow: UnitOfWork, calibration_end: dt.date,
                     holdout_end: dt.date | None = None) -> Summary:
    """Summarise every customer's purchases up to ``calibration_end`` (inclusive, local days)
    and count their purchase days after it, up to ``holdout_end`` (default: the last day with
    a purchase)."""
    conn = uow.c
    bounded = holdout_end is not None
    last = holdout_end if holdout_end is not None else dt.date(9998, 12, 31)
    upper = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(0), dt.UTC) + _TZ_MARGIN
    params: dict[str, Any] = {"tz": get_settings().default_timezone,
                              "end": _day_number(calibration_end),
                              "holdout_end": _day_number(last)}
    query, day_params = _summary_sql(conn, bounded=bounded, default_tz=params["tz"])
    rows = conn.execute(query, {**params, **day_params, "upper": upper})
    # Fetched in slices into numpy: a million Python rows at once would cost hundreds of MB.
    parts = [np.array(part, dtype=np.int64).reshape(-1, 7) for part in rows.partitions(20_000)]
    data = np.concatenate(parts) if parts else np.zeros((0, 7), dtype=np.int64)
    if holdout_end is None and data.size:
        last_any = int(data[:, 6].max())
        holdout_end = EPOCH + dt.timedelta(days=last_any) if last_any > params["end"] else None
    return Summary(customer_id=data[:, 0], purchase_days=data[:, 1], first_day=data[:, 2],
                   last_day=data[:, 3], repeat_spend=data[:, 4] / 100.0,
                   holdout_days=data[:, 5], calibration_end=calibration_end,
                   holdout_end=holdout_end)


@dataclass(frozen=True)
class FittedModels:
    bgnbd: clv.BGNBDParams
    gamma_gamma: clv.GammaGammaParams | None
    customers: int
    repeat_customers: int


def fit_models(summary: Summary, period: str) -> FittedModels:
    """BG/NBD on every customer; Gamma-Gamma on those with repeat purchases whose average
    repeat spend is positive (fully refunded repeat purchases carry no spend signal)."""
    if len(summary) == 0:
        raise ValidationFailed("clv_no_customers", fields=[
            FieldError("calibration_end", "clv_no_customers")])
    x, t_x, age = summary.model_inputs(period)
    try:
        bgnbd = clv.fit_bgnbd(x, t_x, age)
    except clv.FitFailed as exc:
        raise ValidationFailed("clv_fit_failed", params={"reason": str(exc)}) from exc
    if not (x > 0).any():
        # The likelihood then peaks at r -> 0 (nobody ever buys again): no rhythm to learn.
        raise ValidationFailed("clv_no_repeat_customers", params={"customers": len(summary)},
                               fields=[FieldError("calibration_end", "clv_no_repeat_customers",
                                                  {"customers": len(summary)})])
    m = summary.average_repeat_spend()
    repeat = (x > 0) & (m > 0)
    gamma_gamma = None
    if int(repeat.sum()) >= 2:
        try:
            gamma_gamma = clv.fit_gamma_gamma(x[repeat], m[repeat])
        except clv.FitFailed:
            gamma_gamma = None  # BG/NBD predictions stand; spend and CLV stay empty
    return FittedModels(bgnbd, gamma_gamma, len(summary), int(repeat.sum()))


def _check_period(period: str) -> None:
    if period not in PERIOD_DAYS:
        raise ValidationFailed(fields=[
            FieldError("period", "clv_bad_period", {"expected": "day, week"})])


def _check_may_analyse(actor: Actor) -> None:
    if not actor.can("dashboard.read") or actor.store_ids is not None:
        raise Forbidden("clv_forbidden")


def _check_after_first_purchase(conn: Connection, end: dt.date, field: str) -> None:
    from patron.analytics.service import first_purchase_day

    first = first_purchase_day(conn)
    if first is not None and end < first:
        params = {"end": end.isoformat(), "first": first.isoformat()}
        raise ValidationFailed("clv_calibration_before_first_purchase", params=params,
                               fields=[FieldError(field, "clv_calibration_before_first_purchase",
                                                  params)])


def _rounded(params: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.6g}") for k, v in params.items()}


def evaluate_clv(*, uow: UnitOfWork, actor: Actor, calibration_end: dt.date,
                 period: str = "week", holdout_end: dt.date | None = None) -> dict[str, Any]:
    """Fit both models on purchases up to ``calibration_end`` and compare the predicted repeat
    purchases after it with the actual ones, up to ``holdout_end`` (default: the last day with
    a purchase). The run is stored and audited; returns the parameters and the accuracy."""
    _check_period(period)
    _check_may_analyse(actor)
    if holdout_end is not None and holdout_end <= calibration_end:
        raise ValidationFailed(fields=[
            FieldError("holdout_end", "clv_holdout_before_calibration")])
    _check_after_first_purchase(uow.c, calibration_end, "calibration_end")
    summary = purchase_summary(uow=uow, calibration_end=calibration_end, holdout_end=holdout_end)
    models = fit_models(summary, period)
    holdout = None
    if summary.holdout_end is not None:
        x, t_x, age = summary.model_inputs(period)
        length = (summary.holdout_end - calibration_end).days / PERIOD_DAYS[period]
        predicted = _per_customer(lambda xs, ts, As: clv.expected_purchases(
            models.bgnbd, length, xs, ts, As), x, t_x, age)
        holdout = {"from": calibration_end + dt.timedelta(days=1),
                   "to": summary.holdout_end, "length": length,
                   **clv.holdout_metrics(predicted, summary.holdout_days)}
    result: dict[str, Any] = {
        "calibration_end": calibration_end, "period": period, "customers": models.customers,
        "repeat_customers": models.repeat_customers,
        "bgnbd": _rounded(models.bgnbd.as_dict()),
        "gamma_gamma": _rounded(models.gamma_gamma.as_dict()) if models.gamma_gamma else None,
        "holdout": holdout,
    }
    run_id = _store_run(uow, actor, summary, models, period, holdout, purpose="evaluate")
    result["run_id"] = run_id
    audit.record(uow.c, actor, "analytics.clv_evaluated", entity="clv_model_run",
                 entity_id=run_id, details={"calibration_end": calibration_end.isoformat(),
                                            "period": period,
                                            "customers": models.customers})
    uow.commit()
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _store_run(uow: UnitOfWork, actor: Actor, summary: Summary, models: FittedModels,
               period: str, holdout: dict[str, Any] | None, *, purpose: str) -> int:
    return int(uow.c.execute(insert(clv_model_runs).values(
        fitted_at=utcnow(), calibration_end=summary.calibration_end,
        holdout_end=summary.holdout_end if holdout else None, period=period,
        customers=models.customers, bgnbd=models.bgnbd.as_dict(),
        gamma_gamma=models.gamma_gamma.as_dict() if models.gamma_gamma else None,
        holdout=_json_safe(holdout), purpose=purpose, actor=actor.name[:120],
    ).returning(clv_model_runs.c.id)).scalar_one())


def _per_customer(fn: Any, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Evaluate ``fn`` once per distinct (x, t_x, T) and spread the result to every customer:
    day-resolution histories share few distinct triples."""
    if x.size == 0:
        return np.zeros(0)
    rows, inverse = np.unique(np.column_stack([x, t_x, age]), axis=0, return_inverse=True)
    values = np.asarray(fn(rows[:, 0], rows[:, 1], rows[:, 2]))
    return np.asarray(values[inverse.reshape(-1)])


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _money(value: float) -> Decimal | None:
    if not math.isfinite(value):
        return None
    return Decimal(f"{value:.2f}")


def refresh_predictions(*, uow: UnitOfWork, actor: Actor, as_of: dt.date | None = None,
                        period: str = "week", monthly_discount: float = 0.01) -> dict[str, Any]:
    """Fit on all purchases up to ``as_of`` (default: today, local) and replace every
    customer's predictions: probability of being active, expected purchases in the next 30
    and 90 days, the expected next purchase date, expected spend per purchase and the
    discounted value of the next 12 months. Idempotent; the run is stored and audited."""
    _check_period(period)
    _check_may_analyse(actor)
    if not 0 <= monthly_discount < 1:
        raise ValidationFailed(fields=[
            FieldError("monthly_discount", "clv_bad_discount")])
    tz = _zone(get_settings().default_timezone)
    as_of = as_of or dt.datetime.now(tz).date()
    _check_after_first_purchase(uow.c, as_of, "as_of")
    if uow.dialect == "postgresql":
        # Concurrent refreshes take turns (each replaces every row); readers are not blocked.
        uow.c.execute(text("LOCK TABLE customer_predictions IN SHARE ROW EXCLUSIVE MODE"))
    summary = purchase_summary(uow=uow, calibration_end=as_of, holdout_end=as_of)
    models = fit_models(summary, period)
    unit = PERIOD_DAYS[period]
    x, t_x, age = summary.model_inputs(period)
    bg = models.bgnbd

    def predict(xs: np.ndarray, ts: np.ndarray, As: np.ndarray) -> np.ndarray:
        return np.column_stack([
            clv.probability_alive(bg, xs, ts, As),
            clv.expected_purchases(bg, 30 / unit, xs, ts, As),
            clv.expected_purchases(bg, 90 / unit, xs, ts, As),
            clv.time_to_expected_purchase(bg, xs, ts, As,
                                          horizon=NEXT_PURCHASE_HORIZON_DAYS / unit,
                                          resolution=0.5 / unit),
            clv.lifetime_value(bg, np.ones_like(xs), xs, ts, As, months=12,
                               month_length=MONTH_DAYS / unit,
                               monthly_discount=monthly_discount),
        ])

    table = _per_customer(predict, x, t_x, age).reshape(-1, 5)
    spend = (clv.expected_average_spend(models.gamma_gamma, x, summary.average_repeat_spend())
             if models.gamma_gamma else np.full(x.shape, np.nan))
    fitted_at = utcnow()
    run_id = _store_run(uow, actor, summary, models, period, None, purpose="predict")
    uow.c.execute(delete(customer_predictions))
    ids = summary.customer_id.tolist()
    # Rows are built and written a chunk at a time: a million dicts would cost a gigabyte.
    for start in range(0, len(ids), INSERT_CHUNK):
        rows = []
        for i in range(start, min(start + INSERT_CHUNK, len(ids))):
            alive, e30, e90, next_t, discounted = table[i].tolist()
            next_day = (as_of + dt.timedelta(days=math.ceil(next_t * unit))
                        if math.isfinite(next_t) else None)
            rows.append({"customer_id": ids[i], "run_id": run_id, "fitted_at": fitted_at,
                         "calibration_end": as_of, "probability_alive": _finite(alive),
                         "expected_purchases_30d": _finite(e30),
                         "expected_purchases_90d": _finite(e90),
                         "expected_next_purchase": next_day,
                         "expected_average_spend": _money(float(spend[i])),
                         "clv_12m": _money(float(spend[i] * discounted))})
        bulk_insert(uow.c, customer_predictions, rows)
    audit.record(uow.c, actor, "analytics.clv_predictions_refreshed", entity="clv_model_run",
                 entity_id=run_id, details={"as_of": as_of.isoformat(), "period": period,
                                            "customers": len(ids)})
    uow.commit()
    return {"run_id": run_id, "as_of": as_of, "period": period, "customers": len(ids),
            "bgnbd": _rounded(bg.as_dict()),
            "gamma_gamma": _rounded(models.gamma_gamma.as_dict()) if models.gamma_gamma
            else None, "monthly_discount": monthly_discount}
