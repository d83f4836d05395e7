"""Automation rules without a database: arms, cron schedules, message variables, the flow."""

import datetime as dt
from collections import Counter
from decimal import Decimal

import pytest
from pydantic import ValidationError

from patron.automations import model
from patron.automations.schemas import Definition

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)  # Wednesday 10:00 in Shanghai


def test_arms_are_deterministic_per_customer_and_follow_the_shares():
    arms = [("A", Decimal("0.5")), ("B", Decimal("0.5"))]
    picks = [model.choose_arm(model.bucket("automation", 7, c), Decimal("0.2"), arms)
             for c in range(1, 20001)]
    again = [model.choose_arm(model.bucket("automation", 7, c), Decimal("0.2"), arms)
             for c in range(1, 20001)]
    assert picks == again
    share = Counter(picks)
    assert abs(share["control"] / 20000 - 0.2) < 0.015
    assert abs(share["A"] / 20000 - 0.4) < 0.015 and abs(share["B"] / 20000 - 0.4) < 0.015
    # Another automation splits the same customers differently.
    other = [model.choose_arm(model.bucket("automation", 8, c), Decimal("0.2"), arms)
             for c in range(1, 2001)]
    assert other != picks[:2000]
    assert model.choose_arm(0, Decimal(0), arms) == "A"
    assert model.choose_arm(model.BUCKETS - 1, Decimal(0), arms) == "B"


def test_cron_expressions_that_never_fire_or_do_not_parse_are_refused():
    assert model.cron_errors("0 10 * * 1", now=NOW, tz="Asia/Shanghai") == []
    assert model.cron_errors("0 0 29 2 *", now=NOW, tz="Asia/Shanghai") == []  # leap years
    for expr, reason in (("0 0 30 2 *", "automation_cron_never_fires"),
                         ("0 0 31 4 *", "automation_cron_never_fires"),
                         ("61 10 * * *", "automation_cron_invalid"),
                         ("0 10 * *", "automation_cron_invalid"),
                         ("@reboot x y z w", "automation_cron_invalid")):
        (err,) = model.cron_errors(expr, now=NOW, tz="Asia/Shanghai")
        assert err.reason == reason, expr


def test_a_schedule_fires_its_latest_missed_tick_once_in_the_programs_time_zone():
    tz = "Asia/Shanghai"
    assert model.next_tick("0 10 * * *", NOW, tz) == NOW + dt.timedelta(days=1)
    assert model.due_tick("0 10 * * *", last=None, since=NOW - dt.timedelta(days=3), now=NOW,
                          tz=tz) == NOW
    assert model.due_tick("0 10 * * *", last=NOW, since=NOW, now=NOW + dt.timedelta(hours=5),
                          tz=tz) is None
    later = NOW + dt.timedelta(days=4, hours=1)
    assert model.due_tick("0 10 * * *", last=NOW, since=NOW, now=later,
                          tz=tz) == NOW + dt.timedelta(days=4)


def definition(steps, **extra):
    return Definition.model_validate({"trigger": {"type": "every_order"}, "steps": steps,
                                      **extra})


def test_message_variables_must_be_ones_patron_fills_in_and_coupons_come_first():
    d = definition([{"action": "send_message", "channel": "sms", "template": "tt"},
                    {"action": "issue_coupon", "coupon_template_id": 1},
                    {"action": "send_message", "channel": "sms", "template": "uu"}])
    errors = model.message_variable_errors(d, {"tt": ["name", "coupon_code"],
                                               "uu": ["coupon_code", "colour"]})
    assert [(e.field, e.reason, e.params["variable"]) for e in errors] == [
        ("definition.steps.0.template", "automation_template_needs_coupon", "coupon_code"),
        ("definition.steps.2.template", "automation_template_variable_unknown", "colour")]


def test_definitions_refuse_steps_and_variants_together_shares_not_adding_up_and_empty_waits():
    with pytest.raises(ValidationError):
        Definition.model_validate({"trigger": {"type": "every_order"}})
    with pytest.raises(ValidationError):
        definition([{"action": "wait"}])
    with pytest.raises(ValidationError):
        Definition.model_validate({"trigger": {"type": "every_order"}, "variants": [
            {"code": "A", "share": "0.6", "steps": [{"action": "wait", "days": 1}]},
            {"code": "B", "share": "0.6", "steps": [{"action": "wait", "days": 1}]}]})
    with pytest.raises(ValidationError):
        definition([{"action": "wait", "days": 1}], control_share="0.95")


def test_the_flow_reads_top_to_bottom():
    d = definition([{"action": "issue_coupon", "coupon_template_id": 3},
                    {"action": "wait", "days": 2, "hours": 4},
                    {"action": "send_message", "channel": "sms", "template": "welcome"},
                    {"action": "grant_points", "points": 50, "reason": "welcome"}],
                   reentry_days=30, control_share="0.1")
    flow = model.flow(d)
    assert flow["trigger"] == "When a customer places an order"
    assert flow["guard"] == "at most once every 30 days per customer"
    assert flow["arms"] == [{"code": "main", "share": "1", "steps": [
        "Issue a coupon of template 3", "Wait 2 days 4 hours", "Send 'welcome' by sms",
        "Grant 50 points (welcome)"]}]
