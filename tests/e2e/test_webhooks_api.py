"""Webhook endpoints and deliveries over HTTP, as an owner would use them."""

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.security.tables import audit_log
from patron.webhooks import delivery
from tests.e2e.conftest import login
from tests.factories import order

HOOK = {"url": "http://127.0.0.1:9/hooks", "events": ["order.recorded", "customer.created"],
        "description": "CRM sync"}


@pytest.fixture(autouse=True)
def private_targets_allowed(monkeypatch):
    """The receivers here listen on 127.0.0.1, which Patron refuses by default."""
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_owner_registers_endpoint_and_sees_the_secret_only_once(owner):
    r = owner.post("/api/v1/webhooks", json=HOOK)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_")
    assert created["events"] == HOOK["events"] and created["active"] is True
    listed = owner.get("/api/v1/webhooks").json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert created["secret"].startswith(listed[0]["secret_hint"].rstrip("…"))
    assert listed[0]["deliveries"] == {"pending": 0, "sending": 0, "delivered": 0, "failed": 0}
    assert owner.get("/api/v1/webhook-events").json()[0] == "order.recorded"


def test_bad_url_and_unknown_event_are_422_naming_the_field(owner):
    r = owner.post("/api/v1/webhooks", json={**HOOK, "url": "ftp://example.com/x"},
                   headers={"Accept-Language": "en"})
    assert r.status_code == 422
    assert [(f["field"], f["reason"]) for f in r.json()["error"]["fields"]] == [
        ("url", "webhook_url_scheme")]
    assert r.json()["error"]["fields"][0]["message"] == "Must be an http:// or https:// URL."

    r = owner.post("/api/v1/webhooks", json={**HOOK, "events": ["order.recorded", "order.gone"]})
    assert r.status_code == 422
    [field] = r.json()["error"]["fields"]
    assert field["field"] == "events" and "order.gone" in field["message"]  # zh by default

    r = owner.post("/api/v1/webhooks", json={"events": ["order.recorded"]})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "url"

    r = owner.post("/api/v1/webhooks", json={**HOOK, "events": "order.recorded"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "events"
    assert owner.get("/api/v1/webhooks").json() == []


def test_update_disable_and_rotate_are_audited(owner):
    hook = owner.post("/api/v1/webhooks", json=HOOK).json()
    base = f"/api/v1/webhooks/{hook['id']}"
    r = owner.patch(base, json={"events": ["*"], "url": "https://hooks.example.cn/p"})
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["*"] and r.json()["url"] == "https://hooks.example.cn/p"
    assert owner.patch(base, json={"description": ""}).json()["description"] is None
    r = owner.patch(base, json={"url": "hooks.example.cn"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "url"

    r = owner.post(f"{base}/rotate-secret")
    assert r.status_code == 200
    assert r.json()["secret"] != hook["secret"]

    assert owner.delete(base).status_code == 204
    assert owner.get(base).json()["active"] is False
    assert owner.patch(base, json={"active": True}).json()["active"] is True

    audit = owner.get("/api/v1/audit").json()
    actions = [e["action"] for e in (audit["items"] if isinstance(audit, dict) else audit)]
    for action in ("webhook.created", "webhook.updated", "webhook.secret_rotated",
                   "webhook.disabled"):
        assert action in actions
    with UnitOfWork(get_engine()) as uow:
        details = " ".join(str(d) for d in uow.c.execute(select(audit_log.c.details)).scalars())
    assert hook["secret"] not in details and r.json()["secret"] not in details


def test_deliveries_are_listed_with_their_status_and_can_be_redelivered(owner, pos_key):
    hook = owner.post("/api/v1/webhooks", json=HOOK).json()  # port 9: nobody listens
    r = owner.post("/api/v1/orders", json=order("WH-1", identifiers={"phone": "13800138000"}),
                   headers={"Authorization": f"Bearer {pos_key}"})
    assert r.status_code == 201, r.text
    stats = delivery.deliver_due(engine=get_engine())
    assert stats.retrying == 2

    r = owner.get(f"/api/v1/webhooks/{hook['id']}/deliveries")
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == 2
    assert {d["event"] for d in page["items"]} == {"order.recorded", "customer.created"}
    item = page["items"][0]
    assert item["status"] == "pending" and item["attempts"] == 1
    assert item["last_error"] and item["next_attempt_at"] > item["last_attempt_at"]
    assert owner.get(f"/api/v1/webhooks/{hook['id']}/deliveries",
                     params={"status": "delivered"}).json()["total"] == 0
    r = owner.get(f"/api/v1/webhooks/{hook['id']}/deliveries", params={"status": "lost"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "query.status"
    assert owner.get(f"/api/v1/webhooks/{hook['id']}").json()["deliveries"]["pending"] == 2
    assert owner.get("/api/v1/webhook-deliveries", params={"status": "pending"}).json()[
        "total"] == 2

    r = owner.post(f"/api/v1/webhook-deliveries/{item['id']}/redeliver")
    assert r.status_code == 202
    assert r.json()["redelivery_of"] == item["id"]
    page = owner.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()
    assert page["total"] == 3 and page["items"][0]["redelivery_of"] == item["id"]


def test_unknown_ids_are_404(owner):
    assert owner.get("/api/v1/webhooks/999").status_code == 404
    assert owner.patch("/api/v1/webhooks/999", json={"active": False}).status_code == 404
    assert owner.delete("/api/v1/webhooks/999").status_code == 404
    assert owner.post("/api/v1/webhooks/999/rotate-secret").status_code == 404
    assert owner.get("/api/v1/webhooks/999/deliveries").status_code == 404
    r = owner.post("/api/v1/webhook-deliveries/999/redeliver", headers={"Accept-Language": "en"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "Webhook delivery 999 not found."


def test_only_owners_manage_webhooks(client, users):
    for role in ("analyst", "manager", "cashier"):
        login(client, role)
        assert client.get("/api/v1/webhooks").status_code == 403
        assert client.post("/api/v1/webhooks", json=HOOK).status_code == 403
        client.post("/api/v1/auth/logout")


def test_an_internal_address_is_a_422_in_the_callers_language(owner, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS", "0")
    get_settings.cache_clear()
    r = owner.post("/api/v1/webhooks", headers={"Accept-Language": "en"},
                   json={**HOOK, "url": "http://169.254.169.254/latest/meta-data"})
    assert r.status_code == 422
    [field] = r.json()["error"]["fields"]
    assert (field["field"], field["reason"]) == ("url", "webhook_url_internal")
    assert field["message"].startswith("Points to 169.254.169.254, an address inside")
    assert owner.get("/api/v1/webhooks").json() == []
