"""The churn model's numerics without a database: AUC (Mann-Whitney, ties), calibration bins,
the Brier score, the L2 logistic fit, the feature matrix."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import expit

from patron.analytics import churn


def pairwise_auc(scores, labels) -> float:
    """The definition, pair by pair: P(positive scores above negative), ties one half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_of_perfect_reversed_and_uninformative_rankings():
    assert churn.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert churn.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert churn.auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5


def test_auc_known_value_with_one_misordered_pair():
    # Positives 0.35 and 0.8, negatives 0.1 and 0.4: 3 of 4 pairs ordered right.
    assert churn.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auc_counts_a_tie_as_one_half():
    # Pairs (pos, neg): (1, 1) tie, (1, 2) wrong, (3, 1) right, (3, 2) right -> 2.5 / 4.
    assert churn.auc([1, 1, 2, 3], [0, 1, 0, 1]) == pytest.approx(0.625)


def test_auc_matches_the_pairwise_definition_on_heavily_tied_scores():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, size=300)  # six distinct values: ties everywhere
    labels = rng.random(300) < expit((scores - 2.5) / 2)
    assert churn.auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)


def test_auc_is_undefined_with_one_class():
    assert churn.auc([0.1, 0.2], [1, 1]) is None
    assert churn.auc([], []) is None


def test_brier_score_known_value():
    assert churn.brier([0.9, 0.2, 0.5], [1, 0, 1]) == pytest.approx((0.01 + 0.04 + 0.25) / 3)


def test_calibration_deciles_hold_equal_counts_in_predicted_order():
    p = np.linspace(0.0, 0.95, 20)[::-1]  # given in descending order on purpose
    y = np.array([1] * 10 + [0] * 10)  # the high predictions churned
    table = churn.calibration_table(p, y)
    assert [row["bin"] for row in table] == list(range(1, 11))
    assert all(row["customers"] == 2 for row in table)
    assert table[0]["mean_predicted"] == pytest.approx(0.025)
    assert table[0]["observed_rate"] == 0.0 and table[-1]["observed_rate"] == 1.0
    assert table[-1]["min_predicted"] == pytest.approx(0.9)
    assert table[-1]["max_predicted"] == pytest.approx(0.95)
    means = [row["mean_predicted"] for row in table]
    assert means == sorted(means)


def test_calibration_with_fewer_customers_than_bins_leaves_no_empty_bin():
    table = churn.calibration_table([0.2, 0.7, 0.4], [0, 1, 1])
    assert [row["customers"] for row in table] == [1, 1, 1]
    assert [row["observed_rate"] for row in table] == [0.0, 1.0, 1.0]
    assert sum(r["customers"] for r in churn.calibration_table(np.arange(23) / 23,
                                                               np.ones(23))) == 23


def test_logistic_fit_recovers_known_coefficients_on_non_separable_data():
    rng = np.random.default_rng(7)
    n = 40_000
    x = np.column_stack([rng.normal(2.0, 3.0, n), rng.normal(0, 1, n), rng.normal(0, 1, n)])
    true_b, true_w = -0.5, np.array([0.4, -1.2, 0.0])
    y = rng.random(n) < expit(true_b + x @ true_w)
    model = churn.fit_logistic(x, y, l2=1e-6)
    # Back from standardised to raw coefficients.
    raw_w = model.coefficients / model.scale
    raw_b = model.intercept - float(model.mean @ raw_w)
    assert raw_w == pytest.approx(true_w, abs=0.05)
    assert raw_b == pytest.approx(true_b, abs=0.08)
    # The fitted probabilities reproduce the overall rate (the intercept's score equation).
    assert model.predict(x).mean() == pytest.approx(y.mean(), abs=1e-4)


def test_logistic_fit_on_separable_data_stays_finite_and_separates():
    x = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    loose = churn.fit_logistic(x, y, l2=1e-3)
    tight = churn.fit_logistic(x, y, l2=1.0)
    assert np.isfinite(loose.coefficients).all()
    p = loose.predict(x)
    assert (p[y == 1] > 0.9).all() and (p[y == 0] < 0.1).all()
    # A stronger penalty shrinks the coefficient towards zero.
    assert 0 < tight.coefficients[0] < loose.coefficients[0]
    assert churn.auc(p, y) == 1.0


def test_logistic_fit_ignores_a_constant_feature():
    x = np.column_stack([np.linspace(-1, 1, 50), np.full(50, 4.0)])
    y = np.linspace(-1, 1, 50) + np.sin(np.arange(50)) > 0
    model = churn.fit_logistic(x, y)
    assert model.coefficients[1] == pytest.approx(0.0, abs=1e-8)


def test_logistic_fit_refuses_a_single_outcome_and_bad_shapes():
    with pytest.raises(churn.FitFailed):
        churn.fit_logistic(np.ones((4, 1)), [1, 1, 1, 1])
    with pytest.raises(ValueError):
        churn.fit_logistic(np.ones((4, 1)), [0, 1, 1])


def features(**overrides) -> churn.CustomerFeatures:
    base = {
        "recency_days": np.array([10.0, 200.0, 3.0]),
        "purchase_days": np.array([5.0, 1.0, 2.0]),
        "tenure_days": np.array([90.0, 200.0, 5.0]),
        "net_spend": np.array([100.0, 30.0, 0.0]),
        "gross_spend": np.array([120.0, 30.0, 0.0]),
        "refunded": np.array([20.0, 0.0, 0.0]),
        "channels": np.array([2.0, 1.0, 1.0]),
        "recent_purchase_days": np.array([3.0, 0.0, 2.0]),
        "probability_alive": np.array([0.9, 1.0, np.nan]),
        "expected_purchases": np.array([2.0, 0.3, np.nan]),
        "population_interval": 25.0,
    }
    return churn.CustomerFeatures(**{**base, **overrides})


def test_usual_interval_is_the_mean_gap_with_the_population_one_for_single_buyers():
    # (90 - 10) / 4 = 20; one-time buyer: population 25; (5 - 3) / 1 = 2 raised to 7.
    assert features().usual_interval().tolist() == [20.0, 25.0, 7.0]


def test_feature_matrix_has_one_finite_column_per_named_feature():
    m = features().matrix()
    assert m.shape == (3, len(churn.FEATURES))
    assert np.isfinite(m).all()
    col = dict(zip(churn.FEATURES, m.T, strict=True))
    assert col["refund_share"].tolist() == pytest.approx([20 / 120, 0.0, 0.0])
    assert col["one_time_buyer"].tolist() == [0.0, 1.0, 0.0]
    assert col["log_overdue"][0] == pytest.approx(np.log1p(10 / 20))
    assert col["recent_share"].tolist() == pytest.approx([0.6, 0.0, 1.0])
    assert col["probability_alive"][2] == 1.0  # missing BG/NBD values fall back to neutral
