"""The dashboards' pure rules: calendar numbers, cutting a period, figures, cohorts and the
promotion comparison."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest

from patron.analytics import dashboards as rules
from patron.errors import ValidationFailed

TODAY = dt.date(2026, 3, 20)


def n(text: str) -> int:
    return rules.day_number(dt.date.fromisoformat(text))


def test_calendar_numbers_round_trip():
    assert rules.day_number(dt.date(1970, 1, 1)) == 0
    assert rules.day_of(n("2026-03-20")) == dt.date(2026, 3, 20)
    m = rules.month_index(dt.date(2026, 2, 14))
    assert (rules.month_label(m), rules.month_first(m), rules.month_last(m)) == (
        "2026-02", dt.date(2026, 2, 1), dt.date(2026, 2, 28))
    assert rules.month_last(rules.month_index(dt.date(2024, 2, 1))) == dt.date(2024, 2, 29)
    assert rules.parse_month("2026-12") == rules.month_index(dt.date(2026, 12, 5))
    for bad in ("2026-13", "26-1", "2026", "x"):
        with pytest.raises(ValidationFailed):
            rules.parse_month(bad)


def test_the_sql_week_arithmetic_finds_the_monday():
    day = dt.date(2026, 1, 1)
    for _ in range(60):
        assert rules.day_of(rules.week_start_number(rules.day_number(day))) == \
            rules.week_start(day)
        assert rules.week_start(day).weekday() == 0
        day += dt.timedelta(days=1)


def test_a_period_is_cut_into_partial_months_and_whole_months():
    cut = rules.split_range(n("2026-01-10"), n("2026-04-15"))
    assert cut.day_runs == ((n("2026-01-10"), n("2026-01-31")), (n("2026-04-01"),
                                                                 n("2026-04-15")))
    assert [rules.month_label(m) for m in cut.months] == ["2026-02", "2026-03"]
    whole = rules.split_range(n("2026-01-01"), n("2026-03-31"))
    assert whole.day_runs == () and len(whole.months) == 3
    inside = rules.split_range(n("2026-02-03"), n("2026-02-20"))
    assert inside.day_runs == ((n("2026-02-03"), n("2026-02-20")),) and inside.months == ()
    assert rules.split_range(n("2026-02-01"), n("2026-02-28")).months == (
        rules.month_index(dt.date(2026, 2, 1)),)
    assert rules.split_range(5, 4) == rules.Pieces((), ())


def test_nothing_after_today_counts():
    p = rules.check_period(dt.date(2026, 3, 1), dt.date(2026, 3, 31), TODAY)
    assert p.effective_to == TODAY and p.hi == n("2026-03-20")
    future = rules.check_period(dt.date(2026, 4, 1), dt.date(2026, 4, 30), TODAY)
    assert future.empty and rules.buckets("month", future) == []
    with pytest.raises(ValidationFailed) as exc:
        rules.check_period(dt.date(2026, 3, 2), dt.date(2026, 3, 1), TODAY)
    assert exc.value.fields[0].field == "to"
    with pytest.raises(ValidationFailed):
        rules.check_period(dt.date(2020, 1, 1), dt.date(2026, 1, 1), TODAY)


def test_buckets_are_clipped_to_the_period_and_say_whether_whole():
    p = rules.check_period(dt.date(2026, 1, 15), dt.date(2026, 3, 31), TODAY)
    months = rules.buckets("month", p)
    assert [(b.key, rules.day_of(b.lo), rules.day_of(b.hi), b.whole) for b in months] == [
        ("2026-01", dt.date(2026, 1, 15), dt.date(2026, 1, 31), False),
        ("2026-02", dt.date(2026, 2, 1), dt.date(2026, 2, 28), True),
        ("2026-03", dt.date(2026, 3, 1), dt.date(2026, 3, 20), False)]
    weeks = rules.buckets("week", rules.check_period(dt.date(2026, 3, 4), dt.date(2026, 3, 15),
                                                     TODAY))
    assert [(b.key, b.whole) for b in weeks] == [("2026-03-02", False), ("2026-03-09", True)]
    with pytest.raises(ValidationFailed):
        rules.buckets("day", rules.check_period(dt.date(2025, 1, 1), TODAY, TODAY))


def test_figures_never_divide_by_zero():
    empty = rules.figures(rules.Sums(), rules.Reach())
    assert empty["aov"] is None and empty["repurchase_rate"] is None
    assert empty["frequency"] is None and empty["net_sales"] == Decimal("0.00")
    for value in empty.values():
        assert not (isinstance(value, float) and math.isnan(value))
    sums = rules.Sums()
    sums.add("m", 2, 30000, 5000)
    sums.add("g", 1, 1000, 0)
    got = rules.figures(sums, rules.Reach(1, 1, 1))
    assert (got["orders"], got["guest_orders"], got["net_sales"], got["aov"],
            got["frequency"], got["repurchase_rate"], got["returning_customers"]) == (
        3, 1, Decimal("260.00"), Decimal("86.67"), 2.0, 1.0, 0)
    guest = rules.group_figures(sums, rules.Reach(1, 1, 1), "g")
    assert (guest["orders"], guest["aov"], guest["customers"], guest["frequency"]) == (
        1, Decimal("10.00"), None, None)


def test_retention_stops_at_the_current_month():
    jan = rules.month_index(dt.date(2026, 1, 1))
    got = rules.retention({0: 4, 1: 2, 3: 1}, jan, jan + 2, 12)
    assert got["customers"] == 4
    assert [(p["k"], p["customers"], p["share"]) for p in got["retention"]] == [
        (0, 4, 1.0), (1, 2, 0.5), (2, 0, 0.0)]
    assert rules.retention({}, jan, jan, 12)["retention"] == [
        {"k": 0, "month": "2026-01", "customers": 0, "share": None}]


def test_promotion_windows_and_changes():
    ended = rules.promotion_windows(dt.date(2026, 3, 9), dt.date(2026, 3, 15), TODAY)
    assert ended.status == "ended"
    assert ended.before == (dt.date(2026, 3, 2), dt.date(2026, 3, 8))
    running = rules.promotion_windows(dt.date(2026, 3, 18), dt.date(2026, 3, 31), TODAY)
    assert (running.status, running.during, running.before) == (
        "running", (dt.date(2026, 3, 18), TODAY), (dt.date(2026, 3, 15), dt.date(2026, 3, 17)))
    assert rules.promotion_windows(dt.date(2026, 4, 1), dt.date(2026, 4, 2), TODAY).status == \
        "upcoming"
    assert rules.change(Decimal("60.00"), Decimal("90.00")) == {
        "absolute": Decimal("30.00"), "relative": 0.5}
    assert rules.change(0, 3) == {"absolute": 3, "relative": None}
    assert rules.change(None, 1) == {"absolute": None, "relative": None}
    assert rules.change(0.5, 0.25) == {"absolute": -0.25, "relative": -0.5}
