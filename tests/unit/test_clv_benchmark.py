"""The lifetime-value benchmark runs end to end at a tiny size, so that it cannot rot unnoticed.

No speed is asserted: only that each figure has its anchor and that Patron and the reference
implementation find the same parameters.
"""

from __future__ import annotations

import pytest
from benchmarks import clv as bench


@pytest.mark.skipif(not bench.available(), reason="the reference implementation is a dev "
                                                   "dependency")
def test_a_tiny_clv_benchmark_measures_every_figure_against_its_anchor():
    figures = bench.run(customers=3000, repeats=1)
    assert len(figures) == 6
    for f in figures:
        assert f.anchor and f.anchor_value > 0
        assert f.value >= 0
    agreement = [f for f in figures if f.name.startswith("CLV parameters")]
    assert len(agreement) == 2 and all(f.passed for f in agreement)


def test_the_synthetic_summary_is_a_valid_model_input():
    x, t_x, age, m = bench.synthetic_summary(5000, seed=2)
    assert x.size == 5000
    assert (t_x <= age).all() and (t_x[x > 0] > 0).all() and (t_x[x == 0] == 0).all()
    assert (m[x > 0] > 0).all()
