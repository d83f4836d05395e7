"""Cross-sell rules: association rules from basket counts, next-best-product scoring and the
hit rate at k. Plain Python, no database (the counts come from SQL, see
``crosssell_service``).

For items A and B over N baskets (distinct orders; an item counts once per basket):

* support(A -> B) = baskets with both / N
* confidence(A -> B) = baskets with both / baskets with A
* lift(A -> B) = confidence(A -> B) / (baskets with B / N); above 1 means A makes B more
  likely than it is on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    antecedent: str
    consequent: str
    support: float
    confidence: float
    lift: float
    pair_count: int
    antecedent_count: int
    consequent_count: int


def rules_from_counts(*, baskets: int, item_counts: Mapping[str, int],
                      pair_counts: Mapping[tuple[str, str], int], min_support: float = 0.0,
                      min_confidence: float = 0.0) -> list[Rule]:
    """Both directions of every counted pair (a pair is counted once, in either order) that
    reach both thresholds; strongest lift first, then confidence, then names."""
    if baskets <= 0:
        return []
    rules: list[Rule] = []
    for (first, second), both in pair_counts.items():
        if both <= 0 or first == second:
            continue
        support = both / baskets
        if support < min_support:
            continue
        for a, b in ((first, second), (second, first)):
            a_count, b_count = item_counts[a], item_counts[b]
            confidence = both / a_count
            if confidence < min_confidence:
                continue
            lift = confidence * baskets / b_count
            rules.append(Rule(a, b, support, confidence, lift, both, a_count, b_count))
    rules.sort(key=lambda r: (-r.lift, -r.confidence, r.antecedent, r.consequent))
    return rules


def rules_by_antecedent(rules: Iterable[Rule]) -> dict[str, list[Rule]]:
    grouped: dict[str, list[Rule]] = {}
    for rule in rules:
        grouped.setdefault(rule.antecedent, []).append(rule)
    return grouped


def score_candidates(purchased: Iterable[str], rules: Mapping[str, Sequence[Rule]],
                     *, exclude: set[str]) -> dict[str, float]:
    """Each candidate's score: the sum, over the rules triggered by the customer's purchased
    items, of confidence x lift (several items pointing at the same product add up).
    Excluded items (what the customer already buys) are never candidates."""
    scores: dict[str, float] = {}
    for item in set(purchased):
        for rule in rules.get(item, ()):
            if rule.consequent in exclude:
                continue
            scores[rule.consequent] = scores.get(rule.consequent, 0.0) + \
                rule.confidence * rule.lift
    return scores


def recommend(scores: Mapping[str, float], popularity: Sequence[str], *, exclude: set[str],
              k: int) -> list[tuple[str, float, str]]:
    """The top ``k`` as (item, score, source): rule-scored items, best first (ties by name),
    then the most popular items not excluded nor already chosen (score 0, source
    ``popular``)."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    chosen = [(item, score, "rules") for item, score in ranked]
    taken = {item for item, _s, _src in chosen}
    for item in popularity:
        if len(chosen) >= k:
            break
        if item not in exclude and item not in taken:
            chosen.append((item, 0.0, "popular"))
            taken.add(item)
    return chosen


def popular_new(popularity: Sequence[str], *, exclude: set[str], k: int) -> list[str]:
    """The baseline: the ``k`` most popular items the customer has not bought."""
    return [item for item in popularity if item not in exclude][:k]


def is_hit(recommended: Sequence[str], bought_after: set[str], bought_before: set[str],
           *, k: int) -> bool:
    """Whether any of the first ``k`` recommendations is among the items bought after the
    cutoff that had not been bought before it."""
    new = bought_after - bought_before
    return any(item in new for item in recommended[:k])


def hit_rate(hits: int, customers: int) -> float | None:
    return hits / customers if customers else None
