"""Automation rules, plain Python: assigning a customer to an arm (control group, variants),
cron schedules, the variables a message step can use, waits, and the flow as readable text."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from patron.automations.schemas import Definition, Wait
from patron.errors import FieldError

CONTROL = "control"
BUCKETS = 1_000_000
# A cron expression must fire within this horizon to be accepted ("0 0 30 2 *" never does).
CRON_HORIZON = dt.timedelta(days=366 * 5)
# The variables a message step may use: every template variable must be one of these.
CUSTOMER_VARIABLES = ("name", "member_code", "program", "tier", "points", "automation")
COUPON_VARIABLES = ("coupon_code", "coupon_expires_on", "coupon_value")
KNOWN_VARIABLES = CUSTOMER_VARIABLES + COUPON_VARIABLES
# An order older than this when it is recorded (an import of history) triggers nothing.
ORDER_TRIGGER_MAX_AGE = dt.timedelta(days=7)


def bucket(source: str, source_id: int, customer_id: int) -> int:
    """The customer's position in [0, BUCKETS) for one automation or campaign: a hash, so the
    same customer always lands in the same arm of the same source and differently elsewhere."""
    digest = hashlib.sha256(f"{source}:{source_id}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose_arm(position: int, control_share: Decimal,
               arms: Sequence[tuple[str, Decimal]]) -> str:
    """The control group takes the first ``control_share`` of the buckets; the arms share the
    rest in order of their shares."""
    edge = Decimal(position) / BUCKETS
    if edge < control_share:
        return CONTROL
    rest = (edge - control_share) / (1 - control_share)
    upto = Decimal(0)
    for code, share in arms:
        upto += share
        if rest < upto:
            return code
    return arms[-1][0]


def shares_json(control_share: Decimal, arms: Sequence[tuple[str, Decimal]]) -> dict[str, str]:
    out = {CONTROL: str(control_share)}
    out.update({code: str(share * (1 - control_share)) for code, share in arms})
    return out


# --- cron -----------------------------------------------------------------------------------------

def cron_errors(expression: str, *, now: dt.datetime, tz: str,
                field: str = "definition.trigger.cron") -> list[FieldError]:
    """A cron expression that does not parse, or never fires within five years (30 February),
    is refused with the reason."""
    if len(expression.split()) != 5:
        return [FieldError(field, "automation_cron_invalid", {"value": expression})]
    try:
        nxt = next_tick(expression, now, tz)
    except (CroniterBadCronError, ValueError, KeyError):
        return [FieldError(field, "automation_cron_invalid", {"value": expression})]
    if nxt is None or nxt - now > CRON_HORIZON:
        return [FieldError(field, "automation_cron_never_fires", {"value": expression})]
    return []


def next_tick(expression: str, after: dt.datetime, tz: str) -> dt.datetime | None:
    """The first tick strictly after ``after`` (UTC), reading the expression in ``tz``; None
    when it never comes."""
    local = after.astimezone(ZoneInfo(tz))
    try:
        it = croniter(expression, local, max_years_between_matches=6)
        nxt = it.get_next(dt.datetime)
    except CroniterBadDateError:
        return None
    return nxt.astimezone(dt.UTC)


def due_tick(expression: str, *, last: dt.datetime | None, since: dt.datetime,
             now: dt.datetime, tz: str) -> dt.datetime | None:
    """The latest tick in (last or since, now], or None: a schedule that missed several ticks
    (the server was down) fires once, for the latest, rather than once per missed tick."""
    start = last or since
    base = (now + dt.timedelta(seconds=1)).astimezone(ZoneInfo(tz))
    try:
        latest = croniter(expression, base, max_years_between_matches=6).get_prev(dt.datetime)
    except CroniterBadDateError:
        return None
    latest = latest.astimezone(dt.UTC)
    return latest if start < latest <= now else None


# --- steps ----------------------------------------------------------------------------------------

def wait_of(step: Wait) -> dt.timedelta:
    return dt.timedelta(days=step.days, hours=step.hours, minutes=step.minutes)


def message_variable_errors(definition: Definition, template_variables: dict[str, Sequence[str]]
                            ) -> list[FieldError]:
    """Every variable of every message step's template must be one Patron fills in; coupon
    variables need an earlier coupon step in the same arm."""
    errors: list[FieldError] = []
    for prefix, steps in _step_lists(definition):
        coupon_before = False
        for i, step in enumerate(steps):
            if step.action == "issue_coupon":
                coupon_before = True
            if step.action != "send_message":
                continue
            for name in template_variables.get(step.template, ()):
                if name not in KNOWN_VARIABLES:
                    errors.append(FieldError(f"{prefix}.{i}.template",
                                             "automation_template_variable_unknown",
                                             {"template": step.template, "variable": name,
                                              "known": ", ".join(KNOWN_VARIABLES)}))
                elif name in COUPON_VARIABLES and not coupon_before:
                    errors.append(FieldError(f"{prefix}.{i}.template",
                                             "automation_template_needs_coupon",
                                             {"template": step.template, "variable": name}))
    return errors


def _step_lists(definition: Definition) -> list[tuple[str, list[Any]]]:
    if definition.variants is not None:
        return [(f"definition.variants.{n}.steps", list(v.steps))
                for n, v in enumerate(definition.variants)]
    return [("definition.steps", list(definition.steps or []))]


def all_steps(definition: Definition) -> list[tuple[str, Any]]:
    return [(f"{prefix}.{i}", step) for prefix, steps in _step_lists(definition)
            for i, step in enumerate(steps)]


# --- the flow as text -----------------------------------------------------------------------------

def describe_trigger(trigger: Any, lang: str = "en") -> str:
    t = trigger.type
    if t == "spend_threshold":
        return _t(f"automation.trigger.{t}", lang, amount=trigger.amount)
    if t == "tier_changed":
        key = f"automation.trigger.tier_{trigger.direction}" + ("_to" if trigger.tier else "")
        return _t(key, lang, tier=trigger.tier)
    if t == "birthday":
        return (_t("automation.trigger.birthday_today", lang) if trigger.days_before == 0
                else _t("automation.trigger.birthday", lang, days=trigger.days_before))
    if t == "days_since_last_purchase":
        return _t(f"automation.trigger.{t}", lang, days=trigger.days)
    if t == "lifecycle_stage":
        key = "automation.trigger.lifecycle_stage" + ("_from" if trigger.from_ else "")
        return _t(key, lang, to=trigger.to, from_=trigger.from_)
    if t == "points_expiring":
        return _t(f"automation.trigger.{t}", lang, days=trigger.days,
                  min_points=trigger.min_points)
    if t == "coupon_expiring":
        return _t(f"automation.trigger.{t}", lang, days=trigger.days)
    if t == "schedule":
        return _t(f"automation.trigger.{t}", lang, cron=trigger.cron)
    return _t(f"automation.trigger.{t}", lang)


def describe_step(step: Any, lang: str = "en") -> str:
    a = step.action
    if a == "wait":
        parts = [_t(f"automation.step.{unit}", lang, n=n)
                 for n, unit in ((step.days, "days"), (step.hours, "hours"),
                                 (step.minutes, "minutes")) if n]
        return _t("automation.step.wait", lang, duration=" ".join(parts))
    if a == "issue_coupon":
        return _t("automation.step.issue_coupon", lang, id=step.coupon_template_id)
    if a == "grant_points":
        return _t("automation.step.grant_points", lang, points=step.points, reason=step.reason)
    if a in ("add_tag", "remove_tag"):
        return _t(f"automation.step.{a}", lang, tag=step.tag)
    if a == "send_message":
        return _t("automation.step.send_message", lang, template=step.template,
                  channel=step.channel)
    if step.endpoint_id:
        return _t("automation.step.call_webhook_endpoint", lang, id=step.endpoint_id)
    return _t("automation.step.call_webhook", lang)


def _t(key: str, lang: str, **params: Any) -> str:
    from patron.i18n import t

    return t(key, lang, **params)


def flow(definition: Definition, lang: str = "en") -> dict[str, Any]:
    """The definition as a flow a person reads top to bottom: trigger, conditions, guard,
    control group, then each arm's steps (in ``lang``)."""
    arms = definition.arms()
    return {
        "trigger": describe_trigger(definition.trigger, lang),
        "conditions": _t("automation.conditions.segment" if definition.conditions
                         else "automation.conditions.all", lang),
        "guard": (_t("automation.guard.once", lang) if definition.reentry_days is None
                  else _t("automation.guard.every", lang, days=definition.reentry_days)),
        "control_share": str(definition.control_share),
        "arms": [{"code": code, "share": str(share),
                  "steps": [describe_step(s, lang) for s in steps]}
                 for code, share, steps in arms],
    }
