"""Automations over HTTP under /api/v1: define, change, activate / pause / archive, dry-run,
entries. Thin: each route calls :mod:`patron.automations.service`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from patron.automations import service
from patron.automations.schemas import Activate, AutomationIn, AutomationUpdate
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["automations"])

Reader = Annotated[Actor, Depends(require("automations.read"))]
Manager = Annotated[Actor, Depends(require("automations.manage"))]
Status = Literal["draft", "active", "paused", "archived"]
EntryState = Literal["triggered", "active", "done", "failed", "not_eligible", "skipped",
                     "held_out"]


@router.get("/automations")
def list_automations(uow: UowDep, actor: Reader, status: Status | None = None) -> Any:
    """Every automation with its flow, entries per state and customers per arm."""
    return {"items": service.list_automations(uow.c, actor=actor, status=status)}


@router.post("/automations", status_code=201)
def create_automation(body: AutomationIn, uow: UowDep, actor: Manager) -> Any:
    """A new automation, in draft. Refused (422, naming the field) for a template variable
    Patron does not fill in, a cron expression that never fires, unknown references."""
    return service.create(uow=uow, actor=actor, body=body)


@router.post("/automations/dry-run")
def dry_run_definition(body: AutomationIn, uow: UowDep, actor: Reader) -> Any:
    """What an unsaved definition would do today; writes nothing."""
    return service.dry_run(uow.c, actor=actor, body=body)


@router.get("/automations/{code}")
def get_automation(code: str, uow: UowDep, actor: Reader) -> Any:
    return service.get_automation(uow.c, actor=actor, code=code)


@router.patch("/automations/{code}")
def update_automation(code: str, body: AutomationUpdate, uow: UowDep, actor: Manager) -> Any:
    """A changed definition becomes a new version; entries under way keep theirs."""
    return service.update_automation(uow=uow, actor=actor, code=code, body=body)


@router.post("/automations/{code}/activate")
def activate(code: str, uow: UowDep, actor: Manager, body: Activate | None = None) -> Any:
    """Start it. Above PATRON_AUDIENCE_CONFIRM_ABOVE customers a 409
    ``audience_confirmation_required`` gives the size; send it back as ``confirm_audience``."""
    return service.set_status(uow=uow, actor=actor, code=code, status="active",
                              confirm_audience=body.confirm_audience if body else None)


@router.post("/automations/{code}/pause")
def pause(code: str, uow: UowDep, actor: Manager) -> Any:
    return service.set_status(uow=uow, actor=actor, code=code, status="paused")


@router.post("/automations/{code}/archive")
def archive(code: str, uow: UowDep, actor: Manager) -> Any:
    return service.set_status(uow=uow, actor=actor, code=code, status="archived")


@router.post("/automations/{code}/dry-run")
def dry_run(code: str, uow: UowDep, actor: Reader) -> Any:
    """Who would enter today and what they would receive (rendered messages, coupons); writes
    nothing."""
    return service.dry_run(uow.c, actor=actor, code=code)


@router.get("/automations/{code}/entries")
def entries(code: str, uow: UowDep, actor: Reader, state: EntryState | None = None,
            customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    """The newest entries with the steps each ran (coupon codes, message ids...)."""
    return {"items": service.list_entries(uow.c, actor=actor, code=code, state=state,
                                          customer_id=customer_id, limit=limit)}


@router.get("/automations/{code}/lift")
def lift(code: str, uow: UowDep, actor: Reader,
         days: Annotated[int, Query(ge=1, le=365)] = 30) -> Any:
    """Each arm against control: conversion within ``days`` days, revenue per customer, the
    difference with a 95% interval and a test."""
    # money as exact decimal strings, never floats
    return JSONResponse(jsonable_encoder(service.lift(uow.c, actor=actor, code=code, days=days),
                                         custom_encoder={Decimal: str}))
