"""Support, confidence and lift on a basket set checked by hand; next-best product scoring
and the hit rate at k."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest

from patron.analytics import crosssell
from patron.analytics.crosssell import Rule

BASKETS = [{"coffee", "bakery"}, {"coffee", "bakery"}, {"coffee"}, {"tea", "bakery"}, {"tea"}]


def counts(baskets: list[set[str]]) -> dict:
    items = Counter(item for b in baskets for item in b)
    pairs = Counter(pair for b in baskets for pair in combinations(sorted(b), 2))
    return {"baskets": len(baskets), "item_counts": dict(items), "pair_counts": dict(pairs)}


def by_pair(rules: list[Rule]) -> dict[tuple[str, str], Rule]:
    return {(r.antecedent, r.consequent): r for r in rules}


def test_support_confidence_and_lift_of_a_hand_checked_basket_set() -> None:
    rules = by_pair(crosssell.rules_from_counts(**counts(BASKETS)))
    assert set(rules) == {("coffee", "bakery"), ("bakery", "coffee"), ("tea", "bakery"),
                          ("bakery", "tea")}
    # 5 baskets; coffee in 3, bakery in 3, tea in 2; coffee+bakery in 2, tea+bakery in 1.
    cb = rules[("coffee", "bakery")]
    assert cb.support == pytest.approx(2 / 5)
    assert cb.confidence == pytest.approx(2 / 3)
    assert cb.lift == pytest.approx((2 / 3) / (3 / 5))  # 10/9: more likely together
    assert (cb.pair_count, cb.antecedent_count, cb.consequent_count) == (2, 3, 3)
    tb = rules[("tea", "bakery")]
    assert tb.support == pytest.approx(1 / 5)
    assert tb.confidence == pytest.approx(1 / 2)
    assert tb.lift == pytest.approx((1 / 2) / (3 / 5))  # below 1: less likely together
    bt = rules[("bakery", "tea")]
    assert bt.confidence == pytest.approx(1 / 3)
    assert bt.lift == pytest.approx(tb.lift)  # lift is symmetric


def test_thresholds_drop_weak_rules_and_the_strongest_lift_comes_first() -> None:
    rules = crosssell.rules_from_counts(**counts(BASKETS), min_support=0.3,
                                        min_confidence=0.5)
    assert [(r.antecedent, r.consequent) for r in rules] == [("bakery", "coffee"),
                                                             ("coffee", "bakery")]
    only_confident = crosssell.rules_from_counts(**counts(BASKETS), min_confidence=0.5)
    assert ("bakery", "tea") not in by_pair(only_confident)
    assert ("tea", "bakery") in by_pair(only_confident)
    assert only_confident[0].lift >= only_confident[-1].lift


def test_no_baskets_give_no_rules() -> None:
    assert crosssell.rules_from_counts(baskets=0, item_counts={}, pair_counts={}) == []


def rule(a: str, b: str, confidence: float, lift: float) -> Rule:
    return Rule(a, b, 0.1, confidence, lift, 1, 1, 1)


RULES = crosssell.rules_by_antecedent([
    rule("latte", "croissant", 0.5, 2.0),
    rule("latte", "muffin", 0.2, 1.5),
    rule("americano", "croissant", 0.25, 2.0),
    rule("americano", "latte", 0.4, 1.2),
    rule("tea", "scone", 0.9, 3.0),
])


def test_candidates_add_up_confidence_times_lift_over_the_triggered_rules() -> None:
    scores = crosssell.score_candidates(["latte", "americano"], RULES, exclude=set())
    assert scores == pytest.approx({"croissant": 0.5 * 2.0 + 0.25 * 2.0, "muffin": 0.3,
                                    "latte": 0.48})
    # What the customer already buys regularly is never a candidate; untriggered rules
    # (tea -> scone) count for nothing.
    assert "latte" not in crosssell.score_candidates(["latte", "americano"], RULES,
                                                     exclude={"latte", "americano"})


def test_recommendations_fall_back_to_popular_items_not_bought_nor_chosen() -> None:
    scores = crosssell.score_candidates(["latte"], RULES, exclude={"latte"})
    top = crosssell.recommend(scores, ["latte", "croissant", "water", "cake"],
                              exclude={"latte"}, k=4)
    assert top == [("croissant", pytest.approx(1.0), "rules"),
                   ("muffin", pytest.approx(0.3), "rules"),
                   ("water", 0.0, "popular"), ("cake", 0.0, "popular")]
    assert crosssell.recommend({}, ["a", "b"], exclude=set(), k=5) == [
        ("a", 0.0, "popular"), ("b", 0.0, "popular")]


def test_a_hit_is_a_top_k_item_bought_after_the_cutoff_for_the_first_time() -> None:
    before, after = {"latte"}, {"latte", "scone"}
    assert crosssell.is_hit(["croissant", "scone"], after, before, k=2)
    assert not crosssell.is_hit(["croissant", "scone"], after, before, k=1)
    # Buying again what one had bought is no hit, even when recommended.
    assert not crosssell.is_hit(["latte"], after, before, k=5)
    assert crosssell.popular_new(["latte", "water", "cake"], exclude=before, k=1) == ["water"]
    assert crosssell.hit_rate(1, 4) == 0.25
    assert crosssell.hit_rate(0, 0) is None
