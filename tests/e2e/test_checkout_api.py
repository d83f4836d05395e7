"""The POS checkout over HTTP: a cashier's sale from quote to refund, the role table, store
scope, holds, an offline queue, tier benefits validated where tiers are edited, and errors with
field and reason in Chinese or English."""

from __future__ import annotations

import pytest

from tests.checkout_factories import LINES, TIERS
from tests.e2e.conftest import login

PROGRAM = {"code": "BB", "brand": "B1", "name": "Bean Club", "privacy_version": "2026-01",
           "pending_days": 0, "tiers": TIERS}
ENROL = {"phone": "13812345678", "store": "SH01", "source": "pos",
         "privacy": {"version": "2026-01"}}


@pytest.fixture
def member(client, users):
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    m = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL).json()
    for key, body in (("p", {"points": 800}), ("g", {"points": 1000, "bucket": "growth"})):
        r = client.post(f"/api/v1/loyalty/members/{m['id']}/adjustments",
                        json={"idempotency_key": key, "reason": "opening balance", **body})
        assert r.status_code == 201, r.text
    return m


def sale(member_code, key, number, **extra):
    return {"store": "SH01", "lines": LINES, "member": {"member_code": member_code},
            "idempotency_key": key, "order_number": number, **extra}


def test_a_cashiers_sale_from_quote_to_refund(client, member):
    login(client, "cashier")
    code = member["member_code"]
    q = client.post("/api/v1/checkout/quote", json={"store": "SH01", "lines": LINES,
                                                     "member": {"member_code": code},
                                                     "redeem_points": 500})
    assert q.status_code == 200, q.text
    body = q.json()
    assert body["member"]["tier"]["code"] == "GOLD"
    assert body["amounts"]["total_fen"] == 6390 and body["amounts"]["payable_fen"] == 5890
    assert body["points"]["will_earn"] == 88 and body["points"]["max_redeemable"] == 800
    pay = [{"method": "wechat_pay", "amount_fen": 5890}]
    c = client.post("/api/v1/checkout/commits",
                    json=sale(code, "till1-0001", "SH01-0001", redeem_points=500,
                              payments=pay))
    assert c.status_code == 201, c.text
    done = c.json()
    assert done["points"]["earned"] == 88 and done["points"]["balance"]["available"] == 388
    retry = client.post("/api/v1/checkout/commits",
                        json=sale(code, "till1-0001", "SH01-0001", redeem_points=500,
                                  payments=pay))
    assert retry.status_code == 200 and retry.json()["replayed"] is True
    assert retry.json()["checkout_id"] == done["checkout_id"]
    other = client.post("/api/v1/checkout/commits?lang=en",
                        json=sale(code, "till1-0001", "SH01-0001", payments=[
                            {"method": "cash", "amount_fen": 6390}]))
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    got = client.get(f"/api/v1/checkout/commits/{done['checkout_id']}")
    assert got.status_code == 200 and got.json()["order_id"] == done["order_id"]
    r = client.post(f"/api/v1/checkout/commits/{done['checkout_id']}/refunds",
                    json={"idempotency_key": "rf-1", "full": True, "reason": "changed mind"})
    assert r.status_code == 201, r.text
    assert r.json()["points_returned"] == 500 and r.json()["balance"]["available"] == 800
    assert r.json()["refund_to_tenders_fen"] == 5890
    login(client, "owner")
    actions = {e["action"] for e in client.get("/api/v1/audit").json()["items"]}
    assert {"checkout.committed", "checkout.refunded", "orders.recorded",
            "return.recorded", "loyalty.redeem"} <= actions


def test_buy_spend_the_points_refund_over_http_the_points_value_comes_off_the_money(
        client, member):
    """The program deducts spent points from refunds: the till is told to give back the money
    less what the points the member spent were worth (100 points a yuan: 95 points, 0.95)."""
    r = client.patch("/api/v1/loyalty/programs/BB", json={"clawback_policy": "deduct_from_refund"})
    assert r.status_code == 200, r.text
    login(client, "cashier")
    code = member["member_code"]
    c = client.post("/api/v1/checkout/commits", json=sale(
        code, "till1-0002", "SH01-0002", payments=[{"method": "cash", "amount_fen": 6390}]))
    assert c.status_code == 201, c.text
    done = c.json()
    assert done["points"]["earned"] == 95
    spend = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem",
                        json={"idempotency_key": "spend-all", "points": 895, "store": "SH01"})
    assert spend.status_code == 201, spend.text
    body = {"idempotency_key": "rf-2", "full": True, "reason": "returned"}
    r = client.post(f"/api/v1/checkout/commits/{done['checkout_id']}/refunds", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["points_deduction"] == {"points": 95, "from_points": 0, "deducted": 95,
                                       "deducted_fen": 95, "owed": 0, "points_per_yuan": 100}
    assert (out["refund_before_deduction_fen"], out["refund_to_tenders_fen"]) == (6390, 6295)
    assert out["balance"]["owed"] == 0 and out["balance"]["available"] == 0
    again = client.post(f"/api/v1/checkout/commits/{done['checkout_id']}/refunds", json=body)
    assert again.status_code == 200 and again.json() == {**out, "replayed": True}
    login(client, "owner")
    (entry,) = client.get("/api/v1/audit",
                          params={"action": "checkout.refunded"}).json()["items"]
    assert (entry["details"]["points_deducted"], entry["details"]["deducted_fen"]) == (95, 95)


def test_the_role_table(client, member, users):
    code = member["member_code"]
    quote = {"store": "SH01", "lines": LINES, "member": {"member_code": code}}
    for n, role in enumerate(("owner", "analyst", "manager", "cashier")):
        login(client, role)
        expected = 403 if role == "analyst" else None
        r = client.post("/api/v1/checkout/quote", json=quote)
        assert r.status_code == (expected or 200), (role, r.text)
        r = client.post("/api/v1/checkout/commits", json=sale(
            code, f"k{n}", f"N-{n}", payments=[{"method": "cash", "amount_fen": 6390}]))
        assert r.status_code == (expected or 201), (role, r.text)
        r = client.post("/api/v1/checkout/holds", json={**quote, "idempotency_key": f"h{n}",
                                                        "redeem_points": 10})
        assert r.status_code == (expected or 201), (role, r.text)
        if expected is None:
            rel = client.post(f"/api/v1/checkout/holds/{r.json()['id']}/release")
            assert rel.status_code == 200 and rel.json()["status"] == "released"


def test_a_cashier_only_checks_out_at_their_stores(client, member):
    login(client, "cashier")
    r = client.post("/api/v1/checkout/commits?lang=en", json={**sale(
        member["member_code"], "k1", "BJ-1", payments=[{"method": "cash", "amount_fen": 6390}]),
        "store": "BJ01"})
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert (f["field"], f["reason"]) == ("store", "store_out_of_scope")
    login(client, "owner")
    bj = client.post("/api/v1/checkout/commits", json={**sale(
        member["member_code"], "k1", "BJ-1", payments=[{"method": "cash", "amount_fen": 6390}]),
        "store": "BJ01"})
    assert bj.status_code == 201
    login(client, "cashier")
    assert client.get(f"/api/v1/checkout/commits/{bj.json()['checkout_id']}").status_code == 404
    r = client.post(f"/api/v1/checkout/commits/{bj.json()['checkout_id']}/refunds",
                    json={"idempotency_key": "x", "full": True})
    assert r.status_code == 404


def test_bad_input_names_the_field_and_the_reason_in_the_callers_language(client, member):
    login(client, "cashier")
    code = member["member_code"]
    r = client.post("/api/v1/checkout/quote?lang=en", json={
        "store": "SH01", "lines": LINES, "member": {"member_code": code},
        "redeem_points": 6391})
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert f["field"] == "redeem_points"
    assert f["message"] == "More points than the basket costs: at most 6390."
    r = client.post("/api/v1/checkout/commits", json=sale(code, "k1", "X-1", payments=[
        {"method": "cash", "amount_fen": 1}]), headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["message"] == "支付金额之和须等于剩余应付：6390 分。"
    r = client.post("/api/v1/checkout/quote", json={
        "store": "SH01", "lines": LINES, "member": {"member_code": code, "phone": "1"}})
    assert r.status_code == 422
    r = client.post("/api/v1/checkout/quote", json={"store": "SH01", "lines": [
        {"sku": "A", "quantity": "1", "unit_price_fen": -5}]})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == (
        "lines.0.unit_price_fen")
    r = client.post("/api/v1/checkout/quote", json={"store": "SH01", "lines": LINES,
                                                     "member": {"member_code": "123"}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "member_not_found"
    assert client.get("/api/v1/checkout/holds/999999").status_code == 404


def test_an_offline_queue_over_http(client, member):
    login(client, "cashier")
    code = member["member_code"]
    pay = [{"method": "cash", "amount_fen": 6390}]
    import datetime as dt

    # Sales after the member became GOLD (a till's clock may run a little ahead).
    at = dt.datetime.now(dt.UTC)
    entries = [
        {**sale(code, "o-2", "OFF-2", payments=pay),
         "purchased_at": (at + dt.timedelta(seconds=20)).isoformat()},
        {**sale(code, "o-1", "OFF-1", payments=pay),
         "purchased_at": (at + dt.timedelta(seconds=10)).isoformat()},
        {**sale(code, "o-3", "OFF-3", redeem_points=99999, payments=pay),
         "purchased_at": (at + dt.timedelta(seconds=30)).isoformat()},
    ]
    r = client.post("/api/v1/checkout/offline-batches?lang=en", json={"entries": entries})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["applied_order"] == [1, 0, 2]
    assert [x["status"] for x in out["results"]] == ["created", "created", "rejected"]
    assert out["results"][2]["error"]["fields"][0]["message"] == (
        "More points than the basket costs: at most 6390.")
    again = client.post("/api/v1/checkout/offline-batches", json={"entries": entries[:2]})
    assert [x["status"] for x in again.json()["results"]] == ["replayed", "replayed"]
    r = client.post("/api/v1/checkout/offline-batches", json={"entries": [
        {k: v for k, v in entries[0].items() if k != "purchased_at"}]})
    assert r.status_code == 422


def test_tier_benefits_are_validated_where_tiers_are_edited(client, member):
    login(client, "owner")
    r = client.patch("/api/v1/loyalty/programs/BB/tiers/GOLD?lang=en",
                     json={"benefits": {"member_discount_percent": "120"}})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "benefits.member_discount_percent"
    r = client.patch("/api/v1/loyalty/programs/BB/tiers/GOLD",
                     json={"benefits": {"member_discount_percent": "12.5", "free_items": [
                         {"sku": "COOKIE", "quantity": 2}]}})
    assert r.status_code == 200, r.text
    assert r.json()["benefits"] == {"member_discount_percent": "12.5",
                                    "free_items": [{"sku": "COOKIE", "quantity": 2}]}
    r = client.post("/api/v1/loyalty/programs/BB/tiers",
                    json={"code": "BLACK", "name": "黑卡", "rank": 5, "min_growth": 9000,
                          "benefits": {"discount": "9折"}})
    assert r.status_code == 422
    q = client.post("/api/v1/checkout/quote", json={
        "store": "SH01", "lines": LINES, "member": {"member_code": member["member_code"]}})
    # 12.5% of each line, rounded half up: 700 + 187.5
    assert q.json()["amounts"]["tier_discount_fen"] == 888
