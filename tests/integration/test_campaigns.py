"""Campaigns on SQLite and PostgreSQL: a send to the program's members with a coupon each and
the template's variables filled in, scheduled sends, the approval step for large audiences (by
someone else), the audience confirmation, the budget stopping the sends, control groups and
A/B templates recorded, preview writing nothing, cancel, refusals, and several workers sending
each recipient once."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import select

from patron.automations.tables import experiment_assignments
from patron.campaigns import service
from patron.campaigns.engine import run_due
from patron.campaigns.schemas import CampaignIn
from patron.campaigns.tables import campaign_recipients, campaigns
from patron.coupons.tables import coupons
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, Forbidden, ValidationFailed
from patron.security.model import SYSTEM, Actor
from tests.automation_factories import DAY, NOW, PHONES, count, outbox, setup_program

HOUR = dt.timedelta(hours=1)
ALICE = Actor(type="user", id=1, name="alice", role="owner")
BOB = Actor(type="user", id=2, name="bob", role="owner")


def campaign(code="spring", **extra):
    return CampaignIn.model_validate({"code": code, "name": "春季回馈", "program": "BB",
                                      "channel": "sms", "template": "hello", **extra})


def make(engine, body, actor=ALICE):
    with UnitOfWork(engine) as uow:
        return service.create(uow=uow, actor=actor, body=body, now=NOW)


def launch(engine, code="spring", actor=ALICE, **kw):
    with UnitOfWork(engine) as uow:
        return service.launch(uow=uow, actor=actor, code=code, now=NOW, **kw)


def recipients(engine, code="spring"):
    with UnitOfWork(engine, readonly=True) as uow:
        return service.list_recipients(uow.c, actor=SYSTEM, code=code, limit=500)


def status(engine, code="spring"):
    with UnitOfWork(engine, readonly=True) as uow:
        return service.get_campaign(uow.c, actor=SYSTEM, code=code)


def test_a_campaign_with_a_coupon_each_sends_the_rendered_message_once_to_every_member(engine):
    club = setup_program(engine, members=3)
    make(engine, campaign(template="welcome", coupon_template_id=club["coupon"]["id"]))
    out = launch(engine)
    assert (out["status"], out["audience_size"]) == ("scheduled", 3)
    stats = run_due(engine=engine, now=NOW + HOUR)
    assert (stats.started, stats.sent) == (1, 3)
    run_due(engine=engine, now=NOW + HOUR)
    assert status(engine)["status"] == "sent"
    sent = outbox(engine)
    assert len(sent) == 3 and count(engine, coupons) == 3
    with UnitOfWork(engine, readonly=True) as uow:
        codes = set(uow.c.execute(select(coupons.c.code)).scalars())
    for m in sent:
        assert m["purpose"] == "marketing" and m["dedupe_key"].startswith("campaign:")
        assert any(code in m["body"] for code in codes) and "2026-04-01 前有效" in m["body"]
    assert {r["state"] for r in recipients(engine)} == {"sent"}
    run_due(engine=engine, now=NOW + 2 * HOUR)  # nothing more
    assert len(outbox(engine)) == 3 and count(engine, coupons) == 3


def test_a_scheduled_campaign_waits_for_its_time(engine):
    setup_program(engine)
    make(engine, campaign(scheduled_at=(NOW + 5 * HOUR).isoformat()))
    launch(engine)
    run_due(engine=engine, now=NOW + HOUR)
    assert outbox(engine) == [] and status(engine)["status"] == "scheduled"
    run_due(engine=engine, now=NOW + 5 * HOUR)
    assert len(outbox(engine)) == 3


def test_a_large_audience_waits_for_another_users_approval(engine, monkeypatch):
    from patron.config import get_settings

    setup_program(engine, members=4)
    monkeypatch.setenv("PATRON_CAMPAIGN_APPROVAL_ABOVE", "3")
    get_settings.cache_clear()
    try:
        make(engine, campaign())
        assert launch(engine)["status"] == "awaiting_approval"
        run_due(engine=engine, now=NOW + HOUR)
        assert outbox(engine) == []
        with UnitOfWork(engine) as uow, pytest.raises(Forbidden):
            service.approve(uow=uow, actor=ALICE, code="spring")
        with UnitOfWork(engine) as uow:
            out = service.approve(uow=uow, actor=BOB, code="spring")
        assert (out["status"], out["approved_by"]) == ("scheduled", "bob")
        run_due(engine=engine, now=NOW + HOUR)
        assert len(outbox(engine)) == 4
    finally:
        get_settings.cache_clear()


def test_an_audience_above_the_limit_must_be_confirmed_before_anything_is_sent(engine,
                                                                             monkeypatch):
    from patron.config import get_settings

    setup_program(engine, members=3)
    monkeypatch.setenv("PATRON_AUDIENCE_CONFIRM_ABOVE", "2")
    get_settings.cache_clear()
    try:
        make(engine, campaign())
        with pytest.raises(Conflict) as exc:
            launch(engine)
        assert exc.value.params == {"count": 3, "limit": 2}
        assert status(engine)["status"] == "draft"
        assert launch(engine, confirm_audience=3)["status"] == "scheduled"
    finally:
        get_settings.cache_clear()


def test_the_budget_stops_the_campaign_when_it_is_spent(engine):
    club = setup_program(engine, members=5)
    # Each recipient costs 0.05 (SMS) + 10.00 (the coupon's face value): 25.00 covers two.
    make(engine, campaign(template="welcome", coupon_template_id=club["coupon"]["id"],
                          message_cost="0.05", budget_value="25.00"))
    launch(engine)
    run_due(engine=engine, now=NOW + HOUR)
    out = status(engine)
    assert (out["status"], out["stop_reason"]) == ("stopped", "budget_spent")
    assert (out["spent_messages"], str(out["spent_value"])) == (2, "20.10")
    states = Counter(r["state"] for r in recipients(engine))
    assert states == {"sent": 2, "skipped": 3}
    assert count(engine, coupons) == 2 and len(outbox(engine)) == 2


def test_a_message_budget_counts_messages(engine):
    setup_program(engine, members=4)
    make(engine, campaign(budget_messages=3))
    launch(engine)
    run_due(engine=engine, now=NOW + HOUR)
    assert len(outbox(engine)) == 3 and status(engine)["status"] == "stopped"


def test_control_group_and_ab_templates_are_recorded_per_recipient(engine):
    from patron.messaging import service as messaging

    setup_program(engine, members=40)
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello2", "variables": ["name"], "body_zh": "B: {{ name }}"})
    make(engine, campaign(template=None, control_share="0.2", variants=[
        {"code": "A", "share": "0.5", "template": "hello"},
        {"code": "B", "share": "0.5", "template": "hello2"}]))
    launch(engine)
    run_due(engine=engine, now=NOW + HOUR)
    recs = recipients(engine)
    arms = Counter(r["arm"] for r in recs)
    assert set(arms) == {"control", "A", "B"} and sum(arms.values()) == 40
    assert all(r["state"] == "held_out" for r in recs if r["arm"] == "control")
    assert len(outbox(engine)) == arms["A"] + arms["B"]
    bodies = {m["customer_id"]: m["body"] for m in outbox(engine)}
    for r in recs:
        if r["arm"] == "B":
            assert bodies[r["customer_id"]].startswith("B:")
    with UnitOfWork(engine, readonly=True) as uow:
        recorded = dict(uow.c.execute(select(experiment_assignments.c.customer_id,
                                             experiment_assignments.c.arm).where(
            experiment_assignments.c.source == "campaign")).all())
    assert recorded == {r["customer_id"]: r["arm"] for r in recs}


def test_preview_shows_audience_cost_and_messages_writing_nothing(engine):
    club = setup_program(engine, members=3)
    make(engine, campaign(template="welcome", coupon_template_id=club["coupon"]["id"],
                          message_cost="0.05"))
    with UnitOfWork(engine, readonly=True) as uow:
        out = service.preview(uow.c, actor=SYSTEM, code="spring")
    assert out["audience"] == 3 and out["messages"] == 3
    assert out["estimated_cost"] == "30.15"
    assert "(coupon code)" in out["sample"][0]["body"]
    assert count(engine, campaign_recipients) == 0 and outbox(engine) == []
    assert count(engine, coupons) == 0


def test_cancel_skips_the_rest(engine):
    setup_program(engine, members=3)
    make(engine, campaign(scheduled_at=(NOW + 5 * HOUR).isoformat()))
    launch(engine)
    with UnitOfWork(engine) as uow:
        assert service.cancel(uow=uow, actor=ALICE, code="spring")["status"] == "cancelled"
    run_due(engine=engine, now=NOW + 6 * HOUR)
    assert outbox(engine) == []
    with UnitOfWork(engine) as uow, pytest.raises(Conflict):
        service.cancel(uow=uow, actor=ALICE, code="spring")


def test_bad_campaigns_are_refused_naming_the_field(engine):
    from patron.messaging import service as messaging

    setup_program(engine)
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "odd", "variables": ["name", "shoe_size"],
            "body_zh": "{{ name }} {{ shoe_size }}"})
    for body, field, reason in (
            (campaign(template="odd"), "template", "automation_template_variable_unknown"),
            (campaign(template="welcome"), "template", "campaign_template_needs_coupon"),
            (campaign(template="nope"), "template", "message_template_unknown"),
            (campaign(coupon_template_id=999), "coupon_template_id",
             "automation_coupon_template_unknown")):
        with pytest.raises(ValidationFailed) as exc:
            make(engine, body)
        assert {(e.field, e.reason) for e in exc.value.fields} == {(field, reason)}
    assert count(engine, campaigns) == 0


def test_several_workers_send_each_recipient_once(engine):
    club = setup_program(engine, members=30)
    make(engine, campaign(template="welcome", coupon_template_id=club["coupon"]["id"],
                          message_cost="0.05", budget_value="205.00"))  # 20 recipients
    launch(engine)
    workers = 4 if engine.dialect.name == "postgresql" else 3
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work():
        try:
            barrier.wait()
            for _ in range(50):
                if not run_due(engine=engine, now=NOW + HOUR, limit=3).claimed:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    states = Counter(r["state"] for r in recipients(engine))
    assert states == {"sent": 20, "skipped": 10}
    keys = [m["dedupe_key"] for m in outbox(engine)]
    assert len(keys) == 20 == len(set(keys)) and count(engine, coupons) == 20
    out = status(engine)
    assert (out["status"], str(out["spent_value"])) == ("stopped", "201.00")
    get_engine(str(engine.url)).dispose()


def test_the_lift_report_compares_each_arm_with_its_control_group(engine):
    from tests.loyalty_factories import buy

    club = setup_program(engine, members=40)
    make(engine, campaign(control_share="0.3"))
    launch(engine)
    run_due(engine=engine, now=NOW + HOUR)
    recs = recipients(engine)
    phone_of = {m["customer_id"]: p for m, p in zip(club["members"], PHONES, strict=False)}
    # Every recipient who got the message buys within 30 days; nobody in the control group.
    with UnitOfWork(engine) as uow:
        for n, r in enumerate(x for x in recs if x["arm"] == "main"):
            buy(uow, f"L{n}", phone=phone_of[r["customer_id"]], at=NOW + 2 * DAY,
                now=NOW + 2 * DAY)
    with UnitOfWork(engine, readonly=True) as uow:
        early = service.lift(uow.c, actor=SYSTEM, code="spring", days=30, now=NOW + 10 * DAY)
        out = service.lift(uow.c, actor=SYSTEM, code="spring", days=30, now=NOW + 31 * DAY)
    assert early["arms"] == {} and early["window_not_over"] == 40
    arms = Counter(r["arm"] for r in recs)
    main, control = out["arms"]["main"], out["arms"]["control"]
    assert (main["customers"], main["converted"], main["conversion"]) == (arms["main"],
                                                                         arms["main"], 1.0)
    assert (control["customers"], control["converted"]) == (arms["control"], 0)
    assert main["revenue_per_customer"] == Decimal("71.00")
    assert control["revenue_per_customer"] == Decimal("0.00")
    assert main["revenue"] == Decimal("71.00") * arms["main"]
    vs = out["versus_control"]["main"]
    assert vs["conversion"]["difference"] == 1.0 and vs["conversion"]["significant"] is True
    assert vs["revenue_per_customer"]["difference"] == Decimal("71.00")
    assert vs["incremental_revenue"]["value"] == Decimal("71.00") * arms["main"]
