"""Checkout rules without a database: prices, the member discount, the points cap, refund
shares and tier benefits read leniently. Each figure worked out by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from patron.checkout.model import (
    BasketLine,
    PricingError,
    TierBenefits,
    in_birthday_month,
    max_redeemable,
    points_deductible,
    points_deduction_value,
    points_value,
    price,
    refund_share,
    tier_discount,
)

LATTE = BasketLine(1, "LATTE", None, "coffee", Decimal(2), 2800)
CROISSANT = BasketLine(2, "CROISSANT", None, "bakery", Decimal(1), 1500)
TEN = [560, 150]  # 10% of each line


def test_a_line_costs_quantity_times_price_rounded_half_up():
    assert BasketLine(1, "TEA", None, None, Decimal("0.333"), 1000).amount == 333
    assert BasketLine(1, "TEA", None, None, Decimal("0.3335"), 1000).amount == 334
    assert BasketLine(1, "BEANS", None, None, Decimal("0.25"), 8900).amount == 2225


def test_the_member_discount_is_taken_per_line_rounded_half_up():
    assert tier_discount([LATTE, CROISSANT], Decimal(10)) == [560, 150]
    # 12.5% of 56.00 = 7.00; of 15.00 = 1.875 -> 1.88
    assert tier_discount([LATTE, CROISSANT], Decimal("12.5")) == [700, 188]
    assert tier_discount([LATTE, CROISSANT], Decimal(0)) == [0, 0]


def test_points_never_make_the_payable_amount_negative():
    assert points_value(500, 100) == 500 and points_value(15, 1000) == 1
    assert max_redeemable(10_000, 6390, 100) == 6390
    assert max_redeemable(300, 6390, 100) == 300
    assert max_redeemable(100_000, 6390, 1000) == 63900
    p = price([LATTE, CROISSANT], tier_lines=TEN, points=6390)
    assert p.payable == 0
    with pytest.raises(PricingError) as exc:
        price([LATTE, CROISSANT], tier_lines=TEN, points=6391)
    assert (exc.value.field, exc.value.reason, exc.value.params) == (
        "redeem_points", "points_exceed_payable", {"max": 6390})
    with pytest.raises(PricingError) as exc:
        price([LATTE], tier_lines=[0], points=5, points_per_yuan=1000)
    assert exc.value.reason == "points_worth_nothing"


def test_stored_value_and_tenders_pay_exactly_what_is_left():
    p = price([LATTE, CROISSANT], tier_lines=TEN, points=500, stored_value=1000,
              tenders=[("cash", 4890)])
    assert (p.total, p.payable) == (6390, 4890)
    assert p.payments() == [("points", 500), ("stored_value", 1000), ("cash", 4890)]
    with pytest.raises(PricingError) as exc:
        price([LATTE, CROISSANT], tier_lines=TEN, tenders=[("cash", 100)])
    assert exc.value.params == {"expected": 6390}
    with pytest.raises(PricingError) as exc:
        price([LATTE, CROISSANT], tier_lines=TEN, points=500, stored_value=5891)
    assert exc.value.reason == "stored_value_exceeds_payable"


def test_coupons_on_a_line_are_taken_after_the_member_discount():
    p = price([LATTE, CROISSANT], tier_lines=TEN, coupon_lines=[1000, 0])
    assert (p.tier_discount, p.coupon_discount, p.total) == (710, 1000, 5390)
    assert [ln.amount for ln in p.lines] == [4040, 1350]
    with pytest.raises(PricingError) as exc:
        price([CROISSANT], tier_lines=[150], coupon_lines=[1351])
    assert exc.value.reason == "discount_exceeds_amount"


def test_refund_shares_are_cumulative_and_the_last_refund_takes_what_is_left():
    # 639 points paid an order of 6390 fen; 2520 refunded first, then the rest.
    first = refund_share(639, 0, 6390, 2520, 0)
    assert first == 252
    assert refund_share(639, 2520, 6390, 3870, first) == 639 - 252
    # three thirds of 100 points: 33, 34 (cumulative 67), 33
    a = refund_share(100, 0, 300, 100, 0)
    b = refund_share(100, 100, 300, 100, a)
    c = refund_share(100, 200, 300, 100, a + b)
    assert (a, b, c) == (33, 34, 33)


def test_benefits_are_read_leniently_and_never_break_a_checkout():
    assert TierBenefits.from_json({}) == TierBenefits()
    assert TierBenefits.from_json(None) == TierBenefits()
    odd = TierBenefits.from_json({"discount": "9折", "member_discount_percent": "lots",
                                  "free_items": ["water", {"name": "no sku"}]})
    assert odd.discount_percent == 0 and odd.free_items == ()
    assert TierBenefits.from_json({"member_discount_percent": "150"}).discount_percent == 0
    good = TierBenefits.from_json({"member_discount_percent": "8.5",
                                   "birthday_gift": {"description": "cake"},
                                   "free_items": [{"sku": "W"}]})
    assert good.discount_percent == Decimal("8.5")
    assert good.birthday_gift == {"description": "cake"}
    assert good.free_items == ({"sku": "W", "name": None, "quantity": 1},)


def test_the_birthday_month():
    assert in_birthday_month(dt.date(1990, 11, 3), dt.date(2026, 11, 25))
    assert not in_birthday_month(dt.date(1990, 12, 3), dt.date(2026, 11, 25))
    assert not in_birthday_month(None, dt.date(2026, 11, 25))


def test_points_deducted_from_a_refund_are_valued_rounded_up_never_in_the_members_favour():
    # 30 points per yuan: one point is 3.33... fen.
    assert points_deduction_value(10, 30) == 34 and points_value(10, 30) == 33
    assert points_deduction_value(30, 30) == 100 == points_value(30, 30)  # exact: no rounding
    assert points_deduction_value(0, 30) == 0
    assert points_deduction_value(95, 100) == 95
    for rate in (1, 7, 30, 100, 333, 100000):
        for pts in range(0, 400):
            exact = Decimal(pts) * 100 / rate
            deducted = points_deduction_value(pts, rate)
            # At least the points' value, less than a fen more: the member loses under a fen.
            assert exact <= deducted < exact + 1
            # Paying with the points and refunding them never gains the member money.
            assert deducted >= points_value(pts, rate)


def test_the_money_covers_the_most_whole_points_whose_value_fits():
    assert points_deductible(90, 1) == 0  # 0.90 cannot pay a point worth a yuan
    assert points_deductible(6390, 1) == 63
    assert points_deductible(100, 30) == 30
    assert points_deductible(-5, 30) == 0
    for rate in (1, 7, 30, 100, 333):
        for money in range(0, 500, 7):
            n = points_deductible(money, rate)
            assert points_deduction_value(n, rate) <= money
            assert points_deduction_value(n + 1, rate) > money
