"""Automation and campaign pages: lists, an automation's flow (trigger, conditions, guard,
control group, each arm's steps) with its entries and today's dry run, a campaign with its
recipients, preview and lift. Read-only: changes go through the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from patron.automations import model
from patron.automations import service as automations
from patron.automations.engine import definition_of
from patron.campaigns import service as campaigns
from patron.db import UnitOfWork, get_engine
from patron.security.model import Actor
from patron.web.render import PageRoute, need, page_language, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


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
    return render(request, "automations/automation.html",
                  {"a": a, "entries": entries, "dry": dry}, actor=actor)


@router.get("/campaigns/{code}")
def campaign_page(request: Request, code: str,
                  actor: Annotated[Actor, Depends(need("campaigns.read"))]) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        c = campaigns.get_campaign(uow.c, actor=actor, code=code)
        recipients = campaigns.list_recipients(uow.c, actor=actor, code=code, limit=50)
        preview = campaigns.preview(uow.c, actor=actor, code=code, sample=5,
                                    lang=page_language(request, actor))
        lift = campaigns.lift(uow.c, actor=actor, code=code, days=30)
    return render(request, "automations/campaign.html",
                  {"c": c, "recipients": recipients, "preview": preview, "lift": lift},
                  actor=actor)
