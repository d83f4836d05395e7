"""The automation and campaign editors and bulk tagging over HTTP, on SQLite and PostgreSQL:
what each form writes, the refusals shown beside their fields in both languages, the large
audience confirmation, approval by a second person, and bulk tagging within the user's stores.
(The same flows clicked through in a real browser: test_editors_browser.py.)"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from sqlalchemy import select

from patron.automations.tables import automations
from patron.campaigns.tables import campaigns
from patron.db import UnitOfWork, get_engine, utcnow
from patron.messaging import service as messaging
from patron.security import service as security
from patron.security.model import SYSTEM
from patron.tags import service as tags
from patron.tags.tables import customer_tags, tag_events
from tests.coupon_factories import make_template
from tests.e2e.conftest import PASSWORD, login
from tests.factories import order
from tests.loyalty_factories import enrol, make_program

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


@pytest.fixture
def club(db_url, org, users) -> dict[str, Any]:
    engine = get_engine(db_url)
    now = utcnow()
    with UnitOfWork(engine) as uow:
        make_program(uow, now=now - dt.timedelta(days=90))
    with UnitOfWork(engine) as uow:
        for n in range(1, 5):
            enrol(uow, f"1380000000{n}", marketing={"sms": True}, name=f"会员{n}",
                  now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        coupon = make_template(uow, now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello", "variables": ["name", "points"],
            "body_zh": "{{ name }}，您有 {{ points }} 积分。",
            "body_en": "{{ name }}, you have {{ points }} points."})
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "odd", "variables": ["name", "shoe_size"],
            "body_zh": "{{ name }} {{ shoe_size }}", "body_en": "{{ name }} {{ shoe_size }}"})
    with UnitOfWork(engine) as uow:
        security.create_user(uow=uow, actor=SYSTEM, username="owner2", password=PASSWORD,
                             role="owner")
    return {"coupon": coupon["id"], "engine": engine}


def _token(client, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text[:300]
    return CSRF.search(r.text).group(1)


def _definition(coupon: int, **extra: Any) -> dict[str, Any]:
    return {"trigger": {"type": "schedule", "cron": "0 10 * * *"}, "conditions": None,
            "steps": [{"action": "issue_coupon", "coupon_template_id": coupon},
                      {"action": "wait", "days": 1},
                      {"action": "send_message", "channel": "sms", "template": "hello"}],
            "reentry_days": 7, "control_share": "0", **extra}


def _errors(page: str) -> dict[str, str]:
    """The refusals the editor's script places beside its controls."""
    raw = re.search(r'id="automation-errors-data">(.*?)</script>', page, re.S).group(1)
    return json.loads(raw)


def test_an_automation_saved_dry_run_and_activated_through_the_forms(client, club):
    login(client, "owner")
    token = _token(client, "/automations/new")
    form = {"csrf_token": token, "code": "hello-daily", "name": "每日问候", "program": "BB"}
    r = client.post("/automations/new", data={
        **form, "intent": "dry_run", "definition": json.dumps(_definition(club["coupon"]))})
    assert r.status_code == 200 and 'id="dry-run-result"' in r.text
    assert "按计划“0 10 * * *”" in r.text and "未写入任何数据" in r.text
    with UnitOfWork(club["engine"], readonly=True) as uow:
        assert uow.c.execute(select(automations)).first() is None  # a dry run writes nothing
    r = client.post("/automations/new", data={
        **form, "intent": "save", "definition": json.dumps(_definition(club["coupon"]))},
        follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/automations/hello-daily?saved=1"
    page = client.get(r.headers["location"]).text
    assert 'id="saved"' in page and 'id="activate"' in page and "等待 1 天" in page
    r = client.post("/automations/hello-daily/status",
                    data={"csrf_token": token, "action": "activate"}, follow_redirects=False)
    assert r.headers["location"] == "/automations/hello-daily?status=active"
    with UnitOfWork(club["engine"], readonly=True) as uow:
        row = uow.c.execute(select(automations)).mappings().one()
    assert row["status"] == "active" and row["updated_by"] == "owner"

    # editing: a new version with a second arm
    edit = client.get("/automations/hello-daily/edit")
    assert edit.status_code == 200 and '"cron": "0 10 * * *"' in edit.text
    changed = _definition(club["coupon"], steps=None, variants=[
        {"code": "A", "share": "0.5", "steps": [{"action": "grant_points", "points": 10}]},
        {"code": "B", "share": "0.5", "steps": [{"action": "add_tag", "tag": "x"}]}])
    del changed["steps"]
    r = client.post("/automations/hello-daily/edit", data={
        "csrf_token": token, "name": "每日问候", "intent": "save",
        "definition": json.dumps(changed)}, follow_redirects=False)
    assert r.status_code == 422  # tag "x" is no tag: refused beside the step
    assert "x" in _errors(r.text)["definition.variants.1.steps.0.tag"]
    with UnitOfWork(club["engine"]) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="x", name="X")
    r = client.post("/automations/hello-daily/edit", data={
        "csrf_token": token, "name": "每日问候", "intent": "save",
        "definition": json.dumps(changed)}, follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    with UnitOfWork(club["engine"], readonly=True) as uow:
        assert uow.c.execute(select(automations.c.version)).scalar_one() == 2
    r = client.post("/automations/hello-daily/status",
                    data={"csrf_token": token, "action": "pause"}, follow_redirects=False)
    assert r.headers["location"] == "/automations/hello-daily?status=paused"


def test_a_tag_step_tags_each_customer_who_enters(client, club):
    """The add/remove tag steps the editor offers run through patron.tags.service."""
    from patron.automations import service as automations
    from patron.automations.engine import run_due
    from patron.automations.schemas import AutomationIn

    engine, now = club["engine"], utcnow()
    with UnitOfWork(engine) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="regular", name="常客")
    with UnitOfWork(engine) as uow:
        automations.create(uow=uow, actor=SYSTEM, now=now - dt.timedelta(days=3),
                           body=AutomationIn.model_validate({
                               "code": "tagger", "name": "打标签", "program": "BB",
                               "definition": {"trigger": {"type": "schedule",
                                                          "cron": "0 * * * *"},
                                              "steps": [{"action": "add_tag",
                                                         "tag": "regular"}]}}))
    with UnitOfWork(engine) as uow:
        automations.set_status(uow=uow, actor=SYSTEM, code="tagger", status="active",
                               now=now - dt.timedelta(days=3))
    run_due(engine=engine, now=now)
    with UnitOfWork(engine, readonly=True) as uow:
        sources = uow.c.execute(select(tag_events.c.source, tag_events.c.action)).all()
    assert sorted(sources) == [("automation", "added")] * 4


@pytest.mark.parametrize("lang, cron_message, variable_message", [
    ("zh", "永远不会触发", "shoe_size"), ("en", "never fires", "shoe_size")])
def test_refusals_come_back_beside_their_fields(client, club, lang, cron_message,
                                                variable_message):
    login(client, "owner")
    token = _token(client, f"/automations/new?lang={lang}")
    definition = _definition(club["coupon"])
    definition["trigger"] = {"type": "schedule", "cron": "0 0 30 2 *"}
    definition["steps"][2]["template"] = "odd"
    r = client.post(f"/automations/new?lang={lang}", data={
        "csrf_token": token, "code": "bad", "name": "x", "program": "BB", "intent": "save",
        "definition": json.dumps(definition)})
    assert r.status_code == 422
    errors = _errors(r.text)
    assert cron_message in errors["definition.trigger.cron"]
    assert variable_message in errors["definition.steps.2.template"]
    # the shape: a wait of nothing, shares not adding up
    definition = _definition(club["coupon"])
    definition["steps"][1] = {"action": "wait"}
    r = client.post(f"/automations/new?lang={lang}", data={
        "csrf_token": token, "code": "bad", "name": "x", "program": "BB", "intent": "dry_run",
        "definition": json.dumps(definition)})
    assert r.status_code == 422
    assert list(_errors(r.text)) == ["definition.steps.1"]
    definition = _definition(club["coupon"], control_share="0.95")  # 95 % typed in the form
    r = client.post(f"/automations/new?lang={lang}", data={
        "csrf_token": token, "code": "bad", "name": "x", "program": "BB", "intent": "dry_run",
        "definition": json.dumps(definition)})
    assert "90%" in _errors(r.text)["definition.control_share"]
    with UnitOfWork(club["engine"], readonly=True) as uow:
        assert uow.c.execute(select(automations)).first() is None


def test_a_large_audience_must_be_confirmed_before_activation(client, club, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_AUDIENCE_CONFIRM_ABOVE", "2")
    get_settings.cache_clear()
    login(client, "owner")
    token = _token(client, "/automations/new")
    r = client.post("/automations/new", data={
        "csrf_token": token, "code": "big", "name": "大", "program": "BB", "intent": "dry_run",
        "definition": json.dumps(_definition(club["coupon"]))})
    assert 'id="audience-warning"' in r.text and "4 位顾客" in r.text
    assert 'id="conditions-warning"' in r.text  # beside the conditions that make it large
    client.post("/automations/new", data={
        "csrf_token": token, "code": "big", "name": "大", "program": "BB", "intent": "save",
        "definition": json.dumps(_definition(club["coupon"]))})
    r = client.post("/automations/big/status", data={"csrf_token": token, "action": "activate"},
                    follow_redirects=False)
    assert r.headers["location"] == "/automations/big?confirm=4"
    assert 'id="confirm-activate"' in client.get(r.headers["location"]).text
    r = client.post("/automations/big/status", data={
        "csrf_token": token, "action": "activate", "confirm_audience": "4"},
        follow_redirects=False)
    assert r.headers["location"] == "/automations/big?status=active"
    get_settings.cache_clear()


def test_a_campaign_needing_approval_is_approved_by_someone_else(client, club, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_CAMPAIGN_APPROVAL_ABOVE", "2")
    get_settings.cache_clear()
    login(client, "owner")
    token = _token(client, "/campaigns/new")
    base = {"csrf_token": token, "code": "spring", "name": "春季", "program": "BB",
            "channel": "sms", "control_share": "0", "message_cost": "0.05"}
    r = client.post("/campaigns/new", data={**base, "arms_mode": "single", "template": "odd"})
    assert r.status_code == 422 and "shoe_size" in r.text and 'data-field="template"' in r.text
    r = client.post("/campaigns/new", data={
        **base, "arms_mode": "variants", "variant_code_0": "A", "variant_share_0": "50",
        "variant_template_0": "hello", "variant_code_2": "B", "variant_share_2": "40",
        "variant_template_2": "hello"})
    assert r.status_code == 422 and "100%" in r.text
    r = client.post("/campaigns/new", data={
        **base, "arms_mode": "single", "template": "hello", "coupon_template_id":
        str(club["coupon"]), "budget_messages": "10"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/campaigns/spring?saved=1"
    page = client.get(r.headers["location"]).text
    assert 'id="needs-approval"' in page and "4 位顾客" in page
    r = client.post("/campaigns/spring/launch", data={"csrf_token": token},
                    follow_redirects=False)
    assert r.headers["location"] == "/campaigns/spring?launched=awaiting_approval"
    # the launcher cannot approve their own campaign
    page = client.get("/campaigns/approvals").text
    assert "spring" in page and 'class="primary approve"' not in page
    r = client.post("/campaigns/spring/approve", data={"csrf_token": token})
    assert r.status_code == 403 and "发起人以外" in r.text
    client.cookies.clear()
    login(client, "owner2")
    token = _token(client, "/campaigns/approvals")
    r = client.post("/campaigns/spring/approve", data={"csrf_token": token},
                    follow_redirects=False)
    assert r.headers["location"] == "/campaigns/approvals?approved=spring"
    with UnitOfWork(club["engine"], readonly=True) as uow:
        row = uow.c.execute(select(campaigns)).mappings().one()
    assert (row["status"], row["launched_by"], row["approved_by"]) == (
        "scheduled", "owner", "owner2")
    get_settings.cache_clear()


def test_a_draft_campaign_is_changed_in_the_form_it_was_made_with(client, club):
    login(client, "owner")
    token = _token(client, "/campaigns/new")
    made = {"csrf_token": token, "code": "spring", "name": "春季", "program": "BB",
            "channel": "sms", "control_share": "10", "message_cost": "0.05",
            "arms_mode": "variants", "variant_code_0": "A", "variant_share_0": "60",
            "variant_template_0": "hello", "variant_code_1": "B", "variant_share_1": "40",
            "variant_template_1": "hello", "scheduled_at": "2026-12-01T10:00",
            "budget_messages": "10"}
    r = client.post("/campaigns/new", data=made, follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    assert 'id="edit-campaign" href="/campaigns/spring/edit"' in client.get(
        "/campaigns/spring").text
    page = client.get("/campaigns/spring/edit").text
    assert "编辑营销活动 spring" in page and 'action="/campaigns/spring/edit"' in page
    for name, value in (("name", "春季"), ("control_share", "10"), ("budget_messages", "10"),
                        ("scheduled_at", "2026-12-01T10:00"), ("variant_share_0", "60"),
                        ("variant_share_1", "40"), ("variant_code_1", "B")):
        assert re.search(rf'name="{name}" value="{re.escape(value)}"', page), name
    assert re.search(r'name="code" value="spring"[^>]*readonly', page)

    # a refusal comes back beside its field and changes nothing
    r = client.post("/campaigns/spring/edit", data={**made, "variant_share_1": "30"})
    assert r.status_code == 422 and "100%" in r.text
    # the code is not the form's to change; the rest is saved
    r = client.post("/campaigns/spring/edit", data={
        **made, "code": "autumn", "name": "春季（改）", "arms_mode": "single",
        "template": "hello", "control_share": "20"}, follow_redirects=False)
    assert r.headers["location"] == "/campaigns/spring?saved=1"
    with UnitOfWork(club["engine"], readonly=True) as uow:
        row = uow.c.execute(select(campaigns)).mappings().one()
    assert (row["code"], row["name"], row["control_share"], row["arms"]) == (
        "spring", "春季（改）", "0.2", [{"code": "main", "share": "1", "template": "hello"}])

    # once launched the campaign is what was counted: no edit form, a 409 to a direct post
    client.post("/campaigns/spring/launch", data={"csrf_token": token})
    assert 'id="edit-campaign"' not in client.get("/campaigns/spring").text
    assert client.get("/campaigns/spring/edit").status_code == 409
    assert client.post("/campaigns/spring/edit", data=made).status_code == 409
    with UnitOfWork(club["engine"], readonly=True) as uow:
        assert uow.c.execute(select(campaigns.c.name)).scalar_one() == "春季（改）"


# --- bulk tagging ------------------------------------------------------------------------------

@pytest.fixture
def shoppers(db_url, org, users) -> dict[str, int]:
    from patron.orders.service import record_orders

    now = utcnow()
    orders_in = [order(f"B-{n}", store=store, at=now - dt.timedelta(days=n),
                       identifiers={"phone": f"1391111000{n}"}, customer={"name": f"顾客{n}"})
                 for n, store in ((1, "SH01"), (2, "SH01"), (3, "SH01"), (4, "BJ01"))]
    with UnitOfWork(get_engine(db_url)) as uow:
        record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    with UnitOfWork(get_engine(db_url)) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="vip", name="贵宾")
    from patron.customers.tables import customers

    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return {str(i): int(i) for i in uow.c.execute(select(customers.c.id)).scalars()}


def _tagged(db_url: str) -> set[int]:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return {int(i) for i in uow.c.execute(select(customer_tags.c.customer_id)).scalars()}


def test_bulk_tagging_from_the_customer_list_stays_within_the_users_stores(client, shoppers,
                                                                          db_url):
    login(client, "manager")  # SH01 only: three of the four customers
    token = _token(client, "/customers")
    ids = sorted(shoppers.values())
    r = client.post("/customers/tag", data={"csrf_token": token, "tag": "vip",
                                           "action": "add", "customer_id": [str(i) for i in ids]})
    assert r.status_code == 422 and _tagged(db_url) == set()  # one is not theirs: nothing
    r = client.post("/customers/tag", data={"csrf_token": token, "tag": "vip", "action": "add",
                                           "all_matching": "1"}, follow_redirects=False)
    assert r.status_code == 303 and "tagged=3" in r.headers["location"]
    visible = _tagged(db_url)
    assert len(visible) == 3
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert uow.c.execute(select(tag_events.c.actor).distinct()).scalars().all() == [
            "manager"]
        from patron.security.tables import audit_log

        entry = uow.c.execute(select(audit_log.c.details).where(
            audit_log.c.action == "tag.applied")).scalar_one()
    assert "1391111" not in json.dumps(entry)  # the audit names ids and filters, no phone
    one = sorted(visible)[0]
    r = client.post("/customers/tag", data={"csrf_token": token, "tag": "vip",
                                           "action": "remove", "customer_id": str(one)},
                    follow_redirects=False)
    assert r.status_code == 303 and _tagged(db_url) == visible - {one}
