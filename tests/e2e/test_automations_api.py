"""Automations through the API as an owner and an analyst: create, refusals with clear 4xx
messages (unknown template variable, cron that never fires, unconfirmed large audience),
activate, dry-run, entries, the role table, hostile input, and the CLI."""

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
from tests.e2e.conftest import login
from tests.loyalty_factories import enrol, make_program

PATRON = Path(sys.executable).parent / "patron"


@pytest.fixture
def club(db_url, users):
    engine = get_engine(db_url)
    with UnitOfWork(engine) as uow:
        make_program(uow)
    with UnitOfWork(engine) as uow:
        members = [enrol(uow, f"1380000000{n}", marketing={"sms": True}, name=f"会员{n}")
                   for n in range(1, 4)]
    with UnitOfWork(engine) as uow:
        coupon = make_template(uow)
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello", "variables": ["name", "points"],
            "body_zh": "{{ name }}，您有 {{ points }} 积分。",
            "body_en": "{{ name }}, you have {{ points }} points."})
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "odd", "variables": ["name", "shoe_size"],
            "body_zh": "{{ name }} {{ shoe_size }}"})
    return {"members": members, "coupon": coupon}


def automation(code="daily", cron="0 10 * * *", template="hello", **extra):
    return {"code": code, "name": "每日问候", "program": "BB", "definition": {
        "trigger": {"type": "schedule", "cron": cron},
        "steps": [{"action": "send_message", "channel": "sms", "template": template}],
        **extra}}


def test_an_owner_defines_activates_and_dry_runs_an_automation(owner, club):
    r = owner.post("/api/v1/automations", json=automation(control_share="0.1"))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["status"] == "draft" and out["flow"]["trigger"] == "On the schedule '0 10 * * *'"
    assert out["flow"]["arms"][0]["steps"] == ["Send 'hello' by sms"]
    r = owner.post("/api/v1/automations/daily/dry-run")
    assert r.status_code == 200, r.text
    dry = r.json()
    assert dry["candidates"] == 3 and dry["would_enter"] + dry["held_out"] == 3
    if dry["sample"]:
        assert dry["sample"][0]["steps"][0]["message"]["body"].startswith("会员")
    r = owner.post("/api/v1/automations/daily/activate")
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert owner.post("/api/v1/automations/daily/pause").json()["status"] == "paused"
    r = owner.get("/api/v1/automations/daily/entries")
    assert r.status_code == 200 and r.json() == {"items": []}
    assert [a["code"] for a in owner.get("/api/v1/automations").json()["items"]] == ["daily"]
    r = owner.patch("/api/v1/automations/daily", json={"definition": automation(
        cron="0 9 * * *")["definition"]})
    assert r.status_code == 200 and r.json()["version"] == 2


def test_bad_definitions_are_refused_with_clear_messages_before_anything_is_sent(owner, club):
    r = owner.post("/api/v1/automations?lang=en", json=automation(cron="0 0 30 2 *"))
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert f["field"] == "definition.trigger.cron"
    assert f["message"] == ('The cron expression "0 0 30 2 *" never fires (no matching date '
                            'within five years).')
    r = owner.post("/api/v1/automations?lang=en", json=automation(template="odd"))
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert f["field"] == "definition.steps.0.template" and '"shoe_size"' in f["message"]
    r = owner.post("/api/v1/automations?lang=zh", json=automation(template="odd"))
    assert "变量“shoe_size”" in r.json()["error"]["fields"][0]["message"]
    r = owner.post("/api/v1/automations", json={**automation(), "definition": {
        "trigger": {"type": "schedule", "cron": "0 10 * * *"}}})
    assert r.status_code == 422
    # a code the pages use as an address (/automations/new) could never be opened
    r = owner.post("/api/v1/automations?lang=en", json=automation(code="new"))
    assert r.status_code == 422
    (f,) = r.json()["error"]["fields"]
    assert f["field"] == "code" and "reserved" in f["message"], f
    assert owner.get("/api/v1/automations").json()["items"] == []


def test_a_large_audience_must_be_confirmed_with_its_size(owner, club, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_AUDIENCE_CONFIRM_ABOVE", "2")
    get_settings.cache_clear()
    try:
        assert owner.post("/api/v1/automations", json=automation()).status_code == 201
        r = owner.post("/api/v1/automations/daily/activate?lang=en")
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "audience_confirmation_required"
        assert err["message"].startswith("This would reach 3 customers (more than 2).")
        r = owner.post("/api/v1/automations/daily/activate", json={"confirm_audience": 2})
        assert r.status_code == 409
        r = owner.post("/api/v1/automations/daily/activate", json={"confirm_audience": 3})
        assert r.status_code == 200 and r.json()["status"] == "active"
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("role,expected", [("analyst", (200, 403, 200)),
                                           ("manager", (403, 403, 403)),
                                           ("cashier", (403, 403, 403))])
def test_role_table(client, users, club, role, expected):
    login(client, role)
    assert client.get("/api/v1/automations").status_code == expected[0]
    assert client.post("/api/v1/automations", json=automation()).status_code == expected[1]
    r = client.post("/api/v1/automations/dry-run", json=automation())
    assert r.status_code == expected[2]


def test_hostile_input_to_every_automations_endpoint_is_a_4xx_never_a_500(owner, club):
    from patron.app import create_app

    assert owner.post("/api/v1/automations", json=automation()).status_code == 201
    routes = [(m.upper(), p) for p, ops in create_app().openapi()["paths"].items()
              if p.startswith("/api/v1/automations") for m in ops]
    assert len(routes) >= 8
    bodies = [None, {}, [], "x", {"code": "x" * 80}, {"confirm_audience": -1},
              {"definition": {"trigger": {"type": "nope"}}},
              automation(cron="* * * * * * *"),
              {**automation(), "definition": {"trigger": {"type": "every_order"},
                                              "steps": [{"action": "wait"}]}},
              {**automation(), "definition": {"trigger": {"type": "every_order"},
                                              "variants": [{"code": "A", "share": "0.7",
                                                            "steps": [{"action": "wait",
                                                                       "days": 1}]},
                                                           {"code": "B", "share": "0.7",
                                                            "steps": [{"action": "wait",
                                                                       "days": 1}]}]}},
              {**automation(), "program": "NOPE"}]
    for method, path in routes:
        for code in ("daily", "missing", "🙂" * 20):
            concrete = path.replace("{code}", code)
            for body in bodies if method in ("POST", "PATCH") else [None]:
                r = owner.request(method, concrete, json=body)
                assert r.status_code < 500, (method, concrete, body, r.text[:300])


def test_patron_automations_run_list_and_dry_run(db_url, owner, club):
    assert owner.post("/api/v1/automations", json=automation()).status_code == 201
    assert owner.post("/api/v1/automations/daily/activate").status_code == 200
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}

    def patron(*args):
        out = subprocess.run([str(PATRON), "automations", *args], env=env,  # noqa: S603
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "daily" in patron("list")
    dry = patron("dry-run", "daily", "--now", "2099-01-05T11:00+08:00")
    assert '"candidates": 3' in dry
    out = patron("run", "--now", "2099-01-05T11:00+08:00")
    assert "triggered 3" in out and "done 3" in out
    assert "done 3" in patron("list")
