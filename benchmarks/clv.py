"""Lifetime-value models: Patron's fit and predictions against the reference implementation.

Both sides get the same per-customer summary (x, t_x, T, average spend) in weeks: the CDNOW
sample's 2,357 customers (weeks 1-39 of 1997) and a synthetic summary drawn from the BG/NBD
story (default 100k customers). Each side fits BG/NBD and Gamma-Gamma, then predicts the
probability of being active, the expected purchases in the next 39 weeks and a 12-month value
for every customer. Figures are the best of ``repeats`` runs, in milliseconds; the ratio is
how many times the reference's time Patron takes (below 1: faster). A parameter figure checks
that both sides found the same optimum. The reference is a dev dependency; without it the
module reports nothing (see ``available``).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import Figure
from patron.analytics import clv

CUSTOMERS = 100_000
REPEATS = 3
WEEK_MONTH = 52 / 12
# Half a unit in the third significant digit is at least 500 ppm of the value.
SIG3_PPM = 500.0


def available() -> bool:
    return importlib.util.find_spec("lifetimes") is not None


def cdnow_summary() -> tuple[np.ndarray, ...]:
    """x, t_x, T (weeks) and the average repeat spend of the CDNOW sample's customers."""
    spec = importlib.util.find_spec("lifetimes")
    assert spec is not None and spec.submodule_search_locations
    path = (Path(next(iter(spec.submodule_search_locations))) / "datasets"
            / "cdnow_customers_summary_with_transactions.csv")
    _id, x, t_x, age, m = np.loadtxt(path, delimiter=",", skiprows=1, unpack=True)
    return x, t_x, age, m


def synthetic_summary(n: int, *, seed: int = 1) -> tuple[np.ndarray, ...]:
    """Customers drawn from BG/NBD (CDNOW-like parameters) with Gamma-Gamma spend, at day
    resolution in weeks, simulated for all customers at once."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.25, 1 / 4.4, n)
    drop = rng.beta(0.8, 2.4, n)
    age = np.round(rng.uniform(26, 39, n) * 7) / 7
    t = np.zeros(n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    active = lam > 0
    for _ in range(500):
        if not active.any():
            break
        t = np.where(active, t + rng.exponential(1 / np.maximum(lam, 1e-12)), t)
        bought = active & (t <= age)
        x += bought
        t_x = np.where(bought, np.ceil(t * 7) / 7, t_x)  # at least a day after the first
        active = bought & (rng.random(n) >= drop)
    nu = rng.gamma(3.7, 1 / 15.4, n)
    m = np.where(x > 0, rng.gamma(6.25 * np.maximum(x, 1), 1 / (nu * np.maximum(x, 1))), 0.0)
    return x, np.minimum(t_x, age), age, m


def _best_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best, out


def _patron_fit(x: np.ndarray, t_x: np.ndarray, age: np.ndarray, m: np.ndarray) -> Any:
    repeat = x > 0
    return clv.fit_bgnbd(x, t_x, age), clv.fit_gamma_gamma(x[repeat], m[repeat])


def _patron_predict(models: Any, x: np.ndarray, t_x: np.ndarray, age: np.ndarray,
                    m: np.ndarray) -> Any:
    bg, gg = models
    alive = clv.probability_alive(bg, x, t_x, age)
    expected = clv.expected_purchases(bg, 39, x, t_x, age)
    spend = clv.expected_average_spend(gg, x, m)
    value = clv.lifetime_value(bg, spend, x, t_x, age, months=12, month_length=WEEK_MONTH,
                               monthly_discount=0.01)
    return alive, expected, value


def _reference_fit(x: np.ndarray, t_x: np.ndarray, age: np.ndarray, m: np.ndarray) -> Any:
    import pandas as pd
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    repeat = x > 0
    bg = BetaGeoFitter().fit(pd.Series(x), pd.Series(t_x), pd.Series(age))
    gg = GammaGammaFitter().fit(pd.Series(x[repeat]), pd.Series(m[repeat]))
    return bg, gg


def _reference_predict(models: Any, x: np.ndarray, t_x: np.ndarray, age: np.ndarray,
                       m: np.ndarray) -> Any:
    import pandas as pd

    bg, gg = models
    xs, ts, As, ms = (pd.Series(v) for v in (x, t_x, age, m))
    alive = bg.conditional_probability_alive(xs, ts, As)
    expected = bg.conditional_expected_number_of_purchases_up_to_time(39, xs, ts, As)
    value = gg.customer_lifetime_value(bg, xs, ts, As, ms, time=12, discount_rate=0.01,
                                       freq="W")
    return alive, expected, value


def _parameter_ppm(ours: Any, reference: Any) -> float:
    bg, gg = ours
    ref_bg, ref_gg = reference
    pairs = [(bg.r, ref_bg.params_["r"]), (bg.alpha, ref_bg.params_["alpha"]),
             (bg.a, ref_bg.params_["a"]), (bg.b, ref_bg.params_["b"]),
             (gg.p, ref_gg.params_["p"]), (gg.q, ref_gg.params_["q"]),
             (gg.gamma, ref_gg.params_["v"])]
    return max(abs(a - b) / abs(b) for a, b in pairs) * 1e6


def _figures(label: str, data: tuple[np.ndarray, ...], repeats: int) -> list[Figure]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference warns about its own pandas usage
        fit_ms, ours = _best_ms(lambda: _patron_fit(*data), repeats)
        ref_fit_ms, ref = _best_ms(lambda: _reference_fit(*data), repeats)
        pred_ms, _ = _best_ms(lambda: _patron_predict(ours, *data), repeats)
        ref_pred_ms, _ = _best_ms(lambda: _reference_predict(ref, *data), repeats)
    ppm = _parameter_ppm(ours, ref)
    customers = int(data[0].size)
    notes = {"customers": customers, "repeat_customers": int((data[0] > 0).sum()),
             "bgnbd": ours[0].as_dict(), "gamma_gamma": ours[1].as_dict()}
    return [
        Figure(f"CLV fit BG/NBD + Gamma-Gamma ({label})", fit_ms, "ms",
               "reference implementation fit, same summary", ref_fit_ms,
               higher_is_better=False, notes=notes),
        Figure(f"CLV predictions: P(alive), E[39 weeks], 12-month CLV ({label})", pred_ms, "ms",
               "reference implementation, same predictions", ref_pred_ms,
               higher_is_better=False, notes={"customers": customers}),
        Figure(f"CLV parameters, max relative difference ({label})", ppm, "ppm",
               "half a unit in the third significant digit", SIG3_PPM,
               higher_is_better=False, target=f"< {SIG3_PPM:.0f} ppm", passed=ppm < SIG3_PPM,
               notes={"ppm": ppm}),
    ]


def run(*, customers: int = CUSTOMERS, repeats: int = REPEATS,
        log: Callable[[str], None] | None = None) -> list[Figure]:
    """CDNOW, then a synthetic summary of ``customers`` customers."""
    if not available():
        if log:
            log("CLV: reference implementation not installed, skipped")
        return []
    if log:
        log("CLV: CDNOW sample ...")
    figures = _figures("CDNOW 2,357 customers", cdnow_summary(), repeats)
    if customers:
        if log:
            log(f"CLV: synthetic summary of {customers:,} customers ...")
        figures += _figures(f"synthetic {customers:,} customers",
                            synthetic_summary(customers), repeats)
    return figures
