"""Rewards catalog rules without a database: limits, validity, prices, calendar periods."""

import datetime as dt
from decimal import Decimal

import pytest

from patron.rewards.model import (
    limit_breach,
    period_start,
    price,
    unavailable_reason,
    units_left,
)

UTC = dt.UTC


def test_a_period_starts_at_local_midnight_in_the_programs_time_zone():
    # 2026-04-01 00:30 in Shanghai is still 31 March in UTC.
    now = dt.datetime(2026, 3, 31, 16, 30, tzinfo=UTC)
    tz = "Asia/Shanghai"
    assert period_start(now, "day", tz) == dt.datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert period_start(now, "month", tz) == dt.datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    # Wednesday 1 April: the week began on Monday 30 March.
    assert period_start(now, "week", tz) == dt.datetime(2026, 3, 29, 16, 0, tzinfo=UTC)
    assert period_start(now, "year", tz) == dt.datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        period_start(now, "fortnight", tz)


def test_an_item_is_redeemable_from_its_start_until_just_before_its_end():
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    end = dt.datetime(2026, 2, 1, tzinfo=UTC)
    kw = {"active": True, "valid_from": start, "valid_until": end}
    assert unavailable_reason(**kw, now=start - dt.timedelta(seconds=1)) == \
        "reward_not_yet_valid"
    assert unavailable_reason(**kw, now=start) is None
    assert unavailable_reason(**kw, now=end - dt.timedelta(seconds=1)) is None
    assert unavailable_reason(**kw, now=end) == "reward_validity_ended"
    assert unavailable_reason(**{**kw, "active": False}, now=start) == "reward_inactive"
    assert unavailable_reason(active=True, valid_from=start, valid_until=None,
                              now=end + dt.timedelta(days=999)) is None


def test_limits_count_what_the_member_already_holds_or_was_given():
    assert limit_breach(quantity=1, limit_per_member=2, used_ever=1, limit_per_period=None,
                        used_in_period=0) is None
    b = limit_breach(quantity=2, limit_per_member=2, used_ever=1, limit_per_period=None,
                     used_in_period=0)
    assert (b.kind, b.limit, b.used) == ("member", 2, 1)
    p = limit_breach(quantity=1, limit_per_member=None, used_ever=9, limit_per_period=1,
                     used_in_period=1)
    assert (p.kind, p.limit, p.used) == ("period", 1, 1)


def test_points_and_cash_are_multiplied_exactly_and_unlimited_stock_has_no_count():
    assert price(150, Decimal("9.90"), 3) == (450, Decimal("29.70"))
    assert units_left(None, 5, 5) is None
    assert units_left(10, 3, 4) == 3
