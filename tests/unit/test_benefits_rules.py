"""Birthday, anniversary and referral rules without a database."""

import datetime as dt
from decimal import Decimal

from patron.benefits.model import (
    INVITE_ALPHABET,
    Purchase,
    anniversary_due,
    anniversary_on,
    birthday_points_due,
    month_bounds,
    multiplier_bonus,
    multiplier_settles_on,
    new_invite_code,
    normalize_invite_code,
    referral_outcome,
)

UTC = dt.UTC


def test_a_leap_day_enrolment_has_its_anniversary_on_the_28th_in_common_years():
    leap = dt.date(2024, 2, 29)
    assert anniversary_on(leap, 2025) == dt.date(2025, 2, 28)
    assert anniversary_on(leap, 2028) == dt.date(2028, 2, 29)
    assert anniversary_due(leap, dt.date(2025, 2, 27)) is None
    assert anniversary_due(leap, dt.date(2025, 2, 28)) == 2025
    assert anniversary_due(leap, dt.date(2024, 12, 31)) is None  # the year of enrolment


def test_a_birthday_bonus_is_due_all_month_and_only_with_a_birthday():
    assert birthday_points_due(dt.date(1990, 4, 30), dt.date(2026, 4, 1))
    assert not birthday_points_due(dt.date(1990, 4, 30), dt.date(2026, 5, 1))
    assert not birthday_points_due(None, dt.date(2026, 4, 1))


def test_the_multiplier_adds_the_missing_share_rounded_down_after_month_and_window():
    assert multiplier_bonus(71, Decimal("2")) == 71
    assert multiplier_bonus(71, Decimal("1.5")) == 35
    assert multiplier_bonus(0, Decimal("3")) == 0
    assert multiplier_bonus(-5, Decimal("3")) == 0
    assert multiplier_settles_on(2025, 12, 7) == dt.date(2026, 1, 8)
    assert multiplier_settles_on(2025, 2, 0) == dt.date(2025, 3, 1)


def test_a_month_runs_from_local_midnight_to_local_midnight():
    start, end = month_bounds(2026, 4, "Asia/Shanghai")
    assert start == dt.datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
    assert end == dt.datetime(2026, 4, 30, 16, 0, tzinfo=UTC)
    assert month_bounds(2026, 12, "Asia/Shanghai")[1] == dt.datetime(2026, 12, 31, 16,
                                                                    tzinfo=UTC)


def test_invite_codes_avoid_lookalike_characters_and_forgive_case_and_dashes():
    code = new_invite_code()
    assert len(code) == 8 and set(code) <= set(INVITE_ALPHABET)
    assert not set("01OIL") & set(INVITE_ALPHABET)
    assert normalize_invite_code(" abcd-2345 ") == "ABCD2345"


LINK = dt.datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = LINK + dt.timedelta(days=14)


def outcome(purchases, now, min_spend="50", pending_days=7):
    return referral_outcome(purchases, linked_at=LINK, qualify_until=UNTIL,
                            min_spend=Decimal(min_spend), pending_days=pending_days, now=now)


def p(order_id, days, spend):
    return Purchase(order_id, LINK + dt.timedelta(days=days), Decimal(spend))


def test_the_first_purchase_reaching_the_minimum_qualifies_after_its_return_window():
    buys = [p(1, 1, "20"), p(2, 2, "80"), p(3, 3, "500")]
    assert outcome(buys, LINK + dt.timedelta(days=8)).outcome == "wait"
    q = outcome(buys, LINK + dt.timedelta(days=9))
    assert (q.outcome, q.order_id) == ("qualified", 2)
    # Refunded to 30 net: the next purchase qualifies instead.
    q = outcome([p(2, 2, "30"), p(3, 3, "500")], LINK + dt.timedelta(days=10))
    assert (q.outcome, q.order_id) == ("qualified", 3)


def test_without_a_qualifying_purchase_in_time_the_referral_expires_after_the_window():
    late = [p(1, 14, "500"), p(2, -1, "500")]  # on the deadline, before the link
    assert outcome(late, UNTIL + dt.timedelta(days=6)).outcome == "wait"
    assert outcome(late, UNTIL + dt.timedelta(days=7)).outcome == "expired"
    assert outcome([], UNTIL, pending_days=0).outcome == "expired"
