"""Every experiment in one list: the automations and campaigns that hold out a control group or
split their customers between A/B variants, each with its arms, how many customers have been
assigned to each, and the headline of its lift report (patron.experiments.lift): the best arm
against control.

The list itself costs three queries whatever its length (the automations with their current
definitions, the campaigns, the arm sizes of every source, grouped); the lift report of each
experiment on the page is a handful more, so a page holds at most :data:`PAGE_SIZE` of them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, select

from patron.automations.tables import automation_versions, automations, experiment_assignments
from patron.campaigns.tables import campaigns
from patron.db import utcnow
from patron.errors import FieldError, Forbidden, ValidationFailed
from patron.experiments.lift import CONTROL, Source, report
from patron.security.model import Actor

PAGE_SIZE = 100
# The kind of source, the permission that reads it.
READ = {"automation": "automations.read", "campaign": "campaigns.read"}
STATUSES = {
    "automation": ("draft", "active", "paused", "archived"),
    "campaign": ("draft", "awaiting_approval", "scheduled", "sending", "sent", "stopped",
                 "cancelled"),
}


def readable_kinds(actor: Actor) -> list[str]:
    return [kind for kind, permission in READ.items() if actor.can(permission)]


def _arm_sizes(conn: Connection, kinds: list[str]) -> dict[tuple[str, int], dict[str, int]]:
    """Customers assigned to each arm of every automation and campaign: one grouped query."""
    x = experiment_assignments.c
    out: dict[tuple[str, int], dict[str, int]] = {}
    for source, source_id, arm, n in conn.execute(
            select(x.source, x.source_id, x.arm, func.count())
            .where(x.source.in_(kinds)).group_by(x.source, x.source_id, x.arm)):
        out.setdefault((source, int(source_id)), {})[arm] = int(n)
    return out


def _planned(control_share: Any, arms: list[str]) -> list[str]:
    return ([CONTROL] if Decimal(str(control_share or 0)) > 0 else []) + arms


def _automations(conn: Connection, status: str | None) -> list[dict[str, Any]]:
    """Each automation with the arms of its current version: ``main`` alone, or its
    variants, after the control group when it holds one out."""
    a, v = automations.c, automation_versions.c
    q = (select(a.id, a.code, a.name, a.status, a.program_id, a.created_at, v.definition)
         .select_from(automations.join(automation_versions, and_(
             v.automation_id == a.id, v.version == a.version))))
    if status is not None:
        q = q.where(a.status == status)
    out = []
    for row in conn.execute(q).mappings():
        definition = row["definition"] or {}
        variants = [str(x["code"]) for x in definition.get("variants") or []]
        out.append({"kind": "automation", "id": int(row["id"]), "code": row["code"],
                    "name": row["name"], "status": row["status"],
                    "program_id": int(row["program_id"]), "created_at": row["created_at"],
                    "planned": _planned(definition.get("control_share"), variants or ["main"]),
                    "message_cost": None})
    return out


def _campaigns(conn: Connection, status: str | None) -> list[dict[str, Any]]:
    c = campaigns.c
    q = select(c.id, c.code, c.name, c.status, c.program_id, c.created_at, c.arms,
               c.control_share, c.message_cost)
    if status is not None:
        q = q.where(c.status == status)
    return [{"kind": "campaign", "id": int(row["id"]), "code": row["code"],
             "name": row["name"], "status": row["status"],
             "program_id": int(row["program_id"]), "created_at": row["created_at"],
             "planned": _planned(row["control_share"], [str(x["code"]) for x in row["arms"]]),
             "message_cost": Decimal(row["message_cost"])}
            for row in conn.execute(q).mappings()]


def _is_experiment(item: dict[str, Any]) -> bool:
    """A control group or more than one arm, planned now or assigned once (an automation whose
    current version dropped its control group still has one to report on)."""
    arms = set(item["planned"]) | set(item["arms"])
    return CONTROL in arms or len(arms) > 1


def best_arm(versus_control: dict[str, Any]) -> str | None:
    """The arm whose conversion beats control's by the most (then the larger incremental
    revenue): the headline of an experiment."""
    def key(arm: str) -> tuple[float, Decimal]:
        vs = versus_control[arm]
        conversion = vs["conversion"]["difference"] if vs["conversion"] else float("-inf")
        incremental = (vs["incremental_revenue"]["value"] if vs["incremental_revenue"]
                       else Decimal("-Infinity"))
        return conversion, incremental

    return max(sorted(versus_control), key=key) if versus_control else None


def _headline(lift: dict[str, Any]) -> dict[str, Any]:
    arm = best_arm(lift["versus_control"])
    window_over = sum(a["customers"] for a in lift["arms"].values())
    out: dict[str, Any] = {"window_over": window_over, "waiting": lift["window_not_over"],
                           "best_arm": arm}
    if arm is not None:
        vs = lift["versus_control"][arm]
        out.update(conversion=vs["conversion"], incremental_revenue=vs["incremental_revenue"],
                   roi=vs["roi"], arm_conversion=lift["arms"][arm]["conversion"],
                   control_conversion=lift["arms"][CONTROL]["conversion"])
    return out


def list_experiments(conn: Connection, *, actor: Actor, kind: str | None = None,
                     status: str | None = None, days: int = 30, page: int = 1,
                     now: dt.datetime | None = None) -> dict[str, Any]:
    """The experiments of the kinds ``actor`` may read (``kind`` narrows them; asking for a
    kind one may not read is a 403), newest first, :data:`PAGE_SIZE` a page, each with its
    arms, their sizes and the headline of its lift over ``days`` days (1 to 365)."""
    kinds = readable_kinds(actor)
    if not kinds:
        raise Forbidden("forbidden", params={"permission": READ["automation"]})
    errors = []
    if kind is not None and kind not in READ:
        errors.append(FieldError("kind", "literal_error", {"expected": ", ".join(READ)}))
    if not 1 <= days <= 365:
        errors.append(FieldError("days", "less_than_equal", {"le": 365}))
    if page < 1:
        errors.append(FieldError("page", "greater_than_equal", {"ge": 1}))
    if status is not None and not any(status in s for s in STATUSES.values()):
        errors.append(FieldError("status", "literal_error", {"expected": ", ".join(
            sorted({s for v in STATUSES.values() for s in v}))}))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    if kind is not None:
        if kind not in kinds:
            raise Forbidden("forbidden", params={"permission": READ[kind]})
        kinds = [kind]
    at = now or utcnow()
    sizes = _arm_sizes(conn, kinds)
    items: list[dict[str, Any]] = []
    if "automation" in kinds:
        items += _automations(conn, status)
    if "campaign" in kinds:
        items += _campaigns(conn, status)
    for item in items:
        item["arms"] = sizes.get((item["kind"], item["id"]), {})
    items = [i for i in items if _is_experiment(i)]
    items.sort(key=lambda i: (i["created_at"], i["kind"], i["code"]), reverse=True)
    total = len(items)
    shown = items[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    for item in shown:
        assigned = item["arms"]
        order = [a for a in item["planned"] if a != CONTROL]
        order += sorted(a for a in assigned if a not in order and a != CONTROL)
        if CONTROL in item["planned"] or CONTROL in assigned:
            order.insert(0, CONTROL)
        item["arms"] = {a: assigned.get(a, 0) for a in order}
        lift = report(conn, source=Source(item["kind"], item["id"], item["program_id"],
                                          item["message_cost"]), days=days, now=at)
        item.update(_headline(lift))
    return {"experiments": shown, "total": total, "page": page, "page_size": PAGE_SIZE,
            "pages": max(1, -(-total // PAGE_SIZE)), "days": days, "kinds": kinds,
            "as_of": at}
