"""Automation use cases: define, change (a new version), activate (with the audience confirmed
when large), pause, list, show as a flow with its figures, dry-run, list entries.

Everything that needs the database is checked before anything is written: the program, the
coupon templates, the message templates and every variable they use, the segment definitions,
the cron expression (refused when it never fires), the webhook endpoint.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from patron.automations import audience, model, triggers
from patron.automations.engine import definition_of, guard_would_pass, program_of
from patron.automations.schemas import (
    ORDER_TRIGGERS,
    SCAN_TRIGGERS,
    AutomationIn,
    AutomationUpdate,
    Definition,
)
from patron.automations.tables import (
    automation_entries,
    automation_step_runs,
    automation_versions,
    automations,
    experiment_assignments,
)
from patron.config import get_settings
from patron.coupons.tables import coupon_templates
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.loyalty.service import _program, need, retrying
from patron.security import audit
from patron.security.model import Actor

ENTRY_STATES = ("triggered", "active", "done", "failed", "not_eligible", "skipped", "held_out")
DRY_RUN_SAMPLE = 20


# --- checking a definition ------------------------------------------------------------------------

def definition_errors(conn: Connection, definition: Definition, program: dict[str, Any],
                      now: dt.datetime) -> list[FieldError]:
    """What the database says is wrong with a definition (its shape is already checked)."""
    from patron.messaging.service import load_template
    from patron.webhooks.tables import webhook_endpoints

    errors: list[FieldError] = []
    trigger = definition.trigger
    if trigger.type == "schedule":
        errors += model.cron_errors(trigger.cron, now=now, tz=program["timezone"])
    if trigger.type == "joined_segment":
        errors += audience.definition_errors(conn, trigger.segment,
                                             "definition.trigger.segment")
    if trigger.type == "tier_changed" and trigger.tier is not None:
        from patron.loyalty.tables import loyalty_tiers

        if conn.execute(select(loyalty_tiers.c.id).where(
                loyalty_tiers.c.program_id == program["id"],
                loyalty_tiers.c.code == trigger.tier)).first() is None:
            errors.append(FieldError("definition.trigger.tier", "automation_tier_unknown",
                                     {"value": trigger.tier}))
    if trigger.type == "coupon_expiring" and trigger.coupon_template_id is not None:
        errors += _coupon_template_errors(conn, trigger.coupon_template_id, program,
                                          "definition.trigger.coupon_template_id")
    errors += audience.definition_errors(conn, definition.conditions, "definition.conditions")
    variables: dict[str, tuple[str, ...]] = {}
    for path, step in model.all_steps(definition):
        if step.action == "issue_coupon":
            errors += _coupon_template_errors(conn, step.coupon_template_id, program,
                                              f"{path}.coupon_template_id")
        elif step.action == "send_message":
            tpl = load_template(conn, step.template)
            if tpl is None:
                errors.append(FieldError(f"{path}.template", "message_template_unknown",
                                         {"value": step.template}))
            else:
                variables[step.template] = tuple(tpl.variables)
        elif step.action == "call_webhook" and step.endpoint_id is not None:
            if conn.execute(select(webhook_endpoints.c.id).where(
                    webhook_endpoints.c.id == step.endpoint_id)).first() is None:
                errors.append(FieldError(f"{path}.endpoint_id", "automation_webhook_unknown",
                                         {"value": step.endpoint_id}))
        elif step.action in ("add_tag", "remove_tag"):
            errors += _tag_errors(conn, step.tag, f"{path}.tag")
    errors += model.message_variable_errors(definition, variables)
    return errors


def _tag_errors(conn: Connection, code: str, field: str) -> list[FieldError]:
    """A tag step names a manual tag that exists (rule tags are kept by Patron itself)."""
    from patron.tags.tables import tags

    kind = conn.execute(select(tags.c.kind).where(tags.c.code == code)).scalar()
    if kind is None:
        return [FieldError(field, "automation_tag_unknown", {"value": code})]
    if kind == "rule":
        return [FieldError(field, "automation_tag_is_rule", {"value": code})]
    return []


def _coupon_template_errors(conn: Connection, template_id: int, program: dict[str, Any],
                            field: str) -> list[FieldError]:
    row = conn.execute(select(coupon_templates.c.program_id, coupon_templates.c.status).where(
        coupon_templates.c.id == template_id)).first()
    if row is None or int(row.program_id) != int(program["id"]):
        return [FieldError(field, "automation_coupon_template_unknown", {"value": template_id})]
    if row.status != "active":
        return [FieldError(field, "automation_coupon_template_inactive", {"value": template_id})]
    return []


def _check(conn: Connection, definition: Definition, program: dict[str, Any],
           now: dt.datetime) -> None:
    errors = definition_errors(conn, definition, program, now)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)


# --- views ----------------------------------------------------------------------------------------

def _row(conn: Connection, code: str, *, lock: bool = False) -> dict[str, Any]:
    q = select(automations).where(automations.c.code == code)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("automation_not_found", params={"code": code})
    return dict(row)


def entry_counts(conn: Connection, automation_id: int) -> dict[str, int]:
    e = automation_entries.c
    counts = dict.fromkeys(ENTRY_STATES, 0)
    for state, n in conn.execute(select(e.state, func.count()).where(
            e.automation_id == automation_id).group_by(e.state)):
        counts[state] = int(n)
    return counts


def arm_counts(conn: Connection, source: str, source_id: int) -> dict[str, int]:
    x = experiment_assignments.c
    return {arm: int(n) for arm, n in conn.execute(select(x.arm, func.count()).where(
        x.source == source, x.source_id == source_id).group_by(x.arm).order_by(x.arm))}


def automation_out(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    definition = definition_of(conn, int(row["id"]), int(row["version"]))
    program = program_of(conn, int(row["program_id"]))
    return {"id": int(row["id"]), "code": row["code"], "name": row["name"],
            "program": program["code"], "status": row["status"], "version": int(row["version"]),
            "trigger_type": row["trigger_type"],
            "definition": definition.model_dump(mode="json", by_alias=True),
            "flow": model.flow(definition), "activated_at": row["activated_at"],
            "scanned_at": row["scanned_at"], "last_tick_at": row["last_tick_at"],
            "entries": entry_counts(conn, int(row["id"])),
            "arms": arm_counts(conn, "automation", int(row["id"])),
            "updated_at": row["updated_at"], "updated_by": row["updated_by"]}


def list_automations(conn: Connection, *, actor: Actor, status: str | None = None
                     ) -> list[dict[str, Any]]:
    need(actor, "automations.read")
    q = select(automations).order_by(automations.c.code)
    if status is not None:
        q = q.where(automations.c.status == status)
    return [automation_out(conn, dict(r)) for r in conn.execute(q).mappings()]


def get_automation(conn: Connection, *, actor: Actor, code: str) -> dict[str, Any]:
    need(actor, "automations.read")
    return automation_out(conn, _row(conn, code))


# --- writing --------------------------------------------------------------------------------------

def create(*, uow: UnitOfWork, actor: Actor, body: AutomationIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """A new automation, in draft: nothing enters it until it is activated."""
    need(actor, "automations.manage")
    at = now or utcnow()

    def work() -> dict[str, Any]:
        conn = uow.c
        program = _program(conn, body.program)
        _check(conn, body.definition, program, at)
        if conn.execute(select(automations.c.id).where(
                automations.c.code == body.code)).first() is not None:
            raise Conflict("automation_exists", params={"code": body.code})
        aid = int(conn.execute(insert(automations).values(
            code=body.code, name=body.name, program_id=program["id"], status="draft",
            version=1, trigger_type=body.definition.trigger.type, created_at=at,
            updated_at=at, updated_by=actor.name).returning(automations.c.id)).scalar_one())
        _add_version(conn, aid, 1, body.definition, actor, at)
        audit.record(conn, actor, "automation.created", entity="automation", entity_id=aid,
                     details={"code": body.code, "trigger": body.definition.trigger.type})
        out = automation_out(conn, _row(conn, body.code))
        uow.commit()
        return out

    return retrying(uow, work)


def _add_version(conn: Connection, automation_id: int, version: int, definition: Definition,
                 actor: Actor, at: dt.datetime) -> None:
    conn.execute(insert(automation_versions).values(
        automation_id=automation_id, version=version,
        definition=definition.model_dump(mode="json", by_alias=True), created_at=at,
        created_by=actor.name))


def update_automation(*, uow: UnitOfWork, actor: Actor, code: str, body: AutomationUpdate,
                      now: dt.datetime | None = None) -> dict[str, Any]:
    """A changed definition is a new version: new entries follow it, entries under way finish
    the version they entered with."""
    need(actor, "automations.manage")
    at = now or utcnow()
    conn = uow.c
    row = _row(conn, code, lock=True)
    if row["status"] == "archived":
        raise Conflict("automation_archived", params={"code": code})
    values: dict[str, Any] = {}
    if body.name is not None and body.name != row["name"]:
        values["name"] = body.name
    if body.definition is not None:
        program = program_of(conn, int(row["program_id"]))
        _check(conn, body.definition, program, at)
        current = definition_of(conn, int(row["id"]), int(row["version"]))
        if body.definition != current:
            if body.definition.trigger.type != current.trigger.type and row["status"] == "active":
                raise Conflict("automation_trigger_change_while_active", params={"code": code})
            version = int(row["version"]) + 1
            _add_version(conn, int(row["id"]), version, body.definition, actor, at)
            values.update(version=version, trigger_type=body.definition.trigger.type)
    if values:
        conn.execute(update(automations).where(automations.c.id == row["id"]).values(
            **values, updated_at=at, updated_by=actor.name))
        audit.record(conn, actor, "automation.updated", entity="automation",
                     entity_id=row["id"], details={"code": code, "fields": sorted(values)})
    out = automation_out(conn, _row(conn, code))
    uow.commit()
    return out


def audience_size(conn: Connection, program_id: int, definition: Definition,
                  now: dt.datetime | None = None) -> int:
    """How many customers the automation could reach: the program's active members matching
    its conditions (and its segment, for a 'joined a segment' trigger)."""
    return audience.count(conn, program_id, definition.conditions, as_of=now)


def confirm_large_audience(size: int, confirm: int | None) -> None:
    """Above PATRON_AUDIENCE_CONFIRM_ABOVE customers, the caller must repeat the size it was
    shown: a 409 names it otherwise, before anything is sent."""
    limit = get_settings().audience_confirm_above
    if size > limit and confirm != size:
        raise Conflict("audience_confirmation_required",
                       params={"count": size, "limit": limit})


def set_status(*, uow: UnitOfWork, actor: Actor, code: str, status: str,
               confirm_audience: int | None = None, now: dt.datetime | None = None
               ) -> dict[str, Any]:
    """Activate (entries start; a large audience must be confirmed), pause (nothing enters,
    no step runs; entries wait) or archive (for good)."""
    need(actor, "automations.manage")
    at = now or utcnow()
    conn = uow.c
    row = _row(conn, code, lock=True)
    if row["status"] == "archived":
        raise Conflict("automation_archived", params={"code": code})
    if row["status"] == status:
        out = automation_out(conn, row)
        uow.rollback()
        return out
    values: dict[str, Any] = {"status": status, "updated_at": at, "updated_by": actor.name}
    details: dict[str, Any] = {"code": code, "from": row["status"], "to": status}
    if status == "active":
        definition = definition_of(conn, int(row["id"]), int(row["version"]))
        program = program_of(conn, int(row["program_id"]))
        _check(conn, definition, program, at)  # templates or coupons may have changed since
        size = audience_size(conn, int(row["program_id"]), definition, at)
        confirm_large_audience(size, confirm_audience)
        details["audience"] = size
        if row["activated_at"] is None:
            values["activated_at"] = at
    conn.execute(update(automations).where(automations.c.id == row["id"]).values(**values))
    action = {"active": "activated", "paused": "paused"}.get(status, "archived")
    audit.record(conn, actor, f"automation.{action}", entity="automation",
                 entity_id=row["id"], details=details)
    out = automation_out(conn, _row(conn, code))
    uow.commit()
    return out


def list_entries(conn: Connection, *, actor: Actor, code: str, state: str | None = None,
                 customer_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    need(actor, "automations.read")
    row = _row(conn, code)
    e, r = automation_entries.c, automation_step_runs.c
    q = select(automation_entries).where(e.automation_id == row["id"]).order_by(
        e.id.desc()).limit(min(max(limit, 1), 500))
    if state is not None:
        if state not in ENTRY_STATES:
            raise ValidationFailed("validation_failed", fields=[FieldError(
                "state", "literal_error", {"expected": ", ".join(ENTRY_STATES)})])
        q = q.where(e.state == state)
    if customer_id is not None:
        q = q.where(e.customer_id == customer_id)
    entries = [dict(x) for x in conn.execute(q).mappings()]
    runs: dict[int, list[dict[str, Any]]] = {}
    if entries:
        for x in conn.execute(select(automation_step_runs).where(
                r.entry_id.in_([en["id"] for en in entries])).order_by(r.entry_id, r.step)
                ).mappings():
            runs.setdefault(int(x["entry_id"]), []).append(
                {"step": x["step"], "kind": x["kind"], "outcome": x["outcome"],
                 "result": x["result"], "at": x["at"]})
    return [{**en, "steps": runs.get(int(en["id"]), [])} for en in entries]


# --- dry run --------------------------------------------------------------------------------------

def dry_run(conn: Connection, *, actor: Actor, code: str | None = None,
            body: AutomationIn | None = None, now: dt.datetime | None = None,
            sample: int = DRY_RUN_SAMPLE) -> dict[str, Any]:
    """Who would enter today and what they would receive, writing nothing: the trigger's
    candidates as of now (for order triggers: today's orders), less occurrences already
    entered, the conditions and the re-entry guard; each one's arm; for a sample, every step
    with its messages rendered and its coupons described."""
    need(actor, "automations.read")
    at = now or utcnow()
    if body is not None:
        program = _program(conn, body.program)
        definition = body.definition
        _check(conn, definition, program, at)
        auto: dict[str, Any] = {"id": 0, "code": body.code, "name": body.name,
                                "activated_at": None, "scanned_at": None, "version": 1}
    else:
        assert code is not None
        auto = _row(conn, code)
        definition = definition_of(conn, int(auto["id"]), int(auto["version"]))
        program = program_of(conn, int(auto["program_id"]))
    candidates = _candidates_today(conn, auto, definition, program, at)
    e = automation_entries.c
    entered = set()
    if auto["id"]:
        entered = {(int(r[0]), r[1]) for r in conn.execute(select(e.customer_id, e.occurrence)
                                                           .where(e.automation_id == auto["id"]))}
    outcome: Counter[str] = Counter()
    would: list[tuple[int, int, str, str]] = []
    seen: set[int] = set()
    arms = [(c, s) for c, s, _ in definition.arms()]
    for cid, mid, occurrence in candidates:
        if (cid, occurrence) in entered or cid in seen:
            outcome["already_entered"] += 1
            continue
        seen.add(cid)
        if not audience.contains(conn, definition.conditions, cid, as_of=at):
            outcome["not_eligible"] += 1
            continue
        if auto["id"] and not guard_would_pass(conn, int(auto["id"]), cid,
                                               definition.reentry_days, at):
            outcome["skipped"] += 1
            continue
        arm = model.choose_arm(model.bucket("automation", int(auto["id"]), cid),
                               definition.control_share, arms)
        outcome["held_out" if arm == model.CONTROL else "would_enter"] += 1
        would.append((cid, mid, occurrence, arm))
    by_arm = Counter(arm for *_, arm in would)
    preview = [_preview(conn, auto, definition, program, cid, mid, occurrence, arm)
               for cid, mid, occurrence, arm in would[:sample]]
    return {"automation": auto["code"], "as_of": at, "candidates": len(candidates),
            "would_enter": outcome["would_enter"], "held_out": outcome["held_out"],
            "not_eligible": outcome["not_eligible"], "skipped_reentry": outcome["skipped"],
            "already_entered": outcome["already_entered"], "arms": dict(sorted(by_arm.items())),
            "flow": model.flow(definition), "sample": preview}


def _candidates_today(conn: Connection, auto: dict[str, Any], definition: Definition,
                      program: dict[str, Any], at: dt.datetime) -> list[triggers.Candidate]:
    t = definition.trigger.type
    program_id = int(program["id"])
    if t in SCAN_TRIGGERS:
        if t == "joined_segment":
            # Never looked at: the first look records the baseline and enters nobody.
            return triggers.joined_segment(conn, automation=auto,
                                           segment=definition.trigger.segment,  # type: ignore[union-attr]
                                           program_id=program_id, now=at, write=False)
        since = auto["activated_at"] or _local_midnight(at, program["timezone"])
        return triggers.scan(conn, automation={**auto, "activated_at": since},
                             definition=definition, program=program, now=at)
    if t == "schedule":
        tick = model.next_tick(definition.trigger.cron,  # type: ignore[union-attr]
                               _local_midnight(at, program["timezone"]) - dt.timedelta(seconds=1),
                               program["timezone"])
        if tick is None or tick.astimezone(dt.UTC).date() > at.date() + dt.timedelta(days=1):
            return []
        return [(int(r[0]), int(r[1]), f"cron:{tick.isoformat()}") for r in conn.execute(
            audience.matching(conn, program_id, definition.conditions, as_of=at))]
    assert t in ORDER_TRIGGERS
    return _todays_order_candidates(conn, definition, program, at)


def _local_midnight(at: dt.datetime, tz: str) -> dt.datetime:
    from zoneinfo import ZoneInfo

    local = at.astimezone(ZoneInfo(tz))
    return dt.datetime.combine(local.date(), dt.time(), ZoneInfo(tz)).astimezone(dt.UTC)


def _todays_order_candidates(conn: Connection, definition: Definition,
                             program: dict[str, Any], at: dt.datetime
                             ) -> list[triggers.Candidate]:
    """Order triggers over today's orders, as the order hook would have seen them."""
    from patron.orders.tables import orders

    o = orders.c
    start = _local_midnight(at, program["timezone"])
    rows = conn.execute(select(o.id, o.customer_id, o.purchased_at, o.total_amount).where(
        o.purchased_at >= start, o.purchased_at <= at, o.customer_id.is_not(None))
        .order_by(o.purchased_at, o.id)).all()

    class _Order:
        def __init__(self, r: Any) -> None:
            self.order_id, self.customer_id = int(r.id), int(r.customer_id)
            self.purchased_at, self.total = r.purchased_at, r.total_amount

    return triggers.for_orders(conn, trigger_type=definition.trigger.type, definition=definition,
                               program_id=int(program["id"]), orders=[_Order(r) for r in rows],
                               now=at)


def _preview(conn: Connection, auto: dict[str, Any], definition: Definition,
             program: dict[str, Any], customer_id: int, member_id: int, occurrence: str,
             arm: str) -> dict[str, Any]:
    from patron.automations.actions import context
    from patron.messaging import model as messaging_model
    from patron.messaging.service import customer_language, load_template

    steps_out: list[dict[str, Any]] = []
    coupon: dict[str, Any] | None = None
    for step in definition.steps_of(arm):
        item: dict[str, Any] = {"action": step.action, "description": model.describe_step(step)}
        if step.action == "issue_coupon":
            tpl = conn.execute(select(coupon_templates).where(
                coupon_templates.c.id == step.coupon_template_id)).mappings().one()
            coupon = {"coupon_code": "(coupon code)", "coupon_expires_on": "(expiry)",
                      "coupon_value": ""}
            item["coupon"] = {"template_id": int(tpl["id"]), "name": tpl.get("name"),
                              "code": tpl.get("code")}
        elif step.action == "send_message":
            tpl = load_template(conn, step.template)
            assert tpl is not None
            ctx = context(conn, customer_id=customer_id, member_id=member_id,
                          automation_name=auto["name"], coupon=coupon)
            default = get_settings().default_language
            rendered = messaging_model.render(
                tpl, channel=step.channel,
                lang=customer_language(conn, customer_id) or default, fallback=default,
                purpose="marketing", variables={n: ctx.get(n, "") for n in tpl.variables},
                unsubscribe_url="(unsubscribe link)")
            item["message"] = {"channel": step.channel, "template": step.template,
                               "lang": rendered.lang, "subject": rendered.subject,
                               "body": rendered.body}
        elif step.action == "grant_points":
            item["points"] = step.points
        steps_out.append(item)
    return {"customer_id": customer_id, "member_id": member_id, "occurrence": occurrence,
            "arm": arm, "steps": steps_out}


# --- lift ----------------------------------------------------------------------------------

def lift(conn: Connection, *, actor: Actor, code: str, days: int = 30,
         now: dt.datetime | None = None) -> dict[str, Any]:
    """Each arm against the control group within ``days`` days of entering
    (patron.experiments.lift)."""
    from patron.experiments.lift import Source
    from patron.experiments.lift import lift as report

    def source() -> Source:
        row = _row(conn, code)
        return Source("automation", int(row["id"]), int(row["program_id"]))

    return {"automation": code, **report(conn, actor=actor, permission="automations.read",
                                         source=source, days=days, now=now)}
