"""Automations on SQLite and PostgreSQL: every trigger type, the conditions, the re-entry guard,
every action and wait steps, control groups and variants, a refused action, resuming after a
crash between steps without repeating an action, and the dry run that writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select, update

from patron.automations import service
from patron.automations.schemas import AutomationIn
from patron.automations.tables import (
    automation_entries,
    automation_reentry,
    automation_step_runs,
    automations,
    experiment_assignments,
)
from patron.coupons.tables import coupons
from patron.customers.tables import customers
from patron.db import UnitOfWork
from patron.errors import Conflict, ValidationFailed
from patron.loyalty.tables import loyalty_operations
from patron.messaging.tables import messages
from patron.security.model import SYSTEM
from patron.webhooks.tables import webhook_deliveries
from tests.automation_factories import (
    DAY,
    NOW,
    PHONES,
    count,
    create,
    entries,
    outbox,
    run,
    setup_program,
    step_runs,
)
from tests.factories import T0
from tests.loyalty_factories import buy, member_row

HOUR = dt.timedelta(hours=1)


def purchase(engine, external_id, phone=PHONES[0], at=T0, **extra):
    with UnitOfWork(engine) as uow:
        return buy(uow, external_id, phone=phone, at=at, now=at + dt.timedelta(minutes=1),
                   **extra)


# --- order triggers -----

def test_every_order_enters_once_per_order_and_sends_the_rendered_message(engine):
    setup_program(engine)
    auto = create(engine, "each-order", {"type": "every_order"}, reentry_days=0)
    purchase(engine, "O1")
    purchase(engine, "O2", at=T0 + HOUR)
    purchase(engine, "O1")  # a retried order: a duplicate, no second entry
    found = entries(engine, auto["id"])
    assert [e["occurrence"][:6] for e in found] == ["order:", "order:"]
    assert {e["state"] for e in found} == {"triggered"}
    stats = run(engine, NOW + 2 * HOUR)
    assert (stats.admitted, stats.done) == (2, 2)
    sent = outbox(engine)
    assert len(sent) == 2 and sent[0]["purpose"] == "marketing"
    assert sent[0]["body"] == "会员01，您有 142 积分。 回复TD退订"
    assert sent[0]["dedupe_key"] == f"automation:{found[0]['id']}:0"
    run(engine, NOW + 3 * HOUR)  # nothing more to do
    assert len(outbox(engine)) == 2


def test_first_purchase_fires_only_for_the_first_order(engine):
    setup_program(engine)
    auto = create(engine, "first", {"type": "first_purchase"})
    purchase(engine, "O1")
    purchase(engine, "O2", at=T0 + HOUR)
    purchase(engine, "O3", phone=PHONES[1], at=T0 + HOUR)
    found = entries(engine, auto["id"])
    assert [(e["occurrence"], e["customer_id"]) for e in found] == [
        ("first_purchase", found[0]["customer_id"]), ("first_purchase", found[1]["customer_id"])]
    assert found[0]["customer_id"] != found[1]["customer_id"]


def test_an_imported_old_order_triggers_nothing(engine):
    setup_program(engine)
    auto = create(engine, "first", {"type": "first_purchase"})
    with UnitOfWork(engine) as uow:
        buy(uow, "OLD", phone=PHONES[0], at=T0 - 30 * DAY, now=NOW)
    assert entries(engine, auto["id"]) == []


def test_spend_crossing_a_threshold_fires_once_when_it_is_crossed(engine):
    setup_program(engine)
    auto = create(engine, "spend", {"type": "spend_threshold", "amount": "100"})
    purchase(engine, "O1")  # 71.00
    assert entries(engine, auto["id"]) == []
    purchase(engine, "O2", at=T0 + HOUR)  # 142.00: crosses 100
    purchase(engine, "O3", at=T0 + 2 * HOUR)  # 213.00: already above
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"] == "spend:100"


def test_a_customer_who_is_not_a_member_does_not_enter(engine):
    setup_program(engine)
    auto = create(engine, "each-order", {"type": "every_order"})
    purchase(engine, "G1", phone="13900000009")  # not enrolled
    assert entries(engine, auto["id"]) == []


# --- triggers that look at the data -----

def test_birthday_in_n_days_enters_once_a_year(engine):
    club = setup_program(engine)
    first = club["members"][0]
    with UnitOfWork(engine) as uow:
        from patron.customers.protect import profile_values

        uow.c.execute(update(customers).where(customers.c.id == first["customer_id"]).values(
            profile_values(first["customer_id"], {"birthday": dt.date(1990, 3, 5)})))
        uow.commit()
    auto = create(engine, "bday", {"type": "birthday", "days_before": 3})
    run(engine, NOW)  # T0 is 2 March (Shanghai): the 5th is within 3 days
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"] == "birthday:2026" and entry["state"] == "done"
    with UnitOfWork(engine) as uow:  # looked at again later the same year: no second entry
        uow.c.execute(update(automations).values(scanned_at=None))
        uow.commit()
    run(engine, NOW + DAY)
    assert len(entries(engine, auto["id"])) == 1


def test_days_since_last_purchase_enters_once_per_last_purchase(engine):
    setup_program(engine)
    auto = create(engine, "lapse", {"type": "days_since_last_purchase", "days": 30})
    purchase(engine, "O1")
    run(engine, NOW + 10 * DAY)
    assert entries(engine, auto["id"]) == []
    run(engine, NOW + 31 * DAY)
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"].startswith("lapse:")
    # A new purchase, then another lapse: a second entry.
    purchase(engine, "O2", at=T0 + 40 * DAY)
    run(engine, NOW + 75 * DAY)
    assert len(entries(engine, auto["id"])) == 2


def test_tier_up_enters_members_who_moved_up(engine):
    setup_program(engine)
    auto = create(engine, "gold", {"type": "tier_changed", "direction": "up", "tier": "GOLD"})
    big = [{"sku": "BEANS", "category": "coffee", "quantity": "10", "unit_price": "120.00"}]
    purchase(engine, "BIG", lines=big)  # 1,200.00: GOLD
    run(engine, NOW + HOUR)
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"].startswith("tier:") and entry["state"] == "done"


def test_tier_down_enters_members_who_moved_down(engine):
    from patron.loyalty.tables import loyalty_tier_history

    club = setup_program(engine)
    auto = create(engine, "down", {"type": "tier_changed", "direction": "down"})
    with UnitOfWork(engine) as uow:
        uow.c.execute(insert(loyalty_tier_history).values(
            member_id=club["members"][1]["id"], from_tier_id=None, to_tier_id=None,
            reason="downgrade", effective_at=NOW + HOUR, actor="test"))
        uow.commit()
    run(engine, NOW + 2 * HOUR)
    (entry,) = entries(engine, auto["id"])
    assert entry["customer_id"] == club["members"][1]["customer_id"]


def test_lifecycle_stage_change_enters_on_the_transition(engine):
    from patron.analytics.tables import lifecycle_transitions

    club = setup_program(engine)
    auto = create(engine, "risk", {"type": "lifecycle_stage", "to": "churn_risk"})
    with UnitOfWork(engine) as uow:
        for m, stage in ((club["members"][0], "churn_risk"), (club["members"][1], "active")):
            uow.c.execute(insert(lifecycle_transitions).values(
                customer_id=m["customer_id"], from_stage="active", to_stage=stage,
                changed_on=NOW.date(), recorded_at=NOW + HOUR))
        uow.commit()
    run(engine, NOW + 2 * HOUR)
    (entry,) = entries(engine, auto["id"])
    assert entry["customer_id"] == club["members"][0]["customer_id"]


def test_points_expiring_within_n_days(engine):
    setup_program(engine)
    auto = create(engine, "expiring", {"type": "points_expiring", "days": 30})
    purchase(engine, "O1")  # 71 points expiring 12 months later
    run(engine, NOW + 300 * DAY)
    assert entries(engine, auto["id"]) == []
    run(engine, NOW + 340 * DAY)
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"] == "points_expiring:2027-03-02"


def test_coupon_about_to_expire(engine):
    from tests.coupon_factories import give

    club = setup_program(engine)
    auto = create(engine, "coupon-exp", {"type": "coupon_expiring", "days": 3})
    with UnitOfWork(engine) as uow:
        give(uow, club["coupon"]["id"], [club["members"][0]["id"]], "g1", now=NOW)
    run(engine, NOW + 20 * DAY)
    assert entries(engine, auto["id"]) == []
    run(engine, NOW + 28 * DAY)
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"].startswith("coupon:")


def test_a_schedule_fires_each_tick_once_for_every_member(engine):
    setup_program(engine, members=3)
    auto = create(engine, "weekly", {"type": "schedule", "cron": "0 10 * * 1"},
                  reentry_days=0)
    # NOW is Monday 2 March 10:31 (Shanghai): the first tick after activation is 9 March.
    run(engine, NOW + HOUR)
    assert entries(engine, auto["id"]) == []
    monday = NOW + 7 * DAY
    run(engine, monday)
    run(engine, monday + HOUR)
    found = entries(engine, auto["id"])
    assert len(found) == 3 and {e["occurrence"] for e in found} == {
        "cron:2026-03-09T02:00:00+00:00"}
    # Three missed weeks fire once, for the latest tick.
    run(engine, monday + 21 * DAY + HOUR)
    assert len(entries(engine, auto["id"])) == 6


# --- guards, conditions, arms -----

def test_the_reentry_guard_lets_a_customer_in_once_per_period(engine):
    setup_program(engine)
    auto = create(engine, "each-order", {"type": "every_order"}, reentry_days=7)
    purchase(engine, "O1")
    purchase(engine, "O2", at=T0 + HOUR)
    run(engine, NOW + 2 * HOUR)
    states = [(e["state"], e["reason"]) for e in entries(engine, auto["id"])]
    assert states == [("done", None), ("skipped", "reentry_period")]
    purchase(engine, "O3", at=T0 + 8 * DAY)
    run(engine, NOW + 8 * DAY + HOUR)
    assert entries(engine, auto["id"])[-1]["state"] == "done"


def test_once_ever_without_a_reentry_period(engine):
    setup_program(engine)
    auto = create(engine, "each-order", {"type": "every_order"})
    for n in range(3):
        purchase(engine, f"O{n}", at=T0 + n * 40 * DAY)
        run(engine, NOW + n * 40 * DAY + HOUR)
    assert [e["state"] for e in entries(engine, auto["id"])] == ["done", "skipped", "skipped"]


def test_control_group_is_held_out_deterministically_and_recorded(engine):
    setup_program(engine, members=40)
    auto = create(engine, "split", {"type": "schedule", "cron": "0 10 * * *"},
                  control_share="0.25", reentry_days=0,
                  steps=[{"action": "grant_points", "points": 5}])
    run(engine, NOW + DAY)
    found = entries(engine, auto["id"])
    held = [e for e in found if e["state"] == "held_out"]
    done = [e for e in found if e["state"] == "done"]
    assert len(found) == 40 and 3 <= len(held) <= 20 and len(held) + len(done) == 40
    assert {e["arm"] for e in held} == {"control"} and {e["arm"] for e in done} == {"main"}
    with UnitOfWork(engine, readonly=True) as uow:
        recorded = dict(uow.c.execute(select(experiment_assignments.c.customer_id,
                                             experiment_assignments.c.arm)).all())
        assert count(engine, loyalty_operations) == len(done)
    assert recorded == {e["customer_id"]: e["arm"] for e in found}
    # The next day the same customers are held out again.
    run(engine, NOW + 2 * DAY)
    again = {e["customer_id"]: e["arm"] for e in entries(engine, auto["id"])[40:]}
    assert again == recorded


def test_ab_variants_split_the_customers_and_each_arm_runs_its_own_steps(engine):
    setup_program(engine, members=30)
    auto = create(engine, "ab", {"type": "schedule", "cron": "0 10 * * *"},
                  variants=[{"code": "A", "share": "0.5",
                             "steps": [{"action": "grant_points", "points": 5}]},
                            {"code": "B", "share": "0.5",
                             "steps": [{"action": "send_message", "channel": "sms",
                                        "template": "hello"}]}])
    run(engine, NOW + DAY)
    found = entries(engine, auto["id"])
    arms = [e["arm"] for e in found]
    assert set(arms) == {"A", "B"}
    assert count(engine, loyalty_operations) == arms.count("A")
    assert count(engine, messages) == arms.count("B")


def test_a_paused_automation_enters_no_one_and_runs_no_step(engine):
    setup_program(engine)
    auto = create(engine, "each-order", {"type": "every_order"},
                  steps=[{"action": "wait", "days": 1},
                         {"action": "send_message", "channel": "sms", "template": "hello"}])
    purchase(engine, "O1")
    run(engine, NOW + HOUR)
    with UnitOfWork(engine) as uow:
        service.set_status(uow=uow, actor=SYSTEM, code="each-order", status="paused")
    purchase(engine, "O2", at=T0 + HOUR)
    run(engine, NOW + 2 * DAY)
    assert outbox(engine) == [] and count(engine, automation_entries) == 1
    with UnitOfWork(engine) as uow:
        service.set_status(uow=uow, actor=SYSTEM, code="each-order", status="active")
    run(engine, NOW + 2 * DAY)
    assert len(outbox(engine)) == 1
    del auto


# --- actions and waits -----

def test_coupon_then_wait_then_message_naming_the_coupon(engine):
    club = setup_program(engine)
    auto = create(engine, "welcome", {"type": "first_purchase"}, steps=[
        {"action": "issue_coupon", "coupon_template_id": club["coupon"]["id"]},
        {"action": "wait", "days": 1},
        {"action": "send_message", "channel": "sms", "template": "welcome"},
        {"action": "grant_points", "points": 50, "reason": "welcome gift"},
        {"action": "call_webhook", "data": {"campaign": "welcome"}}])
    purchase(engine, "O1")
    run(engine, NOW + HOUR)
    (entry,) = entries(engine, auto["id"])
    assert (entry["state"], entry["step"]) == ("active", 2)
    assert outbox(engine) == [] and count(engine, coupons) == 1
    run(engine, NOW + HOUR + DAY)
    (entry,) = entries(engine, auto["id"])
    assert entry["state"] == "done"
    with UnitOfWork(engine, readonly=True) as uow:
        code = uow.c.execute(select(coupons.c.code)).scalar_one()
        assert member_row(uow, club["members"][0]["id"])["points_available"] == 71 + 50
    (msg,) = outbox(engine)
    assert code in msg["body"] and "2026-04-01" in msg["body"] and "会员01" in msg["body"]
    assert [r["outcome"] for r in step_runs(engine)] == ["done", "waited", "done", "done",
                                                        "done"]


def test_a_webhook_step_is_delivered_through_the_webhook_outbox(engine):
    from patron.webhooks.service import create_endpoint

    setup_program(engine)
    with UnitOfWork(engine) as uow:
        endpoint = create_endpoint(uow=uow, actor=SYSTEM, url="https://crm.example.cn/hook",
                                   events=["automation.step"])
    create(engine, "hook", {"type": "every_order"},
           steps=[{"action": "call_webhook", "data": {"x": 1}}])
    purchase(engine, "O1")
    run(engine, NOW + HOUR)
    with UnitOfWork(engine, readonly=True) as uow:
        (d,) = uow.c.execute(select(webhook_deliveries)).mappings().all()
    assert d["event"] == "automation.step" and d["payload"]["data"] == {"x": 1}
    assert d["endpoint_id"] == endpoint["id"]


def test_a_refused_action_fails_the_entry_with_its_reason_and_writes_nothing_of_the_step(engine):
    from patron.coupons.tables import coupon_templates

    club = setup_program(engine)
    auto = create(engine, "welcome", {"type": "every_order"}, reentry_days=0, steps=[
        {"action": "issue_coupon", "coupon_template_id": club["coupon"]["id"]},
        {"action": "send_message", "channel": "sms", "template": "welcome"}])
    with UnitOfWork(engine) as uow:  # a budget of one coupon
        uow.c.execute(update(coupon_templates).values(total_limit=1))
        uow.commit()
    purchase(engine, "O1")
    purchase(engine, "O2", phone=PHONES[1])
    run(engine, NOW + HOUR)
    states = sorted((e["state"], e["reason"] or "") for e in entries(engine, auto["id"]))
    assert states == [("done", ""), ("failed", "coupon_budget_exhausted")]
    assert count(engine, coupons) == 1 and len(outbox(engine)) == 1
    refused = [r for r in step_runs(engine) if r["outcome"] == "refused"]
    assert len(refused) == 1 and refused[0]["kind"] == "issue_coupon"


def test_a_crash_between_steps_resumes_without_repeating_an_action(engine):
    """A worker that dies mid-step leaves nothing of that step (one transaction); a replayed
    action under the same key does nothing twice."""
    club = setup_program(engine)
    auto = create(engine, "welcome", {"type": "every_order"}, steps=[
        {"action": "issue_coupon", "coupon_template_id": club["coupon"]["id"]},
        {"action": "grant_points", "points": 50},
        {"action": "send_message", "channel": "sms", "template": "welcome"}])
    purchase(engine, "O1")
    from patron.automations import engine as automation_engine

    calls = {"n": 0}
    real = automation_engine.run_action

    class Died(BaseException):
        pass

    def dies_on_points(conn, *, step, **kw):
        out = real(conn, step=step, **kw)  # the points are written in the transaction ...
        if step.action == "grant_points":
            calls["n"] += 1
            raise Died  # ... and the process dies before the commit
        return out

    automation_engine.run_action = dies_on_points
    try:
        with pytest.raises(Died):
            run(engine, NOW + HOUR)
    finally:
        automation_engine.run_action = real
    (entry,) = entries(engine, auto["id"])
    assert (entry["state"], entry["step"]) == ("active", 1)
    with UnitOfWork(engine, readonly=True) as uow:
        assert member_row(uow, club["members"][0]["id"])["points_available"] == 71
    run(engine, NOW + HOUR)
    (entry,) = entries(engine, auto["id"])
    assert entry["state"] == "done" and calls["n"] == 1
    with UnitOfWork(engine, readonly=True) as uow:
        assert member_row(uow, club["members"][0]["id"])["points_available"] == 71 + 50
    assert count(engine, coupons) == 1 and len(outbox(engine)) == 1
    # Every action replayed under its key writes nothing more.
    from patron.automations.actions import run_action
    from patron.automations.engine import definition_of, program_of

    with UnitOfWork(engine) as uow:
        row = dict(uow.c.execute(select(automations)).mappings().one())
        definition = definition_of(uow.c, row["id"], 1)
        program = program_of(uow.c, row["program_id"])
        for i, step in enumerate(definition.steps or []):
            run_action(uow.c, step=step, entry={**entry, "step": i}, automation=row,
                       program=program, now=NOW + HOUR)
        uow.commit()
    with UnitOfWork(engine, readonly=True) as uow:
        assert member_row(uow, club["members"][0]["id"])["points_available"] == 71 + 50
    assert count(engine, coupons) == 1 and len(outbox(engine)) == 1


# --- definitions refused -----

def body(code, trigger, steps=None, **extra):
    return AutomationIn.model_validate({
        "code": code, "name": code, "program": "BB",
        "definition": {"trigger": trigger, "steps": steps or [
            {"action": "send_message", "channel": "sms", "template": "hello"}], **extra}})


def test_a_template_with_an_unknown_variable_is_refused_naming_it(engine):
    from patron.messaging import service as messaging

    setup_program(engine)
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "odd", "variables": ["name", "shoe_size"],
            "body_zh": "{{ name }} {{ shoe_size }}"})
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create(uow=uow, actor=SYSTEM, body=body("xx", {"type": "every_order"}, [
            {"action": "send_message", "channel": "sms", "template": "odd"}]))
    (err,) = exc.value.fields
    assert (err.field, err.reason, err.params["variable"]) == (
        "definition.steps.0.template", "automation_template_variable_unknown", "shoe_size")
    # The coupon's variables without a coupon step before the message.
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create(uow=uow, actor=SYSTEM, body=body("xx", {"type": "every_order"}, [
            {"action": "send_message", "channel": "sms", "template": "welcome"}]))
    assert {e.reason for e in exc.value.fields} == {"automation_template_needs_coupon"}
    assert count(engine, automations) == 0


def test_a_cron_expression_that_never_fires_is_refused(engine):
    setup_program(engine)
    for cron, reason in (("0 0 30 2 *", "automation_cron_never_fires"),
                         ("0 25 * * *", "automation_cron_invalid"),
                         ("every day", "automation_cron_invalid")):
        with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
            service.create(uow=uow, actor=SYSTEM, body=body("xx", {"type": "schedule",
                                                                  "cron": cron}))
        assert [(e.field, e.reason) for e in exc.value.fields] == [
            ("definition.trigger.cron", reason)]


def test_an_audience_above_the_limit_needs_its_size_confirmed(engine, monkeypatch):
    from patron.config import get_settings

    setup_program(engine, members=5)
    monkeypatch.setenv("PATRON_AUDIENCE_CONFIRM_ABOVE", "3")
    get_settings.cache_clear()
    try:
        create(engine, "big", {"type": "every_order"}, activate=False)
        with UnitOfWork(engine) as uow, pytest.raises(Conflict) as exc:
            service.set_status(uow=uow, actor=SYSTEM, code="big", status="active")
        assert exc.value.message == "audience_confirmation_required"
        assert exc.value.params == {"count": 5, "limit": 3}
        with UnitOfWork(engine) as uow:
            out = service.set_status(uow=uow, actor=SYSTEM, code="big", status="active",
                                     confirm_audience=5)
        assert out["status"] == "active"
    finally:
        monkeypatch.delenv("PATRON_AUDIENCE_CONFIRM_ABOVE")
        get_settings.cache_clear()


def test_other_references_are_checked(engine):
    setup_program(engine)
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create(uow=uow, actor=SYSTEM, body=body("xx", {"type": "tier_changed",
                                                              "tier": "DIAMOND"}, [
            {"action": "issue_coupon", "coupon_template_id": 999},
            {"action": "send_message", "channel": "sms", "template": "nope"},
            {"action": "call_webhook", "endpoint_id": 999}]))
    assert sorted(e.reason for e in exc.value.fields) == [
        "automation_coupon_template_unknown", "automation_tier_unknown",
        "automation_webhook_unknown", "message_template_unknown"]


# --- the dry run -----

def test_the_dry_run_shows_who_would_enter_and_what_they_would_receive_writing_nothing(engine):
    club = setup_program(engine, members=4)
    create(engine, "weekly", {"type": "schedule", "cron": "0 10 * * *"}, control_share="0.2",
           steps=[{"action": "issue_coupon", "coupon_template_id": club["coupon"]["id"]},
                  {"action": "send_message", "channel": "sms", "template": "welcome"}])
    before = {t.name: count(engine, t) for t in (automation_entries, automation_step_runs,
                                                 messages, coupons, experiment_assignments,
                                                 automation_reentry)}
    with UnitOfWork(engine, readonly=True) as uow:
        out = service.dry_run(uow.c, actor=SYSTEM, code="weekly", now=NOW + HOUR)
    assert out["candidates"] == 4 and out["would_enter"] + out["held_out"] == 4
    first = out["sample"][0]
    assert first["steps"][0]["coupon"]["template_id"] == club["coupon"]["id"]
    body_text = first["steps"][1]["message"]["body"]
    assert body_text.startswith("会员") and "(coupon code)" in body_text
    assert {t.name: count(engine, t) for t in (automation_entries, automation_step_runs,
                                               messages, coupons, experiment_assignments,
                                               automation_reentry)} == before


def test_a_dry_run_of_an_unsaved_definition_over_todays_orders(engine):
    setup_program(engine)
    purchase(engine, "O1")
    with UnitOfWork(engine, readonly=True) as uow:
        out = service.dry_run(uow.c, actor=SYSTEM, now=NOW + HOUR,
                              body=body("draft", {"type": "first_purchase"}))
    assert out["would_enter"] == 1 and out["sample"][0]["occurrence"] == "first_purchase"
    assert out["sample"][0]["steps"][0]["message"]["body"].startswith("会员01")


# --- segments: conditions and 'joined a segment' ---------------------------------------------

RICH = {"match": "all", "conditions": [{"type": "points", "op": "gte", "value": 100}]}


def test_conditions_are_a_segment_definition_checked_when_the_entry_is_admitted(engine):
    setup_program(engine)
    auto = create(engine, "rich-orders", {"type": "every_order"}, reentry_days=0,
                  conditions=RICH)
    purchase(engine, "A1")                       # 71 points: not yet
    purchase(engine, "A2", at=T0 + HOUR)         # 142 points when admitted
    run(engine, NOW + 2 * HOUR)
    states = [(e["state"], e["reason"]) for e in entries(engine, auto["id"])]
    assert states == [("done", None), ("done", None)]  # both admitted after the second order
    purchase(engine, "B1", phone=PHONES[1], at=T0 + 3 * HOUR)
    run(engine, NOW + 4 * HOUR)
    last = entries(engine, auto["id"])[-1]
    assert (last["state"], last["reason"]) == ("not_eligible", "conditions_not_met")


def test_joined_segment_enters_customers_who_join_after_the_first_look(engine):
    setup_program(engine)
    purchase(engine, "A1")
    purchase(engine, "A2", at=T0 + HOUR)          # member 1: 142 points before activation
    auto = create(engine, "joined", {"type": "joined_segment", "segment": RICH},
                  now=NOW + 2 * HOUR)
    run(engine, NOW + 2 * HOUR)                   # the first look: the baseline, nobody enters
    assert entries(engine, auto["id"]) == []
    purchase(engine, "B1", phone=PHONES[1], at=T0 + 3 * HOUR)
    purchase(engine, "B2", phone=PHONES[1], at=T0 + 4 * HOUR)
    run(engine, NOW + 5 * HOUR)
    (entry,) = entries(engine, auto["id"])
    assert entry["occurrence"].startswith("joined:") and entry["state"] == "done"
    run(engine, NOW + 6 * HOUR)                   # still in the segment: no second entry
    assert len(entries(engine, auto["id"])) == 1


def test_a_bad_segment_definition_is_refused_with_its_path(engine):
    setup_program(engine)
    bad = {"match": "all", "conditions": [{"type": "points", "op": "gte", "value": "lots"}]}
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create(uow=uow, actor=SYSTEM, body=body("xx", {"type": "every_order"},
                                                        conditions=bad))
    assert exc.value.fields and all(e.field.startswith("definition.conditions")
                                    for e in exc.value.fields)
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create(uow=uow, actor=SYSTEM, body=body("xx", {"type": "joined_segment",
                                                               "segment": bad}))
    assert all(e.field.startswith("definition.trigger.segment") for e in exc.value.fields)
