"""RFM scores, named segments and lifecycle stages: the rules, in plain Python.

The service computes the same rules set-based in SQL (the quantile score and the segment grid
are turned into SQL expressions from the definitions here), so these functions are both the
specification and what the unit tests pin down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# --- RFM ------------------------------------------------------------------------------------

SEGMENTS = ("champions", "loyal", "potential_loyalists", "new", "promising", "need_attention",
            "about_to_sleep", "at_risk", "cant_lose_them", "hibernating", "lost")

# The 11-segment map on R (rows, 5 = bought most recently) and FM = the average of F and M
# rounded half up (columns 1..5). Each of the 25 cells names exactly one segment.
SEGMENT_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("new", "potential_loyalists", "potential_loyalists", "champions", "champions"),
    4: ("promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cant_lose_them"),
}


def fm_score(f: int, m: int) -> int:
    """The average of F and M, rounded half up: (1, 2) -> 2, (4, 5) -> 5."""
    return (f + m + 1) // 2


def segment_for(r: int, f: int, m: int) -> str:
    for name, value in (("r", r), ("f", f), ("m", m)):
        if not 1 <= value <= 5:
            raise ValueError(f"{name} score {value} is not within 1..5")
    return SEGMENT_GRID[r][fm_score(f, m) - 1]


def score_by_rank(rank: int, count: int) -> int:
    """Quantile score 1..5 from a 1-based competition rank (ties share the lowest rank) among
    ``count`` values ordered from worst to best: ``1 + 5 * (rank - 1) // count``.

    Equal values have equal ranks and so equal scores; a large tie at the bottom (the many
    one-time buyers) all score 1 rather than being split arbitrarily across quintiles."""
    if count <= 0 or not 1 <= rank <= count:
        raise ValueError("rank must lie within 1..count")
    return 1 + (5 * (rank - 1)) // count


def quantile_scores(values: Sequence[float | int], *, higher_is_better: bool = True
                    ) -> list[int]:
    """Scores for ``values`` (one per value, same order) by :func:`score_by_rank`. Recency
    passes days since the last purchase with ``higher_is_better=False``."""
    n = len(values)
    ordered = sorted(values, reverse=not higher_is_better)
    first_rank: dict[float | int, int] = {}
    for i, v in enumerate(ordered, start=1):
        first_rank.setdefault(v, i)
    return [score_by_rank(first_rank[v], n) for v in values]


@dataclass(frozen=True)
class RfmThresholds:
    """Owner-set cut points (ascending, four each) replacing the quantiles for a dimension.

    Recency in days since the last purchase: ``<= r[0]`` scores 5, ``<= r[1]`` 4, ... above
    ``r[3]`` 1. Frequency (orders) and monetary (net spend, yuan): ``>= x[3]`` scores 5,
    ``>= x[2]`` 4, ... below ``x[0]`` 1."""

    recency_days: tuple[int, int, int, int] | None = None
    frequency: tuple[int, int, int, int] | None = None
    monetary: tuple[float, float, float, float] | None = None


def check_cut_points(points: Sequence[float]) -> tuple[float, ...]:
    if len(points) != 4:
        raise ValueError("four cut points are needed")
    if any(not math.isfinite(p) or p < 0 for p in points):
        raise ValueError("cut points are non-negative numbers")
    if any(b <= a for a, b in zip(points, points[1:], strict=False)):
        raise ValueError("cut points must be strictly ascending")
    return tuple(points)


def recency_score_by_thresholds(days: int, cuts: Sequence[int]) -> int:
    return 5 - sum(1 for c in cuts if days > c)


def value_score_by_thresholds(value: float, cuts: Sequence[float]) -> int:
    return 1 + sum(1 for c in cuts if value >= c)


# --- lifecycle ------------------------------------------------------------------------------

STAGES = ("new", "active", "dormant", "churn_risk", "churned", "reactivated")
LAPSED = frozenset({"dormant", "churn_risk", "churned"})


@dataclass(frozen=True)
class LifecycleThresholds:
    """What decides a stage. With ``dormant_days``/``churn_risk_days``/``churned_days`` set (the
    owner's fixed numbers) they replace the adaptive rule: a customer is late relative to their
    own usual interval between purchase days times ``k_dormant``/``k_churn_risk``/``k_churned``.
    The usual interval is never taken below ``min_interval_days`` (two visits on consecutive
    days do not make a customer "churned" three days later); one-time buyers use the
    population's usual interval. Past ``max_days`` without a purchase everyone is churned."""

    new_days: int = 30
    k_dormant: float = 2.0
    k_churn_risk: float = 3.0
    k_churned: float = 4.0
    max_days: int = 365
    min_interval_days: float = 7.0
    dormant_days: int | None = None
    churn_risk_days: int | None = None
    churned_days: int | None = None
    fixed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        fixed = (self.dormant_days, self.churn_risk_days, self.churned_days)
        if any(v is not None for v in fixed):
            if any(v is None for v in fixed):
                raise ValueError("set all three fixed thresholds or none")
            d, c, x = fixed  # type: ignore[misc]
            if not 0 < d < c < x:  # type: ignore[operator]
                raise ValueError("fixed thresholds must be ascending positive days")
            object.__setattr__(self, "fixed", True)
        if not 0 < self.k_dormant < self.k_churn_risk < self.k_churned:
            raise ValueError("the multipliers must be ascending and positive")
        if self.new_days < 0 or self.max_days <= 0 or self.min_interval_days <= 0:
            raise ValueError("days must be positive")


DEFAULT_POPULATION_INTERVAL = 30.0


def usual_interval(span_days: float, purchase_days: int) -> float | None:
    """A customer's usual interval between purchase days: the mean gap, i.e. the span from the
    first to the last purchase over the number of gaps. None for one-time buyers.

    The mean comes straight from the running figures (first and last purchase, purchase days)
    so a million customers need no scan of their orders; a median would need every gap."""
    if purchase_days < 2:
        return None
    return max(span_days, 0.0) / (purchase_days - 1)


def lateness(days_since_last: float, interval: float | None, *, population_interval: float,
             th: LifecycleThresholds) -> str:
    """``active`` (in rhythm), ``dormant``, ``churn_risk`` or ``churned``."""
    if days_since_last > th.max_days:
        return "churned"
    if th.fixed:
        limits = (th.churned_days, th.churn_risk_days, th.dormant_days)
    else:
        base = max(interval if interval is not None else population_interval,
                   th.min_interval_days)
        limits = (th.k_churned * base, th.k_churn_risk * base, th.k_dormant * base)
    for stage, limit in zip(("churned", "churn_risk", "dormant"), limits, strict=True):
        if days_since_last > limit:  # type: ignore[operator]
            return stage
    return "active"


def decide_stage(*, days_since_first: float, days_since_last: float, purchase_days: int,
                 interval: float | None, population_interval: float,
                 previous_stage: str | None, bought_since_previous: bool,
                 th: LifecycleThresholds) -> str:
    """The stage of a customer with at least one purchase.

    ``new``: one purchase day, the first within ``new_days``. Otherwise by :func:`lateness`;
    a customer back in rhythm after being dormant, at churn risk or churned is ``reactivated``,
    and stays so until a further purchase in rhythm (``bought_since_previous``: a purchase
    after the one that reactivated them) makes them ``active``."""
    if purchase_days <= 1 and days_since_first <= th.new_days:
        return "new"
    late = lateness(days_since_last, interval, population_interval=population_interval, th=th)
    if late != "active":
        return late
    if previous_stage in LAPSED:
        return "reactivated"
    if previous_stage == "reactivated" and not bought_since_previous:
        return "reactivated"
    return "active"


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
