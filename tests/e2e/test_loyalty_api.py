"""Loyalty over HTTP: the role table, a till's day (enrol, look up, earn, redeem, hold), store
scope, audit, and bad input answered with field and reason in Chinese or English."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.e2e.conftest import login
from tests.factories import order
from tests.loyalty_factories import TIERS

PROGRAM = {"code": "BB", "brand": "B1", "name": "Bean Club", "privacy_version": "2026-01",
           "pending_days": 0, "tiers": TIERS}
ENROL = {"phone": "13812345678", "store": "SH01", "source": "pos",
         "privacy": {"version": "2026-01"}, "marketing": {"sms": True}}


def just_now() -> dt.datetime:
    """A purchase right after enrolment (members earn from their enrolment on)."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def program(client, users):
    login(client, "owner")
    r = client.post("/api/v1/loyalty/programs", json=PROGRAM)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def member(client, program, db_url):
    r = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL)
    assert r.status_code == 201, r.text
    with UnitOfWork(get_engine(db_url)) as uow:
        record_orders(uow=uow, orders_in=[order("O1", at=just_now(),
                                                identifiers={"phone": "13812345678"})],
                      source="api", actor=SYSTEM)
    return r.json()


def test_a_tills_day_enrol_look_up_earn_and_redeem(client, member):
    login(client, "cashier")
    again = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL)
    assert again.status_code == 200 and again.json()["id"] == member["id"]
    found = client.get("/api/v1/loyalty/programs/BB/lookup",
                       params={"member_code": member["member_code"]})
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["phone"] == "138****5678" and body["tier"]["code"] == "SILVER"
    assert body["balance"]["spendable"] == 71 and body["balance"]["expiring"][0]["points"] == 71
    by_phone = client.get("/api/v1/loyalty/programs/BB/lookup", params={"phone": "13812345678"})
    assert by_phone.json()["id"] == member["id"]
    spend = {"idempotency_key": "till1-0001", "points": 50, "store": "SH01"}
    first = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem", json=spend)
    assert first.status_code == 201, first.text
    assert first.json()["value"] == "0.50" and first.json()["balance"]["available"] == 21
    retry = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem", json=spend)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    other = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem",
                        json={**spend, "points": 10})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    broke = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem?lang=en",
                        json={**spend, "idempotency_key": "till1-0002", "points": 22})
    assert broke.status_code == 409
    assert broke.json()["error"]["message"] == "Not enough points: 22 wanted, 21 available."
    balance = client.get(f"/api/v1/loyalty/members/{member['id']}/balance").json()
    assert balance["available"] == 21 and balance["lots"][0]["remaining"] == 21


def test_hold_commit_and_release_over_http(client, member):
    login(client, "cashier")
    base = f"/api/v1/loyalty/members/{member['id']}/holds"
    h = client.post(base, json={"idempotency_key": "h1", "points": 30, "store": "SH01"})
    assert h.status_code == 201 and h.json()["status"] == "held"
    assert client.post(f"/api/v1/loyalty/holds/{h.json()['id']}/commit").json()[
        "status"] == "committed"
    h2 = client.post(base, json={"idempotency_key": "h2", "points": 30, "store": "SH01"})
    r = client.post(f"/api/v1/loyalty/holds/{h2.json()['id']}/release")
    assert r.json()["status"] == "released" and r.json()["balance"]["available"] == 41
    assert client.post(f"/api/v1/loyalty/holds/{h2.json()['id']}/commit").status_code == 409
    assert client.post("/api/v1/loyalty/holds/999999/commit").status_code == 404


def test_the_role_table(client, member, users):
    mid = member["id"]
    rows = [
        ("POST", "/api/v1/loyalty/programs", {**PROGRAM, "code": "X"},
         {"owner": 409, "analyst": 403, "manager": 403, "cashier": 403}),
        ("PATCH", "/api/v1/loyalty/programs/BB", {"reminder_days": 14},
         {"owner": 200, "analyst": 403, "manager": 403, "cashier": 403}),
        ("POST", "/api/v1/loyalty/programs/BB/rules", {"rules": {"points_per_yuan": "2"},
                                                       "effective_from": "2099-01-01T00:00:00Z"},
         {"owner": 201, "analyst": 403, "manager": 403, "cashier": 403}),
        ("GET", "/api/v1/loyalty/programs/BB/rules", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
        ("GET", "/api/v1/loyalty/programs/BB", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 200}),
        ("GET", f"/api/v1/loyalty/members/{mid}/ledger", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
        ("GET", f"/api/v1/loyalty/members/{mid}/balance", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 200}),
        ("GET", f"/api/v1/loyalty/members/{mid}/tiers", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
        ("POST", f"/api/v1/loyalty/members/{mid}/redeem", {"points": 1, "store": "SH01"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
        ("POST", f"/api/v1/loyalty/members/{mid}/adjustments",
         {"points": 1, "reason": "goodwill"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 403}),
        ("POST", f"/api/v1/loyalty/members/{mid}/tier",
         {"tier": "PLATINUM", "until": "2099-01-01T00:00:00Z", "reason": "guest of honour"},
         {"owner": 200, "analyst": 403, "manager": 403, "cashier": 403}),
        ("POST", "/api/v1/loyalty/programs/BB/members", {**ENROL, "phone": "13900000000"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
    ]
    for n, role in enumerate(("owner", "analyst", "manager", "cashier")):
        login(client, role)
        for i, (method, path, body, expected) in enumerate(rows):
            if body is not None and "points" in body:
                body = {**body, "idempotency_key": f"{role}-{i}"}
            if body is not None and body.get("phone") == "13900000000":
                body = {**body, "phone": f"1390000{i:02d}{n:02d}"}
            r = client.request(method, path, json=body)
            assert r.status_code == expected[role], (role, method, path, r.text[:300])


def test_a_manager_of_another_store_sees_no_member_of_this_one(client, member, db_url):
    from patron.security import service as security

    with UnitOfWork(get_engine(db_url)) as uow:
        from patron.org.tables import stores

        bj = uow.c.execute(select(stores.c.id).where(stores.c.code == "BJ01")).scalar_one()
        security.create_user(uow=uow, actor=SYSTEM, username="bjmgr",
                             password="correct-horse-9", role="manager", store_ids=[bj])
    login(client, "bjmgr")
    r = client.get(f"/api/v1/loyalty/members/{member['id']}/ledger")
    assert r.status_code == 404 and r.json()["error"]["code"] == "member_not_found"
    assert client.get("/api/v1/loyalty/programs/BB/members").json()["total"] == 0
    # Redeeming for a store of someone else is refused; the member may still be served at BJ01.
    r = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem",
                    json={"idempotency_key": "bj-1", "points": 5, "store": "SH01"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0] == {**r.json()["error"]["fields"][0],
                                              "field": "store", "reason": "store_out_of_scope"}
    r = client.post(f"/api/v1/loyalty/members/{member['id']}/redeem",
                    json={"idempotency_key": "bj-2", "points": 5, "store": "BJ01"})
    assert r.status_code == 201


def test_adjustments_are_audited_with_their_reason(client, member):
    r = client.post(f"/api/v1/loyalty/members/{member['id']}/adjustments",
                    json={"idempotency_key": "adj-1", "points": -20,
                          "reason": "double-scanned receipt"})
    assert r.status_code == 201, r.text
    entries = client.get("/api/v1/audit", params={"action": "loyalty.adjust"}).json()["items"]
    assert entries[0]["details"]["reason"] == "double-scanned receipt"
    ledger = client.get(f"/api/v1/loyalty/members/{member['id']}/ledger").json()
    assert ledger["items"][0]["kind"] == "adjust" and ledger["items"][0]["points"] == -20
    assert ledger["items"][0]["reason"] == "double-scanned receipt"


def test_bad_input_names_the_field_and_the_reason_in_the_callers_language(client, program):
    r = client.post("/api/v1/loyalty/programs", json={**PROGRAM, "code": "Y", "brand": "NOPE"},
                    headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert (f["field"], f["reason"], f["message"]) == ("brand", "unknown_brand",
                                                       "未知品牌“NOPE”。")
    r = client.post("/api/v1/loyalty/programs?lang=en",
                    json={**PROGRAM, "code": "Y", "expiry_months": 0})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "expiry_months"
    assert r.json()["error"]["fields"][0]["message"] == "Must be at least 1."
    r = client.post("/api/v1/loyalty/programs/BB/rules?lang=en", json={"rules": {
        "multipliers": {"dates": [{"from": "2026-12-01", "to": "2026-11-01", "factor": "2"}]}}})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "date_range_reversed"
    r = client.post("/api/v1/loyalty/programs/BB/members?lang=en",
                    json={**ENROL, "privacy": {"version": "2019"}})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["message"] == (
        "Consent must be to the current privacy policy (version 2026-01).")
    r = client.post("/api/v1/loyalty/programs/BB/members", json={**ENROL, "phone": "123"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "phone"
    assert client.get("/api/v1/loyalty/members/424242/balance").status_code == 404
    assert client.get("/api/v1/loyalty/programs/NOPE").status_code == 404


def test_the_clawback_policy_deduct_from_refund_is_chosen_per_program_and_validated(
        client, program):
    r = client.patch("/api/v1/loyalty/programs/BB?lang=en",
                     json={"clawback_policy": "deduct_from_money"})
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert f["field"] == "clawback_policy"
    assert "deduct_from_refund" in f["message"], f
    assert client.get("/api/v1/loyalty/programs/BB").json()["clawback_policy"] == "owe"
    r = client.patch("/api/v1/loyalty/programs/BB", json={"clawback_policy": "deduct_from_refund"})
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/loyalty/programs/BB").json()["clawback_policy"] == (
        "deduct_from_refund")
    entries = client.get("/api/v1/audit",
                         params={"action": "loyalty.program_updated"}).json()["items"]
    assert entries[0]["details"]["changes"]["clawback_policy"] == "deduct_from_refund"


def test_consent_withdrawn_over_http_is_kept_in_history(client, member):
    login(client, "cashier")
    r = client.post(f"/api/v1/loyalty/members/{member['id']}/consents",
                    json={"kind": "sms", "granted": False, "source": "pos", "store": "SH01"})
    assert r.status_code == 201 and r.json()["sms"]["granted"] is False
    login(client, "analyst")
    history = client.get(f"/api/v1/loyalty/members/{member['id']}/consents").json()["items"]
    assert [h["granted"] for h in history if h["kind"] == "sms"] == [True, False]
    assert history[-1]["store"] == "SH01"


def test_members_list_and_detail(client, member):
    login(client, "analyst")
    listed = client.get("/api/v1/loyalty/programs/BB/members").json()
    assert listed["total"] == 1 and listed["items"][0]["points_available"] == 71
    detail = client.get(f"/api/v1/loyalty/members/{member['id']}").json()
    assert detail["qualification"]["next_tier"]["code"] == "GOLD"
    assert detail["growth_value"] == 71


def test_hostile_input_to_every_loyalty_endpoint_is_a_4xx_never_a_500(client, member):
    from patron.app import create_app

    routes = [(m.upper(), p) for p, ops in create_app().openapi()["paths"].items()
              if p.startswith("/api/v1/loyalty/") for m in ops]
    assert len(routes) >= 20
    bodies = [None, {}, [], "x", {"points": "lots", "idempotency_key": "k" * 65},
              {"points": 10**30, "idempotency_key": "ok", "store": "SH01"},
              {"rules": {"multipliers": {"category": {"coffee": "NaN"}}}},
              {"effective_from": "2026-13-01", "rules": {}},
              {"phone": "🙂" * 40, "privacy": {"version": None}},
              {"tier": "GOLD", "until": "2099-01-01T00:00:00", "reason": "naive time"}]
    ids = [str(member["id"]), "0", "-1", "99999999999999999999", "abc"]
    for method, path in routes:
        for ident in ids:
            concrete = path.replace("{member_id}", ident).replace("{hold_id}", ident) \
                .replace("{code}", "BB").replace("{tier}", "GOLD")
            for body in bodies if method in ("POST", "PATCH") else [None]:
                r = client.request(method, concrete, json=body)
                assert r.status_code < 500, (method, concrete, body, r.text[:300])
