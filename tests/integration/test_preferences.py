"""Customer preferences read on both databases from orders recorded through the one ingestion
path: local-time hour slots and weekdays per store, favourites, price sensitivity, baskets."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from patron.analytics.preferences import customer_preferences, preferences_for
from patron.errors import NotFound
from patron.orders.service import record_orders
from patron.org import service as org_service
from patron.security.model import SYSTEM, Actor
from tests.factories import make_org, order

UTC = dt.UTC
PHONE = {"phone": "13800000001"}


def record(uow, bodies):
    out = record_orders(uow=uow, orders_in=bodies, source="api", actor=SYSTEM,
                        now=dt.datetime(2026, 4, 1, tzinfo=UTC), audit_each=False)
    assert all(o.status == "created" for o in out), out
    return [o.customer_id for o in out]


@pytest.fixture
def shop(uow):
    ids = make_org(uow)
    ids["LON1"] = org_service.create_store(uow=uow, actor=SYSTEM, code="LON1", name="London",
                                           timezone="Europe/London")
    latte = [{"sku": "LATTE", "category": "coffee", "quantity": "1", "unit_price": "28.00"}]
    beans = [{"sku": "BEANS", "category": "beans", "quantity": "4", "unit_price": "150.00"}]
    cids = record(uow, [
        # 23:30 UTC on Monday 2 March is 07:30 on Tuesday in Shanghai: morning, Tuesday.
        # Default lines: 2 lattes at 28.00 and a croissant 16.50 with 1.50 off (3 items).
        order("A1", at=dt.datetime(2026, 3, 2, 23, 30, tzinfo=UTC), identifiers=PHONE),
        # Noon on Wednesday in Shanghai, an order-level discount: the whole order discounted.
        order("A2", at=dt.datetime(2026, 3, 4, 4, 0, tzinfo=UTC), identifiers=PHONE,
              lines=latte, discount="5.00"),
        # 19:00 UTC on Saturday is 19:00 in London (evening, Saturday), though 03:00 on
        # Sunday in Shanghai.
        order("A3", store="LON1", at=dt.datetime(2026, 3, 7, 19, 0, tzinfo=UTC),
              identifiers=PHONE, lines=beans),
        order("B1", store="BJ01", at=dt.datetime(2026, 3, 3, 2, 0, tzinfo=UTC),
              identifiers={"phone": "13800000002"}, lines=beans),
        order("B2", store="BJ01", at=dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC),
              identifiers={"phone": "13800000002"}, lines=latte),
    ])
    return {**ids, "a": cids[0], "b": cids[3]}


def by_key(items, key):
    return {i[key]: (i["orders"], i["share"]) for i in items}


def test_hour_slots_and_weekdays_are_counted_in_each_stores_local_time(uow, shop):
    prefs = preferences_for(uow.c, [shop["a"]])[shop["a"]]
    assert prefs["orders"] == 3
    assert by_key(prefs["hour_slots"], "slot") == {
        "morning": (1, 0.3333), "lunch": (1, 0.3333), "afternoon": (0, 0.0),
        "evening": (1, 0.3333), "night": (0, 0.0)}
    assert by_key(prefs["weekdays"], "weekday") == {
        1: (0, 0.0), 2: (1, 0.3333), 3: (1, 0.3333), 4: (0, 0.0), 5: (0, 0.0),
        6: (1, 0.3333), 7: (0, 0.0)}


def test_favourites_price_sensitivity_and_basket_size(uow, shop):
    prefs = preferences_for(uow.c, [shop["a"]])[shop["a"]]
    assert [c["category"] for c in prefs["favourite_categories"]] == ["coffee", "beans",
                                                                       "bakery"]
    assert [(s["sku"], s["orders"], s["quantity"]) for s in prefs["favourite_skus"]] == [
        ("LATTE", 2, Decimal(3)), ("BEANS", 1, Decimal(4)), ("CROISSANT", 1, Decimal(1))]
    assert prefs["favourite_store"]["code"] == "SH01"
    assert prefs["favourite_store"]["orders"] == 2
    assert prefs["favourite_channel"]["code"] == "pos"
    # discounted: the croissant (16.50 gross) and the whole latte order (28.00 gross)
    assert prefs["discounted_spend"] == Decimal("44.50")
    assert prefs["gross_spend"] == Decimal("700.50")
    assert prefs["price_sensitivity"] == 0.0635
    assert prefs["basket_size"] == Decimal(3)  # items per order: 3, 1, 4


def test_many_customers_at_once_match_one_at_a_time(uow, shop):
    both = preferences_for(uow.c, [shop["b"], shop["a"], 999_999])
    assert both[shop["a"]] == preferences_for(uow.c, [shop["a"]])[shop["a"]]
    b = both[shop["b"]]
    assert b["basket_size"] == Decimal("2.5")  # 4 and 1 items
    assert b["price_sensitivity"] == 0.0
    assert by_key(b["hour_slots"], "slot")["morning"] == (2, 1.0)  # 10:00 in Beijing
    nobody = both[999_999]
    assert nobody["orders"] == 0 and nobody["price_sensitivity"] is None
    assert nobody["basket_size"] is None and nobody["favourite_store"] is None


def test_a_manager_of_another_store_cannot_read_them(uow, shop):
    manager = Actor(type="user", id=9, name="m", role="manager",
                    store_ids=frozenset({shop["BJ01"]}))
    with pytest.raises(NotFound):
        customer_preferences(uow.c, actor=manager, customer_id=shop["a"])
    assert customer_preferences(uow.c, actor=manager, customer_id=shop["b"])["orders"] == 2
