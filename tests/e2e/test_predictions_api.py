"""One customer's predictions and preferences over HTTP: figures, not computed yet, store
scope (404 like every customer route), permissions."""

from __future__ import annotations

import datetime as dt
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
