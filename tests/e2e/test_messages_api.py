"""The messages API as owners and analysts use it: templates refused for unknown variables,
the outbox listed and a failed message retried, STOP replies from the SMS gateway, the
unsubscribe page, the role table, and the worker from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patron.db import UnitOfWork, get_engine
from patron.loyalty.service import current_consents
from patron.messaging import model, service
from patron.messaging.delivery import deliver_due
from tests.e2e.conftest import login
from tests.loyalty_factories import enrol, make_program
from tests.messaging_factories import (
    NOW,
    PHONE,
    RecordingProvider,
    message,
    queue,
)

PATRON = Path(sys.executable).parent / "patron"
GOOD = {"code": "welcome", "variables": ["name"], "body_zh": "欢迎 {{ name }}",
        "body_en": "Welcome {{ name }}", "subject_zh": "欢迎"}


@pytest.fixture
def member(db_url, users):
    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow)
        return enrol(uow, PHONE, marketing={"sms": True, "email": True})


def consents(db_url, member_id):
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return {k: v["granted"] for k, v in current_consents(uow.c, member_id).items()}


def test_a_template_with_an_unknown_variable_is_refused_when_saved_in_the_callers_language(
        owner):
    bad = {**GOOD, "body_en": "Welcome {{ name }}, you have {{ points }} points"}
    r = owner.post("/api/v1/messages/templates?lang=en", json=bad)
    assert r.status_code == 422
    (field,) = r.json()["error"]["fields"]
    assert (field["field"], field["reason"]) == ("body_en", "message_variable_unknown")
    assert field["message"] == 'Unknown variable "points" (declared: name, unsubscribe_url).'
    r = owner.post("/api/v1/messages/templates?lang=zh", json=bad)
    assert r.json()["error"]["fields"][0]["message"].startswith("未知变量“points”")
    assert owner.get("/api/v1/messages/templates/welcome").status_code == 404


def test_a_template_cannot_take_the_new_template_pages_address_as_its_code(owner):
    """/messages/templates/new is the form for a new template: a template coded ``new`` could
    never be opened from the staff pages, so it is refused, naming the field, and not saved."""
    r = owner.post("/api/v1/messages/templates?lang=en", json={**GOOD, "code": "new"})
    assert r.status_code == 422
    (field,) = r.json()["error"]["fields"]
    assert (field["field"], field["reason"]) == ("code", "message_template_code_reserved")
    assert field["message"].startswith("'new' is the address of the new-template page")
    r = owner.post("/api/v1/messages/templates?lang=zh", json={**GOOD, "code": "new"})
    assert r.json()["error"]["fields"][0]["message"].startswith("“new”是新建模板页面的地址")
    assert owner.get("/api/v1/messages/templates/new").status_code == 404
    assert owner.post("/api/v1/messages/templates",
                      json={**GOOD, "code": "new-members"}).status_code == 201


def test_an_owner_creates_changes_and_deletes_a_template(owner):
    r = owner.post("/api/v1/messages/templates", json=GOOD)
    assert r.status_code == 201 and r.json()["version"] == 1
    assert owner.post("/api/v1/messages/templates", json=GOOD).status_code == 409
    r = owner.patch("/api/v1/messages/templates/welcome", json={"body_zh": "你好 {{ nick }}"})
    assert r.status_code == 422
    r = owner.patch("/api/v1/messages/templates/welcome",
                    json={"variables": ["name", "nick"], "body_zh": "你好 {{ nick }}"})
    assert r.status_code == 200 and r.json()["version"] == 2
    codes = {t["code"]: t for t in owner.get("/api/v1/messages/templates").json()["items"]}
    assert codes["welcome"]["builtin"] is False and codes["otp_login"]["builtin"] is True
    # A built-in keeps its variables when an owner rewords it.
    r = owner.post("/api/v1/messages/templates", json={
        "code": "otp_login", "variables": ["code"], "body_zh": "验证码 {{ code }}"})
    assert r.json()["error"]["fields"][0]["reason"] == "message_builtin_variables"
    r = owner.post("/api/v1/messages/templates", json={
        "code": "otp_login", "variables": ["code", "minutes"],
        "body_zh": "验证码 {{ code }}（{{ minutes }} 分钟）"})
    assert r.status_code == 201 and r.json()["overrides_builtin"] is True
    assert owner.delete("/api/v1/messages/templates/welcome").status_code == 204
    assert owner.get("/api/v1/messages/templates/welcome").status_code == 404
    audit = owner.get("/api/v1/audit", params={"action": "message_template.created"}).json()
    assert len(audit["items"]) == 2


def test_the_outbox_is_listed_by_state_and_a_failed_message_is_retried(owner, member, engine):
    from patron.messaging.adapters import failed

    mid = queue(engine, customer_id=member["customer_id"], key="a")
    otp = queue(engine, customer_id=member["customer_id"], key="b", template="otp_login",
                purpose="otp")
    deliver_due(engine=engine, now=NOW,
                adapters=dict.fromkeys(model.CHANNELS, RecordingProvider(
                    [failed("rejected", "blocked number"), failed("rejected", "x")])))
    r = owner.get("/api/v1/messages", params={"state": "failed"})
    assert r.status_code == 200 and r.json()["total"] == 2
    assert r.json()["counts"]["failed"] == 2
    item = next(i for i in r.json()["items"] if i["id"] == otp)
    # A one-time code is never shown back; the phone is masked.
    assert item["variables"] == {"code": "***", "minutes": "***"} and item["body"] == "***"
    assert item["address"] == "+86138****5678"
    assert owner.get("/api/v1/messages", params={"state": "lost"}).status_code == 422
    one = owner.get(f"/api/v1/messages/{mid}").json()
    assert [a["outcome"] for a in one["attempt_log"]] == ["failed"]
    r = owner.post(f"/api/v1/messages/{mid}/retry")
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert owner.post(f"/api/v1/messages/{mid}/retry").status_code == 409
    assert owner.post("/api/v1/messages/999999/retry").status_code == 404


def signed(secret: str, body: dict) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    ts = str(int(time.time()))
    return raw, {"Content-Type": "application/json", "X-Patron-Timestamp": ts,
                 "X-Patron-Signature": model.gateway_signature(secret, ts, raw)}


def test_a_stop_reply_from_the_sms_gateway_withdraws_sms_marketing_consent(
        client, member, db_url, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_SMS_GATEWAY_SECRET", "gw-secret")
    get_settings.cache_clear()
    raw, headers = signed("gw-secret", {"from": PHONE, "text": "好的"})
    r = client.post("/api/v1/messages/inbound/sms", content=raw, headers=headers)
    assert r.json() == {"action": "ignored", "memberships": 0}
    # Unsigned, or signed with another secret: refused, nothing changes.
    raw, headers = signed("guess", {"from": PHONE, "text": "TD"})
    assert client.post("/api/v1/messages/inbound/sms", content=raw,
                       headers=headers).status_code == 401
    assert client.post("/api/v1/messages/inbound/sms", json={"from": PHONE,
                                                             "text": "TD"}).status_code == 401
    assert consents(db_url, member["id"])["sms"] is True
    raw, headers = signed("gw-secret", {"from": "+86 138 1234 5678", "text": "TD"})
    r = client.post("/api/v1/messages/inbound/sms", content=raw, headers=headers)
    assert r.status_code == 200 and r.json() == {"action": "unsubscribed", "memberships": 1}
    now = consents(db_url, member["id"])
    assert now["sms"] is False and now["email"] is True
    raw, headers = signed("gw-secret", {"text": "TD"})
    assert client.post("/api/v1/messages/inbound/sms", content=raw,
                       headers=headers).status_code == 422
    get_settings.cache_clear()


def test_the_unsubscribe_link_asks_first_then_withdraws_the_channels_consent(
        client, member, db_url, engine):
    mid = queue(engine, customer_id=member["customer_id"], channel="email", purpose="marketing")
    body = message(engine, mid)["body"]
    url = body.rsplit("退订：", 1)[1]
    path = url.split("127.0.0.1:8000", 1)[1]
    page = client.get(path, headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "Stop receiving marketing messages by email?" in page.text
    assert consents(db_url, member["id"])["email"] is True  # opening the link changes nothing
    done = client.post(path, headers={"Accept-Language": "en"})
    assert done.status_code == 200 and "no more marketing messages by email" in done.text
    now = consents(db_url, member["id"])
    assert now["email"] is False and now["sms"] is True
    assert client.post(path[:-2] + "xx").status_code == 404
    with UnitOfWork(engine, readonly=True) as uow:
        assert service.marketing_refusal(uow.c, member["customer_id"], None,
                                         "email") == "unsubscribed"


@pytest.mark.parametrize("role", ["owner", "analyst", "manager", "cashier"])
def test_message_role_table(client, users, role):
    expected = {"owner": (200, 201), "analyst": (200, 403), "manager": (403, 403),
                "cashier": (403, 403)}[role]
    login(client, role)
    assert client.get("/api/v1/messages").status_code == expected[0]
    assert client.get("/api/v1/messages/templates").status_code == expected[0]
    r = client.post("/api/v1/messages/templates", json={**GOOD, "code": f"w-{role}"})
    assert r.status_code == expected[1]


def test_patron_messages_work_sends_what_is_due_once(db_url, member, engine):
    mid = queue(engine, customer_id=member["customer_id"], key="cli",
                now=NOW.replace(year=2020))
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}
    out = subprocess.run([str(PATRON), "messages", "work", "--once"], env=env,  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "delivered 1" in out.stdout and f"message {mid} sms to +86138****5678" in out.stderr
    assert message(engine, mid)["state"] == "delivered"
    out = subprocess.run([str(PATRON), "messages", "list", "--state", "delivered"], env=env,  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "delivered 1" in out.stdout


def test_hostile_input_to_every_messages_endpoint_is_a_4xx_never_a_500(owner, member, engine):
    from patron.app import create_app

    queue(engine, customer_id=member["customer_id"], key="h")
    assert owner.post("/api/v1/messages/templates", json=GOOD).status_code == 201
    routes = [(m.upper(), p) for p, ops in create_app().openapi()["paths"].items()
              if p.startswith("/api/v1/messages") for m in ops]
    assert len(routes) >= 8
    bodies = [None, {}, [], "x", {"code": "x" * 65, "body_zh": 1},
              {"variables": None, "body_zh": None, "wechat_fields": None},
              {"variables": ["a-b", "unsubscribe_url"], "body_zh": "{{ a-b }}"},
              {"code": "evil", "variables": ["x"], "body_zh": "{{ x.__class__.__mro__ }}"},
              {"code": "loop", "body_zh": "{% for %}"},
              {"wechat_fields": {"k": "{{ nope }}"}, "body_zh": "🙂" * 5000},
              {"from": "🙂" * 40, "text": "TD"}]
    ids = ["1", "0", "-1", "99999999999999999999", "abc"]
    for method, path in routes:
        for ident in ids:
            concrete = path.replace("{message_id}", ident).replace("{code}", "welcome")
            for body in bodies if method in ("POST", "PATCH") else [None]:
                r = owner.request(method, concrete, json=body)
                assert r.status_code < 500, (method, concrete, body, r.text[:300])
                assert r.status_code != 200 or method != "POST" or "retry" in concrete, (
                    method, concrete, body)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_three_worker_processes_on_postgresql_send_each_message_exactly_once(db_url, member,
                                                                            engine):
    import re

    ids = [queue(engine, customer_id=member["customer_id"], key=f"p{i}",
                 now=NOW.replace(year=2020)) for i in range(150)]
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}
    procs = [subprocess.Popen([str(PATRON), "messages", "work", "--once", "--limit", "1000"],  # noqa: S603
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    logged: list[int] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        logged += [int(x) for x in re.findall(r"message (\d+) sms to", err)]
    assert sorted(logged) == sorted(ids)
    assert all(message(engine, i)["state"] == "delivered" for i in ids[::15])
