"""One customer's churn score and the latest evaluations over HTTP: not scored yet, store scope
(404 like every customer route), permissions."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert

from patron.analytics.churn_tables import churn_model_runs, customer_churn_scores
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.e2e.conftest import client, login, org, users  # noqa: F401  (fixtures)
from tests.factories import order

FITTED = dt.datetime(2026, 4, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def scored(db_url, org, users):  # noqa: F811
    with UnitOfWork(get_engine(db_url)) as uow:
        out = record_orders(uow=uow, orders_in=[
            order("S1", at=dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC),
                  identifiers={"phone": "13800000001"}),
            order("B1", store="BJ01", at=dt.datetime(2026, 3, 3, 3, 0, tzinfo=dt.UTC),
                  identifiers={"phone": "13800000002"}),
            order("B2", store="BJ01", at=dt.datetime(2026, 3, 4, 3, 0, tzinfo=dt.UTC),
                  identifiers={"phone": "13800000003"})],
            source="api", actor=SYSTEM, now=FITTED, audit_each=False)
        metrics = {"model": {"auc": 0.86, "brier": 0.1, "calibration": []},
                   "naive": {"auc": 0.83, "brier": 0.12, "calibration": []}}
        run = uow.c.execute(insert(churn_model_runs).values(
            fitted_at=FITTED, purpose="evaluate", cutoff=dt.date(2025, 12, 31),
            horizon_days=90, train_customers=2, train_churn_rate=0.5, test_customers=3,
            model={"logistic": {}}, metrics=metrics, actor="system",
        ).returning(churn_model_runs.c.id)).scalar_one()
        for customer, probability in ((out[0].customer_id, 0.25), (out[1].customer_id, 0.75)):
            uow.c.execute(insert(customer_churn_scores).values(
                customer_id=customer, run_id=run, scored_at=FITTED,
                as_of=dt.date(2026, 3, 31), horizon_days=90, probability=probability,
                days_since_last_purchase=29, usual_interval_days=30.0,
                probability_alive=0.9))
        uow.commit()
    return {"sh": out[0].customer_id, "bj": out[1].customer_id, "unscored": out[2].customer_id,
            "run": run}


def test_owner_reads_a_customers_churn_score_and_the_evaluations(client, scored):  # noqa: F811
    login(client, "owner")
    body = client.get(f"/api/v1/customers/{scored['sh']}/churn").json()
    assert body["customer_id"] == scored["sh"]
    assert body["churn"]["probability"] == 0.25
    assert body["churn"]["as_of"] == "2026-03-31" and body["churn"]["horizon_days"] == 90
    assert body["churn"]["days_since_last_purchase"] == 29
    unscored = client.get(f"/api/v1/customers/{scored['unscored']}/churn")
    assert unscored.status_code == 200 and unscored.json()["churn"] is None
    assert client.get("/api/v1/customers/999999/churn").status_code == 404
    runs = client.get("/api/v1/analytics/churn/evaluations").json()["evaluations"]
    assert [r["run_id"] for r in runs] == [scored["run"]]
    assert runs[0]["model"]["auc"] == 0.86 and runs[0]["naive"]["auc"] == 0.83
    assert client.get("/api/v1/analytics/churn/evaluations?limit=0").status_code == 422


def test_manager_sees_only_customers_of_their_store_and_no_evaluations(client, scored):  # noqa: F811
    login(client, "manager")  # manager of SH01
    assert client.get(f"/api/v1/customers/{scored['sh']}/churn").json()["churn"][
        "probability"] == 0.25
    hidden = client.get(f"/api/v1/customers/{scored['bj']}/churn")
    assert hidden.status_code == 404
    assert client.get("/api/v1/analytics/churn/evaluations").status_code == 403


def test_cashier_may_not_read_churn_scores(client, scored):  # noqa: F811
    login(client, "cashier")
    assert client.get(f"/api/v1/customers/{scored['sh']}/churn").status_code == 403
