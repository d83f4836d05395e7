"""What an automation's steps do, each inside the transaction that records the step, and each
under an idempotency key made of the entry and the step (``automation:{entry}:{step}``): a
coupon issue, a points adjustment, a queued message, a webhook delivery, a tag. A step that is
run again after a crash replays the first result instead of doing it twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, select

from patron.automations import model
from patron.automations.tables import automation_step_runs
from patron.customers.tables import customers
from patron.errors import Conflict
from patron.loyalty.tables import loyalty_members, loyalty_programs, loyalty_tiers
from patron.security.model import Actor
from patron.tags.service import add_tag_in, remove_tag_in


def actor_for(code: str) -> Actor:
    return Actor(type="system", id=None, name=f"automation:{code}", role="owner")


def step_key(entry_id: int, step: int) -> str:
    return f"automation:{entry_id}:{step}"


def context(conn: Connection, *, customer_id: int, member_id: int, automation_name: str,
            coupon: dict[str, Any] | None) -> dict[str, Any]:
    """The values a message step may use (model.KNOWN_VARIABLES)."""
    m, t, p = loyalty_members.c, loyalty_tiers.c, loyalty_programs.c
    row = conn.execute(
        select(customers.c.name, m.member_code, m.points_available, t.name.label("tier"),
               p.name.label("program"))
        .select_from(loyalty_members.join(customers, customers.c.id == m.customer_id)
                     .join(loyalty_programs, p.id == m.program_id)
                     .outerjoin(loyalty_tiers, t.id == m.tier_id))
        .where(m.id == member_id)).first()
    out: dict[str, Any] = {"name": "", "member_code": "", "program": "", "tier": "",
                           "points": 0, "automation": automation_name}
    if row is not None:
        out.update(name=row.name or "", member_code=row.member_code, program=row.program,
                   tier=row.tier or "", points=int(row.points_available))
    if coupon:
        out.update(coupon_code=coupon.get("coupon_code") or "",
                   coupon_expires_on=coupon.get("coupon_expires_on") or "",
                   coupon_value=coupon.get("coupon_value") or "")
    return out


def coupon_of_entry(conn: Connection, entry_id: int) -> dict[str, Any] | None:
    """The coupon an earlier step of the entry issued (for a message naming it)."""
    r = automation_step_runs.c
    row = conn.execute(select(r.result).where(
        r.entry_id == entry_id, r.kind == "issue_coupon", r.outcome == "done")
        .order_by(r.step.desc()).limit(1)).scalar()
    return dict(row) if row else None


def run_action(conn: Connection, *, step: Any, entry: dict[str, Any], automation: dict[str, Any],
               program: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Do one action for the entry, in ``conn``'s transaction; returns what it wrote. Raises a
    PatronError when the action is refused (a spent coupon budget, a closed membership)."""
    actor = actor_for(automation["code"])
    key = step_key(int(entry["id"]), int(entry["step"]))
    member_id = int(entry["member_id"])
    customer_id = int(entry["customer_id"])
    a = step.action
    if a == "issue_coupon":
        from patron.coupons.service import issue_coupons

        issued = issue_coupons(conn, actor=actor, template_id=step.coupon_template_id,
                               member_ids=[member_id], quantity=1, idempotency_key=key,
                               store_id=None, now=now)
        if not issued["coupons"]:
            reasons = ", ".join(s["reason"] for s in issued["skipped"]) or "not_issued"
            raise Conflict("automation_coupon_not_issued", params={"reason": reasons})
        c = issued["coupons"][0]
        tz = program["timezone"]
        from zoneinfo import ZoneInfo

        return {"coupon_issue_id": int(issued["id"]), "coupon_code": c["code"],
                "coupon_expires_on": c["valid_until"].astimezone(ZoneInfo(tz)).date().isoformat(),
                "coupon_value": (str(c["face_value"]) if c.get("face_value") is not None
                                 else "")}
    if a == "grant_points":
        from patron.loyalty.schemas import AdjustIn
        from patron.loyalty.service import adjust_in

        op = adjust_in(conn, actor=actor, member_id=member_id, now=now, visible=False,
                       body=AdjustIn(idempotency_key=key, points=step.points,
                                     reason=f"automation {automation['code']}: {step.reason}"))
        return {"operation_id": int(op["id"]), "points": step.points}
    if a == "send_message":
        from patron.messaging.service import enqueue_in, load_template

        tpl = load_template(conn, step.template)
        if tpl is None:
            raise Conflict("automation_template_missing", params={"template": step.template})
        ctx = context(conn, customer_id=customer_id, member_id=member_id,
                      automation_name=automation["name"],
                      coupon=coupon_of_entry(conn, int(entry["id"])))
        variables = {name: ctx.get(name, "") for name in tpl.variables}
        message_id = enqueue_in(conn, customer_id=customer_id, channel=step.channel,
                                template=step.template, variables=variables,
                                purpose="marketing", dedupe_key=key,
                                program_id=int(program["id"]), now=now)
        return {"message_id": message_id}
    if a == "call_webhook":
        from patron.webhooks.service import enqueue

        payload = {"automation": automation["code"], "entry_id": int(entry["id"]),
                   "step": int(entry["step"]), "customer_id": customer_id,
                   "member_id": member_id, "occurrence": entry["occurrence"],
                   "arm": entry["arm"], "data": dict(step.data), "idempotency_key": key}
        queued = enqueue(conn, "automation.step", [payload],
                         endpoints=[step.endpoint_id] if step.endpoint_id else None)
        return {"deliveries": queued}
    if a in ("add_tag", "remove_tag"):
        change = add_tag_in if a == "add_tag" else remove_tag_in
        changed = change(conn, actor=actor, customer_id=customer_id, tag=step.tag, now=now,
                         note=f"automation {automation['code']}")
        return {"tag": step.tag, "changed": changed}
    raise ValueError(f"not an action: {a}")


__all__ = ["actor_for", "context", "model", "run_action", "step_key"]
