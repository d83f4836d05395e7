"""RFM segments and lifecycle stages over HTTP: roles, store scope, languages, refresh."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from patron.app import create_app
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.factories import order

CST = dt.timezone(dt.timedelta(hours=8))
AS_OF = dt.datetime(2026, 6, 1, 12, 0, tzinfo=CST)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    app = create_app()
    if not any(getattr(r, "path", "") == "/api/v1/analytics/rfm/summary" for r in app.routes):
        from patron.analytics.api import router

        app.include_router(router, prefix="/api/v1")
    with TestClient(app) as c:
        yield c


@pytest.fixture
def people(db_url, org, users):
    """A weekly SH01 regular three weeks late, a big SH01 spender and a BJ01 one-timer."""
    def visits(prefix, phone, store, ago, lines=None):
        return [order(f"{prefix}{i}", store=store, at=AS_OF - dt.timedelta(days=n),
                      identifiers={"phone": phone}, lines=lines) for i, n in enumerate(ago)]

    big = [{"sku": "BEANS", "category": "beans", "quantity": "4", "unit_price": "150.00"}]
    with UnitOfWork(get_engine(db_url)) as uow:
        out = record_orders(uow=uow, orders_in=[
            *visits("W", "13800000001", "SH01", [21 + 7 * i for i in range(10)]),
            *visits("B", "13800000005", "SH01", [2 + 7 * i for i in range(6)], big),
            *visits("L", "13800000004", "BJ01", [400])], source="api", actor=SYSTEM,
            now=AS_OF, audit_each=False)
    return {"weekly": out[0].customer_id, "big": out[10].customer_id,
            "gone": out[-1].customer_id}


def refresh(client):
    r = client.post("/api/v1/analytics/refresh", json={"as_of": AS_OF.isoformat()})
    assert r.status_code == 200, r.text
    return r.json()


def test_owner_refreshes_and_reads_segments_in_chinese_and_english(client, people):
    login(client, "owner")
    body = refresh(client)
    assert body["rfm"]["scopes"]["overall"] == 3
    assert body["lifecycle"]["changed"] == 3
    zh = client.get("/api/v1/analytics/rfm/summary").json()
    # of three customers the best rank scores 4: the big spender (R4 F2 M4)
    potential = next(s for s in zh["segments"] if s["segment"] == "potential_loyalists")
    assert potential["customers"] == 1 and potential["label"] == "潜力客户"
    assert potential["avg_monetary"] == "3600.00"
    en = client.get("/api/v1/analytics/rfm/summary", params={"lang": "en"}).json()
    assert next(s for s in en["segments"] if s["segment"] == "lost")["label"] == "Lost"
    with UnitOfWork(get_engine()) as uow:
        actions = set(uow.c.execute(select(audit_log.c.action).where(
            audit_log.c.action.like("analytics.%"))).scalars())
    assert actions == {"analytics.rfm_refreshed", "analytics.lifecycle_refreshed"}


def test_drill_down_is_masked_and_paginated(client, people):
    login(client, "owner")
    refresh(client)
    seg = client.get("/api/v1/analytics/rfm/summary").json()["segments"]
    name = next(s["segment"] for s in seg if s["customers"])
    r = client.get(f"/api/v1/analytics/rfm/segments/{name}/customers",
                   params={"page_size": 1})
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["phone"].startswith("138****")
    assert client.get("/api/v1/analytics/rfm/segments/vip/customers").status_code == 404


def test_manager_sees_only_their_stores_customers(client, people):
    login(client, "analyst")
    refresh(client)
    client.post("/api/v1/auth/logout")
    login(client, "manager")
    summary = client.get("/api/v1/analytics/rfm/summary").json()
    assert summary["customers"] == 2
    stages = client.get("/api/v1/analytics/lifecycle/summary").json()
    assert stages["customers"] == 2
    assert client.get(f"/api/v1/customers/{people['weekly']}/analytics").status_code == 200
    hidden = client.get(f"/api/v1/customers/{people['gone']}/analytics")
    missing = client.get("/api/v1/customers/999999/analytics")
    assert hidden.status_code == missing.status_code == 404
    assert client.post("/api/v1/analytics/refresh", json={}).status_code == 403


def test_cashier_may_not_read_analytics(client, people):
    login(client, "cashier")
    assert client.get("/api/v1/analytics/rfm/summary").status_code == 403
    assert client.get("/api/v1/analytics/lifecycle/summary").status_code == 403


def test_one_customers_view_and_the_flows(client, people):
    login(client, "owner")
    refresh(client)
    view = client.get(f"/api/v1/customers/{people['weekly']}/analytics",
                      params={"lang": "en"}).json()
    assert view["stage"] == "dormant" and view["stage_label"] == "Dormant"
    assert view["usual_interval_days"] == 7.0
    assert view["stage_history"] == [{"from_stage": None, "to_stage": "dormant",
                                      "changed_on": "2026-06-01", "to_label": "Dormant"}]
    assert (view["rfm"]["r"], view["rfm"]["f"], view["rfm"]["m"]) == (2, 4, 2)
    assert view["rfm"]["segment"] == "at_risk" and view["rfm"]["label"] == "At risk"
    flows = client.get("/api/v1/analytics/lifecycle/flows",
                       params={"from": "2026-06-01", "to": "2026-06-01"}).json()["flows"]
    assert {(f["from_stage"], f["to_stage"]): f["customers"] for f in flows} == {
        (None, "dormant"): 1, (None, "active"): 1, (None, "churned"): 1}


def test_bad_input_is_a_4xx_with_the_field(client, people):
    login(client, "owner")
    r = client.get("/api/v1/analytics/rfm/summary", params={"scope": "city:SH"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "scope"
    r = client.get("/api/v1/analytics/lifecycle/flows", params={"from": "2026-06-02",
                                                                "to": "2026-06-01"})
    assert r.status_code == 422
    assert client.get("/api/v1/analytics/lifecycle/flows",
                      params={"from": "June"}).status_code == 422
    r = client.post("/api/v1/analytics/refresh", json={"as_of": "2026-06-01T12:00:00"})
    assert r.status_code == 422


def test_owner_sets_thresholds_and_the_analyst_may_not(client, people):
    login(client, "owner")
    r = client.put("/api/v1/analytics/settings", json={
        "lifecycle": {"dormant_days": 60, "churn_risk_days": 120, "churned_days": 180}})
    assert r.status_code == 200, r.text
    assert r.json()["lifecycle"]["dormant_days"] == 60
    refresh(client)
    view = client.get(f"/api/v1/customers/{people['weekly']}/analytics").json()
    assert view["stage"] == "active"
    bad = client.put("/api/v1/analytics/settings", json={"rfm": {"frequency": [3, 2, 1, 0]}})
    assert bad.status_code == 422
    client.post("/api/v1/auth/logout")
    login(client, "analyst")
    assert client.put("/api/v1/analytics/settings", json={"rfm": {}}).status_code == 403
