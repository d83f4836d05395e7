"""Loyalty rules without a database: earning, clawback proportions, lot expiry dates, member
codes and tiers. Every expected figure is worked out by hand in the comment beside it."""

import datetime as dt
from decimal import Decimal as D

import pytest

from patron.loyalty.model import (
    DateMultiplier,
    EarnedLine,
    EarningRules,
    LineFacts,
    OrderFacts,
    TierDef,
    Wallet,
    earn_for_order,
    growth_for_returned,
    lot_expiry,
    luhn_check_digit,
    luhn_valid,
    new_member_code,
    points_for_returned,
    qualifying_tier,
    review_tier,
    spread,
    tier_at,
)

SH = dt.timezone(dt.timedelta(hours=8))
MONDAY = dt.datetime(2026, 3, 2, 10, 30, tzinfo=SH)  # 2026-03-02 is a Monday

# The test basket: 2 lattes at 28.00 (coffee) and a croissant 16.50 less 1.50 (bakery) = 71.00
LINES = (LineFacts(1, "LATTE", "coffee", D("56.00")), LineFacts(2, "CROISSANT", "bakery",
                                                                   D("15.00")))


def facts(total="71.00", lines=LINES, payments=(), store="SH01", channel="pos", at=MONDAY):
    return OrderFacts(total=D(total), lines=lines, payments=tuple(payments), store_code=store,
                      channel_code=channel, local_time=at)


def earn(rules=None, tier=D(1), today=0, **kw):
    return earn_for_order(facts(**kw), rules or EarningRules(), tier_multiplier=tier,
                          earned_today=today)


def test_one_point_per_yuan_paid():
    e = earn()
    assert (e.points, e.growth, e.eligible) == (71, 71, D("71.00"))
    assert [(ln.line_no, ln.points) for ln in e.lines] == [(1, 56), (2, 15)]


def test_category_multiplier_and_sku_multiplier_beats_category():
    assert earn(EarningRules(category_multipliers={"coffee": D(2)})).points == 127  # 112 + 15
    both = EarningRules(category_multipliers={"coffee": D(2)}, sku_multipliers={"LATTE": D(3)})
    assert earn(both).points == 183  # 168 + 15


def test_excluded_category_earns_nothing_and_no_growth():
    e = earn(EarningRules(excluded_categories=frozenset({"bakery"})))
    assert (e.points, e.growth) == (56, 56)


def test_no_points_on_points_or_stored_value_payments_unless_configured():
    paid = [("points", D("21.00")), ("wechat_pay", D("50.00"))]
    # 56 x 50/71 = 39.436 -> 39.43; 15 x 50/71 = 10.563 -> 10.56; 49.99 -> 49 points
    e = earn(payments=paid)
    assert (e.eligible, e.points, e.growth) == (D("49.99"), 49, 49)
    sv = earn(payments=[("stored_value", D("71.00"))])
    assert (sv.points, sv.growth) == (0, 0)
    allowed = EarningRules(excluded_payment_methods=frozenset())
    assert earn(allowed, payments=paid).points == 71


def test_order_discount_is_spread_over_the_lines_like_refunds_are():
    # 60.00 over 56 and 15: 47.32 and 12.67 plus the odd fen to the larger remainder -> 12.68
    assert spread(D("60.00"), [D("56.00"), D("15.00")]) == [D("47.32"), D("12.68")]
    e = earn(total="60.00")
    assert e.points == 60 and [ln.paid for ln in e.lines] == [D("47.32"), D("12.68")]


def test_minimum_spend_gates_points_not_growth():
    e = earn(EarningRules(min_spend=D(100)))
    assert (e.points, e.growth) == (0, 71)
    assert earn(EarningRules(min_spend=D(71))).points == 71  # the minimum itself qualifies


def test_caps_per_order_and_per_day():
    capped = earn(EarningRules(cap_per_order=50))
    assert (capped.points, capped.uncapped) == (50, 71)
    # 50 x 56/71 = 39.44, 50 x 15/71 = 10.56: 39 and 10, the odd point to the larger remainder
    assert [ln.points for ln in capped.lines] == [39, 11]
    assert earn(EarningRules(cap_per_day=100), today=80).points == 20
    assert earn(EarningRules(cap_per_day=100), today=120).points == 0


def test_weekday_date_store_channel_and_tier_multipliers_multiply():
    assert earn(EarningRules(weekday_multipliers={"mon": D(2)})).points == 142
    assert earn(EarningRules(weekday_multipliers={"tue": D(2)})).points == 71
    dates = (DateMultiplier(dt.date(2026, 3, 1), dt.date(2026, 3, 3), D(3)),
             DateMultiplier(dt.date(2026, 3, 2), dt.date(2026, 3, 2), D(2)))
    assert earn(EarningRules(date_multipliers=dates)).points == 213  # the best range: x3
    rules = EarningRules(store_multipliers={"SH01": D("1.5")}, channel_multipliers={"pos": D(2)})
    assert earn(rules, tier=D("1.5")).points == 319  # 71 x 1.5 x 2 x 1.5 = 319.5
    assert earn(EarningRules(tier_multiplier=False), tier=D(2)).points == 71


def test_weekday_is_the_stores_local_day():
    # 23:30 on Monday in Shanghai is still Monday there, though Monday 15:30 UTC.
    late = dt.datetime(2026, 3, 2, 23, 30, tzinfo=SH)
    assert earn(EarningRules(weekday_multipliers={"mon": D(2)}), at=late).points == 142


def test_an_order_without_lines_earns_on_its_total():
    e = earn(total="30.00", lines=())
    assert e.points == 30 and [ln.line_no for ln in e.lines] == [0]


def test_rules_survive_their_json_form():
    rules = EarningRules(points_per_yuan=D("1.5"), category_multipliers={"coffee": D(2)},
                         date_multipliers=(DateMultiplier(dt.date(2026, 11, 11),
                                                          dt.date(2026, 11, 11), D(3)),),
                         excluded_payment_methods=frozenset({"points"}), cap_per_day=500)
    assert EarningRules.from_json(rules.to_json()) == rules
    assert EarningRules.from_json({}).excluded_payment_methods == {"points", "stored_value"}


def test_returned_lines_give_back_their_points_in_proportion():
    lines = [EarnedLine(1, D("56.00"), D("56.00"), 39), EarnedLine(2, D("15.00"), D("15.00"),
                                                                    11)]
    assert points_for_returned(lines, {1: D("28.00")}) == 20  # 19.5 rounds half up
    assert points_for_returned(lines, {1: D("56.00")}) == 39  # the rest: 19, exactly 39
    assert points_for_returned(lines, {2: D("15.00"), 1: D("56.00")}) == 50
    assert points_for_returned(lines, {}) == 0
    assert growth_for_returned(71, D("71.00"), D("28.00")) == 28
    assert growth_for_returned(71, D("71.00"), D("71.00")) == 71


def test_rolling_expiry_is_to_the_minute_and_clamps_month_ends():
    assert lot_expiry(MONDAY, mode="rolling_months", months=12, tz="Asia/Shanghai") == \
        dt.datetime(2027, 3, 2, 2, 30, tzinfo=dt.UTC)
    jan31 = dt.datetime(2026, 1, 31, 12, 0, tzinfo=SH)
    assert lot_expiry(jan31, mode="rolling_months", months=1, tz="Asia/Shanghai") == \
        dt.datetime(2026, 2, 28, 4, 0, tzinfo=dt.UTC)


def test_end_of_next_year_is_in_the_programs_time_zone():
    assert lot_expiry(MONDAY, mode="end_of_next_year", months=None, tz="Asia/Shanghai") == \
        dt.datetime(2027, 12, 31, 16, 0, tzinfo=dt.UTC)  # 2028-01-01 00:00 in Shanghai
    # 2026-12-31 16:00 UTC is already 2027 in Shanghai: its points last until the end of 2028.
    new_year = dt.datetime(2026, 12, 31, 16, 0, tzinfo=dt.UTC)
    assert lot_expiry(new_year, mode="end_of_next_year", months=None, tz="Asia/Shanghai") == \
        dt.datetime(2028, 12, 31, 16, 0, tzinfo=dt.UTC)


def test_points_cannot_be_given_a_lifetime_of_decades_by_a_unit_mistake():
    with pytest.raises(AssertionError):
        lot_expiry(MONDAY, mode="rolling_months", months=324, tz="Asia/Shanghai")


def test_member_codes_carry_a_luhn_check_digit():
    assert luhn_check_digit("7992739871") == "3"  # the textbook example
    code = new_member_code("8")
    assert len(code) == 12 and code.startswith("8") and luhn_valid(code)
    typo = code[:-2] + str((int(code[-2]) + 1) % 10) + code[-1]
    assert not luhn_valid(typo)


TIERS = [TierDef(1, "SILVER", 0, 0, D(0), D(1)), TierDef(2, "GOLD", 1, 1000, D(1000), D("1.5")),
         TierDef(3, "PLATINUM", 2, 5000, D(5000), D(2))]


def test_tier_minimums_are_never_skipped():
    assert qualifying_tier(TIERS, basis="growth", growth=999, spend=D(99999)).code == "SILVER"
    assert qualifying_tier(TIERS, basis="growth", growth=1000, spend=D(0)).code == "GOLD"
    assert qualifying_tier(TIERS, basis="spend_12m", growth=99999,
                           spend=D("999.99")).code == "SILVER"
    assert qualifying_tier(TIERS, basis="spend_12m", growth=0, spend=D(5000)).code == "PLATINUM"


def _review(current, qualifies, *, since_days=400, manual_until=None, max_levels=1):
    as_of = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    return review_tier(TIERS, current=TIERS[current], qualifies=TIERS[qualifies],
                       tier_since=as_of - dt.timedelta(days=since_days),
                       manual_until=manual_until, as_of=as_of, grace_days=365,
                       max_levels=max_levels)


def test_review_downgrades_after_the_grace_period_by_at_most_the_allowed_levels():
    d = _review(2, 0)
    assert (d.to_tier.code, d.reason) == ("GOLD", "downgrade")  # one level, not two
    assert _review(2, 0, max_levels=2).to_tier.code == "SILVER"
    assert _review(2, 0, since_days=100).reason == "keep_grace"
    assert _review(0, 2).reason == "upgrade"


def test_a_manual_grant_holds_until_its_end_date_and_is_no_floor_after_it():
    as_of = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    assert _review(2, 0, since_days=10, manual_until=as_of + dt.timedelta(days=1)
                   ).reason == "keep_manual"
    # Ended yesterday: no grace from the grant's date, down it goes.
    ended = _review(2, 0, since_days=10, manual_until=as_of - dt.timedelta(days=1))
    assert (ended.to_tier.code, ended.reason) == ("GOLD", "downgrade")


def test_the_tier_in_force_at_a_time_comes_from_the_history():
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    history = [(t, 1), (t + dt.timedelta(days=10), 2)]
    assert tier_at(history, t - dt.timedelta(seconds=1)) is None
    assert tier_at(history, t + dt.timedelta(days=5)) == 1
    assert tier_at(history, t + dt.timedelta(days=10)) == 2


def test_a_debt_is_paid_by_the_next_points_before_they_can_be_spent():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    later = now + dt.timedelta(days=100)
    w = Wallet(1, owed=30)
    w.earn(50, 0, cause=("order", "1"), earned_at=now, available_at=now, expires_at=later,
           now=now)
    assert (w.available, w.owed) == (20, 0)
    assert w.entries[0].points == 50 and w.entries[0].moves == {-2: -30}
