"""Sending campaigns, safe with any number of processes on one PostgreSQL:

1. **Start** a scheduled campaign whose time has come: a compare-and-set from ``scheduled`` to
   ``sending`` in the transaction that writes its recipients (the audience at that moment,
   each with its arm; the control group ``held_out``), so one process starts it, once.
2. **Send** in batches: lock the campaign row (its budget) and pending recipients (``SKIP
   LOCKED``); for each, within a savepoint: issue the coupon (key ``campaign:{id}:{customer}``),
   queue the message (the same dedupe key), add the cost, mark the recipient sent. A recipient
   the budget cannot cover stops the campaign (``stopped``, ``budget_spent``) and skips the
   rest. When none is pending the campaign is ``sent``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select, update

from patron.automations import audience
from patron.automations import model as automation_model
from patron.automations.engine import program_of
from patron.automations.tables import experiment_assignments
from patron.campaigns.service import arms_of, template_of, unit_cost
from patron.campaigns.tables import campaign_recipients, campaigns
from patron.db import UnitOfWork, upsert, utcnow
from patron.errors import PatronError
from patron.security import audit
from patron.security.model import Actor

log = logging.getLogger(__name__)
SEND_BATCH = 100


@dataclass
class CampaignStats:
    claimed: int = 0
    started: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    finished: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def actor_for(code: str) -> Actor:
    return Actor(type="system", id=None, name=f"campaign:{code}", role="owner")


def run_due(*, engine: Engine, now: dt.datetime | None = None, limit: int = 1000
            ) -> CampaignStats:
    stats = CampaignStats()
    at = now or utcnow()
    c = campaigns.c
    with UnitOfWork(engine, readonly=True) as uow:
        due = [int(x) for x in uow.c.execute(select(c.id).where(
            c.status == "scheduled", (c.scheduled_at.is_(None)) | (c.scheduled_at <= at))
            .order_by(c.id)).scalars()]
    for campaign_id in due:
        _start(engine, campaign_id, at, stats)
    with UnitOfWork(engine, readonly=True) as uow:
        sending = [int(x) for x in uow.c.execute(select(c.id).where(c.status == "sending")
                                                 .order_by(c.id)).scalars()]
    for campaign_id in sending:
        while stats.claimed < limit:
            if not _send_batch(engine, campaign_id, at, stats, min(SEND_BATCH,
                                                                   limit - stats.claimed)):
                break
    return stats


def _start(engine: Engine, campaign_id: int, now: dt.datetime, stats: CampaignStats) -> None:
    c = campaigns.c
    with UnitOfWork(engine) as uow:
        conn = uow.c
        won = conn.execute(update(campaigns).where(c.id == campaign_id, c.status == "scheduled")
                           .values(status="sending", started_at=now, updated_at=now)).rowcount
        if won != 1:
            return
        row = dict(conn.execute(select(campaigns).where(c.id == campaign_id)).mappings().one())
        arms = arms_of(row)
        control = Decimal(row["control_share"])
        members = list(conn.execute(audience.matching(conn, int(row["program_id"]),
                                                      row["segment"], as_of=now)))
        rows = []
        assignments = []
        shares = automation_model.shares_json(control, arms)
        for cid, mid in members:
            position = automation_model.bucket("campaign", campaign_id, int(cid))
            arm = automation_model.choose_arm(position, control, arms)
            assignments.append({"source": "campaign", "source_id": campaign_id,
                                "customer_id": int(cid), "arm": arm, "bucket": position,
                                "shares": shares, "assigned_at": now})
            held = arm == automation_model.CONTROL
            rows.append({"campaign_id": campaign_id, "customer_id": int(cid),
                         "member_id": int(mid), "arm": arm,
                         "state": "held_out" if held else "pending",
                         "reason": "control_group" if held else None,
                         "processed_at": now if held else None})
        for start in range(0, len(rows), 500):
            conn.execute(upsert(conn, campaign_recipients).values(rows[start:start + 500])
                         .on_conflict_do_nothing(index_elements=["campaign_id", "customer_id"]))
            conn.execute(upsert(conn, experiment_assignments).values(
                assignments[start:start + 500]).on_conflict_do_nothing(
                index_elements=["source", "source_id", "customer_id"]))
        conn.execute(update(campaigns).where(c.id == campaign_id).values(recipients=len(rows)))
        audit.record(conn, actor_for(row["code"]), "campaign.started", entity="campaign",
                     entity_id=campaign_id, details={"recipients": len(rows)})
        uow.commit()
    stats.started += 1


def _send_batch(engine: Engine, campaign_id: int, now: dt.datetime, stats: CampaignStats,
                limit: int) -> int:
    """One transaction: the campaign locked (budget), up to ``limit`` pending recipients sent.
    Returns how many recipients were handled (0: nothing left)."""
    c, r = campaigns.c, campaign_recipients.c
    with UnitOfWork(engine) as uow:
        conn = uow.c
        q = select(campaigns).where(c.id == campaign_id)
        if uow.dialect == "postgresql":
            q = q.with_for_update()
        row = dict(conn.execute(q).mappings().one())
        if row["status"] != "sending":
            return 0
        rq = (select(campaign_recipients).where(r.campaign_id == campaign_id,
                                                r.state == "pending")
              .order_by(r.id).limit(limit))
        if uow.dialect == "postgresql":
            rq = rq.with_for_update(skip_locked=True)
        pending = [dict(x) for x in conn.execute(rq).mappings()]
        actor = actor_for(row["code"])
        if not pending:
            left = conn.execute(select(r.id).where(r.campaign_id == campaign_id,
                                                   r.state == "pending").limit(1)).first()
            if left is None:
                conn.execute(update(campaigns).where(c.id == campaign_id).values(
                    status="sent", finished_at=now, updated_at=now))
                audit.record(conn, actor, "campaign.sent", entity="campaign",
                             entity_id=campaign_id, details={
                                 "messages": row["spent_messages"],
                                 "value": str(row["spent_value"])})
                uow.commit()
                stats.finished += 1
            return 0
        program = program_of(conn, int(row["program_id"]))
        message_cost, face = unit_cost(conn, row)
        unit = message_cost + face
        spent_messages, spent_value = int(row["spent_messages"]), Decimal(row["spent_value"])
        for rec in pending:
            over = ((row["budget_messages"] is not None
                     and spent_messages + 1 > int(row["budget_messages"]))
                    or (row["budget_value"] is not None
                        and spent_value + unit > Decimal(row["budget_value"])))
            if over:
                skipped = conn.execute(update(campaign_recipients).where(
                    r.campaign_id == campaign_id, r.state == "pending").values(
                    state="skipped", reason="budget_spent", processed_at=now)).rowcount
                conn.execute(update(campaigns).where(c.id == campaign_id).values(
                    status="stopped", stop_reason="budget_spent", finished_at=now,
                    spent_messages=spent_messages, spent_value=spent_value, updated_at=now))
                audit.record(conn, actor, "campaign.stopped", entity="campaign",
                             entity_id=campaign_id, details={
                                 "reason": "budget_spent", "skipped": skipped,
                                 "messages": spent_messages, "value": str(spent_value)})
                uow.commit()
                stats.skipped += skipped
                stats.finished += 1
                return len(pending)
            savepoint = conn.begin_nested()
            try:
                values = _send_one(conn, row, rec, program, now)
            except PatronError as exc:
                savepoint.rollback()
                conn.execute(update(campaign_recipients).where(r.id == rec["id"]).values(
                    state="failed", reason=exc.message[:48], processed_at=now,
                    error=str(exc.params or exc.message)[:500]))
                stats.failed += 1
                continue
            savepoint.commit()
            conn.execute(update(campaign_recipients).where(r.id == rec["id"]).values(
                state="sent", cost=unit, processed_at=now, **values))
            spent_messages += 1
            spent_value += unit
            stats.sent += 1
        conn.execute(update(campaigns).where(c.id == campaign_id).values(
            spent_messages=spent_messages, spent_value=spent_value, updated_at=now))
        uow.commit()
    stats.claimed += len(pending)
    return len(pending)


def _send_one(conn: Connection, row: dict[str, Any], rec: dict[str, Any],
              program: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    from patron.automations.actions import context
    from patron.messaging.service import enqueue_in, load_template

    key = f"campaign:{row['id']}:{rec['customer_id']}"
    values: dict[str, Any] = {}
    coupon = None
    if row["coupon_template_id"] is not None:
        from patron.coupons.service import issue_coupons
        from patron.errors import Conflict

        issued = issue_coupons(conn, actor=actor_for(row["code"]),
                               template_id=int(row["coupon_template_id"]),
                               member_ids=[int(rec["member_id"])], quantity=1,
                               idempotency_key=key, store_id=None, now=now)
        if not issued["coupons"]:
            raise Conflict("automation_coupon_not_issued", params={
                "reason": ", ".join(s["reason"] for s in issued["skipped"]) or "not_issued"})
        cp = issued["coupons"][0]
        coupon = {"coupon_code": cp["code"],
                  "coupon_expires_on": cp["valid_until"].astimezone(
                      ZoneInfo(program["timezone"])).date().isoformat(),
                  "coupon_value": str(cp["face_value"]) if cp["face_value"] is not None else ""}
        values.update(coupon_issue_id=int(issued["id"]), coupon_code=cp["code"])
    template = template_of(row, rec["arm"])
    tpl = load_template(conn, template)
    if tpl is None:
        from patron.errors import Conflict

        raise Conflict("automation_template_missing", params={"template": template})
    ctx = context(conn, customer_id=int(rec["customer_id"]), member_id=int(rec["member_id"]),
                  automation_name=row["name"], coupon=coupon)
    ctx["campaign"] = row["name"]
    values["message_id"] = enqueue_in(
        conn, customer_id=int(rec["customer_id"]), channel=row["channel"], template=template,
        variables={n: ctx.get(n, "") for n in tpl.variables}, purpose="marketing",
        dedupe_key=key, program_id=int(program["id"]), now=now)
    return values
