"""Campaigns through the API: create, preview, launch, the approval by a second owner, refusals
with clear 4xx messages, the role table, hostile input, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from patron.db import UnitOfWork, get_engine
from patron.messaging import service as messaging
from patron.security.model import SYSTEM
from tests.coupon_factories import make_template
from tests.e2e.conftest import PASSWORD, login
from tests.loyalty_factories import enrol, make_program

PATRON = Path(sys.executable).parent / "patron"


@pytest.fixture
def club(db_url, users):
    engine = get_engine(db_url)
    with UnitOfWork(engine) as uow:
        make_program(uow)
    with UnitOfWork(engine) as uow:
        for n in range(1, 4):
            enrol(uow, f"1380000000{n}", marketing={"sms": True}, name=f"会员{n}")
    with UnitOfWork(engine) as uow:
        coupon = make_template(uow)
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "spring", "variables": ["name", "coupon_code", "coupon_expires_on"],
            "body_zh": "{{ name }}：券码 {{ coupon_code }}，{{ coupon_expires_on }} 前有效。",
            "body_en": "{{ name }}: code {{ coupon_code }} until {{ coupon_expires_on }}."})
    return {"coupon": coupon}


def body(club, **extra):
    return {"code": "spring", "name": "春季回馈", "program": "BB", "channel": "sms",
            "template": "spring", "coupon_template_id": club["coupon"]["id"],
            "message_cost": "0.05", "budget_value": "100", **extra}


def test_an_owner_previews_and_launches_a_campaign_that_the_worker_sends(owner, club, db_url):
    r = owner.post("/api/v1/campaigns", json=body(club))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "draft"
    r = owner.post("/api/v1/campaigns/spring/preview")
    assert r.status_code == 200
    out = r.json()
    assert out["audience"] == 3 and out["estimated_cost"] == "30.15"
    assert out["sample"][0]["body"].startswith("会员") and "(coupon code)" in out["sample"][0][
        "body"]
    r = owner.post("/api/v1/campaigns/spring/launch")
    assert r.status_code == 200 and r.json()["status"] == "scheduled"
    assert owner.post("/api/v1/campaigns/spring/launch").status_code == 409
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}
    out = subprocess.run([str(PATRON), "campaigns", "run"], env=env,  # noqa: S603
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "sent 3" in out.stdout
    listed = subprocess.run([str(PATRON), "campaigns", "list"], env=env,  # noqa: S603
                            capture_output=True, text=True, timeout=120, check=False)
    assert "spring" in listed.stdout and "sent 3" in listed.stdout
    r = owner.get("/api/v1/campaigns/spring/recipients?state=sent")
    assert len(r.json()["items"]) == 3 and all(x["coupon_code"] for x in r.json()["items"])


def test_a_large_campaign_needs_a_second_owner(client, users, club, monkeypatch):
    from patron.config import get_settings
    from patron.security import service as security

    monkeypatch.setenv("PATRON_CAMPAIGN_APPROVAL_ABOVE", "2")
    get_settings.cache_clear()
    try:
        with UnitOfWork(get_engine()) as uow:
            security.create_user(uow=uow, actor=SYSTEM, username="owner2", password=PASSWORD,
                                 role="owner")
        login(client, "owner")
        assert client.post("/api/v1/campaigns", json=body(club)).status_code == 201
        r = client.post("/api/v1/campaigns/spring/launch")
        assert r.json()["status"] == "awaiting_approval"
        r = client.post("/api/v1/campaigns/spring/approve?lang=en")
        assert r.status_code == 403
        assert "someone other than" in r.json()["error"]["message"]
        client.cookies.clear()
        login(client, "owner2")
        r = client.post("/api/v1/campaigns/spring/approve")
        assert r.status_code == 200 and r.json()["approved_by"] == "owner2"
    finally:
        get_settings.cache_clear()


def test_bad_campaigns_are_refused_with_clear_messages(owner, club):
    messaging_body = {"code": "odd", "variables": ["name", "shoe_size"],
                      "body_zh": "{{ name }} {{ shoe_size }}"}
    assert owner.post("/api/v1/messages/templates", json=messaging_body).status_code == 201
    r = owner.post("/api/v1/campaigns?lang=en", json=body(club, template="odd"))
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert f["field"] == "template" and '"shoe_size"' in f["message"]
    r = owner.post("/api/v1/campaigns?lang=en", json=body(club, coupon_template_id=None))
    assert r.json()["error"]["fields"][0]["reason"] == "campaign_template_needs_coupon"
    assert owner.get("/api/v1/campaigns").json()["items"] == []


@pytest.mark.parametrize("role,expected", [("analyst", (200, 403, 403)),
                                           ("manager", (403, 403, 403)),
                                           ("cashier", (403, 403, 403))])
def test_role_table(client, users, club, role, expected):
    login(client, role)
    assert client.get("/api/v1/campaigns").status_code == expected[0]
    assert client.post("/api/v1/campaigns", json=body(club)).status_code == expected[1]
    assert client.post("/api/v1/campaigns/spring/approve").status_code in (expected[2], 404)


def test_hostile_input_to_every_campaigns_endpoint_is_a_4xx_never_a_500(owner, club):
    from patron.app import create_app

    assert owner.post("/api/v1/campaigns", json=body(club)).status_code == 201
    routes = [(m.upper(), p) for p, ops in create_app().openapi()["paths"].items()
              if p.startswith("/api/v1/campaigns") for m in ops]
    assert len(routes) >= 7
    bodies = [None, {}, [], "x", {"confirm_audience": -1}, body(club, code="x" * 80),
              body(club, budget_value="-1"), body(club, scheduled_at="2026-01-01T00:00"),
              body(club, variants=[{"code": "A", "share": "1", "template": "spring"}]),
              body(club, program="NOPE"), body(club, coupon_template_id=2**62)]
    for method, path in routes:
        for code in ("spring", "missing", "🙂" * 20):
            concrete = path.replace("{code}", code)
            for b in bodies if method == "POST" else [None]:
                r = owner.request(method, concrete, json=b)
                assert r.status_code < 500, (method, concrete, b, r.text[:300])


def test_a_draft_is_changed_with_put_and_a_launched_campaign_is_not(owner, club, users,
                                                                    client):
    from sqlalchemy import select

    from patron.security.tables import audit_log

    assert owner.post("/api/v1/campaigns", json=body(club)).status_code == 201
    changed = body(club, name="春季回馈（改）", channel="sms", control_share="0.2",
                   budget_value="80", scheduled_at="2026-12-01T10:00:00+08:00")
    r = owner.put("/api/v1/campaigns/spring", json=changed)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["name"], out["control_share"], out["budget_value"], out["status"]) == (
        "春季回馈（改）", "0.2", "80.00", "draft")
    assert out["scheduled_at"].startswith("2026-12-01T02:00:00")
    # the same definition again changes nothing and records nothing
    assert owner.put("/api/v1/campaigns/spring", json=changed).status_code == 200
    with UnitOfWork(get_engine(), readonly=True) as uow:
        entries = [r.details for r in uow.c.execute(
            select(audit_log.c.details).where(audit_log.c.action == "campaign.updated"))]
    assert entries == [{"code": "spring", "changed": ["budget_value", "control_share", "name",
                                                      "scheduled_at"]}]

    # refusals: another code in the body, a bad reference, the wrong role, an unknown campaign
    r = owner.put("/api/v1/campaigns/spring", json=body(club, code="autumn"))
    (f,) = r.json()["error"]["fields"]
    assert r.status_code == 422 and (f["field"], f["reason"]) == ("code", "campaign_code_fixed")
    r = owner.put("/api/v1/campaigns/spring", json=body(club, template="nope"))
    assert r.status_code == 422
    assert owner.get("/api/v1/campaigns/spring").json()["name"] == "春季回馈（改）"
    assert owner.put("/api/v1/campaigns/autumn", json=body(club, code="autumn")
                     ).status_code == 404
    # launched: what was counted and scheduled stays as it was
    assert owner.post("/api/v1/campaigns/spring/launch").status_code == 200
    r = owner.put("/api/v1/campaigns/spring", json=body(club, name="late"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "campaign_not_editable"
    assert owner.get("/api/v1/campaigns/spring").json()["name"] == "春季回馈（改）"
    login(client, "analyst")  # (the same client as ``owner``: signs the owner out)
    assert client.put("/api/v1/campaigns/spring", json=changed).status_code == 403
