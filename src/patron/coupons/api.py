"""Coupons over HTTP under /api/v1/coupons: templates, issuing, a member's coupons, evaluation
against a basket, redemption, two-phase holds, the liability report. Routes parse, call a service
or a reader, render."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from patron.coupons import service
from patron.coupons.schemas import (
    EvaluateIn,
    HoldIn,
    IssueIn,
    RedeemIn,
    RevokeIn,
    TemplateIn,
    TemplateUpdate,
)
from patron.db import utcnow
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["coupons"])

Manager = Annotated[Actor, Depends(require("coupons.manage"))]
Reader = Annotated[Actor, Depends(require("coupons.read"))]
Issuer = Annotated[Actor, Depends(require("coupons.issue"))]
Redeemer = Annotated[Actor, Depends(require("coupons.redeem"))]
# Ids in the path fit the database's 64-bit keys; anything larger is a 422, not a driver error.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


def render(data: Any, status_code: int = 200) -> JSONResponse:
    """Money as exact decimal strings, never floats."""
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}),
                        status_code=status_code)


def _written(result: dict[str, Any]) -> JSONResponse:
    return render(result, 200 if result.get("replayed") else 201)


@router.get("/coupons/templates")
def list_templates(uow: UowDep, actor: Reader, program: str | None = None) -> Any:
    return render({"items": service.list_templates(uow.c, actor=actor, program=program)})


@router.post("/coupons/templates")
def create_template(body: TemplateIn, uow: UowDep, actor: Manager) -> Any:
    """A template of a loyalty program, with its first version of terms."""
    return render(service.create_template(uow=uow, actor=actor, data=body), 201)


@router.get("/coupons/templates/{template_id}")
def get_template(template_id: Id, uow: UowDep, actor: Reader) -> Any:
    """The template with every version of its terms."""
    return render(service.get_template(uow.c, actor=actor, template_id=template_id))


@router.patch("/coupons/templates/{template_id}")
def update_template(template_id: Id, body: TemplateUpdate, uow: UowDep, actor: Manager) -> Any:
    """Name, status, limits in place; new terms make a new version (issued coupons keep theirs)."""
    return render(service.update_template(uow=uow, actor=actor, template_id=template_id,
                                          changes=body))


@router.post("/coupons/templates/{template_id}/issue")
def issue(template_id: Id, body: IssueIn, uow: UowDep, actor: Issuer) -> Any:
    """Issue to one member or a list. The same ``idempotency_key`` again returns the first issue
    (200); with a different request it is a 409."""
    return _written(service.issue(uow=uow, actor=actor, template_id=template_id, body=body))


@router.get("/coupons/members/{member_id}")
def member_coupons(member_id: Id, uow: UowDep, actor: Redeemer,
                   status: str | None = None) -> Any:
    """A member's coupons, usable ones first (at the till)."""
    return render({"items": service.member_coupons(uow.c, actor=actor, member_id=member_id,
                                                   status=status)})


@router.get("/coupons/codes/{code}")
def coupon_by_code(code: str, uow: UowDep, actor: Redeemer) -> Any:
    """A coupon by its code (as printed, scanned or typed: case and dashes do not matter)."""
    return render(service.coupon_by_code(uow.c, actor=actor, code=code))


@router.post("/coupons/{coupon_id}/revoke", dependencies=[Depends(require("records.delete"))])
def revoke(coupon_id: Id, body: RevokeIn, uow: UowDep, actor: Manager) -> Any:
    """Withdraw an unused coupon, with a reason (audited)."""
    return render(service.revoke(uow=uow, actor=actor, coupon_id=coupon_id, reason=body.reason))


@router.post("/coupons/evaluate")
def evaluate(body: EvaluateIn, uow: UowDep, actor: Redeemer) -> Any:
    """What the chosen coupons do to a basket: the accepted combination, each refused coupon's
    reason, whether points may pay. Writes nothing."""
    return render(service.evaluate_for(
        uow.c, actor=actor, member_id=body.member_id, basket=body.basket.basket(utcnow()),
        codes=body.codes, tier_discount_percent=body.tier_discount_percent,
        with_points=body.with_points))


@router.post("/coupons/redeem")
def redeem(body: RedeemIn, uow: UowDep, actor: Redeemer) -> Any:
    """Use the coupons on the basket now, all or none."""
    return _written(service.redeem(uow=uow, actor=actor, body=body))


@router.post("/coupons/holds")
def hold(body: HoldIn, uow: UowDep, actor: Redeemer) -> Any:
    """Reserve the coupons for this till; then commit or release, or the hold expires."""
    return _written(service.hold(uow=uow, actor=actor, body=body))


@router.get("/coupons/operations/{operation_id}")
def get_operation(operation_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    return render(service.get_operation(uow.c, actor=actor, operation_id=operation_id))


@router.post("/coupons/holds/{operation_id}/commit")
def commit_hold(operation_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    return render(service.commit_hold(uow=uow, actor=actor, operation_id=operation_id))


@router.post("/coupons/holds/{operation_id}/release")
def release_hold(operation_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    return render(service.release_hold(uow=uow, actor=actor, operation_id=operation_id))


@router.get("/coupons/liability")
def liability(uow: UowDep, actor: Reader, program: str | None = None) -> Any:
    """Outstanding coupons by template, month of expiry and store of issue."""
    return render(service.liability(uow.c, actor=actor, program=program))
