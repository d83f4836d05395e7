"""Alerts to owners (issue 6 §3), in the UI and through the message outbox: bulk exports,
many reveals in a short time, sign-ins from a new address or at unusual hours, repeated
failed sign-ins, API key misuse, a disabled user still trying."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import select

from patron.app import create_app
from patron.db import UnitOfWork, get_engine
from patron.messaging.tables import messages
from patron.security.tables import security_alerts
from tests.e2e.conftest import PASSWORD, login
from tests.factories import order

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings_env(monkeypatch, tmp_path, db_url):
    from patron.config import get_settings

    def apply(**values):
        for k, v in values.items():
            monkeypatch.setenv(f"PATRON_{k.upper()}", str(v))
        get_settings.cache_clear()

    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PATRON_ALERT_QUIET_HOURS", "off")  # whatever the hour of the run
    apply()
    yield apply
    get_settings.cache_clear()


def alerts(db_url):
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(select(security_alerts).order_by(
            security_alerts.c.id)).mappings()]


def kinds(db_url):
    return [a["kind"] for a in alerts(db_url)]


def test_bulk_export_alerts_the_owners_in_the_ui_and_the_outbox(client, users, pos_key,
                                                               settings_env, db_url):
    settings_env(alert_export_rows=2, alert_recipients="boss@example.com, +8613800000000")
    for i in range(3):
        client.post("/api/v1/orders", json=order(f"BE-{i}", identifiers={
            "phone": f"1381234020{i}"}), headers={"Authorization": f"Bearer {pos_key}"})
    login(client, "analyst")
    assert client.get("/api/v1/exports/customers.csv").status_code == 200
    [alert] = alerts(db_url)
    assert alert["kind"] == "bulk_export" and alert["subject"] == "analyst"
    assert alert["details"]["rows"] == 3
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        sent = uow.c.execute(select(messages.c.channel, messages.c.to_address).where(
            messages.c.template == "security_alert").order_by(messages.c.id)).all()
    assert [(c, to) for c, to in sent] == [("email", "boss@example.com"),
                                          ("sms", "+8613800000000")]
    login(client, "owner")
    page = client.get("/admin/alerts")
    assert page.status_code == 200 and 'data-kind="bulk_export"' in page.text
    api = client.get("/api/v1/security/alerts").json()
    assert api["total"] == 1
    assert client.post(f"/api/v1/security/alerts/{api['items'][0]['id']}/acknowledge"
                       ).status_code == 204
    assert client.get("/api/v1/security/alerts",
                      params={"unacknowledged": "true"}).json()["total"] == 0
    login(client, "analyst")
    assert client.get("/admin/alerts").status_code == 403


def test_many_reveals_in_a_short_time_alert_once(client, users, pos_key, settings_env, db_url):
    settings_env(alert_reveals=3)
    r = client.post("/api/v1/orders", json=order("RV-1", identifiers={"phone": "13812340300"}),
                    headers={"Authorization": f"Bearer {pos_key}"})
    cid = r.json()["customer_id"]
    login(client, "owner")
    for i in range(6):
        assert client.post(f"/api/v1/customers/{cid}/reveal",
                           json={"field": "phone"}).status_code == 200
        assert kinds(db_url) == ([] if i < 2 else ["many_reveals"])
    assert alerts(db_url)[0]["details"]["reveals"] == 3


def test_sign_ins_from_a_new_address_and_at_quiet_hours(db_url, users, settings_env):
    app = create_app()
    with TestClient(app, client=("10.0.0.1", 1000)) as a:
        login(a, "manager")
        login(a, "manager")
    assert kinds(db_url) == []  # the first address is not new, the second sign-in is known
    with TestClient(app, client=("10.9.9.9", 1000)) as b:
        login(b, "manager")
    assert kinds(db_url) == ["new_address"]
    assert alerts(db_url)[0]["details"]["ip"] == "10.9.9.9"
    settings_env(alert_quiet_hours="1-5")
    two_am = dt.datetime(2026, 11, 20, 18, 0, tzinfo=dt.UTC)  # 02:00 in Shanghai
    with time_machine.travel(two_am, tick=False), TestClient(app, client=("10.0.0.1", 1)) as c:
        login(c, "analyst")
    assert kinds(db_url)[-1] == "quiet_hours"


def test_repeated_failed_sign_ins_and_a_disabled_user(client, users, settings_env, db_url,
                                                       monkeypatch):
    from patron.security import service

    monkeypatch.setattr(service.time, "sleep", lambda s: None)
    for _ in range(8):
        client.post("/api/v1/auth/login", json={"username": "analyst", "password": "nope-nope"})
    assert kinds(db_url) == ["failed_logins"]
    for _ in range(3):  # still locked: one alert per window, not one per attempt
        client.post("/api/v1/auth/login", json={"username": "analyst", "password": "nope"})
    assert kinds(db_url) == ["failed_logins"]
    login(client, "owner")
    assert client.patch(f"/api/v1/users/{users['cashier']}",
                        json={"active": False}).status_code == 204
    client.cookies.clear()
    r = client.post("/api/v1/auth/login", json={"username": "cashier", "password": PASSWORD})
    assert r.status_code == 401
    assert kinds(db_url)[-1] == "disabled_user"


def test_api_key_misuse_refused_scope_and_revoked_key(client, users, pos_key, settings_env,
                                                      db_url):
    h = {"Authorization": f"Bearer {pos_key}"}
    assert client.get("/api/v1/audit", headers=h).status_code == 403
    assert kinds(db_url) == ["api_key_misuse"]
    assert alerts(db_url)[0]["details"]["permission"] == "audit.read"
    r = client.post("/api/v1/orders", json=order("MS-1", store="BJ01"), headers=h)
    assert r.status_code == 422
    login(client, "owner")
    key_id = client.get("/api/v1/audit", params={"action": "api_key.created"}
                        ).json()["items"][0]["entity_id"]
    assert client.delete(f"/api/v1/api-keys/{key_id}").status_code == 204
    client.cookies.clear()
    assert client.get("/api/v1/stores", headers=h).status_code == 401
    details = [a["details"] for a in alerts(db_url) if a["kind"] == "api_key_misuse"]
    reasons = {d.get("reason") for d in details}
    # One per window and key for the refusals, one for the revoked key.
    assert "revoked_key_used" in reasons and "forbidden" in reasons
