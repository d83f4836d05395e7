"""BG/NBD and Gamma-Gamma: likelihoods, gradients, predictions and fits, without a database.

Reference values were computed once with the reference Python implementation of these models
(version 0.11.3 of the dev dependency that ships the CDNOW sample) at the published CDNOW
parameters and are hard-coded here, so the tests need no extra package; when the dev dependency
is installed, the CDNOW summary it ships is fitted too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import check_grad

from patron.analytics import clv

CDNOW_BG = clv.BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_GG = clv.GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
X = np.array([0, 1, 2, 5, 10.0])
T_X = np.array([0, 1.5, 20.0, 30.5, 38.0])
AGE = np.array([38.86, 38.86, 30.0, 35.0, 38.5])
SPEND_X = np.array([1, 2, 3, 7, 20.0])
SPEND_M = np.array([10.0, 22.35, 45.0, 5.5, 100.0])


def test_bgnbd_log_likelihood_matches_the_reference_implementation():
    ll = clv.bgnbd_log_likelihood(CDNOW_BG, X, T_X, AGE)
    assert -ll.mean() == pytest.approx(11.714812165254555, rel=1e-12)


def test_gamma_gamma_log_likelihood_matches_the_reference_implementation():
    ll = clv.gamma_gamma_log_likelihood(CDNOW_GG, SPEND_X, SPEND_M)
    assert -ll.mean() == pytest.approx(5.5212173688581, rel=1e-12)


def test_probability_alive_matches_the_reference_and_is_one_without_repeat_purchases():
    alive = clv.probability_alive(CDNOW_BG, X, T_X, AGE)
    assert alive == pytest.approx([1.0, 0.2049434, 0.66669807, 0.8110211, 0.9274242], rel=1e-6)


def test_expected_purchases_match_the_reference_over_several_horizons():
    horizons = np.array([1, 5, 39, 100, 500.0])
    expected = clv.expected_purchases(CDNOW_BG, horizons, X, T_X, AGE)
    assert expected == pytest.approx([5.59565789e-03, 2.87461915e-02, 1.36301653e+00,
                                      6.76845299e+00, 3.46931286e+01], rel=1e-6)
    at_39 = clv.expected_purchases(CDNOW_BG, 39, X, T_X, AGE)
    assert at_39 == pytest.approx([0.19509805, 0.19633021, 1.36301653, 3.33335942,
                                   6.79510627], rel=1e-6)


def test_expected_purchases_grow_with_the_horizon():
    grid = np.linspace(0, 200, 41)
    for i in range(X.size):
        values = clv.expected_purchases(CDNOW_BG, grid, X[i], T_X[i], AGE[i])
        assert values[0] == 0.0
        assert np.all(np.diff(values) > 0)


def test_expected_average_spend_shrinks_towards_the_population_mean():
    spend = clv.expected_average_spend(CDNOW_GG, SPEND_X, SPEND_M)
    assert spend == pytest.approx([17.68631813, 24.66371391, 43.75290833, 7.25155948,
                                   98.61045874], rel=1e-8)
    population_mean = CDNOW_GG.p * CDNOW_GG.gamma / (CDNOW_GG.q - 1)
    assert clv.expected_average_spend(CDNOW_GG, [0], [0])[0] == pytest.approx(population_mean)


def test_analytic_gradients_agree_with_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 8, 300).astype(float)
    age = rng.uniform(5, 40, 300)
    t_x = np.where(x > 0, rng.uniform(0.1, 1, 300) * age, 0.0)
    w = np.ones(300)
    for point in (np.log([0.243, 4.414, 0.793, 2.426]), np.log([1.5, 0.7, 2.0, 0.4])):
        err = check_grad(lambda p: clv._bgnbd_objective(p, x, t_x, age, w, 300.0)[0],
                         lambda p: clv._bgnbd_objective(p, x, t_x, age, w, 300.0)[1], point)
        assert err < 1e-5
    xs = rng.integers(1, 10, 200).astype(float)
    ms = rng.gamma(3, 10, 200)
    point = np.log([6.25, 3.74, 15.44])
    err = check_grad(lambda p: clv._gamma_gamma_objective(p, xs, ms, np.ones(200), 200.0)[0],
                     lambda p: clv._gamma_gamma_objective(p, xs, ms, np.ones(200), 200.0)[1],
                     point)
    assert err < 1e-5


def simulate_bgnbd(params: clv.BGNBDParams, n: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers drawn from the BG/NBD story: a Poisson purchase rate from Gamma(r, alpha), a
    drop-out probability from Beta(a, b) tried after every purchase."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    age = rng.uniform(20, 40, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t, count, last = 0.0, 0, 0.0
        while True:
            t += rng.exponential(1 / lam[i]) if lam[i] > 0 else np.inf
            if t > age[i]:
                break
            count, last = count + 1, t
            if rng.random() < p[i]:
                break
        x[i], t_x[i] = count, last
    return x, t_x, age


def test_fit_recovers_the_parameters_of_simulated_customers():
    truth = clv.BGNBDParams(r=0.5, alpha=5.0, a=0.8, b=2.5)
    x, t_x, age = simulate_bgnbd(truth, 20_000, seed=11)
    fitted = clv.fit_bgnbd(x, t_x, age)
    assert fitted.r == pytest.approx(truth.r, rel=0.1)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.15)
    assert fitted.a == pytest.approx(truth.a, rel=0.25)
    assert fitted.b == pytest.approx(truth.b, rel=0.3)


def test_the_time_unit_only_rescales_alpha():
    x, t_x, age = simulate_bgnbd(clv.BGNBDParams(0.5, 5.0, 0.8, 2.5), 3000, seed=3)
    weeks = clv.fit_bgnbd(x, t_x, age)
    days = clv.fit_bgnbd(x, t_x * 7, age * 7)
    assert days.alpha == pytest.approx(weeks.alpha * 7, rel=1e-4)
    assert (days.r, days.a, days.b) == pytest.approx((weeks.r, weeks.a, weeks.b), rel=1e-4)


def test_time_to_expected_purchase_is_where_one_purchase_is_expected():
    times = clv.time_to_expected_purchase(CDNOW_BG, X, T_X, AGE, horizon=104, resolution=0.01)
    for i, t in enumerate(times):
        if np.isnan(t):
            assert clv.expected_purchases(CDNOW_BG, 104, X[i], T_X[i], AGE[i]) < 1
            continue
        assert clv.expected_purchases(CDNOW_BG, t, X[i], T_X[i], AGE[i]) >= 1
        assert clv.expected_purchases(CDNOW_BG, t - 0.01, X[i], T_X[i], AGE[i]) < 1
    # The frequent, recent buyer expects a purchase soon; the one-off buyer not within 2 years.
    assert times[4] < 10
    assert np.isnan(times[0])


def test_lifetime_value_is_discounted_monthly_expected_spend():
    spend = np.full(X.size, 20.0)
    undiscounted = clv.lifetime_value(CDNOW_BG, spend, X, T_X, AGE, months=12,
                                      month_length=52 / 12, monthly_discount=0.0)
    assert undiscounted == pytest.approx(20 * clv.expected_purchases(CDNOW_BG, 52, X, T_X, AGE))
    discounted = clv.lifetime_value(CDNOW_BG, spend, X, T_X, AGE, months=12,
                                    month_length=52 / 12, monthly_discount=0.01)
    assert np.all(discounted < undiscounted)
    assert np.all(discounted > undiscounted / 1.01 ** 12)


def test_holdout_metrics_on_a_hand_computed_example():
    m = clv.holdout_metrics([1.0, 2.0, 0.0], [1.0, 0.0, 3.0])
    assert m["customers"] == 3
    assert m["actual_total"] == 4.0 and m["predicted_total"] == 3.0
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(13 / 3))


@pytest.mark.parametrize(("x", "t_x", "age"), [
    ([], [], []), ([-1], [0], [10]), ([1], [11], [10]), ([2], [0], [10])])
def test_impossible_summaries_are_refused(x, t_x, age):
    with pytest.raises(clv.FitFailed):
        clv.fit_bgnbd(x, t_x, age)


def test_gamma_gamma_refuses_customers_without_repeat_spend():
    with pytest.raises(clv.FitFailed):
        clv.fit_gamma_gamma([1, 0], [10.0, 5.0])


def _cdnow_summary_file() -> Path | None:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (Path(next(iter(spec.submodule_search_locations))) / "datasets"
            / "cdnow_customers_summary_with_transactions.csv")
    return path if path.exists() else None


@pytest.mark.skipif(_cdnow_summary_file() is None,
                    reason="the CDNOW summary ships with a dev dependency, not installed")
def test_the_published_cdnow_summary_gives_the_published_parameters():
    path = _cdnow_summary_file()
    assert path is not None
    _id, x, t_x, age, m = np.loadtxt(path, delimiter=",", skiprows=1, unpack=True)
    assert x.size == 2357
    bg = clv.fit_bgnbd(x, t_x, age)
    assert [f"{v:.3g}" for v in (bg.r, bg.alpha, bg.a, bg.b)] == ["0.243", "4.41", "0.793",
                                                                  "2.43"]
    gg = clv.fit_gamma_gamma(x[x > 0], m[x > 0])
    assert [f"{v:.3g}" for v in (gg.p, gg.q, gg.gamma)] == ["6.25", "3.74", "15.4"]


def test_the_series_fallback_agrees_with_scipy_where_both_work():
    from scipy.special import hyp2f1

    a = np.array([0.243, 1.243, 5.2, 10.2])
    b = np.array([2.426, 3.426, 7.4, 12.4])
    c = np.array([2.219, 3.219, 7.2, 12.2])
    z = np.array([0.1, 0.5, 0.3, 0.05])
    assert clv._hyp2f1_series(a, b, c, z) == pytest.approx(hyp2f1(a, b, c, z), rel=1e-12)


def test_customers_who_all_buy_alike_still_get_finite_predictions():
    # No heterogeneity and no drop-out: r and alpha run off towards infinity together, where
    # scipy's hypergeometric function gives up.
    degenerate = clv.BGNBDParams(r=365641.56, alpha=2881080.25, a=0.000111, b=82.57)
    x, t_x, age = np.array([2.0, 8.0]), np.array([30.0, 50.4]), np.array([72.4, 63.7])
    expected = clv.expected_purchases(degenerate, 30 / 7, x, t_x, age)
    assert np.all(np.isfinite(expected))
    rate = degenerate.r / degenerate.alpha
    assert expected == pytest.approx(rate * 30 / 7, rel=0.01)
    assert np.ndim(clv.expected_purchases(degenerate, 1.0, 2.0, 30.0, 72.4)) == 0
