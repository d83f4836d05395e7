"""Stored value over HTTP: a till's day (top up, pay, pay in steps, refund to the card), the role
table, store scope, audit, reports, and bad input answered with field and reason in Chinese or
English."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.security.model import SYSTEM
from tests.e2e.conftest import login
from tests.loyalty_factories import TIERS

PROGRAM = {"code": "BB", "brand": "B1", "name": "Bean Club", "privacy_version": "2026-01",
           "pending_days": 0, "tiers": TIERS}
ENROL = {"phone": "13812345678", "store": "SH01", "source": "pos",
         "privacy": {"version": "2026-01"}}
BONUS = {"tiers": [{"min": "500", "bonus": "50"}, {"min": "1000", "bonus": "120"}]}


@pytest.fixture
def member(client, users):
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    r = client.put("/api/v1/stored-value/programs/BB", json={"spend_order": "bonus_first"})
    assert r.status_code == 200, r.text
    assert client.post("/api/v1/stored-value/programs/BB/bonus-rules",
                       json=BONUS).status_code == 201
    r = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL)
    assert r.status_code == 201, r.text
    return r.json()


def base(member: dict) -> str:
    return f"/api/v1/stored-value/members/{member['id']}"


def test_a_tills_day_top_up_pay_pay_in_steps_and_refund(client, member):
    login(client, "cashier")
    top = {"idempotency_key": "till1-0001", "amount": "500", "store": "SH01"}
    first = client.post(base(member) + "/top-ups", json=top)
    assert first.status_code == 201, first.text
    assert (first.json()["principal"], first.json()["bonus"]) == ("500.00", "50.00")
    retry = client.post(base(member) + "/top-ups", json=top)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    other = client.post(base(member) + "/top-ups", json={**top, "amount": "600"})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    pay = client.post(base(member) + "/spends",
                      json={"idempotency_key": "till1-0002", "amount": "80", "store": "SH01"})
    assert pay.status_code == 201
    assert (pay.json()["principal"], pay.json()["bonus"]) == ("30.00", "50.00")  # bonus first
    held = client.post(base(member) + "/holds",
                       json={"idempotency_key": "till1-0003", "amount": "100", "store": "SH01"})
    assert held.status_code == 201 and held.json()["status"] == "held"
    bal = client.get(base(member)).json()
    assert (bal["principal"], bal["principal_held"], bal["spendable"]) == (
        "370.00", "100.00", "370.00")
    done = client.post(f"/api/v1/stored-value/holds/{held.json()['id']}/commit")
    assert done.status_code == 200 and done.json()["status"] == "committed"
    back = client.post(f"/api/v1/stored-value/spends/{pay.json()['id']}/refunds",
                       json={"idempotency_key": "till1-0004", "amount": "40", "store": "SH01"})
    assert back.status_code == 201, back.text
    assert (back.json()["principal"], back.json()["bonus"]) == ("15.00", "25.00")
    too_much = client.post(f"/api/v1/stored-value/spends/{pay.json()['id']}/refunds?lang=en",
                           json={"idempotency_key": "till1-0005", "amount": "40.01",
                                 "store": "SH01"})
    assert too_much.status_code == 409
    assert too_much.json()["error"]["message"] == (
        "Only 40.00 of this payment can still be refunded; 40.01 asked.")
    broke = client.post(base(member) + "/spends?lang=en",
                        json={"idempotency_key": "till1-0006", "amount": "1000",
                              "store": "SH01"})
    assert broke.status_code == 409
    assert broke.json()["error"]["message"] == (
        "Not enough stored value: 1000.00 wanted, 410.00 available.")
    final = client.get(base(member)).json()
    assert (final["principal"], final["bonus"], final["spendable"]) == (
        "385.00", "25.00", "410.00")


def test_the_role_table(client, member, users):
    mid = member["id"]
    login(client, "owner")
    topped = client.post(base(member) + "/top-ups",
                         json={"idempotency_key": "seed", "amount": "1000", "store": "SH01"})
    spent = client.post(base(member) + "/spends",
                        json={"idempotency_key": "seed-s", "amount": "100", "store": "SH01"})
    tid, sid = topped.json()["id"], spent.json()["id"]
    rows = [
        ("PUT", "/api/v1/stored-value/programs/BB", {"spend_order": "bonus_first"},
         {"owner": 200, "analyst": 403, "manager": 403, "cashier": 403}),
        ("POST", "/api/v1/stored-value/programs/BB/bonus-rules",
         {**BONUS, "effective_from": "2099-01-01T00:00:00Z"},
         {"owner": 201, "analyst": 403, "manager": 403, "cashier": 403}),
        ("GET", "/api/v1/stored-value/programs/BB", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 200}),
        ("GET", f"/api/v1/stored-value/members/{mid}", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 200}),
        ("GET", f"/api/v1/stored-value/members/{mid}/operations", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
        ("GET", f"/api/v1/stored-value/members/{mid}/entries", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
        ("POST", f"/api/v1/stored-value/members/{mid}/top-ups",
         {"amount": "10", "store": "SH01"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
        ("POST", f"/api/v1/stored-value/members/{mid}/spends", {"amount": "1", "store": "SH01"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
        ("POST", f"/api/v1/stored-value/members/{mid}/holds", {"amount": "1", "store": "SH01"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
        ("POST", f"/api/v1/stored-value/spends/{sid}/refunds",
         {"amount": "1", "store": "SH01"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
        ("POST", f"/api/v1/stored-value/top-ups/{tid}/refunds",
         {"amount": "1", "reason": "moving away", "store": "SH01"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 403}),
        ("POST", f"/api/v1/stored-value/members/{mid}/adjustments",
         {"amount": "1", "bucket": "bonus", "reason": "goodwill"},
         {"owner": 201, "analyst": 403, "manager": 201, "cashier": 403}),
        ("GET", "/api/v1/stored-value/reports/liability", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
        ("GET", "/api/v1/stored-value/reports/settlement?from=2026-01-01&to=2026-12-31", None,
         {"owner": 200, "analyst": 200, "manager": 200, "cashier": 403}),
    ]
    for role in ("owner", "analyst", "manager", "cashier"):
        login(client, role)
        for i, (method, path, body, expected) in enumerate(rows):
            if body is not None and "amount" in body:
                body = {**body, "idempotency_key": f"{role}-{i}"}
            r = client.request(method, path, json=body)
            assert r.status_code == expected[role], (role, method, path, r.text[:300])


def test_a_manager_acts_only_for_its_stores(client, member, db_url):
    from patron.security import service as security

    login(client, "owner")
    client.post(base(member) + "/top-ups",
                json={"idempotency_key": "seed", "amount": "100", "store": "BJ01"})
    elsewhere = client.post(base(member) + "/spends",
                            json={"idempotency_key": "seed-s", "amount": "10", "store": "BJ01"})
    login(client, "manager")  # of SH01
    r = client.post(base(member) + "/top-ups",
                    json={"idempotency_key": "m-1", "amount": "10", "store": "BJ01"})
    assert r.status_code == 422
    assert (r.json()["error"]["fields"][0]["field"],
            r.json()["error"]["fields"][0]["reason"]) == ("store", "store_out_of_scope")
    r = client.post(base(member) + "/spends", json={"idempotency_key": "m-2", "amount": "10"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "store_required_in_scope"
    r = client.post(f"/api/v1/stored-value/spends/{elsewhere.json()['id']}/refunds",
                    json={"idempotency_key": "m-3", "amount": "10", "store": "SH01"})
    assert r.status_code == 404
    liability = client.get("/api/v1/stored-value/reports/liability").json()
    assert liability["stores"] == [] and liability["total"]["total"] == "0.00"
    with UnitOfWork(get_engine(db_url)) as uow:
        from patron.org.tables import stores

        bj = uow.c.execute(select(stores.c.id).where(stores.c.code == "BJ01")).scalar_one()
        security.create_user(uow=uow, actor=SYSTEM, username="bjmgr",
                             password="correct-horse-9", role="manager", store_ids=[bj])
    login(client, "bjmgr")
    # The member registered at SH01: its ledger is not BJ01's to read, its card may be served.
    assert client.get(base(member) + "/operations").status_code == 404
    assert client.get(base(member)).status_code == 200
    liability = client.get("/api/v1/stored-value/reports/liability").json()
    assert [r["store"] for r in liability["stores"]] == ["BJ01"]


def test_writes_are_audited_and_the_ledger_shows_where_money_came_from(client, member):
    client.post(base(member) + "/top-ups",
                json={"idempotency_key": "t1", "amount": "100", "store": "BJ01"})
    client.post(base(member) + "/spends",
                json={"idempotency_key": "s1", "amount": "30", "store": "SH01"})
    r = client.post(base(member) + "/adjustments",
                    json={"idempotency_key": "a1", "amount": "5", "bucket": "bonus",
                          "reason": "coffee spilled"})
    assert r.status_code == 201, r.text
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["items"]]
    for action in ("stored_value.topup", "stored_value.spend", "stored_value.adjust",
                   "stored_value.configured", "stored_value.bonus_rules_versioned"):
        assert action in actions
    entries = client.get(base(member) + "/entries").json()
    spend = next(e for e in entries["items"] if e["kind"] == "spend")
    assert (spend["topped_up_at"], spend["store"], spend["amount"]) == ("BJ01", "SH01",
                                                                         "-30.00")
    ops = client.get(base(member) + "/operations").json()
    assert [o["kind"] for o in ops["items"]] == ["adjust", "spend", "topup"]
    settle = client.get("/api/v1/stored-value/reports/settlement",
                        params={"from": "2020-01-01", "to": "2099-12-31"}).json()
    assert settle["owed"] == [{"from": "BJ01", "to": "SH01", "amount": "30.00"}]


def test_bad_input_names_the_field_and_the_reason_in_the_callers_language(client, member):
    r = client.post(base(member) + "/top-ups?lang=en",
                    json={"idempotency_key": "x", "amount": "1.001", "store": "SH01"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "amount"
    r = client.post(base(member) + "/top-ups", json={"idempotency_key": "x", "amount": "10"},
                    headers={"Accept-Language": "zh-CN"})
    assert r.status_code == 422
    f = r.json()["error"]["fields"][0]
    assert (f["field"], f["reason"], f["message"]) == ("store", "store_or_channel_required",
                                                       "请指定收款门店（或渠道）。")
    r = client.post(base(member) + "/spends",
                    json={"idempotency_key": "y", "amount": "-5", "store": "SH01"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "amount"
    r = client.post(base(member) + "/top-ups",
                    json={"idempotency_key": "z", "amount": "10", "store": "NOPE"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["reason"] == "unknown_store"
    r = client.post("/api/v1/stored-value/programs/BB/bonus-rules?lang=en", json={
        "tiers": BONUS["tiers"], "effective_from": "2020-01-01T00:00:00Z"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "bonus_rules_in_past"
    assert client.get("/api/v1/stored-value/members/424242").status_code == 404
    assert client.post("/api/v1/stored-value/holds/424242/commit").status_code == 404
    r = client.get("/api/v1/stored-value/reports/settlement",
                   params={"from": "2026-02-01", "to": "2026-01-01"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "to"
