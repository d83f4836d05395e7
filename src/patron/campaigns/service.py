"""Campaign use cases: define (a draft), preview (who and what, writing nothing), launch (a
large audience confirmed; above the approval limit it waits for another user's approval),
approve, cancel, list, show, recipients.

Sending is :mod:`patron.campaigns.engine`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from patron.automations import audience
from patron.automations import model as automation_model
from patron.automations.service import arm_counts, confirm_large_audience
from patron.campaigns.schemas import CampaignIn, scheduled_utc
from patron.campaigns.tables import campaign_recipients, campaigns
from patron.config import get_settings
from patron.coupons.tables import coupon_templates
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from patron.loyalty.service import _program, need, retrying
from patron.security import audit
from patron.security.model import Actor

# The variables a campaign's template may use.
CAMPAIGN_VARIABLES = ("name", "member_code", "program", "tier", "points", "campaign")
COUPON_VARIABLES = automation_model.COUPON_VARIABLES
RECIPIENT_STATES = ("pending", "sent", "failed", "skipped", "held_out")
PREVIEW_SAMPLE = 10


def _row(conn: Connection, code: str, *, lock: bool = False) -> dict[str, Any]:
    q = select(campaigns).where(campaigns.c.code == code)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("campaign_not_found", params={"code": code})
    return dict(row)


def arms_of(row: dict[str, Any]) -> list[tuple[str, Decimal]]:
    return [(a["code"], Decimal(a["share"])) for a in row["arms"]]


def template_of(row: dict[str, Any], arm: str) -> str:
    return next(a["template"] for a in row["arms"] if a["code"] == arm)


def coupon_face(conn: Connection, template_id: int | None) -> Decimal:
    """The face value of the coupon the template issues now (0 without a template or a face
    value)."""
    if template_id is None:
        return Decimal(0)
    from patron.coupons.tables import coupon_template_versions

    t, v = coupon_templates.c, coupon_template_versions.c
    face = conn.execute(select(v.face_value).select_from(coupon_template_versions.join(
        coupon_templates, (t.id == v.template_id) & (t.version == v.version))).where(
        t.id == template_id)).scalar()
    return Decimal(face or 0)


def unit_cost(conn: Connection, row: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """What one recipient costs: the campaign's message cost and its coupon's face value (the
    budget and the preview's estimate count both; the lift report counts the messages at the
    first and the coupons at the discount they actually gave)."""
    return Decimal(row["message_cost"]), coupon_face(conn, row["coupon_template_id"])


# --- checking ----------------------------------------------------------------------------

def definition_errors(conn: Connection, body: CampaignIn, program: dict[str, Any]
                      ) -> list[FieldError]:
    from patron.messaging.service import load_template

    errors = audience.definition_errors(conn, body.segment, "segment")
    if body.coupon_template_id is not None:
        row = conn.execute(select(coupon_templates.c.program_id, coupon_templates.c.status)
                           .where(coupon_templates.c.id == body.coupon_template_id)).first()
        if row is None or int(row.program_id) != int(program["id"]):
            errors.append(FieldError("coupon_template_id", "automation_coupon_template_unknown",
                                     {"value": body.coupon_template_id}))
        elif row.status != "active":
            errors.append(FieldError("coupon_template_id", "automation_coupon_template_inactive",
                                     {"value": body.coupon_template_id}))
    for n, arm in enumerate(body.arms()):
        field = "template" if body.variants is None else f"variants.{n}.template"
        tpl = load_template(conn, arm["template"])
        if tpl is None:
            errors.append(FieldError(field, "message_template_unknown",
                                     {"value": arm["template"]}))
            continue
        for name in tpl.variables:
            if name in COUPON_VARIABLES and body.coupon_template_id is None:
                errors.append(FieldError(field, "campaign_template_needs_coupon",
                                         {"template": arm["template"], "variable": name}))
            elif name not in CAMPAIGN_VARIABLES + COUPON_VARIABLES:
                errors.append(FieldError(field, "automation_template_variable_unknown", {
                    "template": arm["template"], "variable": name,
                    "known": ", ".join(CAMPAIGN_VARIABLES + COUPON_VARIABLES)}))
    return errors


# --- views ----------------------------------------------------------------------------

def recipient_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    r = campaign_recipients.c
    counts = dict.fromkeys(RECIPIENT_STATES, 0)
    for state, n in conn.execute(select(r.state, func.count()).where(
            r.campaign_id == campaign_id).group_by(r.state)):
        counts[state] = int(n)
    return counts


def campaign_out(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    from patron.automations.engine import program_of

    program = program_of(conn, int(row["program_id"]))
    keys = ("id", "code", "name", "status", "segment", "channel", "arms", "control_share",
            "coupon_template_id", "scheduled_at", "budget_messages", "budget_value",
            "message_cost", "spent_messages", "spent_value", "audience_size", "recipients",
            "launched_by", "launched_at", "approved_by", "approved_at", "started_at",
            "finished_at", "stop_reason", "created_at", "updated_at", "updated_by")
    out = {k: row[k] for k in keys}
    out["program"] = program["code"]
    out["recipient_states"] = recipient_counts(conn, int(row["id"]))
    out["arm_counts"] = arm_counts(conn, "campaign", int(row["id"]))
    return out


def list_campaigns(conn: Connection, *, actor: Actor, status: str | None = None
                   ) -> list[dict[str, Any]]:
    need(actor, "campaigns.read")
    q = select(campaigns).order_by(campaigns.c.id.desc())
    if status is not None:
        q = q.where(campaigns.c.status == status)
    return [campaign_out(conn, dict(r)) for r in conn.execute(q).mappings()]


def get_campaign(conn: Connection, *, actor: Actor, code: str) -> dict[str, Any]:
    need(actor, "campaigns.read")
    return campaign_out(conn, _row(conn, code))


def list_recipients(conn: Connection, *, actor: Actor, code: str, state: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
    need(actor, "campaigns.read")
    row = _row(conn, code)
    r = campaign_recipients.c
    q = select(campaign_recipients).where(r.campaign_id == row["id"]).order_by(r.id).limit(
        min(max(limit, 1), 500))
    if state is not None:
        if state not in RECIPIENT_STATES:
            raise ValidationFailed("validation_failed", fields=[FieldError(
                "state", "literal_error", {"expected": ", ".join(RECIPIENT_STATES)})])
        q = q.where(r.state == state)
    return [dict(x) for x in conn.execute(q).mappings()]


# --- writing ----------------------------------------------------------------------------

def create(*, uow: UnitOfWork, actor: Actor, body: CampaignIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """A draft campaign; checked now (template variables, coupon, segment) and again at
    launch."""
    need(actor, "campaigns.manage")
    at = now or utcnow()

    def work() -> dict[str, Any]:
        conn = uow.c
        program = _program(conn, body.program)
        errors = definition_errors(conn, body, program)
        if errors:
            raise ValidationFailed("validation_failed", fields=errors)
        if conn.execute(select(campaigns.c.id).where(campaigns.c.code == body.code)
                        ).first() is not None:
            raise Conflict("campaign_exists", params={"code": body.code})
        cid = int(conn.execute(insert(campaigns).values(
            code=body.code, name=body.name, program_id=program["id"], status="draft",
            segment=body.segment, channel=body.channel, arms=body.arms(),
            control_share=str(body.control_share), coupon_template_id=body.coupon_template_id,
            scheduled_at=scheduled_utc(body.scheduled_at), budget_messages=body.budget_messages,
            budget_value=body.budget_value, message_cost=body.message_cost, created_at=at,
            updated_at=at, updated_by=actor.name).returning(campaigns.c.id)).scalar_one())
        audit.record(conn, actor, "campaign.created", entity="campaign", entity_id=cid,
                     details={"code": body.code, "channel": body.channel,
                              "arms": body.arms(), "coupon_template_id":
                              body.coupon_template_id})
        out = campaign_out(conn, _row(conn, body.code))
        uow.commit()
        return out

    return retrying(uow, work)


# What a draft's definition is made of; an update may change any of them but the code.
DEFINITION = ("name", "program_id", "segment", "channel", "arms", "control_share",
              "coupon_template_id", "scheduled_at", "budget_messages", "budget_value",
              "message_cost")


def edit(*, uow: UnitOfWork, actor: Actor, code: str, body: CampaignIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Replace a draft's definition (409 once it is launched: what was counted, approved or
    sent stays as it was). Checked as at creation; the audit entry names the fields that
    changed."""
    need(actor, "campaigns.manage")
    at = now or utcnow()

    def work() -> dict[str, Any]:
        conn = uow.c
        if body.code != code:
            raise ValidationFailed("validation_failed", fields=[FieldError(
                "code", "campaign_code_fixed", {"code": code})])
        row = _row(conn, code, lock=True)
        if row["status"] != "draft":
            raise Conflict("campaign_not_editable", params={"code": code, "status": row["status"]})
        program = _program(conn, body.program)
        errors = definition_errors(conn, body, program)
        if errors:
            raise ValidationFailed("validation_failed", fields=errors)
        values = {"name": body.name, "program_id": program["id"], "segment": body.segment,
                  "channel": body.channel, "arms": body.arms(),
                  "control_share": str(body.control_share),
                  "coupon_template_id": body.coupon_template_id,
                  "scheduled_at": scheduled_utc(body.scheduled_at),
                  "budget_messages": body.budget_messages, "budget_value": body.budget_value,
                  "message_cost": body.message_cost}
        changed = sorted(k for k in DEFINITION if _differs(row[k], values[k]))
        if changed:
            conn.execute(update(campaigns).where(campaigns.c.id == row["id"]).values(
                **values, updated_at=at, updated_by=actor.name))
            audit.record(conn, actor, "campaign.updated", entity="campaign",
                         entity_id=row["id"], details={"code": code, "changed": changed})
        out = campaign_out(conn, _row(conn, code))
        uow.commit()
        return out

    return retrying(uow, work)


def _differs(stored: Any, new: Any) -> bool:
    if isinstance(stored, dt.datetime) or isinstance(new, dt.datetime):
        if stored is None or new is None:
            return stored is not new
        return _aware(stored) != _aware(new)
    if isinstance(new, Decimal) or isinstance(stored, Decimal):
        return (None if stored is None else Decimal(str(stored))) != (
            None if new is None else Decimal(str(new)))
    if isinstance(new, str) and stored is not None and not isinstance(stored, str):
        return str(stored) != new
    return bool(stored != new)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _as_input(conn: Connection, row: dict[str, Any]) -> CampaignIn:
    from patron.automations.engine import program_of

    program = program_of(conn, int(row["program_id"]))
    arms = row["arms"]
    data: dict[str, Any] = {
        "code": row["code"], "name": row["name"], "program": program["code"],
        "segment": row["segment"], "channel": row["channel"],
        "control_share": row["control_share"], "coupon_template_id": row["coupon_template_id"],
        "budget_messages": row["budget_messages"], "budget_value": row["budget_value"],
        "message_cost": row["message_cost"]}
    if len(arms) == 1 and arms[0]["code"] == "main":
        data["template"] = arms[0]["template"]
    else:
        data["variants"] = arms
    return CampaignIn.model_validate(data)


def launch(*, uow: UnitOfWork, actor: Actor, code: str, confirm_audience: int | None = None,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """Count the audience; above PATRON_AUDIENCE_CONFIRM_ABOVE it must be confirmed with its
    size (409 otherwise); above PATRON_CAMPAIGN_APPROVAL_ABOVE the campaign waits for another
    user's approval; otherwise it is scheduled (now, or at its time)."""
    need(actor, "campaigns.manage")
    at = now or utcnow()
    conn = uow.c
    row = _row(conn, code, lock=True)
    if row["status"] != "draft":
        raise Conflict("campaign_not_draft", params={"code": code, "status": row["status"]})
    body = _as_input(conn, row)
    from patron.automations.engine import program_of

    program = program_of(conn, int(row["program_id"]))
    errors = definition_errors(conn, body, program)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    size = audience.count(conn, int(row["program_id"]), row["segment"], as_of=at)
    confirm_large_audience(size, confirm_audience)
    needs_approval = size > get_settings().campaign_approval_above
    status = "awaiting_approval" if needs_approval else "scheduled"
    conn.execute(update(campaigns).where(campaigns.c.id == row["id"]).values(
        status=status, audience_size=size, launched_by=actor.name, launched_at=at,
        updated_at=at, updated_by=actor.name))
    audit.record(conn, actor, "campaign.launched", entity="campaign", entity_id=row["id"],
                 details={"code": code, "audience": size, "status": status})
    out = campaign_out(conn, _row(conn, code))
    uow.commit()
    return out


def approve(*, uow: UnitOfWork, actor: Actor, code: str, now: dt.datetime | None = None
            ) -> dict[str, Any]:
    """A second user approves a large campaign; whoever launched it cannot."""
    need(actor, "campaigns.approve")
    at = now or utcnow()
    conn = uow.c
    row = _row(conn, code, lock=True)
    if row["status"] != "awaiting_approval":
        raise Conflict("campaign_not_awaiting_approval",
                       params={"code": code, "status": row["status"]})
    if row["launched_by"] == actor.name:
        raise Forbidden("campaign_approval_by_launcher", params={"code": code})
    conn.execute(update(campaigns).where(campaigns.c.id == row["id"]).values(
        status="scheduled", approved_by=actor.name, approved_at=at, updated_at=at,
        updated_by=actor.name))
    audit.record(conn, actor, "campaign.approved", entity="campaign", entity_id=row["id"],
                 details={"code": code, "audience": row["audience_size"]})
    out = campaign_out(conn, _row(conn, code))
    uow.commit()
    return out


def cancel(*, uow: UnitOfWork, actor: Actor, code: str, now: dt.datetime | None = None
           ) -> dict[str, Any]:
    """Stop a campaign that has not finished; recipients not yet sent to are skipped."""
    need(actor, "campaigns.manage")
    at = now or utcnow()
    conn = uow.c
    row = _row(conn, code, lock=True)
    if row["status"] in ("sent", "stopped", "cancelled"):
        raise Conflict("campaign_finished", params={"code": code, "status": row["status"]})
    r = campaign_recipients.c
    skipped = conn.execute(update(campaign_recipients).where(
        r.campaign_id == row["id"], r.state == "pending").values(
        state="skipped", reason="cancelled", processed_at=at)).rowcount
    conn.execute(update(campaigns).where(campaigns.c.id == row["id"]).values(
        status="cancelled", finished_at=at, stop_reason="cancelled", updated_at=at,
        updated_by=actor.name))
    audit.record(conn, actor, "campaign.cancelled", entity="campaign", entity_id=row["id"],
                 details={"code": code, "skipped": skipped, "was": row["status"]})
    out = campaign_out(conn, _row(conn, code))
    uow.commit()
    return out


# --- preview ----------------------------------------------------------------------------

def preview(conn: Connection, *, actor: Actor, code: str, sample: int = PREVIEW_SAMPLE,
            lang: str | None = None) -> dict[str, Any]:
    """Who the campaign would reach now and what they would receive, writing nothing: the
    audience, its split by arm, the cost against the budget, and a sample of rendered
    messages (the coupon code shown as a placeholder), each in its recipient's language as
    it would be sent, or all in ``lang`` when given (the pages show the reader's)."""
    need(actor, "campaigns.read")
    from patron.automations.actions import context
    from patron.automations.engine import program_of
    from patron.messaging import model as messaging_model
    from patron.messaging.service import customer_language, load_template

    row = _row(conn, code)
    default = get_settings().default_language
    program = program_of(conn, int(row["program_id"]))
    rows = list(conn.execute(audience.matching(conn, int(program["id"]), row["segment"])))
    arms = arms_of(row)
    control = Decimal(row["control_share"])
    by_arm: Counter[str] = Counter()
    picked: list[tuple[int, int, str]] = []
    for cid, mid in rows:
        arm = automation_model.choose_arm(
            automation_model.bucket("campaign", int(row["id"]), int(cid)), control, arms)
        by_arm[arm] += 1
        if arm != automation_model.CONTROL and len(picked) < sample:
            picked.append((int(cid), int(mid), arm))
    message_cost, face = unit_cost(conn, row)
    sending = sum(n for arm, n in by_arm.items() if arm != automation_model.CONTROL)
    unit = message_cost + face
    samples = []
    for cid, mid, arm in picked:
        tpl = load_template(conn, template_of(row, arm))
        assert tpl is not None
        ctx = context(conn, customer_id=cid, member_id=mid, automation_name=row["name"],
                      coupon={"coupon_code": "(coupon code)", "coupon_expires_on": "(expiry)",
                              "coupon_value": str(face)} if row["coupon_template_id"]
                      else None)
        ctx["campaign"] = row["name"]
        rendered = messaging_model.render(
            tpl, channel=row["channel"], lang=lang or customer_language(conn, cid) or default,
            fallback=default, purpose="marketing",
            variables={n: ctx.get(n, "") for n in tpl.variables},
            unsubscribe_url="(unsubscribe link)")
        samples.append({"customer_id": cid, "arm": arm, "lang": rendered.lang,
                        "subject": rendered.subject, "body": rendered.body})
    return {"campaign": code, "audience": len(rows), "arms": dict(sorted(by_arm.items())),
            "messages": sending, "estimated_cost": str(unit * sending),
            "budget_messages": row["budget_messages"],
            "budget_value": row["budget_value"],
            "confirm_above": get_settings().audience_confirm_above,
            "approval_above": get_settings().campaign_approval_above, "sample": samples}


def lift(conn: Connection, *, actor: Actor, code: str, days: int = 30,
         now: dt.datetime | None = None) -> dict[str, Any]:
    """Each arm against the control group within ``days`` days of the send
    (patron.experiments.lift)."""
    from patron.experiments.lift import Source
    from patron.experiments.lift import lift as report

    def source() -> Source:
        row = _row(conn, code)
        message, _face = unit_cost(conn, row)
        return Source("campaign", int(row["id"]), int(row["program_id"]), message)

    return {"campaign": code, **report(conn, actor=actor, permission="campaigns.read",
                                       source=source, days=days, now=now)}
