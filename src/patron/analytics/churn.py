"""Churn risk: an L2-regularised logistic regression on per-customer features, and the measures
that judge it on a holdout period (AUC, a calibration table, the Brier score).

Pure numerics (numpy, scipy): no SQL, no HTTP. The regression is written here because the one
well-kept library that has it is not a dependency of Patron, and it is a few lines over
``scipy.optimize.minimize`` with an analytic gradient. See docs/churn.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import rankdata

Array = NDArray[np.float64]

# The features, in the order of the model's coefficients (docs/churn.md defines each).
FEATURES = (
    "log_recency", "log_frequency", "log_tenure", "log_spend_per_purchase", "log_interval",
    "log_overdue", "probability_alive", "log_expected_purchases", "log_recent_purchases",
    "recent_share", "refund_share", "channels", "one_time_buyer",
)


class FitFailed(RuntimeError):
    """The optimiser did not converge, or there is nothing to learn from (one class only)."""


@dataclass(frozen=True)
class CustomerFeatures:
    """Raw per-customer figures as of a cut-off day; one array element per customer."""

    recency_days: Array  # whole days from the last purchase day to the cut-off day
    purchase_days: Array  # distinct purchase days up to the cut-off
    tenure_days: Array  # days from the first purchase day to the cut-off day
    net_spend: Array  # yuan, net of refunds
    gross_spend: Array  # yuan, before refunds
    refunded: Array  # yuan
    channels: Array  # distinct channels bought through
    recent_purchase_days: Array  # purchase days within the trend window before the cut-off
    probability_alive: Array  # BG/NBD
    expected_purchases: Array  # BG/NBD, within the horizon after the cut-off
    population_interval: float  # the middle usual interval of repeat buyers, in days
    min_interval_days: float = 7.0

    def usual_interval(self) -> Array:
        """Mean days between purchase days (first to last over the repeats); the population's
        middle interval for one-time buyers; never below ``min_interval_days``."""
        n = self.purchase_days
        span = self.tenure_days - self.recency_days
        own = np.divide(span, n - 1, out=np.full(n.shape, self.population_interval),
                        where=n > 1)
        return np.maximum(own, self.min_interval_days)

    def matrix(self) -> Array:
        """The model's inputs, one row per customer, columns in ``FEATURES`` order. Counts and
        amounts enter as logarithms: their effect on churn is closer to multiplicative."""
        interval = self.usual_interval()
        n = np.maximum(self.purchase_days, 1.0)
        gross = self.gross_spend
        refund_share = np.divide(self.refunded, gross, out=np.zeros(gross.shape), where=gross > 0)
        return np.column_stack([
            np.log1p(self.recency_days),
            np.log(n),
            np.log1p(self.tenure_days),
            np.log1p(np.maximum(self.net_spend, 0.0) / n),
            np.log(interval),
            np.log1p(self.recency_days / interval),
            np.nan_to_num(self.probability_alive, nan=1.0),
            np.log1p(np.nan_to_num(self.expected_purchases, nan=0.0)),
            np.log1p(self.recent_purchase_days),
            self.recent_purchase_days / n,
            np.clip(refund_share, 0.0, 1.0),
            self.channels.astype(np.float64),
            (self.purchase_days <= 1).astype(np.float64),
        ]).astype(np.float64)


@dataclass(frozen=True)
class LogisticModel:
    """Coefficients on standardised features: ``x_std = (x - mean) / scale``; ``intercept``
    unpenalised."""

    intercept: float
    coefficients: Array
    mean: Array
    scale: Array
    l2: float

    def predict(self, features: ArrayLike) -> Array:
        """Probability of the positive class (here: churn) for each row."""
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(expit(self.intercept + x @ self.coefficients), dtype=np.float64)

    def as_dict(self, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        keys = names or tuple(f"x{i}" for i in range(self.coefficients.size))
        return {"intercept": float(self.intercept), "l2": self.l2,
                "coefficients": dict(zip(keys, self.coefficients.tolist(), strict=True)),
                "mean": dict(zip(keys, self.mean.tolist(), strict=True)),
                "scale": dict(zip(keys, self.scale.tolist(), strict=True))}


def _objective(beta: Array, x: Array, y: Array, l2: float) -> tuple[float, Array]:
    """Mean log-loss plus (l2 / 2) * |w|^2 (intercept excluded), and its gradient."""
    z = beta[0] + x @ beta[1:]
    # log(1 + e^z) - y z, stable for large |z|.
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    residual = (expit(z) - y) / y.size
    grad = np.empty_like(beta)
    grad[0] = residual.sum()
    grad[1:] = x.T @ residual + l2 * beta[1:]
    return loss + 0.5 * l2 * float(beta[1:] @ beta[1:]), grad


def fit_logistic(features: ArrayLike, labels: ArrayLike, *, l2: float = 1e-3) -> LogisticModel:
    """Maximum penalised likelihood logistic regression (L-BFGS with the analytic gradient).
    Features are standardised first, so one ``l2`` suits features of any scale; the penalty
    keeps the coefficients finite on separable data."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError("features must be a matrix with one row per label")
    if l2 <= 0:
        raise ValueError("l2 must be positive")
    if y.size == 0 or y.min() == y.max():
        raise FitFailed("both outcomes must occur among the training customers")
    if not np.isfinite(x).all():
        raise FitFailed("features must be finite")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant column stays at zero
    xs = (x - mean) / scale
    prior = float(y.mean())
    start = np.zeros(x.shape[1] + 1)
    start[0] = np.log(prior / (1.0 - prior))
    res = minimize(_objective, start, args=(xs, y, l2), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-9, "ftol": 1e-14})
    if not np.all(np.isfinite(res.x)) or np.max(np.abs(res.jac)) > 1e-4:
        raise FitFailed(f"optimiser did not converge: {res.message}")
    return LogisticModel(intercept=float(res.x[0]), coefficients=np.asarray(res.x[1:]),
                         mean=mean, scale=scale, l2=l2)


# --- Evaluation ------------------------------------------------------------------------------

def auc(scores: ArrayLike, labels: ArrayLike) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic: the probability that a random
    positive scores above a random negative, ties counting one half (average ranks). None when
    one class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(s)  # ties get their average rank
    u = float(ranks[y].sum()) - positives * (positives + 1) / 2.0
    return u / (positives * negatives)


def brier(probabilities: ArrayLike, labels: ArrayLike) -> float | None:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if p.size else None


def calibration_table(probabilities: ArrayLike, labels: ArrayLike, *, bins: int = 10
                      ) -> list[dict[str, Any]]:
    """Customers ordered by predicted probability and cut into ``bins`` groups of (nearly)
    equal size (deciles by default): per group the count, the predicted range, the mean
    predicted probability and the observed rate. Equal predictions are ordered by their
    position, so a large tie may straddle two groups; empty groups are left out."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if bins < 1:
        raise ValueError("bins must be at least 1")
    order = np.argsort(p, kind="stable")
    table = []
    for number, part in enumerate(np.array_split(order, bins), start=1):
        if part.size == 0:
            continue
        table.append({"bin": number, "customers": int(part.size),
                      "min_predicted": float(p[part].min()),
                      "max_predicted": float(p[part].max()),
                      "mean_predicted": float(p[part].mean()),
                      "observed_rate": float(y[part].mean())})
    return table


def evaluate(probabilities: ArrayLike, labels: ArrayLike, *, scores: ArrayLike | None = None,
             bins: int = 10) -> dict[str, Any]:
    """AUC (of ``scores`` when given, else of the probabilities: the ranking is what AUC
    judges), the Brier score and the calibration table of the probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    return {"auc": auc(p if scores is None else scores, labels), "brier": brier(p, labels),
            "calibration": calibration_table(p, labels, bins=bins)}
