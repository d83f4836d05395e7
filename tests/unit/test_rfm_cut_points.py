"""Four cut points per dimension score exactly as the rank rule: a customer scores at least s
when their value is strictly better than the K_s-th worst, K_s = ceil((s - 1) n / 5); owner
thresholds as "better than" bounds score as the model's threshold rules."""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal

from patron.analytics.model import (
    RfmThresholds,
    quantile_scores,
    recency_score_by_thresholds,
    value_score_by_thresholds,
)
from patron.analytics.rfm_refresh import (
    DAY,
    PERCENTILE_EXACT_UPTO,
    cut_positions,
    recency,
    score,
    threshold_his,
    value_class,
)

END = dt.datetime(2026, 6, 1, 16, 0, tzinfo=dt.UTC)  # a local midnight in Shanghai


def cut_his(dim: str, values: list, end: dt.datetime = END) -> list:
    ordered = sorted(values)  # worst first: fewer orders, less spend, an older purchase
    n = len(ordered)
    return [value_class(dim, ordered[((s - 1) * n + 4) // 5 - 1], end)[1] for s in range(2, 6)]


def test_cut_points_score_as_the_rank_rule_with_ties():
    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(1, 40)
        freq = [rng.choice([1, 1, 1, 2, 2, 3, 5, 8]) for _ in range(n)]
        money = [rng.choice([0, 1000, 1000, 2550, 9999]) for _ in range(n)]  # fen
        his_f, his_m = cut_his("f", freq), cut_his("m", money)
        assert [score(x, his_f) for x in freq] == quantile_scores(freq)
        assert [score(x, his_m) for x in money] == quantile_scores(
            [float(Decimal(m) / 100) for m in money])


def test_recency_cut_points_are_whole_days_and_the_last_day_holds_later_purchases():
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 40)
        moments = []
        for _ in range(n):
            pick = rng.random()
            if pick < 0.2:  # exactly a local midnight, or the microsecond before
                moment = END - rng.randint(0, 9) * DAY - dt.timedelta(
                    microseconds=rng.choice([0, 1]))
            elif pick < 0.3:  # after the end of the as-of day (a till clock ahead)
                moment = END + dt.timedelta(hours=rng.randint(0, 20))
            else:
                moment = END - dt.timedelta(seconds=rng.randint(0, 12 * 86400))
            moments.append(moment)
        his = cut_his("r", moments)
        days = [recency(m, END) for m in moments]
        assert [score(m, his) for m in moments] == quantile_scores(days,
                                                                   higher_is_better=False)


def test_owner_thresholds_as_bounds_score_as_the_model():
    th = RfmThresholds(recency_days=(7, 30, 90, 180), frequency=(2, 4, 8, 16),
                       monetary=(100.0, 500.5, 1000.0, 5000.0))
    r, f, m = (threshold_his(d, th, END) for d in ("r", "f", "m"))
    for days in (0, 6, 7, 8, 30, 31, 90, 91, 180, 181, 400):
        for extra in (dt.timedelta(0), dt.timedelta(hours=5), dt.timedelta(hours=23, minutes=59)):
            moment = END - days * DAY - extra
            assert recency(moment, END) == days
            assert score(moment, r) == recency_score_by_thresholds(days, th.recency_days)
    for count in range(0, 20):
        assert score(count, f) == value_score_by_thresholds(count, th.frequency)
    for fen in (0, 9999, 10000, 50049, 50050, 100000, 499999, 500000, 900000):
        yuan = Decimal(fen) / 100  # the cut points are in fen, the owner's in yuan
        assert score(fen, m) == value_score_by_thresholds(float(yuan), th.monetary)
    assert threshold_his("f", RfmThresholds(), END) is None


def test_percentile_positions_are_the_cut_positions():
    """PostgreSQL's ``percentile_disc(p)`` takes the ``ceil(p * n)``-th value (double
    precision): for p = 0.2 .. 0.8 that is the cut point's K_s for every scope size the full
    refresh hands it (a product rounded up past a whole number would take the next value)."""
    rng = random.Random(7)
    sizes = [*range(1, 20_001), *(rng.randrange(1, PERCENTILE_EXACT_UPTO + 1)
                                   for _ in range(20_000)),
             *range(PERCENTILE_EXACT_UPTO - 5_000, PERCENTILE_EXACT_UPTO + 1)]
    for n in sizes:
        assert [math.ceil(((s - 1) / 5) * n) - 1 for s in range(2, 6)] == cut_positions(n), n
    assert cut_positions(5) == [0, 1, 2, 3]
    assert cut_positions(1) == [0, 0, 0, 0]
