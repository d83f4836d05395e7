"""Automation and campaign pages: lists, an automation's flow (trigger, conditions, guard,
control group, each arm's steps) with its entries, today's dry run and its lift, a campaign
with its recipients, preview and lift (each arm's rates, the comparison with control, charts of
the daily series). Read-only: changes go through the API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from patron.automations import model
from patron.automations import service as automations
from patron.automations.engine import definition_of
from patron.campaigns import service as campaigns
from patron.db import UnitOfWork, get_engine
from patron.i18n import t
from patron.security.model import Actor
from patron.web import plots
from patron.web.render import PageRoute, need, page_language, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
LIFT_DAYS = 30


def lift_days(request: Request) -> int:
    """The window of the page's lift report: ``?days=`` from 1 to 365, else 30."""
    raw = request.query_params.get("days", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 365 else LIFT_DAYS


def arm_name(arm: str, lang: str) -> str:
    return t("web.lift.control", lang) if arm == "control" else arm


def lift_charts(lift: dict[str, Any], lang: str) -> dict[str, plots.Chart]:
    """Cumulative conversion and revenue per customer by day since assignment, one line per
    arm (the control group dashed)."""
    arms = lift.get("arms") or {}
    if not arms:
        return {}
    days = list(range(1, int(lift["days"]) + 1))
    day = t("web.lift.day", lang)

    def series(key: str) -> list[plots.Series]:
        return [plots.Series(arm_name(arm, lang), [p[key] for p in r["series"]],
                             dash="dash" if arm == "control" else None)
                for arm, r in arms.items()]

    return {"conversion": plots.line(days, series("conversion"), x_title=day,
                                     y_title=t("web.lift.conversion", lang), fmt="percent",
                                     id="lift-conversion-chart"),
            "revenue": plots.line(days, series("revenue_per_customer"), x_title=day,
                                  y_title=t("web.lift.revenue_per_customer", lang),
                                  fmt="money", id="lift-revenue-chart")}


@router.get("/automations")
def automations_page(request: Request,
                     actor: Annotated[Actor, Depends(need("automations.read"))]) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = automations.list_automations(uow.c, actor=actor)
        for a in items:
            a["flow"] = model.flow(definition_of(uow.c, a["id"], a["version"]), lang)
        camps = campaigns.list_campaigns(uow.c, actor=actor) if actor.can(
            "campaigns.read") else []
    return render(request, "automations/index.html", {"items": items, "campaigns": camps},
                  actor=actor)


@router.get("/automations/{code}")
def automation_page(request: Request, code: str,
                    actor: Annotated[Actor, Depends(need("automations.read"))]) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        a = automations.get_automation(uow.c, actor=actor, code=code)
        a["flow"] = model.flow(definition_of(uow.c, a["id"], a["version"]), lang)
        entries = automations.list_entries(uow.c, actor=actor, code=code, limit=50)
        dry = None
        if request.query_params.get("dry_run"):
            dry = automations.dry_run(uow.c, actor=actor, code=code, sample=10)
        lift = automations.lift(uow.c, actor=actor, code=code, days=lift_days(request))
    return render(request, "automations/automation.html",
                  {"a": a, "entries": entries, "dry": dry, "lift": lift,
                   "charts": lift_charts(lift, lang)}, actor=actor)


@router.get("/campaigns/{code}")
def campaign_page(request: Request, code: str,
                  actor: Annotated[Actor, Depends(need("campaigns.read"))]) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        c = campaigns.get_campaign(uow.c, actor=actor, code=code)
        recipients = campaigns.list_recipients(uow.c, actor=actor, code=code, limit=50)
        preview = campaigns.preview(uow.c, actor=actor, code=code, sample=5, lang=lang)
        lift = campaigns.lift(uow.c, actor=actor, code=code, days=lift_days(request))
    return render(request, "automations/campaign.html",
                  {"c": c, "recipients": recipients, "preview": preview, "lift": lift,
                   "charts": lift_charts(lift, lang)}, actor=actor)
