"""Coupons over HTTP: the role table, a till's day (look up the member's coupons, evaluate,
redeem, retry, hold and commit), store scope, and errors with field and reason in Chinese or
English."""

from __future__ import annotations

import pytest

from tests.coupon_factories import basket
from tests.e2e.conftest import login
from tests.loyalty_factories import TIERS

PROGRAM = {"code": "BB", "brand": "B1", "name": "Bean Club", "privacy_version": "2026-01",
           "pending_days": 0, "tiers": TIERS}
ENROL = {"phone": "13812345678", "store": "SH01", "source": "pos",
         "privacy": {"version": "2026-01"}}
TEMPLATE = {"program": "BB", "code": "TEN", "name": "10 off",
            "terms": {"kind": "amount", "amount_off": "10", "valid_days": 30,
                      "with_coupons": True},
            "total_limit": 100}


@pytest.fixture
def setup(client, users):
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    member = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL).json()
    r = client.post("/api/v1/coupons/templates", json=TEMPLATE)
    assert r.status_code == 201, r.text
    return {"member": member["id"], "template": r.json()["id"]}


def _issue(client, setup, key="i-1", quantity=2, store="SH01"):
    r = client.post(f"/api/v1/coupons/templates/{setup['template']}/issue",
                    json={"idempotency_key": key, "member_ids": [setup["member"]],
                          "quantity": quantity, "store": store})
    return r


def test_a_tills_day_look_up_evaluate_redeem_and_retry(client, setup):
    login(client, "manager")
    issued = _issue(client, setup)
    assert issued.status_code == 201, issued.text
    assert _issue(client, setup).status_code == 200  # the same key replays
    login(client, "cashier")
    items = client.get(f"/api/v1/coupons/members/{setup['member']}").json()["items"]
    assert len(items) == 2 and all(i["usable"] for i in items)
    code = items[0]["display_code"]  # as printed: grouped with dashes
    found = client.get(f"/api/v1/coupons/codes/{code.lower()}")
    assert found.status_code == 200 and found.json()["id"] == items[0]["id"]
    quote = client.post("/api/v1/coupons/evaluate", json={
        "member_id": setup["member"], "codes": [code], "basket": basket(),
        "tier_discount_percent": "5"})
    assert quote.status_code == 200, quote.text
    body = quote.json()
    # 71.00 - 5% (2.80 + 0.75) = 67.45, then 10.00 off
    assert body["tier_discount"] == "3.55" and body["coupon_discount"] == "10.00"
    assert body["to_pay"] == "57.45" and body["refused"] == []
    spend = {"idempotency_key": "till1-0001", "member_id": setup["member"], "codes": [code],
             "basket": basket()}
    first = client.post("/api/v1/coupons/redeem", json=spend)
    assert first.status_code == 201, first.text
    assert first.json()["discount"] == "10.00"
    retry = client.post("/api/v1/coupons/redeem", json=spend)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    other = client.post("/api/v1/coupons/redeem?lang=en",
                        json={**spend, "idempotency_key": "till2-0001"})
    assert other.status_code == 409
    err = other.json()["error"]
    assert err["code"] == "coupon_refused"
    assert err["fields"] == [{"field": "codes.0", "reason": "coupon_used",
                              "message": "This coupon has already been used."}]
    zh = client.post("/api/v1/coupons/redeem?lang=zh",
                     json={**spend, "idempotency_key": "till2-0001"})
    assert zh.json()["error"]["fields"][0]["message"] == "该优惠券已被使用。"
    reused = client.post("/api/v1/coupons/redeem", json={**spend, "codes": [items[1]["code"]]})
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


def test_hold_commit_and_release_over_http(client, setup):
    login(client, "owner")
    codes = [c["code"] for c in _issue(client, setup).json()["coupons"]]
    login(client, "cashier")
    body = {"idempotency_key": "h-1", "member_id": setup["member"], "codes": [codes[0]],
            "basket": basket(), "minutes": 5}
    h = client.post("/api/v1/coupons/holds", json=body)
    assert h.status_code == 201 and h.json()["status"] == "held"
    clash = client.post("/api/v1/coupons/holds", json={**body, "idempotency_key": "h-2"})
    assert clash.status_code == 409
    assert clash.json()["error"]["fields"][0]["reason"] == "coupon_held"
    done = client.post(f"/api/v1/coupons/holds/{h.json()['id']}/commit")
    assert done.status_code == 200 and done.json()["status"] == "committed"
    assert client.post(f"/api/v1/coupons/holds/{h.json()['id']}/release").status_code == 409
    h3 = client.post("/api/v1/coupons/holds", json={**body, "idempotency_key": "h-3",
                                                     "codes": [codes[1]]})
    back = client.post(f"/api/v1/coupons/holds/{h3.json()['id']}/release")
    assert back.status_code == 200 and back.json()["status"] == "released"
    seen = client.get(f"/api/v1/coupons/operations/{h3.json()['id']}")
    assert seen.json()["coupons"][0]["status"] == "released"


def test_store_staff_act_only_at_their_stores(client, setup):
    login(client, "manager")
    r = _issue(client, setup, store="BJ01")
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "store"
    assert _issue(client, setup, store=None).json()["error"]["fields"][0]["reason"] \
        == "store_required_in_scope"
    login(client, "owner")
    codes = [c["code"] for c in _issue(client, setup, store="BJ01").json()["coupons"]]
    login(client, "cashier")
    r = client.post("/api/v1/coupons/redeem", json={
        "idempotency_key": "x", "member_id": setup["member"], "codes": codes[:1],
        "basket": basket(store="BJ01")})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "basket.store"
    login(client, "manager")
    report = client.get("/api/v1/coupons/liability").json()
    assert report["total"]["count"] == 0  # issued at BJ01: not this manager's liability
    login(client, "analyst")
    assert client.get("/api/v1/coupons/liability").json()["total"]["count"] == 2


def test_bad_templates_are_refused_with_field_and_reason(client, setup):
    login(client, "owner")
    r = client.post("/api/v1/coupons/templates?lang=en", json={
        **TEMPLATE, "code": "BAD", "terms": {"kind": "threshold", "threshold": "100",
                                             "reduction": "100", "valid_days": 3}})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["message"] \
        == "The reduction must be below the threshold."
    r = client.post("/api/v1/coupons/templates", json={**TEMPLATE, "terms": {
        "kind": "amount", "amount_off": "-1", "valid_days": 3}})
    assert r.status_code == 422
    r = client.post("/api/v1/coupons/templates", json=TEMPLATE)
    assert r.status_code == 409
    r = client.patch(f"/api/v1/coupons/templates/{setup['template']}",
                     json={"terms": {"kind": "percent", "percent_off": "10", "valid_days": 3}})
    assert r.status_code == 422
    assert client.get("/api/v1/coupons/codes/NOT-A-CODE").status_code == 422
    assert client.get("/api/v1/coupons/templates/999999").status_code == 404


# (method, path, body, {role: expected status})
TABLE = [
    ("GET", "/api/v1/coupons/templates", None,
     {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
    ("POST", "/api/v1/coupons/templates", {**TEMPLATE, "code": "R{n}"},
     {"owner": 201, "analyst": 403, "manager": 403, "cashier": 403}),
    ("PATCH", "/api/v1/coupons/templates/{template}", {"name": "renamed"},
     {"owner": 200, "analyst": 403, "manager": 403, "cashier": 403}),
    ("POST", "/api/v1/coupons/templates/{template}/issue",
     {"idempotency_key": "rt-{n}", "member_ids": ["{member}"], "store": "SH01"},
     {"owner": 201, "analyst": 403, "manager": 201, "cashier": 403}),
    ("GET", "/api/v1/coupons/members/{member}", None,
     {"owner": 200, "analyst": 403, "manager": 200, "cashier": 200}),
    ("POST", "/api/v1/coupons/evaluate", {"member_id": "{member}", "codes": [],
                                          "basket": basket()},
     {"owner": 200, "analyst": 403, "manager": 200, "cashier": 200}),
    ("POST", "/api/v1/coupons/999999/revoke", {"reason": "mistake"},
     {"owner": 404, "analyst": 403, "manager": 403, "cashier": 403}),
    ("GET", "/api/v1/coupons/liability", None,
     {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
]


def _fill(value, subs):
    if isinstance(value, str):
        if value == "{member}":
            return subs["member"]
        return value.format(**subs)
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", ["owner", "analyst", "manager", "cashier"])
def test_role_table(client, setup, role):
    login(client, role)
    for n, (method, path, body, expected) in enumerate(TABLE):
        subs = {**setup, "n": f"{role}{n}"}
        r = client.request(method, _fill(path, subs), json=_fill(body, subs))
        assert r.status_code == expected[role], (method, path, role, r.text[:300])
