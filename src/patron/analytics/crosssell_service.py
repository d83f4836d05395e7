"""Cross-sell use cases: association rules, per-customer next-best products and their
evaluation on a holdout period.

Baskets are orders; an item (a SKU, or a line's category) counts once per order, and lines
returned in full do not count. Pair counts are one set-based self-join of the distinct
(order, item) rows in SQL, pruned to the pairs that can reach the minimum support; only the
counts reach Python. Dates are local days in the default time zone.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, delete, insert, select, text

from patron.analytics import crosssell
from patron.analytics.crosssell_tables import (
    crosssell_evaluation_runs,
    crosssell_rules,
    customer_recommendations,
)
from patron.config import get_settings
from patron.db import UnitOfWork, UTCDateTime, bulk_insert, utcnow
from patron.errors import FieldError, Forbidden, ValidationFailed
from patron.security import audit
from patron.security.model import Actor

LEVELS = ("sku", "category")
RECOMMENDATIONS_PER_CUSTOMER = 10
# Rules behind recommendations: overall, SKU level, seen together in at least two orders (one
# shared basket is chance) and with a confidence of at least 1%.
RECOMMEND_MIN_PAIRS = 2
RECOMMEND_MIN_CONFIDENCE = 0.01
# A product bought in this many orders is bought regularly: never recommended to that customer.
REGULAR_ORDERS = 2
INSERT_CHUNK = 5000
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class BasketCounts:
    baskets: int
    item_counts: dict[str, int]
    pair_counts: dict[tuple[str, str], int]

    def popularity(self) -> list[str]:
        """Items by the number of orders that hold them, most first (ties by name)."""
        return [item for item, _n in sorted(self.item_counts.items(),
                                            key=lambda kv: (-kv[1], kv[0]))]


def _day_start(day: dt.date) -> dt.datetime:
    zone = ZoneInfo(get_settings().default_timezone)
    return dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.UTC)


def _items_cte(level: str, store_filter: bool) -> str:
    column = "sku" if level == "sku" else "category"
    store = "AND o.store_id = :store_id" if store_filter else ""
    return f"""
WITH items AS (
  SELECT DISTINCT ol.order_id AS oid, ol.{column} AS item
  FROM order_lines ol JOIN orders o ON o.id = ol.order_id
  WHERE ol.{column} IS NOT NULL AND ol.returned_quantity < ol.quantity
    AND o.purchased_at >= :lower AND o.purchased_at < :upper {store}
)"""  # noqa: S608 (the column is one of two fixed names)


def basket_counts(conn: Connection, *, level: str, store_id: int | None = None,
                  lower: dt.datetime = _EARLIEST, upper: dt.datetime | None = None,
                  min_pairs: int = 1, min_support: float = 0.0) -> BasketCounts:
    """Orders, orders per item and orders per pair of items, for orders purchased in
    [lower, upper) (and at one store). Pairs below ``min_pairs`` orders or ``min_support`` of
    the orders are left out in SQL."""
    params: dict[str, Any] = {"lower": lower, "upper": upper or dt.datetime(9999, 1, 1,
                                                                           tzinfo=dt.UTC)}
    if store_id is not None:
        params["store_id"] = store_id
    cte = _items_cte(level, store_id is not None)

    def run(sql: str, **extra: Any) -> Any:
        query = text(cte + sql).bindparams(bindparam("lower", type_=UTCDateTime),
                                           bindparam("upper", type_=UTCDateTime))
        return conn.execute(query, {**params, **extra})

    baskets = int(run("SELECT COUNT(DISTINCT oid) FROM items").scalar_one())
    item_counts = {str(item): int(n) for item, n in run(
        "SELECT item, COUNT(*) FROM items GROUP BY item").all()}
    floor = max(min_pairs, 1)
    if min_support > 0:
        # The smallest count whose support reaches the threshold; rules_from_counts checks
        # the exact support again.
        floor = max(floor, math.ceil(min_support * baskets - 1e-9))
    pair_counts = {(str(a), str(b)): int(n) for a, b, n in run(
        " SELECT a.item, b.item, COUNT(*) FROM items a"
        " JOIN items b ON b.oid = a.oid AND a.item < b.item"
        " GROUP BY a.item, b.item HAVING COUNT(*) >= :floor", floor=floor).all()}
    return BasketCounts(baskets, item_counts, pair_counts)


# --- rules ----------------------------------------------------------------------------------

def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValidationFailed(fields=[
            FieldError("level", "crosssell_bad_level", {"expected": ", ".join(LEVELS)})])


def _check_fraction(value: float, field: str) -> None:
    if not 0 <= value <= 1:
        raise ValidationFailed(fields=[FieldError(field, "crosssell_bad_fraction")])


def _scope(conn: Connection, actor: Actor, store: str | None) -> tuple[str, int | None]:
    """The scope name and store id; overall needs every store's analytics, a store scope
    one of the actor's stores."""
    from patron.org.tables import stores

    if not actor.can("dashboard.read"):
        raise Forbidden("crosssell_forbidden")
    if store is None:
        if actor.store_ids is not None:
            raise Forbidden("crosssell_forbidden")
        return "overall", None
    store_id = conn.execute(select(stores.c.id).where(stores.c.code == store)).scalar()
    if store_id is None:
        raise ValidationFailed(fields=[FieldError("store", "unknown_store", {"value": store})])
    if actor.store_ids is not None and int(store_id) not in actor.store_ids:
        raise Forbidden("crosssell_forbidden")
    return f"store:{store}", int(store_id)


def _rule_dict(rule: crosssell.Rule) -> dict[str, Any]:
    return {"antecedent": rule.antecedent, "consequent": rule.consequent,
            "support": round(rule.support, 6), "confidence": round(rule.confidence, 6),
            "lift": round(rule.lift, 6), "pair_count": rule.pair_count,
            "antecedent_count": rule.antecedent_count,
            "consequent_count": rule.consequent_count}


def refresh_rules(*, uow: UnitOfWork, actor: Actor, level: str = "category",
                  store: str | None = None, min_support: float = 0.01,
                  min_confidence: float = 0.1, top: int = 20) -> dict[str, Any]:
    """Recount the baskets of one scope (a store, or overall), replace its rules at this
    level with those reaching both thresholds, and return the ``top`` by lift. Idempotent;
    audited."""
    _check_level(level)
    _check_fraction(min_support, "min_support")
    _check_fraction(min_confidence, "min_confidence")
    scope, store_id = _scope(uow.c, actor, store)
    counts = basket_counts(uow.c, level=level, store_id=store_id, min_support=min_support)
    rules = crosssell.rules_from_counts(
        baskets=counts.baskets, item_counts=counts.item_counts,
        pair_counts=counts.pair_counts, min_support=min_support,
        min_confidence=min_confidence)
    computed_at = utcnow()
    uow.c.execute(delete(crosssell_rules).where(crosssell_rules.c.scope == scope,
                                                crosssell_rules.c.level == level))
    for start in range(0, len(rules), INSERT_CHUNK):
        bulk_insert(uow.c, crosssell_rules, [
            {"scope": scope, "level": level, "antecedent": r.antecedent,
             "consequent": r.consequent, "support": r.support, "confidence": r.confidence,
             "lift": r.lift, "pair_count": r.pair_count,
             "antecedent_count": r.antecedent_count, "consequent_count": r.consequent_count,
             "basket_count": counts.baskets, "min_support": min_support,
             "min_confidence": min_confidence, "computed_at": computed_at}
            for r in rules[start:start + INSERT_CHUNK]])
    audit.record(uow.c, actor, "analytics.crosssell_rules_refreshed", entity="crosssell_rules",
                 entity_id=f"{scope}/{level}",
                 details={"scope": scope, "level": level, "min_support": min_support,
                          "min_confidence": min_confidence, "rules": len(rules),
                          "baskets": counts.baskets})
    uow.commit()
    return {"scope": scope, "level": level, "baskets": counts.baskets,
            "min_support": min_support, "min_confidence": min_confidence,
            "rules": len(rules), "computed_at": computed_at,
            "top": [_rule_dict(r) for r in rules[:top]]}


def list_rules(conn: Connection, *, actor: Actor, level: str = "category",
               store: str | None = None, limit: int = 50) -> dict[str, Any]:
    """The stored rules of one scope and level, strongest lift first."""
    _check_level(level)
    scope, _store_id = _scope(conn, actor, store)
    r = crosssell_rules.c
    rows = conn.execute(select(crosssell_rules).where(r.scope == scope, r.level == level)
                        .order_by(r.lift.desc(), r.confidence.desc(), r.antecedent,
                                  r.consequent).limit(limit)).mappings().all()
    first = rows[0] if rows else None
    return {"scope": scope, "level": level,
            "computed_at": first["computed_at"] if first else None,
            "baskets": first["basket_count"] if first else None,
            "min_support": first["min_support"] if first else None,
            "min_confidence": first["min_confidence"] if first else None,
            "rules": [_rule_dict(crosssell.Rule(
                row["antecedent"], row["consequent"], row["support"], row["confidence"],
                row["lift"], row["pair_count"], row["antecedent_count"],
                row["consequent_count"])) for row in rows]}


# --- recommendations ------------------------------------------------------------------------

def _check_may_analyse(actor: Actor) -> None:
    if not actor.can("dashboard.read") or actor.store_ids is not None:
        raise Forbidden("crosssell_forbidden")


def customer_items(conn: Connection, *, lower: dt.datetime = _EARLIEST,
                   upper: dt.datetime) -> Iterator[tuple[int, dict[str, int]]]:
    """Each customer who bought in [lower, upper), in id order, with the number of orders in
    which they bought each SKU (lines returned in full left out)."""
    query = text("""
SELECT o.customer_id, ol.sku, COUNT(DISTINCT o.id)
FROM orders o JOIN order_lines ol ON ol.order_id = o.id
WHERE o.customer_id IS NOT NULL AND ol.returned_quantity < ol.quantity
  AND o.purchased_at >= :lower AND o.purchased_at < :upper
GROUP BY o.customer_id, ol.sku
ORDER BY o.customer_id, ol.sku
""").bindparams(bindparam("lower", type_=UTCDateTime), bindparam("upper", type_=UTCDateTime))
    current: int | None = None
    items: dict[str, int] = {}
    for cid, sku, n in conn.execute(query, {"lower": lower, "upper": upper}):
        if cid != current:
            if current is not None:
                yield current, items
            current, items = int(cid), {}
        items[str(sku)] = int(n)
    if current is not None:
        yield current, items


@dataclass(frozen=True)
class Recommender:
    rules: dict[str, list[crosssell.Rule]]
    popularity: list[str]

    def top(self, purchased: dict[str, int], *, exclude: set[str], k: int
            ) -> list[tuple[str, float, str]]:
        scores = crosssell.score_candidates(purchased, self.rules, exclude=exclude)
        return crosssell.recommend(scores, self.popularity, exclude=exclude, k=k)


def learn_recommender(conn: Connection, *, upper: dt.datetime) -> Recommender:
    """Overall SKU-level rules and popularity from the orders before ``upper``."""
    counts = basket_counts(conn, level="sku", upper=upper, min_pairs=RECOMMEND_MIN_PAIRS)
    rules = crosssell.rules_from_counts(
        baskets=counts.baskets, item_counts=counts.item_counts,
        pair_counts=counts.pair_counts, min_confidence=RECOMMEND_MIN_CONFIDENCE)
    return Recommender(crosssell.rules_by_antecedent(rules), counts.popularity())


def refresh_recommendations(*, uow: UnitOfWork, actor: Actor, as_of: dt.date | None = None,
                            k: int = RECOMMENDATIONS_PER_CUSTOMER) -> dict[str, Any]:
    """Learn from the orders up to ``as_of`` (inclusive; default today) and replace every
    buying customer's top ``k`` products, leaving out those they buy regularly. Idempotent;
    audited."""
    _check_may_analyse(actor)
    tz = ZoneInfo(get_settings().default_timezone)
    as_of = as_of or dt.datetime.now(tz).date()
    upper = _day_start(as_of + dt.timedelta(days=1))
    if uow.dialect == "postgresql":
        # Concurrent refreshes take turns (each replaces every row); readers are not blocked.
        uow.c.execute(text("LOCK TABLE customer_recommendations IN SHARE ROW EXCLUSIVE MODE"))
    recommender = learn_recommender(uow.c, upper=upper)
    computed_at = utcnow()
    uow.c.execute(delete(customer_recommendations))
    customers = from_rules = 0
    rows: list[dict[str, Any]] = []
    for cid, items in customer_items(uow.c, upper=upper):
        customers += 1
        regular = {sku for sku, n in items.items() if n >= REGULAR_ORDERS}
        top = recommender.top(items, exclude=regular, k=k)
        from_rules += any(source == "rules" for _s, _score, source in top)
        rows.extend({"customer_id": cid, "rank": rank, "sku": sku, "score": score,
                     "source": source, "as_of": as_of, "computed_at": computed_at}
                    for rank, (sku, score, source) in enumerate(top, start=1))
        if len(rows) >= INSERT_CHUNK:
            bulk_insert(uow.c, customer_recommendations, rows)
            rows = []
    bulk_insert(uow.c, customer_recommendations, rows)
    audit.record(uow.c, actor, "analytics.recommendations_refreshed",
                 entity="customer_recommendations",
                 details={"as_of": as_of.isoformat(), "customers": customers, "k": k})
    uow.commit()
    return {"as_of": as_of, "customers": customers, "customers_with_rule_based": from_rules,
            "per_customer": k, "computed_at": computed_at,
            "rules": sum(len(v) for v in recommender.rules.values())}


def recommendations_for(conn: Connection, *, actor: Actor, customer_id: int
                        ) -> dict[str, Any]:
    """One customer's stored recommendations with product names; ``NotFound`` outside the
    actor's scope, as for every customer read."""
    from patron.customers.queries import visible_customer
    from patron.org.tables import products

    if not actor.can("customers.read"):
        raise Forbidden("forbidden", params={"permission": "customers.read"})
    visible_customer(conn, actor, customer_id)
    rec = customer_recommendations.c
    rows = conn.execute(
        select(rec.rank, rec.sku, rec.score, rec.source, rec.as_of, rec.computed_at,
               products.c.name)
        .select_from(customer_recommendations.outerjoin(products, products.c.sku == rec.sku))
        .where(rec.customer_id == customer_id).order_by(rec.rank)).mappings().all()
    return {"customer_id": customer_id,
            "as_of": rows[0]["as_of"] if rows else None,
            "computed_at": rows[0]["computed_at"] if rows else None,
            "recommendations": [{"rank": r["rank"], "sku": r["sku"], "name": r["name"],
                                 "score": round(r["score"], 6), "source": r["source"]}
                                for r in rows]}


# --- evaluation -----------------------------------------------------------------------------

def evaluate_recommendations(*, uow: UnitOfWork, actor: Actor, cutoff: dt.date,
                             holdout_days: int = 60, k: int = 5) -> dict[str, Any]:
    """Learn from the orders before ``cutoff`` and, for every customer who bought both before
    it and in the ``holdout_days`` from it, check whether any of their top ``k``
    recommendations (never a SKU they had bought) is among the SKUs they bought in the
    holdout; the same for the ``k`` most popular SKUs they had not bought. Stored; audited."""
    _check_may_analyse(actor)
    if not 1 <= holdout_days <= 3660:
        raise ValidationFailed(fields=[FieldError("holdout_days", "crosssell_bad_holdout")])
    if not 1 <= k <= 100:
        raise ValidationFailed(fields=[FieldError("k", "crosssell_bad_k")])
    from patron.analytics.service import first_purchase_day

    first = first_purchase_day(uow.c)
    if first is not None and cutoff <= first:
        # Nothing bought before the cut-off: nothing to learn from, nobody to judge.
        params = {"first": first.isoformat()}
        raise ValidationFailed("crosssell_cutoff_before_first_purchase", params=params,
                               fields=[FieldError("cutoff",
                                                  "crosssell_cutoff_before_first_purchase",
                                                  params)])
    learn_end = _day_start(cutoff)
    holdout_end = _day_start(cutoff + dt.timedelta(days=holdout_days))
    recommender = learn_recommender(uow.c, upper=learn_end)
    before = dict(customer_items(uow.c, upper=learn_end))
    customers = hits = baseline_hits = with_new = 0
    for cid, after in customer_items(uow.c, lower=learn_end, upper=holdout_end):
        history = before.get(cid)
        if not history:
            continue  # nothing to learn from: both methods would recommend the same
        customers += 1
        bought = set(history)
        after_set = set(after)
        with_new += bool(after_set - bought)
        ranked = [sku for sku, _s, _src in recommender.top(history, exclude=bought, k=k)]
        hits += crosssell.is_hit(ranked, after_set, bought, k=k)
        baseline = crosssell.popular_new(recommender.popularity, exclude=bought, k=k)
        baseline_hits += crosssell.is_hit(baseline, after_set, bought, k=k)
    hit_rate = crosssell.hit_rate(hits, customers)
    baseline_rate = crosssell.hit_rate(baseline_hits, customers)
    holdout_last = cutoff + dt.timedelta(days=holdout_days - 1)
    result: dict[str, Any] = {
        "cutoff": cutoff, "holdout": {"from": cutoff, "to": holdout_last,
                                      "days": holdout_days},
        "k": k, "customers": customers, "customers_with_new_products": with_new,
        "recommender": {"hits": hits, "hit_rate": hit_rate},
        "popularity": {"hits": baseline_hits, "hit_rate": baseline_rate},
        "lift_over_popularity": (hit_rate / baseline_rate
                                 if hit_rate is not None and baseline_rate else None),
        "rules": sum(len(v) for v in recommender.rules.values()),
    }
    details = {**result, "cutoff": cutoff.isoformat(),
               "holdout": {"from": cutoff.isoformat(), "to": holdout_last.isoformat(),
                           "days": holdout_days}}
    run_id = int(uow.c.execute(insert(crosssell_evaluation_runs).values(
        computed_at=utcnow(), cutoff=cutoff, holdout_days=holdout_days, k=k,
        customers=customers, hit_rate=hit_rate, baseline_hit_rate=baseline_rate,
        details=details, actor=actor.name[:120],
    ).returning(crosssell_evaluation_runs.c.id)).scalar_one())
    result["run_id"] = run_id
    audit.record(uow.c, actor, "analytics.recommendations_evaluated",
                 entity="crosssell_evaluation_run", entity_id=run_id,
                 details={"cutoff": cutoff.isoformat(), "holdout_days": holdout_days,
                          "customers": customers})
    uow.commit()
    return result
