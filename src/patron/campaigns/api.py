"""Campaigns over HTTP under /api/v1: define, change a draft, preview, launch, approve, cancel,
recipients."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from patron.campaigns import service
from patron.campaigns.schemas import CampaignIn, Launch
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["campaigns"])

Reader = Annotated[Actor, Depends(require("campaigns.read"))]
Manager = Annotated[Actor, Depends(require("campaigns.manage"))]
Approver = Annotated[Actor, Depends(require("campaigns.approve"))]
Status = Literal["draft", "awaiting_approval", "scheduled", "sending", "sent", "stopped",
                 "cancelled"]
RecipientState = Literal["pending", "sent", "failed", "skipped", "held_out"]


@router.get("/campaigns")
def list_campaigns(uow: UowDep, actor: Reader, status: Status | None = None) -> Any:
    return {"items": service.list_campaigns(uow.c, actor=actor, status=status)}


@router.post("/campaigns", status_code=201)
def create_campaign(body: CampaignIn, uow: UowDep, actor: Manager) -> Any:
    """A draft. Refused (422, naming the field) for a template variable campaigns do not fill
    in, a coupon variable without a coupon, unknown references."""
    return service.create(uow=uow, actor=actor, body=body)


@router.put("/campaigns/{code}")
def edit_campaign(code: str, body: CampaignIn, uow: UowDep, actor: Manager) -> Any:
    """Replace a draft's definition (the same checks as creating it; the code stays). 409 once
    it is launched."""
    return service.edit(uow=uow, actor=actor, code=code, body=body)


@router.get("/campaigns/{code}")
def get_campaign(code: str, uow: UowDep, actor: Reader) -> Any:
    return service.get_campaign(uow.c, actor=actor, code=code)


@router.post("/campaigns/{code}/preview")
def preview(code: str, uow: UowDep, actor: Reader,
            sample: Annotated[int, Query(ge=0, le=100)] = service.PREVIEW_SAMPLE) -> Any:
    """The audience, its arms, the estimated cost and rendered messages; writes nothing."""
    return service.preview(uow.c, actor=actor, code=code, sample=sample)


@router.post("/campaigns/{code}/launch")
def launch(code: str, uow: UowDep, actor: Manager, body: Launch | None = None) -> Any:
    """Schedule it (or ask for approval when large). Above PATRON_AUDIENCE_CONFIRM_ABOVE a 409
    gives the size, to be sent back as ``confirm_audience``."""
    return service.launch(uow=uow, actor=actor, code=code,
                          confirm_audience=body.confirm_audience if body else None)


@router.post("/campaigns/{code}/approve")
def approve(code: str, uow: UowDep, actor: Approver) -> Any:
    """Another user than the one who launched it."""
    return service.approve(uow=uow, actor=actor, code=code)


@router.post("/campaigns/{code}/cancel")
def cancel(code: str, uow: UowDep, actor: Manager) -> Any:
    return service.cancel(uow=uow, actor=actor, code=code)


@router.get("/campaigns/{code}/recipients")
def recipients(code: str, uow: UowDep, actor: Reader, state: RecipientState | None = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    return {"items": service.list_recipients(uow.c, actor=actor, code=code, state=state,
                                             limit=limit)}


@router.get("/campaigns/{code}/lift")
def lift(code: str, uow: UowDep, actor: Reader,
         days: Annotated[int, Query(ge=1, le=365)] = 30) -> Any:
    """Each arm against control: conversion within ``days`` days, revenue per customer, the
    difference with a 95% interval and a test."""
    # money as exact decimal strings, never floats
    return JSONResponse(jsonable_encoder(service.lift(uow.c, actor=actor, code=code, days=days),
                                         custom_encoder={Decimal: str}))
