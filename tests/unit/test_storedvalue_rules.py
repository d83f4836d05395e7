"""Stored value rules without a database: bonus tiers, the spending orders, proportional
refunds and their rounding in fen, cash-back forfeiture, inter-store netting. Every figure is
worked out by hand in the comments."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patron.storedvalue.model import (
    InsufficientBalance,
    Lot,
    RefundTooLarge,
    bonus_expiry,
    bonus_for,
    cashout_forfeit,
    give_back,
    net_settlement,
    plan_spend,
    refund_split,
    round_half_up,
    split_spend,
    tiers_from_json,
)

TIERS = tiers_from_json([{"min": "1000", "bonus": "120"}, {"min": "500", "bonus": "50"}])


def test_a_top_up_earns_the_bonus_of_the_highest_threshold_it_meets():
    assert bonus_for(TIERS, 49_999) == 0
    assert bonus_for(TIERS, 50_000) == 5_000
    assert bonus_for(TIERS, 99_999) == 5_000
    assert bonus_for(TIERS, 100_000) == 12_000  # one tier, not 2 x 50
    assert bonus_for(TIERS, 300_000) == 12_000
    assert bonus_for([], 300_000) == 0


def test_bonus_first_spends_the_bonus_before_the_principal():
    assert split_spend("bonus_first", 3_000, 50_000, 5_000) == (0, 3_000)
    assert split_spend("bonus_first", 8_000, 50_000, 5_000) == (3_000, 5_000)


def test_principal_first_spends_the_principal_before_the_bonus():
    assert split_spend("principal_first", 3_000, 50_000, 5_000) == (3_000, 0)
    assert split_spend("principal_first", 52_000, 50_000, 5_000) == (50_000, 2_000)


def test_proportional_spending_rounds_the_bonus_share_half_up_to_the_fen():
    # 550 on the card, 50 of it bonus: 10.00 spent uses 10 x 50/550 = 0.909.. -> 0.91 bonus
    assert split_spend("proportional", 1_000, 50_000, 5_000) == (909, 91)
    # 0.01 spent: 0.0009.. bonus rounds to 0; the fen is principal
    assert split_spend("proportional", 1, 50_000, 5_000) == (1, 0)
    # everything: exactly what each holds
    assert split_spend("proportional", 55_000, 50_000, 5_000) == (50_000, 5_000)


def test_a_spend_larger_than_the_card_is_refused_with_what_is_there():
    with pytest.raises(InsufficientBalance) as exc:
        split_spend("bonus_first", 55_001, 50_000, 5_000)
    assert (exc.value.wanted, exc.value.available) == (55_001, 55_000)


@given(order=st.sampled_from(["bonus_first", "principal_first", "proportional"]),
       principal=st.integers(0, 10**8), bonus=st.integers(0, 10**7), data=st.data())
def test_every_split_stays_within_each_side_and_adds_up(order, principal, bonus, data):
    if principal + bonus == 0:
        return
    amount = data.draw(st.integers(1, principal + bonus))
    p, b = split_spend(order, amount, principal, bonus)
    assert p + b == amount and 0 <= p <= principal and 0 <= b <= bonus


def test_spends_take_from_the_oldest_top_up_first():
    lots = [Lot(7, 20_000, 0, store_id=2), Lot(3, 10_000, 1_000, store_id=1)]
    p, b, per_lot = plan_spend(lots, "principal_first", 15_000)
    assert (p, b) == (15_000, 0)
    assert per_lot == {3: (10_000, 0), 7: (5_000, 0)}


def test_a_refund_gives_back_in_the_proportions_the_spend_used():
    # A spend of 100.00 that used 90.91 principal and 9.09 bonus, refunded 30.00:
    # bonus 9.09 x 30/100 = 2.727 -> 2.73; principal the rest, 27.27.
    assert refund_split(9_091, 909, 0, 0, 3_000) == (2_727, 273)
    # Then 30.00 more: cumulative 60.00 -> bonus 5.454 -> 5.45, so 2.72 now.
    assert refund_split(9_091, 909, 2_727, 273, 3_000) == (2_728, 272)
    # The last 40.00 gives back exactly what is left of each.
    assert refund_split(9_091, 909, 5_455, 545, 4_000) == (3_636, 364)


def test_a_refund_never_gives_back_more_than_the_spend_used():
    with pytest.raises(RefundTooLarge) as exc:
        refund_split(9_091, 909, 5_455, 545, 4_001)
    assert exc.value.refundable == 4_000


@given(principal=st.integers(0, 10**6), bonus=st.integers(0, 10**5),
       cuts=st.lists(st.integers(1, 10**6), min_size=1, max_size=8))
def test_refunds_in_any_pieces_add_up_to_exactly_what_was_spent(principal, bonus, cuts):
    total = principal + bonus
    if total == 0:
        return
    rp = rb = 0
    for cut in [*cuts, total]:
        amount = min(cut, total - rp - rb)
        if amount == 0:
            break
        p, b = refund_split(principal, bonus, rp, rb, amount)
        assert p >= 0 and b >= 0 and p + b == amount
        rp, rb = rp + p, rb + b
        assert rp <= principal and rb <= bonus
        # always within a fen of the exact proportion
        assert abs(rb * total - bonus * (rp + rb)) <= total
    assert (rp, rb) == (principal, bonus)


def test_refunds_go_back_to_the_newest_lot_the_spend_took_from_first():
    used = {3: 10_000, 7: 5_000}
    assert give_back(used, {}, 6_000) == {7: 5_000, 3: 1_000}
    assert give_back(used, {7: 5_000, 3: 1_000}, 9_000) == {3: 9_000}
    with pytest.raises(RefundTooLarge):
        give_back(used, {7: 5_000, 3: 1_000}, 9_001)


def test_a_cash_back_forfeits_bonus_in_proportion_to_the_principal_paid_back():
    # 500 topped up with 50 bonus; 200 principal spent; 300 paid back: 50 x 300/500 = 30 lost.
    assert cashout_forfeit(50_000, 5_000, 0, 0, 5_000, 30_000) == 3_000
    # The rest later (after the 200 came back by a refund): all of the bonus, 20 more.
    assert cashout_forfeit(50_000, 5_000, 30_000, 3_000, 2_000, 20_000) == 2_000
    # Bonus already spent is not taken from the cash: only what the card still holds.
    assert cashout_forfeit(50_000, 5_000, 0, 0, 1_000, 30_000) == 1_000
    # 1.00 of 3.00 principal with 1.00 bonus: 0.333 -> 0.33
    assert cashout_forfeit(300, 100, 0, 0, 100, 100) == 33


def test_inter_store_settlement_nets_each_pair_of_stores():
    # A took in money spent at B (300) and B money spent at A (100): A owes B 200.
    flows = {("A", "B"): 30_000, ("B", "A"): 10_000, ("A", "A"): 99_999, ("C", "B"): 500,
             (None, "A"): 700}
    assert net_settlement(flows) == [
        {"from": None, "to": "A", "amount": 700},
        {"from": "A", "to": "B", "amount": 20_000},
        {"from": "C", "to": "B", "amount": 500},
    ]
    assert net_settlement({("A", "B"): 100, ("B", "A"): 100}) == []


def test_half_up_rounding_in_integers():
    assert [round_half_up(n, 4) for n in range(8)] == [0, 0, 1, 1, 1, 1, 2, 2]
    assert all(round_half_up(n * d, d) == n for n, d in itertools.product(range(5), (1, 3, 7)))


def test_bonus_expires_months_later_to_the_minute_in_the_programs_time_zone():
    cst = dt.timezone(dt.timedelta(hours=8))
    at = dt.datetime(2026, 1, 31, 23, 30, tzinfo=cst)  # 15:30 UTC on the 31st
    # local 31 January + 1 month = 28 February 23:30 local (the month's last day)
    assert bonus_expiry(at, 1, "Asia/Shanghai") == dt.datetime(2026, 2, 28, 15, 30,
                                                                tzinfo=dt.UTC)
    assert bonus_expiry(at, 12, "Asia/Shanghai") == dt.datetime(2027, 1, 31, 15, 30,
                                                                 tzinfo=dt.UTC)
    assert bonus_expiry(at, None, "Asia/Shanghai") is None
    lot = Lot(1, 0, 100, bonus_expires_at=dt.datetime(2027, 1, 31, 15, 30, tzinfo=dt.UTC))
    assert not lot.bonus_expired(dt.datetime(2027, 1, 31, 15, 29, tzinfo=dt.UTC))
    assert lot.bonus_expired(dt.datetime(2027, 1, 31, 15, 30, tzinfo=dt.UTC))
