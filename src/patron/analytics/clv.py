"""Customer lifetime value: the BG/NBD purchase process and the Gamma-Gamma spend model.

Pure numerics (numpy, scipy): no SQL, no HTTP. Inputs are per-customer summaries in one time
unit (a day or a week, at day resolution):

- ``x``: repeat purchases, i.e. purchase periods (local days with a purchase) after the first;
- ``t_x``: recency, time from the first purchase to the last;
- ``T``: age, time from the first purchase to the end of the calibration period;
- ``m``: average spend of the repeat purchases (Gamma-Gamma only, customers with ``x > 0``).

Both models are fitted by maximum likelihood with ``scipy.optimize.minimize`` (L-BFGS-B) over the
logarithms of the parameters, with analytic gradients. The likelihoods are written here rather
than taken from a library because the one maintained implementation is slow at scale (it fits
through automatic differentiation over every customer) and holds several copies of the data;
ours evaluates each distinct (x, t_x, T) once, weighted by how many customers share it.
References: Fader, Hardie and Lee (2005), "Counting your customers the easy way"; Fader and
Hardie (2013), "The Gamma-Gamma model of monetary value". See docs/clv.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, hyp2f1

Array = NDArray[np.float64]


class FitFailed(RuntimeError):
    """The optimiser did not converge, or the data cannot identify the parameters."""


@dataclass(frozen=True)
class BGNBDParams:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _arrays(*values: ArrayLike) -> tuple[Array, ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


# --- BG/NBD -------------------------------------------------------------------------------------

class _ByCount:
    """Functions of the purchase count alone, evaluated once per distinct count: a summary of
    a million customers has a few hundred distinct counts, and the special functions are the
    costly part of each likelihood evaluation."""

    def __init__(self, x: Array) -> None:
        self.values, inverse = np.unique(x, return_inverse=True)
        self.index = inverse.reshape(-1)

    def __call__(self, fn: Any, shift: float) -> Array:
        return np.asarray(fn(shift + self.values)[self.index], dtype=np.float64)


def _bgnbd_terms(r: float, alpha: float, a: float, b: float, x: Array, t_x: Array, T: Array,
                 by_count: _ByCount | None = None) -> tuple[Array, Array, Array]:
    """Per-customer log-likelihood and the weights of its two terms (alive at T / dropped out
    after the last purchase), shared by the likelihood and its gradient."""
    f = by_count or _ByCount(x)
    a1 = f(gammaln, r) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + f(gammaln, b) - gammaln(b) - f(gammaln, a + b)
    a3 = -(r + x) * np.log(alpha + T)
    has_repeat = x > 0
    a4 = np.where(has_repeat,
                  np.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0) - (r + x) * np.log(alpha + t_x),
                  -np.inf)
    top = np.maximum(a3, a4)
    e3, e4 = np.exp(a3 - top), np.exp(a4 - top)
    total = e3 + e4
    return a1 + a2 + top + np.log(total), e3 / total, e4 / total


def bgnbd_log_likelihood(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
                         ) -> Array:
    """The log-likelihood of each customer's (x, t_x, T) under BG/NBD."""
    xa, ta, Ta = _arrays(x, t_x, T)
    ll, _, _ = _bgnbd_terms(params.r, params.alpha, params.a, params.b, xa, ta, Ta)
    return ll


def _bgnbd_objective(log_params: Array, x: Array, t_x: Array, T: Array, w: Array, n: float,
                     by_count: _ByCount | None = None) -> tuple[float, Array]:
    r, alpha, a, b = np.exp(log_params)
    f = by_count or _ByCount(x)
    ll, w3, w4 = _bgnbd_terms(r, alpha, a, b, x, t_x, T, f)
    log_at, log_atx = np.log(alpha + T), np.log(alpha + t_x)
    d_r = f(digamma, r) - digamma(r) + np.log(alpha) - w3 * log_at - w4 * log_atx
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))
    common = digamma(a + b) - f(digamma, a + b)
    d_a = common + w4 / a
    d_b = common + f(digamma, b) - digamma(b) - w4 / (b + np.maximum(x, 1.0) - 1.0)
    # Weighted sums without BLAS: a dot product's thread pool costs more than it saves here.
    grad = np.array([np.sum(w * d_r) * r, np.sum(w * d_alpha) * alpha, np.sum(w * d_a) * a,
                     np.sum(w * d_b) * b])
    return -float(np.sum(w * ll)) / n, -grad / n


def _distinct(*columns: Array) -> tuple[tuple[Array, ...], Array]:
    """Distinct rows (in lexicographic order) and how many times each occurs: day-resolution
    histories repeat a lot. A lexsort of the columns, not ``np.unique(axis=0)``, whose sort of
    row records takes most of a million-customer fit."""
    n = columns[0].size
    order = np.lexsort(columns[::-1])
    ordered = [c[order] for c in columns]
    change = np.zeros(n, dtype=bool)
    change[:1] = True
    for c in ordered:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    counts = np.diff(np.append(starts, n))
    return tuple(c[starts] for c in ordered), counts.astype(np.float64)


def _check_summary(x: Array, t_x: Array, T: Array) -> None:
    if x.size == 0:
        raise FitFailed("no customers to fit")
    if (x < 0).any() or (t_x < 0).any() or (t_x > T).any() or ((x > 0) & (t_x <= 0)).any():
        raise FitFailed("inconsistent summary: need x >= 0, 0 <= t_x <= T, t_x > 0 when x > 0")


# The logarithms of the parameters stay within +-LOG_BOUND (about 3e-7 to 3e6): beyond that
# the likelihood is flat to machine precision (a and b of BG/NBD grow without bound when every
# customer seems to share one drop-out probability) and the special functions overflow.
LOG_BOUND = 15.0


def _minimise(objective: Any, start: Array, args: tuple[Any, ...]) -> Array:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        res = minimize(objective, start, args=args, jac=True, method="L-BFGS-B",
                       bounds=[(-LOG_BOUND, LOG_BOUND)] * start.size,
                       options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000})
    if not np.all(np.isfinite(res.x)) or not np.isfinite(res.fun):
        raise FitFailed(f"optimiser diverged: {res.message}")
    # The optimiser may stop on a loss of precision at the optimum; accept it when the
    # projected gradient is small, as the likelihood is flat there to machine precision.
    inside = np.abs(res.x) < LOG_BOUND - 1e-6
    if not res.success and np.max(np.abs(res.jac[inside]), initial=0.0) > 1e-4:
        raise FitFailed(f"optimiser did not converge: {res.message}")
    return np.asarray(res.x, dtype=np.float64)


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters for the customers' (x, t_x, T)."""
    xa, ta, Ta = _arrays(x, t_x, T)
    _check_summary(xa, ta, Ta)
    (xu, tu, Tu), w = _distinct(xa, ta, Ta)
    # Scale alpha's start with the time unit so that days and weeks start alike.
    start = np.log([1.0, max(float(np.mean(Ta)), 1e-3) / 10.0, 1.0, 1.0])
    args = (xu, tu, Tu, w, float(xa.size), _ByCount(xu))
    r, alpha, a, b = np.exp(_minimise(_bgnbd_objective, start, args))
    return BGNBDParams(float(r), float(alpha), float(a), float(b))


def probability_alive(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> Array:
    """P(still active at T | x, t_x, T). A customer with no repeat purchase is alive for sure
    under BG/NBD (drop-out happens only right after a purchase)."""
    xa, ta, Ta = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_ratio = (np.log(a) - np.log(b + np.maximum(xa, 1.0) - 1.0)
                 + (r + xa) * (np.log(alpha + Ta) - np.log(alpha + ta)))
    return np.where(xa > 0, 1.0 / (1.0 + np.exp(log_ratio)), 1.0)


_SERIES_TERMS = 5000


def _hyp2f1(a: Array, b: Array, c: Array, z: Array) -> Array:
    """Gauss's hypergeometric function. scipy's answers NaN for some large parameters (a fit
    on customers who all buy at the same rate sends r and alpha towards infinity); there the
    plain power series, which converges for |z| < 1, is summed instead. Values it cannot
    reach stay NaN."""
    raw = np.asarray(hyp2f1(a, b, c, z), dtype=np.float64)
    bad = ~np.isfinite(raw)
    if not bad.any():
        return raw
    value = np.atleast_1d(raw).copy()
    bad = np.atleast_1d(bad)
    value[bad] = _hyp2f1_series(*(np.atleast_1d(np.broadcast_to(v, raw.shape))[bad]
                                  for v in np.broadcast_arrays(a, b, c, z)))
    return value.reshape(raw.shape)


def _hyp2f1_series(a: Array, b: Array, c: Array, z: Array) -> Array:
    term = np.ones(a.shape)
    total = np.ones(a.shape)
    converged = np.zeros(a.shape, dtype=bool)
    for k in range(_SERIES_TERMS):
        term = term * (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total = total + term
        converged = np.abs(term) <= 1e-15 * np.abs(total)
        if converged.all():
            break
    return np.where(converged & np.isfinite(total), total, np.nan)


def expected_purchases(params: BGNBDParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike,
                       T: ArrayLike) -> Array:
    """E[purchases in (T, T + t] | x, t_x, T] (Fader, Hardie and Lee 2005, eq. 10)."""
    ta_, xa, txa, Ta = _arrays(t, x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = ta_ / (alpha + Ta + ta_)
    h = _hyp2f1(r + xa, b + xa, a + b + xa - 1.0, z)
    growth = 1.0 - np.exp((r + xa) * (np.log(alpha + Ta) - np.log(alpha + Ta + ta_))) * h
    numerator = (a + b + xa - 1.0) / (a - 1.0) * growth
    log_ratio = (np.log(a) - np.log(b + np.maximum(xa, 1.0) - 1.0)
                 + (r + xa) * (np.log(alpha + Ta) - np.log(alpha + txa)))
    denominator = 1.0 + np.where(xa > 0, np.exp(log_ratio), 0.0)
    return np.asarray(numerator / denominator, dtype=np.float64)


def time_to_expected_purchase(params: BGNBDParams, x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
                              *, horizon: float, resolution: float) -> Array:
    """The time after T by which one more purchase is expected: the smallest t (to within
    ``resolution``) with E[purchases in (T, T + t]] >= 1; NaN when even ``horizon`` is not
    enough (a customer who has most likely left). Bisection, vectorised over customers."""
    xa, txa, Ta = _arrays(x, t_x, T)
    lo = np.zeros_like(xa)
    hi = np.full_like(xa, float(horizon))
    reachable = expected_purchases(params, hi, xa, txa, Ta) >= 1.0
    steps = int(np.ceil(np.log2(max(horizon / resolution, 1.0))))
    for _ in range(steps):
        mid = (lo + hi) / 2.0
        enough = expected_purchases(params, mid, xa, txa, Ta) >= 1.0
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid)
    return np.where(reachable, hi, np.nan)


# --- Gamma-Gamma ------------------------------------------------------------------------------

def gamma_gamma_log_likelihood(params: GammaGammaParams, x: ArrayLike, m: ArrayLike,
                               by_count: _ByCount | None = None) -> Array:
    """The log-likelihood of each customer's average spend ``m`` over ``x`` (> 0) purchases."""
    xa, ma = _arrays(x, m)
    p, q, g = params.p, params.q, params.gamma
    f = by_count or _ByCount(xa)
    return np.asarray(f(lambda v: gammaln(p * v + q), 0.0) - f(lambda v: gammaln(p * v), 0.0)
                      - gammaln(q) + q * np.log(g)
                      + (p * xa - 1.0) * np.log(ma) + p * xa * np.log(xa)
                      - (p * xa + q) * np.log(xa * ma + g), dtype=np.float64)


def _gamma_gamma_objective(log_params: Array, x: Array, m: Array, w: Array, n: float,
                           by_count: _ByCount | None = None) -> tuple[float, Array]:
    p, q, g = np.exp(log_params)
    f = by_count or _ByCount(x)
    ll = gamma_gamma_log_likelihood(GammaGammaParams(p, q, g), x, m, f)
    log_xmg = np.log(x * m + g)
    psi_all = f(lambda v: digamma(p * v + q), 0.0)
    d_p = x * (psi_all - f(lambda v: digamma(p * v), 0.0) + np.log(m) + np.log(x) - log_xmg)
    d_q = psi_all - digamma(q) + np.log(g) - log_xmg
    d_g = q / g - (p * x + q) / (x * m + g)
    grad = np.array([np.sum(w * d_p) * p, np.sum(w * d_q) * q, np.sum(w * d_g) * g])
    return -float(np.sum(w * ll)) / n, -grad / n


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters. Pass only customers with repeat purchases
    (x > 0) and a positive average spend."""
    xa, ma = _arrays(x, m)
    if xa.size == 0:
        raise FitFailed("no customer with a repeat purchase")
    if (xa <= 0).any() or (ma <= 0).any():
        raise FitFailed("Gamma-Gamma needs x > 0 and a positive average spend")
    (xu, mu), w = _distinct(xa, ma)
    # Start near the moment estimates' scale so that yuan and fen fit alike.
    start = np.log([1.0, 1.0, max(float(np.mean(ma)), 1e-6)])
    args = (xu, mu, w, float(xa.size), _ByCount(xu))
    p, q, g = np.exp(_minimise(_gamma_gamma_objective, start, args))
    return GammaGammaParams(float(p), float(q), float(g))


def expected_average_spend(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> Array:
    """E[spend per purchase | x, m]: a weighted mean of the population mean and the customer's
    own average (Fader and Hardie 2013, eq. 5). For x = 0 it is the population mean."""
    xa, ma = _arrays(x, m)
    p, q, g = params.p, params.q, params.gamma
    return np.asarray(p * (g + xa * ma) / (p * xa + q - 1.0), dtype=np.float64)


def lifetime_value(bgnbd: BGNBDParams, spend: ArrayLike, x: ArrayLike, t_x: ArrayLike,
                   T: ArrayLike, *, months: int, month_length: float,
                   monthly_discount: float) -> Array:
    """Discounted value of the next ``months`` months: each month's expected purchases times
    the expected spend per purchase, discounted by ``(1 + monthly_discount) ** month``."""
    xa, txa, Ta, sa = _arrays(x, t_x, T, spend)
    value = np.zeros_like(xa)
    previous = np.zeros_like(xa)
    for month in range(1, months + 1):
        cumulative = expected_purchases(bgnbd, month * month_length, xa, txa, Ta)
        value += (cumulative - previous) * sa / (1.0 + monthly_discount) ** month
        previous = cumulative
    return value


# --- Holdout accuracy --------------------------------------------------------------------------

def holdout_metrics(predicted: ArrayLike, actual: ArrayLike) -> dict[str, float | int | None]:
    """How predicted repeat purchases in the holdout period compare with what happened."""
    p, a = _arrays(predicted, actual)
    if p.size == 0:
        return {"customers": 0}
    err = p - a
    corr = (float(np.corrcoef(p, a)[0, 1]) if p.size > 1 and p.std() > 0 and a.std() > 0
            else None)
    return {"customers": int(p.size), "actual_total": float(a.sum()),
            "predicted_total": float(p.sum()), "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(np.mean(err ** 2))), "correlation": corr}
