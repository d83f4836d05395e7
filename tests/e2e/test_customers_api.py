"""Customer 360 over HTTP: search, scope, masking, reveal, lookup, edits, fields, exports."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.factories import order


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch, db_url):
    """Exports land in the test's own directory, not in the working tree."""
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def people(db_url, org, users):
    with UnitOfWork(get_engine(db_url)) as uow:
        out = record_orders(uow=uow, orders_in=[
            order("S1", identifiers={"phone": "13812341234", "member_code": "M001"},
                  customer={"name": "王小明"}),
            order("B1", store="BJ01", identifiers={"phone": "13900001111"},
                  customer={"name": "王大力"})], source="api", actor=SYSTEM)
    return {"sh": out[0].customer_id, "bj": out[1].customer_id}


def test_search_by_phone_returns_masked_summary(client, people):
    login(client, "analyst")
    r = client.get("/api/v1/customers", params={"q": "138 1234 1234"})
    assert r.status_code == 200, r.text
    (hit,) = r.json()["items"]
    assert hit["id"] == people["sh"] and hit["phone"] == "138****1234"
    assert hit["net_spend"] == "71.00"


def test_manager_gets_404_for_customer_of_another_store(client, people):
    login(client, "manager")
    assert client.get(f"/api/v1/customers/{people['sh']}").status_code == 200
    out_of_scope = client.get(f"/api/v1/customers/{people['bj']}")
    missing = client.get("/api/v1/customers/999999")
    assert out_of_scope.status_code == missing.status_code == 404
    assert out_of_scope.json() == missing.json()
    assert client.get(f"/api/v1/customers/{people['bj']}/timeline").status_code == 404
    listed = client.get("/api/v1/customers").json()
    assert [c["id"] for c in listed["items"]] == [people["sh"]]


def test_owner_reveal_is_audited_without_the_value(client, people, db_url):
    login(client, "owner")
    profile = client.get(f"/api/v1/customers/{people['sh']}").json()
    assert profile["phone"] == "138****1234"
    r = client.post(f"/api/v1/customers/{people['sh']}/reveal", json={"field": "phone"})
    assert r.status_code == 200 and r.json()["value"] == "+8613812341234"
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        row = uow.c.execute(select(audit_log).where(
            audit_log.c.action == "customer.revealed")).mappings().one()
    assert row["actor_name"] == "owner" and "1234" not in str(row["details"])
    login(client, "analyst")
    assert client.post(f"/api/v1/customers/{people['sh']}/reveal",
                       json={"field": "phone"}).status_code == 403


def test_cashier_can_look_up_but_not_browse(client, people):
    login(client, "cashier")
    r = client.get("/api/v1/customers/lookup", params={"kind": "phone", "value": "13812341234"})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": people["sh"], "member_code": "M001", "is_member": True,
                        "name": "王**", "phone": "138****1234"}
    assert client.get("/api/v1/customers", params={"q": "王"}).status_code == 403
    assert client.get(f"/api/v1/customers/{people['sh']}").status_code == 403
    r = client.get("/api/v1/customers/lookup", params={"kind": "phone", "value": "12"},
                   headers={"Accept-Language": "en"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["message"] == "Not a valid phone number."


def test_custom_field_defined_then_edit_rejected_naming_the_field(client, people):
    login(client, "owner")
    r = client.post("/api/v1/custom-fields", json={
        "key": "skin", "label_zh": "肤质", "label_en": "Skin", "type": "choice",
        "options": ["dry", "oily"]})
    assert r.status_code == 201, r.text
    field_id = r.json()["id"]
    r = client.patch(f"/api/v1/customers/{people['sh']}",
                     json={"custom_fields": {"skin": "normal"}},
                     headers={"Accept-Language": "en"})
    assert r.status_code == 422
    (err,) = r.json()["error"]["fields"]
    assert err["field"] == "custom_fields.skin"
    assert err["message"] == "\"normal\" is not one of the field's options."
    r = client.patch(f"/api/v1/customers/{people['sh']}",
                     json={"gender": "F", "custom_fields": {"skin": "dry"}})
    assert r.status_code == 200, r.text
    listed = client.get("/api/v1/customers", params={"cf.skin": "dry"}).json()
    assert [c["id"] for c in listed["items"]] == [people["sh"]]
    profile = client.get(f"/api/v1/customers/{people['sh']}").json()
    assert profile["gender"] == "F"
    assert [(f["key"], f["value"]) for f in profile["custom_fields"]] == [("skin", "dry")]
    r = client.patch(f"/api/v1/custom-fields/{field_id}", json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    assert client.get("/api/v1/custom-fields").json()["items"] == []
    login(client, "manager")
    assert client.post("/api/v1/custom-fields", json={
        "key": "x", "label_zh": "x", "label_en": "x", "type": "text"}).status_code == 403


def test_timeline_over_http_pages_with_total(client, people, pos_key):
    h = {"Authorization": f"Bearer {pos_key}"}
    for n in range(3):
        r = client.post("/api/v1/orders", json=order(
            f"T{n}", identifiers={"phone": "13812341234"}, lines=[
                {"sku": "TEA", "category": "tea", "quantity": "1", "unit_price": "20"}]),
            headers=h)
        assert r.status_code in (200, 201), r.text
    login(client, "manager")
    r = client.get(f"/api/v1/customers/{people['sh']}/timeline",
                   params={"category": "tea", "page_size": 2, "page": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and len(body["items"]) == 1
    assert body["items"][0]["lines"][0]["amount"] == "20.00"


def test_exports_return_files_masked_and_need_the_permission(client, people, data_dir):
    login(client, "analyst")
    r = client.get("/api/v1/exports/customers.csv")
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig").split("\n", 1)[1])))
    assert {row["phone"] for row in rows} == {"138****1234", "139****1111"}
    assert client.get("/api/v1/exports/customers.csv",
                      params={"unmasked": "true"}).status_code == 403
    r = client.get("/api/v1/exports/orders.xlsx", params={"store": "BJ01"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    login(client, "cashier")
    assert client.get("/api/v1/exports/orders.csv").status_code == 403
    assert len(list((data_dir / "exports").iterdir())) == 2
