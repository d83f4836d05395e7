"""The rules behind customer preferences: hour slots, price sensitivity, medians, shares."""

from __future__ import annotations

from decimal import Decimal

import pytest

from patron.analytics.preferences import SLOTS, hour_slot, median, price_sensitivity, shares


@pytest.mark.parametrize(("hour", "slot"), [
    (0, "night"), (5, "night"), (6, "morning"), (10, "morning"), (11, "lunch"), (13, "lunch"),
    (14, "afternoon"), (16, "afternoon"), (17, "evening"), (21, "evening"), (22, "night"),
    (23, "night")])
def test_each_hour_falls_in_its_slot_with_the_start_hour_inclusive(hour, slot):
    assert hour_slot(hour) == slot


def test_every_hour_of_the_day_has_exactly_one_slot():
    found = [hour_slot(h) for h in range(24)]
    assert set(found) == set(SLOTS)
    assert found.count("night") == 8  # 22:00 to 06:00


@pytest.mark.parametrize("hour", [-1, 24])
def test_an_hour_outside_the_day_is_refused(hour):
    with pytest.raises(ValueError):
        hour_slot(hour)


def test_price_sensitivity_is_the_discounted_share_of_gross_spend():
    assert price_sensitivity(Decimal("44.50"), Decimal("700.50")) == 0.0635
    assert price_sensitivity(Decimal("0"), Decimal("100")) == 0.0
    assert price_sensitivity(Decimal("100"), Decimal("100")) == 1.0


def test_price_sensitivity_without_spend_is_unknown_not_zero():
    assert price_sensitivity(Decimal("0"), Decimal("0")) is None


def test_price_sensitivity_never_leaves_zero_to_one():
    assert price_sensitivity(Decimal("120"), Decimal("100")) == 1.0


def test_median_of_odd_and_even_counts():
    assert median([Decimal(3), Decimal(1), Decimal(4)]) == Decimal(3)
    assert median([Decimal(4), Decimal(1)]) == Decimal("2.5")
    assert median([]) is None


def test_shares_list_every_key_in_order_even_without_orders():
    assert shares({"b": 1, "a": 2}, ["a", "b", "c"]) == [("a", 2, 0.6667), ("b", 1, 0.3333),
                                                          ("c", 0, 0.0)]
    assert shares({}, ["a"]) == [("a", 0, 0.0)]
