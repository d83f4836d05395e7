"""The statistics of a lift report: one arm against the control group.

Pure functions on counts and sums (no SQL, no HTTP), so that they can be checked against
textbook values and against scipy:

- a difference of two proportions (conversion, coupon redemption, unsubscribes): Newcombe's
  hybrid score interval (built from the two Wilson intervals; good coverage even for rates near
  0 and small arms, where the plain Wald interval fails) and the pooled two-proportion z-test;
- a difference of two means (revenue or orders per customer, a variable with many zeros and a
  long tail): Welch's t-test and interval, which do not assume equal variances; from the sum
  and the sum of squares per arm, so the database never ships per-customer rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sp


@dataclass(frozen=True)
class Comparison:
    """An arm's figure against the control's: the difference (arm - control), its interval at
    ``confidence``, the two-sided p-value and whether it is below ``1 - confidence``."""

    arm: float
    control: float
    difference: float
    low: float
    high: float
    p_value: float
    significant: bool
    relative: float | None  # difference / control, None when control is 0


def _z(confidence: float) -> float:
    return float(sp.norm.ppf(1 - (1 - confidence) / 2))


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if n <= 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def compare_proportions(x1: int, n1: int, x0: int, n0: int, *,
                        confidence: float = 0.95) -> Comparison:
    """Arm (x1 of n1) against control (x0 of n0)."""
    if n1 <= 0 or n0 <= 0:
        raise ValueError("both groups need customers")
    if not (0 <= x1 <= n1 and 0 <= x0 <= n0):
        raise ValueError("successes must lie between 0 and the group's size")
    p1, p0 = x1 / n1, x0 / n0
    l1, u1 = wilson(x1, n1, confidence)
    l0, u0 = wilson(x0, n0, confidence)
    d = p1 - p0
    low = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    pooled = (x1 + x0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    p_value = 1.0 if se == 0 else float(2 * sp.norm.sf(abs(d) / se))
    return Comparison(arm=p1, control=p0, difference=d, low=low, high=high, p_value=p_value,
                      significant=p_value < 1 - confidence,
                      relative=None if p0 == 0 else d / p0)


def compare_means(sum1: float, sumsq1: float, n1: int, sum0: float, sumsq0: float, n0: int,
                  *, confidence: float = 0.95) -> Comparison:
    """Arm against control for a per-customer value given by its sum and sum of squares."""
    if n1 < 2 or n0 < 2:
        raise ValueError("each group needs at least two customers")
    m1, m0 = sum1 / n1, sum0 / n0
    v1 = max(0.0, (sumsq1 - n1 * m1 * m1) / (n1 - 1))
    v0 = max(0.0, (sumsq0 - n0 * m0 * m0) / (n0 - 1))
    d = m1 - m0
    se2 = v1 / n1 + v0 / n0
    if se2 == 0:
        return Comparison(arm=m1, control=m0, difference=d, low=d, high=d,
                          p_value=1.0 if d == 0 else 0.0, significant=d != 0,
                          relative=None if m0 == 0 else d / m0)
    se = math.sqrt(se2)
    df = se2 ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v0 / n0) ** 2 / (n0 - 1))
    t = float(sp.t.ppf(1 - (1 - confidence) / 2, df))
    p_value = float(2 * sp.t.sf(abs(d) / se, df))
    return Comparison(arm=m1, control=m0, difference=d, low=d - t * se, high=d + t * se,
                      p_value=p_value, significant=p_value < 1 - confidence,
                      relative=None if m0 == 0 else d / m0)
