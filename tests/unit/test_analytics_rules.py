"""RFM scoring, the segment map and lifecycle stages, without a database."""

import pytest

from patron.analytics.model import (
    SEGMENT_GRID,
    SEGMENTS,
    LifecycleThresholds,
    decide_stage,
    fm_score,
    quantile_scores,
    recency_score_by_thresholds,
    score_by_rank,
    segment_for,
    usual_interval,
    value_score_by_thresholds,
)

DEFAULT = LifecycleThresholds()


# --- scoring --------------------------------------------------------------------------------

def test_ten_distinct_values_fall_into_five_equal_quintiles():
    assert quantile_scores(list(range(10))) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_equal_values_get_the_same_score_at_the_lowest_rank_of_their_tie():
    # six one-order customers share rank 1; the rest rank 7..10 of 10
    assert quantile_scores([1, 1, 1, 1, 1, 1, 2, 3, 3, 9]) == [1] * 6 + [4, 4, 4, 5]


def test_recency_scores_fewer_days_higher():
    assert quantile_scores([0, 400, 10, 10, 100], higher_is_better=False) == [5, 1, 3, 3, 2]


def test_everyone_equal_scores_one():
    assert quantile_scores([5, 5, 5]) == [1, 1, 1]


def test_rank_outside_the_population_is_refused():
    with pytest.raises(ValueError):
        score_by_rank(0, 10)
    with pytest.raises(ValueError):
        score_by_rank(11, 10)


def test_owner_thresholds_score_recency_and_values():
    cuts = (7, 30, 90, 180)
    assert [recency_score_by_thresholds(d, cuts) for d in (0, 7, 8, 30, 90, 180, 181)] == [
        5, 5, 4, 4, 3, 2, 1]
    money = (100, 500, 1000, 5000)
    assert [value_score_by_thresholds(v, money) for v in (0, 99.99, 100, 999, 5000, 9e9)] == [
        1, 1, 2, 3, 5, 5]


# --- segments -------------------------------------------------------------------------------

def test_fm_is_the_average_of_f_and_m_rounded_half_up():
    assert [fm_score(1, 1), fm_score(1, 2), fm_score(2, 3), fm_score(4, 5), fm_score(5, 5)] == [
        1, 2, 3, 5, 5]


@pytest.mark.parametrize(("r", "f", "m", "segment"), [
    (5, 5, 5, "champions"),
    (5, 4, 4, "champions"),
    (4, 4, 5, "loyal"),
    (3, 5, 4, "loyal"),
    (5, 2, 3, "potential_loyalists"),
    (4, 2, 2, "potential_loyalists"),
    (5, 1, 1, "new"),
    (4, 1, 1, "promising"),
    (3, 3, 3, "need_attention"),
    (3, 2, 2, "about_to_sleep"),
    (3, 1, 1, "about_to_sleep"),
    (2, 3, 4, "at_risk"),
    (1, 3, 3, "at_risk"),
    (2, 5, 5, "cant_lose_them"),
    (1, 5, 4, "cant_lose_them"),
    (2, 1, 2, "hibernating"),
    (1, 2, 2, "hibernating"),
    (1, 1, 1, "lost"),
])
def test_each_named_segment(r, f, m, segment):
    assert segment_for(r, f, m) == segment


def test_the_grid_names_all_eleven_segments_and_nothing_else():
    assert {s for row in SEGMENT_GRID.values() for s in row} == set(SEGMENTS)
    assert len(SEGMENTS) == 11


def test_scores_outside_one_to_five_are_refused():
    with pytest.raises(ValueError):
        segment_for(0, 3, 3)


# --- lifecycle ------------------------------------------------------------------------------

def stage(*, first, last, days, span=None, prev=None, bought=False, th=DEFAULT, pop=30.0):
    span = first - last if span is None else span
    return decide_stage(days_since_first=first, days_since_last=last, purchase_days=days,
                        interval=usual_interval(span, days), population_interval=pop,
                        previous_stage=prev, bought_since_previous=bought, th=th)


def test_one_recent_purchase_is_new():
    assert stage(first=3, last=3, days=1) == "new"


def test_a_second_purchase_day_within_the_month_makes_an_active_customer():
    assert stage(first=20, last=5, days=2) == "active"


def test_one_time_buyer_after_the_new_window_is_judged_by_the_population_rhythm():
    assert stage(first=45, last=45, days=1, pop=30) == "active"
    assert stage(first=61, last=61, days=1, pop=30) == "dormant"
    assert stage(first=91, last=91, days=1, pop=30) == "churn_risk"
    assert stage(first=121, last=121, days=1, pop=30) == "churned"


def test_weekly_buyer_three_weeks_late_is_dormant_but_quarterly_buyer_is_active():
    # ten weekly visits, the last 21 days ago
    assert stage(first=21 + 63, last=21, days=10) == "dormant"
    # five quarterly visits, the last 21 days ago
    assert stage(first=21 + 360, last=21, days=5) == "active"


def test_adaptive_rule_climbs_from_dormant_to_churned():
    weekly = {"first": 100, "days": 10, "span": 63}
    assert stage(last=14, **weekly) == "active"
    assert stage(last=15, **weekly) == "dormant"
    assert stage(last=22, **weekly) == "churn_risk"
    assert stage(last=29, **weekly) == "churned"


def test_the_absolute_maximum_churns_even_a_slow_rhythm():
    assert stage(first=2000, last=366, days=3, span=1200) == "churned"


def test_the_usual_interval_never_drops_below_a_week():
    # two visits on consecutive days, ten days ago: not yet late
    assert stage(first=41, last=10, days=2, span=1) == "active"


def test_owner_fixed_days_override_the_rhythm():
    th = LifecycleThresholds(dormant_days=60, churn_risk_days=120, churned_days=180)
    weekly = {"first": 300, "days": 30, "span": 203, "th": th}
    assert stage(last=21, **weekly) == "active"
    assert stage(last=61, **weekly) == "dormant"
    assert stage(last=121, **weekly) == "churn_risk"
    assert stage(last=181, **weekly) == "churned"


def test_incomplete_or_unordered_owner_thresholds_are_refused():
    with pytest.raises(ValueError):
        LifecycleThresholds(dormant_days=60)
    with pytest.raises(ValueError):
        LifecycleThresholds(dormant_days=60, churn_risk_days=30, churned_days=90)
    with pytest.raises(ValueError):
        LifecycleThresholds(k_dormant=3, k_churn_risk=2, k_churned=4)


@pytest.mark.parametrize("lapsed", ["dormant", "churn_risk", "churned"])
def test_buying_again_after_lapsing_is_reactivation(lapsed):
    assert stage(first=200, last=1, days=3, span=199, prev=lapsed, bought=True) == "reactivated"


def test_reactivated_stays_until_another_purchase_in_rhythm():
    assert stage(first=200, last=10, days=3, span=190, prev="reactivated") == "reactivated"
    assert stage(first=200, last=2, days=4, span=198, prev="reactivated", bought=True) == "active"


def test_a_reactivated_customer_who_lapses_again_is_dormant():
    assert stage(first=45, last=25, days=3, span=20, prev="reactivated") == "dormant"
