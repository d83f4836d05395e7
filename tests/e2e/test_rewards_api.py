"""The rewards catalog over HTTP: the role table, a till redeeming, retrying and handing a
reward over, cancellation, store scope, audit, and bad input answered with field and reason in
Chinese or English."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import login
from tests.e2e.test_loyalty_api import ENROL, PROGRAM

ITEM = {"code": "MUG", "name": "Bean mug", "points_price": 100, "cash_price": "9.90",
        "stock": 2, "limit_per_member": 5}


@pytest.fixture
def member(client, users):
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    r = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL)
    assert r.status_code == 201, r.text
    m = r.json()
    r = client.post(f"/api/v1/loyalty/members/{m['id']}/adjustments",
                    json={"idempotency_key": "seed", "points": 500, "reason": "opening"})
    assert r.status_code == 201, r.text
    return m


@pytest.fixture
def item(client, member):
    login(client, "owner")
    r = client.post("/api/v1/rewards/programs/BB/items", json=ITEM)
    assert r.status_code == 201, r.text
    return r.json()


def test_roles_owners_manage_the_catalog_tills_redeem_analysts_only_read(client, item, member):
    for role, create, patch, redeem, read in (("owner", 201, 200, 201, 200),
                                              ("analyst", 403, 403, 403, 200),
                                              ("manager", 403, 403, 201, 200),
                                              ("cashier", 403, 403, 201, 200)):
        login(client, role)
        r = client.post("/api/v1/rewards/programs/BB/items", json={**ITEM, "code": f"X{role}"})
        assert r.status_code == create, (role, r.text)
        r = client.patch(f"/api/v1/rewards/items/{item['id']}", json={"stock": 50})
        assert r.status_code == patch, (role, r.text)
        r = client.post(f"/api/v1/rewards/items/{item['id']}/redemptions",
                        json={"idempotency_key": f"k-{role}", "member_id": member["id"],
                              "store": "SH01"})
        assert r.status_code == redeem, (role, r.text)
        assert client.get("/api/v1/rewards/programs/BB/items").status_code == read


def test_a_till_redeems_retries_and_hands_the_reward_over(client, item, member):
    login(client, "cashier")
    body = {"idempotency_key": "till1-0001", "member_id": member["id"], "store": "SH01"}
    first = client.post(f"/api/v1/rewards/items/{item['id']}/redemptions", json=body)
    assert first.status_code == 201, first.text
    r = first.json()
    assert (r["status"], r["points"], r["cash"], r["store"]) == ("held", 100, "9.90", "SH01")
    assert r["balance"] == {"available": 400, "held": 100}
    retry = client.post(f"/api/v1/rewards/items/{item['id']}/redemptions", json=body)
    assert retry.status_code == 200 and retry.json()["id"] == r["id"]
    other = client.post(f"/api/v1/rewards/items/{item['id']}/redemptions?lang=en",
                        json={**body, "quantity": 2})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    listed = client.get("/api/v1/rewards/programs/BB/items").json()["items"][0]
    assert (listed["reserved"], listed["available"]) == (1, 1)
    done = client.post(f"/api/v1/rewards/redemptions/{r['id']}/fulfil")
    assert done.status_code == 200 and done.json()["status"] == "fulfilled"
    assert client.post(f"/api/v1/rewards/redemptions/{r['id']}/fulfil").json()["replayed"]
    assert done.json()["balance"] == {"available": 400, "held": 0}
    balance = client.get(f"/api/v1/loyalty/members/{member['id']}/balance").json()
    assert balance["available"] == 400 and balance["held"] == 0
    got = client.get(f"/api/v1/rewards/items/{item['id']}").json()
    assert (got["sold"], got["reserved"], got["available"]) == (1, 0, 1)


def test_cancel_over_http_gives_points_and_stock_back_and_a_fulfilled_reward_stays(
        client, item, member):
    login(client, "cashier")
    url = f"/api/v1/rewards/items/{item['id']}/redemptions"
    r = client.post(url, json={"idempotency_key": "c1", "member_id": member["id"],
                               "store": "SH01"}).json()
    out = client.post(f"/api/v1/rewards/redemptions/{r['id']}/cancel")
    assert out.status_code == 200 and out.json()["status"] == "cancelled"
    assert out.json()["balance"] == {"available": 500, "held": 0}
    r2 = client.post(url, json={"idempotency_key": "c2", "member_id": member["id"],
                                "store": "SH01"}).json()
    client.post(f"/api/v1/rewards/redemptions/{r2['id']}/fulfil")
    refused = client.post(f"/api/v1/rewards/redemptions/{r2['id']}/cancel?lang=en")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        "The reward was already handed over; it cannot be cancelled.")
    history = client.get(f"/api/v1/rewards/members/{member['id']}/redemptions").json()["items"]
    assert [h["status"] for h in history] == ["fulfilled", "cancelled"]


def test_out_of_stock_is_a_409_in_the_callers_language(client, item, member):
    login(client, "cashier")
    url = f"/api/v1/rewards/items/{item['id']}/redemptions"
    ok = client.post(url, json={"idempotency_key": "s1", "member_id": member["id"],
                                "store": "SH01", "quantity": 2})
    assert ok.status_code == 201, ok.text
    en = client.post(f"{url}?lang=en", json={"idempotency_key": "s2",
                                             "member_id": member["id"], "store": "SH01"})
    assert en.status_code == 409
    assert en.json()["error"]["message"] == "Not enough stock: 1 wanted, 0 left."
    zh = client.post(url, json={"idempotency_key": "s3", "member_id": member["id"],
                                "store": "SH01"}, headers={"Accept-Language": "zh-CN"})
    assert zh.json()["error"]["message"] == "库存不足：需要 1，剩余 0。"


def test_a_cashier_must_name_a_store_of_theirs_and_sees_only_their_redemptions(
        client, item, member):
    login(client, "cashier")
    url = f"/api/v1/rewards/items/{item['id']}/redemptions"
    r = client.post(url, json={"idempotency_key": "n1", "member_id": member["id"]})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "store_required_in_scope"
    r = client.post(url, json={"idempotency_key": "n2", "member_id": member["id"],
                               "store": "BJ01"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "store_out_of_scope"
    login(client, "owner")
    elsewhere = client.post(url, json={"idempotency_key": "n3", "member_id": member["id"],
                                       "store": "BJ01"}).json()
    login(client, "cashier")
    assert client.get(f"/api/v1/rewards/redemptions/{elsewhere['id']}").status_code == 404
    assert client.post(f"/api/v1/rewards/redemptions/{elsewhere['id']}/fulfil"
                       ).status_code == 404


def test_every_catalog_write_is_audited(client, item, member):
    login(client, "cashier")
    r = client.post(f"/api/v1/rewards/items/{item['id']}/redemptions",
                    json={"idempotency_key": "a1", "member_id": member["id"],
                          "store": "SH01"}).json()
    client.post(f"/api/v1/rewards/redemptions/{r['id']}/fulfil")
    login(client, "owner")
    client.patch(f"/api/v1/rewards/items/{item['id']}", json={"active": False})
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["items"]]
    for action in ("rewards.item_created", "rewards.redeemed", "rewards.fulfilled",
                   "rewards.item_updated", "loyalty.hold", "loyalty.hold_committed"):
        assert action in actions, action


def test_bad_catalog_input_names_the_field_and_the_reason(client, item):
    login(client, "owner")
    url = "/api/v1/rewards/programs/BB/items?lang=en"
    r = client.post(url, json={**ITEM, "code": "N1", "points_price": 0})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "points_price"
    r = client.post(url, json={**ITEM, "code": "N2", "limit_per_period": 1})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "limit_period_pair"
    r = client.post(url, json={**ITEM, "code": "N3", "valid_from": "2026-12-01T00:00:00"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "timezone_required"
    r = client.post(url, json={**ITEM, "code": "N4", "cash_price": "1.001"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "cash_price"
    assert client.post(url, json=ITEM).status_code == 409
    r = client.patch(f"/api/v1/rewards/items/{item['id']}?lang=en", json={"name": None})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "name"
    assert client.get("/api/v1/rewards/items/424242").status_code == 404
    assert client.get("/api/v1/rewards/programs/NOPE/items").status_code == 404
    r = client.post(f"/api/v1/rewards/items/{item['id']}/redemptions",
                    json={"idempotency_key": "x y", "member_id": 1})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "idempotency_key"
