"""One customer's predictions and preferences over HTTP: figures, not computed yet, store
scope (404 like every customer route), permissions."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from sqlalchemy import insert

from patron.analytics.clv_tables import clv_model_runs, customer_predictions
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.e2e.conftest import login
from tests.factories import order

UTC = dt.UTC
FITTED = dt.datetime(2026, 4, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def people(db_url, org, users):
    with UnitOfWork(get_engine(db_url)) as uow:
        out = record_orders(uow=uow, orders_in=[
            order("S1", at=dt.datetime(2026, 3, 2, 23, 30, tzinfo=UTC),
                  identifiers={"phone": "13800000001"}),
            order("S2", at=dt.datetime(2026, 3, 9, 23, 30, tzinfo=UTC),
                  identifiers={"phone": "13800000001"}),
            order("B1", store="BJ01", at=dt.datetime(2026, 3, 3, 12, 0, tzinfo=UTC),
                  identifiers={"phone": "13800000002"})],
            source="api", actor=SYSTEM, now=FITTED, audit_each=False)
    return {"sh": out[0].customer_id, "bj": out[2].customer_id}


@pytest.fixture
def predicted(db_url, people):
    with UnitOfWork(get_engine(db_url)) as uow:
        run = uow.c.execute(insert(clv_model_runs).values(
            fitted_at=FITTED, calibration_end=dt.date(2026, 3, 31), period="week",
            customers=2, bgnbd={"r": 1, "alpha": 1, "a": 1, "b": 1}, purpose="predict",
            actor="system").returning(clv_model_runs.c.id)).scalar_one()
        uow.c.execute(insert(customer_predictions).values(
            customer_id=people["sh"], run_id=run, fitted_at=FITTED,
            calibration_end=dt.date(2026, 3, 31), probability_alive=0.912345,
            expected_purchases_30d=1.5, expected_purchases_90d=4.25,
            expected_next_purchase=dt.date(2026, 4, 12),
            expected_average_spend=Decimal("70.50"), clv_12m=Decimal("812.34")))
        uow.commit()
    return people


def test_owner_reads_a_customers_predictions(client, predicted):
    login(client, "owner")
    body = client.get(f"/api/v1/customers/{predicted['sh']}/predictions").json()
    assert body["computed"] is True
    assert body["probability_alive"] == 0.9123
    assert body["expected_purchases_30d"] == 1.5
    assert body["expected_purchases_90d"] == 4.25
    assert body["expected_next_purchase"] == "2026-04-12"
    assert body["clv_12m"] == "812.34"
    assert body["expected_average_spend"] == "70.50"


def test_predictions_not_computed_yet_are_empty_not_an_error(client, people):
    login(client, "analyst")
    r = client.get(f"/api/v1/customers/{people['bj']}/predictions")
    assert r.status_code == 200
    assert r.json()["computed"] is False and r.json()["clv_12m"] is None


def test_owner_reads_preferences_in_local_time(client, people):
    login(client, "owner")
    body = client.get(f"/api/v1/customers/{people['sh']}/preferences").json()
    slots = {s["slot"]: s["share"] for s in body["hour_slots"]}
    assert slots["morning"] == 1.0  # 23:30 UTC is 07:30 the next day in Shanghai
    weekdays = {d["weekday"]: d["orders"] for d in body["weekdays"]}
    assert weekdays[2] == 2  # both Tuesdays, local
    assert body["favourite_skus"][0]["sku"] == "LATTE"
    assert body["basket_size"] == "3"
    assert body["gross_spend"] == "145.00"
    assert body["discounted_spend"] == "33.00"
    assert body["price_sensitivity"] == 0.2276


@pytest.mark.parametrize("what", ["predictions", "preferences"])
def test_a_manager_gets_404_outside_their_stores_same_as_a_missing_id(client, predicted,
                                                                      what):
    login(client, "manager")  # manages SH01
    outside = client.get(f"/api/v1/customers/{predicted['bj']}/{what}")
    missing = client.get(f"/api/v1/customers/987654/{what}")
    assert outside.status_code == missing.status_code == 404
    assert outside.json() == missing.json()
    assert client.get(f"/api/v1/customers/{predicted['sh']}/{what}").status_code == 200


def test_a_cashier_may_not_read_them(client, people):
    login(client, "cashier")
    assert client.get(f"/api/v1/customers/{people['sh']}/predictions").status_code == 403
    assert client.get(f"/api/v1/customers/{people['sh']}/preferences").status_code == 403


# --- the customer 360 page ------------------------------------------------------------------

def page(client, customer_id, lang):
    r = client.get(f"/customers/{customer_id}", params={"lang": lang})
    assert r.status_code == 200, r.text
    return r.text


def test_page_says_analytics_are_not_computed_yet_in_both_languages(client, people):
    login(client, "owner")
    en = page(client, people["sh"], "en")
    assert "Segment and lifecycle stage have not been computed" in en
    assert "Predictions have not been computed" in en
    # preferences need no refresh: read from the running counters and the orders
    assert "Morning (6–11)" in en and "100.0%" in en
    assert 'id="price-sensitivity">22.8%' in en and 'id="basket-size">3<' in en
    # server-drawn: no script of its own (only the page script every staff page loads)
    assert re.findall(r"<script[^>]*>", en) == [
        re.search(r'<script src="/static/patron\.js\?v=[0-9a-f]+" defer>', en).group(0)]
    zh = page(client, people["sh"], "zh")
    assert "尚未计算该客户的分群和生命周期阶段" in zh and "尚未计算该客户的预测" in zh
    assert "早上（6–11 点）" in zh and "周二" in zh


def test_page_shows_segment_stage_and_predictions_once_computed(client, predicted):
    login(client, "owner")
    r = client.post("/api/v1/analytics/refresh",
                    json={"as_of": dt.datetime(2026, 3, 20, 4, 0, tzinfo=UTC).isoformat()})
    assert r.status_code == 200, r.text
    analytics = client.get(f"/api/v1/customers/{predicted['sh']}/analytics").json()
    rfm = analytics["rfm"]
    en = page(client, predicted["sh"], "en")
    assert "have not been computed" not in en
    assert f'data-segment="{rfm["segment"]}"' in en
    assert f'R{rfm["r"]} · F{rfm["f"]} · M{rfm["m"]}' in en
    assert f'data-stage="{analytics["stage"]}"' in en
    assert f'since {analytics["stage_since"]}' in en
    assert "91.2%" in en and "¥812.34" in en and "2026-04-12" in en
    zh = page(client, predicted["sh"], "zh")
    zh_label = client.get(f"/api/v1/customers/{predicted['sh']}/analytics",
                          params={"lang": "zh"}).json()["rfm"]["label"]
    assert zh_label in zh and "活跃概率" in zh and "未来 12 个月价值" in zh


def test_a_manager_sees_the_cards_for_their_own_customer(client, predicted):
    login(client, "manager")
    text = page(client, predicted["sh"], "en")
    assert 'id="analytics"' in text and 'id="preferences"' in text and "¥812.34" in text
    assert client.get(f"/customers/{predicted['bj']}").status_code == 404


def test_page_lists_the_top_recommended_products_when_cross_sell_has_run(client, people,
                                                                         db_url):
    tables = pytest.importorskip("patron.analytics.crosssell_tables")
    with UnitOfWork(get_engine(db_url)) as uow:
        uow.c.execute(insert(tables.customer_recommendations), [
            {"customer_id": people["sh"], "rank": i, "sku": f"SKU{i}", "score": 1.0 / i,
             "source": "rules", "as_of": dt.date(2026, 4, 1), "computed_at": FITTED}
            for i in range(1, 8)])
        uow.commit()
    login(client, "owner")
    text = page(client, people["sh"], "en")
    assert "Recommended products" in text
    assert all(f"SKU{i}" in text for i in range(1, 6))
    assert "SKU6" not in text
