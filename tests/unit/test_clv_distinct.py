"""The fit's de-duplication of (x, t_x, T) rows gives what ``np.unique(axis=0)`` gives."""

from __future__ import annotations

import numpy as np

from patron.analytics.clv import _distinct


def test_distinct_rows_and_counts_equal_numpys_unique():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 50_000).astype(float)
    t_x = np.where(x > 0, rng.integers(1, 40, x.size) / 7, 0.0)
    T = t_x + rng.integers(0, 30, x.size) / 7
    rows, counts = _distinct(x, t_x, T)
    want, want_counts = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
    assert np.array_equal(np.column_stack(rows), want)
    assert np.array_equal(counts, want_counts.astype(float))
    assert counts.sum() == x.size and len(rows[0]) < x.size / 5


def test_one_row_and_all_equal_rows():
    rows, counts = _distinct(np.array([2.0]), np.array([1.0]), np.array([3.0]))
    assert [r.tolist() for r in rows] == [[2.0], [1.0], [3.0]] and counts.tolist() == [1.0]
    same = np.full(7, 1.5)
    rows, counts = _distinct(same, same, same)
    assert [r.tolist() for r in rows] == [[1.5]] * 3 and counts.tolist() == [7.0]
