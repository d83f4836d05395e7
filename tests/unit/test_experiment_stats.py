"""The lift statistics against textbook values and scipy: Wilson and Newcombe intervals,
the pooled two-proportion z-test, and Welch's t-test computed from sums and sums of squares."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sp

from patron.experiments.stats import compare_means, compare_proportions, wilson


def test_wilson_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    low, high = wilson(81, 263)
    assert round(low, 4) == 0.2553 and round(high, 4) == 0.3662


def test_newcombe_difference_interval_matches_the_published_example():
    # Newcombe (1998b), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80,
    # method 10 (hybrid score): 0.0524 to 0.3339.
    c = compare_proportions(56, 70, 48, 80)
    assert round(c.difference, 4) == 0.2
    assert round(c.low, 4) == 0.0524 and round(c.high, 4) == 0.3339


def test_the_z_test_agrees_with_the_chi_square_test_without_correction():
    c = compare_proportions(130, 1000, 100, 1000)
    table = [[130, 870], [100, 900]]
    _chi2, p, _dof, _exp = sp.chi2_contingency(table, correction=False)
    assert c.p_value == pytest.approx(p, rel=1e-9)
    assert c.significant and c.relative == pytest.approx(0.3)


def test_no_difference_is_not_significant_and_rates_of_zero_have_an_interval():
    c = compare_proportions(0, 50, 0, 50)
    assert c.p_value == 1.0 and not c.significant and c.relative is None
    assert c.low < 0 < c.high


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 500, allow_nan=False), min_size=2, max_size=60),
       st.lists(st.floats(0, 500, allow_nan=False), min_size=2, max_size=60))
def test_welch_from_sums_equals_scipy_on_the_raw_values(a, b):
    x, y = np.array(a), np.array(b)
    c = compare_means(float(x.sum()), float((x * x).sum()), len(x),
                      float(y.sum()), float((y * y).sum()), len(y))
    if x.var() == 0 and y.var() == 0:
        return
    t = sp.ttest_ind(x, y, equal_var=False)
    if math.isnan(t.pvalue):
        return
    assert c.difference == pytest.approx(x.mean() - y.mean(), abs=1e-6)
    assert c.p_value == pytest.approx(t.pvalue, abs=1e-6)
    ci = t.confidence_interval(0.95)
    assert c.low == pytest.approx(ci.low, abs=1e-5) and c.high == pytest.approx(ci.high,
                                                                                 abs=1e-5)


def test_bad_groups_are_refused():
    with pytest.raises(ValueError):
        compare_proportions(1, 0, 1, 10)
    with pytest.raises(ValueError):
        compare_proportions(11, 10, 1, 10)
    with pytest.raises(ValueError):
        compare_means(1, 1, 1, 1, 1, 5)
