"""Coupon rules without a database: each kind, validity and scope, the lines a discount applies to,
rounding to the fen, the stacking policy, and codes. Every figure is worked out by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patron.coupons import model
from patron.coupons.model import Basket, Coupon, Line, Terms

NOW = dt.datetime(2026, 11, 20, 4, 0, tzinfo=dt.UTC)
FROM = NOW - dt.timedelta(days=10)
UNTIL = NOW + dt.timedelta(days=10)


def basket(*lines: tuple[str, str | None, str, int], store: str | None = "SH01",
           channel: str = "pos", shipping: int = 0, at: dt.datetime = NOW) -> Basket:
    return Basket(tuple(Line(i + 1, sku, cat, Decimal(qty), price)
                        for i, (sku, cat, qty, price) in enumerate(lines)),
                  store, channel, at, shipping)


COFFEE = ("LATTE", "coffee", "2", 2800)  # 56.00
CAKE = ("CAKE", "bakery", "1", 1650)  # 16.50
BEANS = ("BEANS", "beans", "1", 12800)  # 128.00


def coupon(kind: str, *, code: str = "C1", template: int = 1, status: str = "available",
           valid_from: dt.datetime = FROM, valid_until: dt.datetime = UNTIL,
           **terms: object) -> Coupon:
    t = Terms(kind=kind, valid_days=30, **terms)  # type: ignore[arg-type]
    return Coupon(id=hash(code) % 10**6, code=code, template_id=template, member_id=1,
                  status=status, valid_from=valid_from, valid_until=valid_until, terms=t)


def one(b: Basket, c: Coupon, tier: Decimal = Decimal(0), **kw: object) -> model.Combination:
    return model.combine(b, [c], tier_discount_percent=tier, **kw)  # type: ignore[arg-type]


def reasons(combo: model.Combination) -> list[str]:
    return [r.reason for r in combo.refused]


# --- each kind ------------------------------------------------------------------------------------

def test_a_fixed_amount_coupon_is_spread_over_the_lines_in_proportion():
    combo = one(basket(COFFEE, CAKE), coupon("amount", amount_off=1000))
    (applied,) = combo.accepted
    # 10.00 over 56.00 and 16.50: 56/72.5*1000 = 772.41 -> 772, 227.59 -> 227, the odd fen to the
    # larger remainder (line 2: .59 > .41).
    assert applied.discount == 1000 and applied.lines == {1: 772, 2: 228}
    assert combo.to_pay == 7250 - 1000


def test_a_fixed_amount_never_takes_more_than_the_eligible_lines():
    combo = one(basket(CAKE, BEANS), coupon("amount", amount_off=5000, categories=("bakery",)))
    (applied,) = combo.accepted
    assert applied.discount == 1650 and applied.lines == {1: 1650}


def test_a_percentage_rounds_half_up_to_the_fen_and_respects_its_cap():
    # 15% of 16.50 = 2.475 -> 2.48 (half up)
    combo = one(basket(CAKE), coupon("percent", percent_off=Decimal(15)))
    assert combo.accepted[0].discount == 248
    # 20% of 128 = 25.60, capped at 20.00
    capped = one(basket(BEANS), coupon("percent", percent_off=Decimal(20), cap=2000))
    assert capped.accepted[0].discount == 2000


def test_a_threshold_reduction_once_or_for_every_step():
    b = basket(BEANS, BEANS[:2] + ("2", 12800))  # 128 + 256 = 384.00
    once = one(b, coupon("threshold", threshold=20000, reduction=3000))
    assert once.accepted[0].discount == 3000
    every = one(b, coupon("threshold", threshold=10000, reduction=1500, repeat=True))
    assert every.accepted[0].discount == 4500  # 3 x 100 in 384
    capped = one(b, coupon("threshold", threshold=10000, reduction=1500, repeat=True,
                           max_repeats=2))
    assert capped.accepted[0].discount == 3000
    short = one(basket(CAKE), coupon("threshold", threshold=20000, reduction=3000))
    assert reasons(short) == ["coupon_below_threshold"]


def test_a_free_item_takes_the_cheapest_units_of_its_sku():
    b = basket(("LATTE", "coffee", "1", 3200), ("LATTE", "coffee", "3", 2800), CAKE)
    combo = one(b, coupon("free_item", item_sku="LATTE", item_quantity=2))
    (applied,) = combo.accepted
    assert applied.lines == {2: 5600} and applied.discount == 5600
    missing = one(basket(CAKE), coupon("free_item", item_sku="LATTE"))
    assert reasons(missing) == ["coupon_item_not_in_basket"]


def test_a_free_item_by_weight_counts_whole_units_only():
    b = basket(("BANANA", "fruit", "0.750", 1000))
    assert reasons(one(b, coupon("free_item", item_sku="BANANA"))) == ["coupon_no_discount"]


def test_a_shipping_coupon_takes_off_the_fee_up_to_its_cap():
    b = basket(COFFEE, shipping=1200)
    full = one(b, coupon("shipping"))
    assert full.accepted[0].shipping == 1200 and full.accepted[0].lines == {}
    assert full.to_pay == 5600
    capped = one(b, coupon("shipping", cap=800))
    assert capped.accepted[0].discount == 800
    assert reasons(one(basket(COFFEE), coupon("shipping"))) == ["coupon_no_shipping_fee"]


# --- validity and scope ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "reason"), [
    ({"status": "redeemed"}, "coupon_used"),
    ({"status": "held"}, "coupon_held"),
    ({"status": "revoked"}, "coupon_revoked"),
    ({"valid_from": NOW + dt.timedelta(seconds=1)}, "coupon_not_yet_valid"),
    ({"valid_until": NOW}, "coupon_expired"),
    ({"stores": ("BJ01",)}, "coupon_store_not_allowed"),
    ({"channels": ("mini_program",)}, "coupon_channel_not_allowed"),
    ({"categories": ("tea",)}, "coupon_no_eligible_lines"),
    ({"min_spend": 7251}, "coupon_below_min_spend"),
])
def test_a_coupon_is_refused_with_its_reason(kw, reason):
    combo = one(basket(COFFEE, CAKE), coupon("amount", amount_off=500, **kw))
    assert combo.accepted == [] and reasons(combo) == [reason]


def test_the_minimum_spend_counts_eligible_lines_only_and_is_inclusive():
    b = basket(COFFEE, CAKE)
    assert one(b, coupon("amount", amount_off=500, min_spend=5600,
                         categories=("coffee",))).accepted
    assert reasons(one(b, coupon("amount", amount_off=500, min_spend=5601,
                                 categories=("coffee",)))) == ["coupon_below_min_spend"]


def test_a_store_restricted_coupon_is_refused_on_an_order_without_store():
    assert reasons(one(basket(COFFEE, store=None), coupon("amount", amount_off=100,
                                                          stores=("SH01",)))) \
        == ["coupon_store_not_allowed"]


def test_skus_and_categories_together_make_the_eligible_lines():
    c = coupon("percent", percent_off=Decimal(10), categories=("bakery",), skus=("BEANS",))
    (applied,) = one(basket(COFFEE, CAKE, BEANS), c).accepted
    assert set(applied.lines) == {2, 3}


# --- stacking -------------------------------------------------------------------------------------

def test_two_combinable_coupons_both_apply_and_never_exceed_the_basket():
    b = basket(CAKE)
    a = coupon("amount", code="A", template=1, amount_off=1000, with_coupons=True)
    c = coupon("amount", code="B", template=2, amount_off=1000, with_coupons=True)
    combo = model.combine(b, [a, c], tier_discount_percent=Decimal(0))
    assert [x.discount for x in combo.accepted] == [1000, 650]
    assert combo.to_pay == 0


def test_a_coupon_that_does_not_combine_is_refused_after_another():
    a = coupon("amount", code="A", template=1, amount_off=100, with_coupons=True)
    solo = coupon("amount", code="B", template=2, amount_off=100, with_coupons=False)
    combo = model.combine(basket(COFFEE), [a, solo], tier_discount_percent=Decimal(0))
    assert [x.coupon.code for x in combo.accepted] == ["A"]
    assert reasons(combo) == ["coupon_not_combinable"]
    first_solo = model.combine(basket(COFFEE), [solo, a], tier_discount_percent=Decimal(0))
    assert [x.coupon.code for x in first_solo.accepted] == ["B"]


def test_one_coupon_per_template_and_per_code():
    a = coupon("amount", code="A", template=1, amount_off=100, with_coupons=True)
    a2 = coupon("amount", code="A2", template=1, amount_off=100, with_coupons=True)
    combo = model.combine(basket(COFFEE), [a, a, a2], tier_discount_percent=Decimal(0))
    assert len(combo.accepted) == 1
    assert reasons(combo) == ["coupon_listed_twice", "coupon_same_template"]


def test_the_tier_discount_applies_first_and_thresholds_measure_after_it():
    b = basket(BEANS)  # 128.00; 5% tier discount -> 6.40 off, 121.60 left
    c = coupon("threshold", threshold=12500, reduction=1000)
    combo = one(b, c, Decimal(5))
    assert combo.tier_applied and combo.tier_discount == 640
    assert reasons(combo) == ["coupon_below_threshold"]
    ok = one(b, coupon("threshold", threshold=12000, reduction=1000), Decimal(5))
    assert ok.total_discount == 1640 and ok.to_pay == 12800 - 1640


def test_a_coupon_excluding_the_tier_discount_wins_only_when_it_saves_more():
    b = basket(BEANS)
    small = coupon("amount", amount_off=500, with_tier_discount=False)
    kept = one(b, small, Decimal(10))  # tier saves 12.80 > 5.00
    assert kept.tier_applied and reasons(kept) == ["coupon_not_with_tier_discount"]
    big = coupon("amount", amount_off=3000, with_tier_discount=False)
    dropped = one(b, big, Decimal(10))
    assert not dropped.tier_applied and dropped.total_discount == 3000
    assert dropped.refused == []


def test_points_are_refused_by_a_coupon_that_excludes_them():
    c = coupon("amount", amount_off=500, with_points=False)
    assert one(basket(COFFEE), c).points_allowed is False
    paying = one(basket(COFFEE), c, with_points=True)
    assert reasons(paying) == ["coupon_not_with_points"] and paying.points_allowed


# --- totals and rounding --------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(prices=st.lists(st.integers(1, 100_000), min_size=1, max_size=6),
       qtys=st.lists(st.integers(1, 5), min_size=6, max_size=6),
       tier=st.sampled_from([Decimal(0), Decimal("5"), Decimal("12.5")]),
       offs=st.lists(st.tuples(st.sampled_from(["amount", "percent", "threshold"]),
                               st.integers(1, 50_000)), min_size=1, max_size=3))
def test_discounts_never_exceed_the_lines_they_apply_to(prices, qtys, tier, offs):
    b = basket(*[(f"S{i}", "c", str(qtys[i]), p) for i, p in enumerate(prices)])
    cs = []
    for i, (kind, n) in enumerate(offs):
        terms: dict[str, object] = {"amount": {"amount_off": n},
                                    "percent": {"percent_off": Decimal(n % 99 + 1)},
                                    "threshold": {"threshold": n + 1, "reduction": n // 2 + 1,
                                                  "repeat": True}}[kind]
        cs.append(coupon(kind, code=f"K{i}", template=i, with_coupons=True, **terms))
    combo = model.combine(b, cs, tier_discount_percent=tier)
    left = {ln.line_no: ln.amount - (combo.tier_lines.get(ln.line_no, 0)
                                     if combo.tier_applied else 0) for ln in b.lines}
    for a in combo.accepted:
        assert a.discount == sum(a.lines.values()) > 0
        for no, off in a.lines.items():
            left[no] -= off
    assert all(v >= 0 for v in left.values())
    assert 0 <= combo.to_pay <= b.amount


def test_spread_gives_the_odd_fen_to_the_largest_remainders():
    assert model.spread(100, {1: 1, 2: 1, 3: 1}) == {1: 34, 2: 33, 3: 33}
    assert model.spread(0, {1: 5}) == {1: 0}
    assert model.spread(7, {1: 7}) == {1: 7}


def test_line_amounts_round_half_up_for_weights():
    assert Line(1, "X", None, Decimal("0.333"), 1000).amount == 333
    assert Line(1, "X", None, Decimal("0.125"), 100).amount == 13


# --- terms ----------------------------------------------------------------------------------------

def test_face_values():
    assert model.face_value(Terms("amount", amount_off=500, valid_days=1)) == 500
    assert model.face_value(Terms("percent", percent_off=Decimal(10), valid_days=1)) is None
    assert model.face_value(Terms("percent", percent_off=Decimal(10), cap=800,
                                  valid_days=1)) == 800
    assert model.face_value(Terms("threshold", threshold=20000, reduction=3000,
                                  valid_days=1)) == 3000
    assert model.face_value(Terms("threshold", threshold=20000, reduction=3000, repeat=True,
                                  max_repeats=3, valid_days=1)) == 9000
    assert model.face_value(Terms("free_item", item_sku="X", item_value=1200,
                                  valid_days=1)) == 1200


@pytest.mark.parametrize(("terms", "field"), [
    ({"kind": "amount", "valid_days": 1}, "amount_off"),
    ({"kind": "percent", "percent_off": Decimal(100), "valid_days": 1}, "percent_off"),
    ({"kind": "threshold", "threshold": 100, "reduction": 100, "valid_days": 1}, "reduction"),
    ({"kind": "free_item", "valid_days": 1}, "item_sku"),
    ({"kind": "amount", "amount_off": 1}, "validity"),
    ({"kind": "amount", "amount_off": 1, "valid_days": 1, "valid_to": NOW}, "validity"),
    ({"kind": "amount", "amount_off": 1, "valid_from": NOW, "valid_to": NOW}, "valid_to"),
])
def test_inconsistent_terms_are_refused(terms, field):
    with pytest.raises(model.TermsError) as err:
        model.check_terms(Terms(**terms))  # type: ignore[arg-type]
    assert err.value.field == field


def test_validity_absolute_or_relative_to_issue():
    rel = Terms("amount", amount_off=1, valid_days=7)
    assert model.validity(rel, NOW) == (NOW, NOW + dt.timedelta(days=7))
    end = NOW + dt.timedelta(days=30)
    assert model.validity(Terms("amount", amount_off=1, valid_to=end), NOW) == (NOW, end)
    assert model.validity(Terms("amount", amount_off=1, valid_from=FROM, valid_to=end),
                          NOW) == (FROM, end)


def test_terms_survive_their_json_form():
    t = Terms("percent", percent_off=Decimal("8.5"), cap=1000, stores=("SH01",),
              valid_from=FROM, valid_to=UNTIL, with_points=False)
    assert Terms.from_json(t.as_json()) == t


# --- codes ----------------------------------------------------------------------------------------

def test_codes_are_long_unambiguous_and_checked():
    codes = {model.new_coupon_code() for _ in range(2000)}
    assert len(codes) == 2000
    for code in list(codes)[:200]:
        assert len(code) == 13 and model.code_is_well_formed(code)
        assert not set(code) & set("01OIL")
    code = next(iter(codes))
    assert model.normalize_code(model.format_code(code).lower()) == code


def test_a_single_mistyped_character_or_swap_is_caught():
    code = model.new_coupon_code()
    for i in range(len(code)):
        for ch in model.ALPHABET:
            if ch != code[i]:
                assert not model.code_is_well_formed(code[:i] + ch + code[i + 1:])
    for i in range(len(code) - 1):
        if code[i] != code[i + 1]:
            swapped = code[:i] + code[i + 1] + code[i] + code[i + 2:]
            assert not model.code_is_well_formed(swapped)


def test_an_issuing_request_is_bounded_in_coupons():
    from pydantic import ValidationError

    from patron.coupons.schemas import IssueIn

    IssueIn(idempotency_key="k", member_ids=list(range(1, 5001)), quantity=10)
    with pytest.raises(ValidationError) as err:
        IssueIn(idempotency_key="k", member_ids=list(range(1, 5001)), quantity=11)
    assert err.value.errors()[0]["type"] == "coupon_issue_too_large"
