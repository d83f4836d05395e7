"""The rewards catalog over HTTP under /api/v1/rewards: items of a program, redemptions that
hold points and stock, fulfilment and cancellation. Routes parse, call a service, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from patron.deps import UowDep, require
from patron.loyalty.api import render
from patron.rewards import service
from patron.rewards.schemas import ItemIn, ItemUpdate, RedemptionIn
from patron.security.model import Actor

router = APIRouter(tags=["rewards"])

Manager = Annotated[Actor, Depends(require("rewards.manage"))]
Reader = Annotated[Actor, Depends(require("rewards.read"))]
Redeemer = Annotated[Actor, Depends(require("rewards.redeem"))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/rewards/programs/{code}/items")
def list_items(code: str, uow: UowDep, actor: Reader,
               redeemable: Annotated[bool, Query()] = False) -> Any:
    """The program's catalog; ``redeemable=true``: only items on offer now."""
    return render({"items": service.list_items(uow.c, actor=actor, program_code=code,
                                               redeemable_only=redeemable)})


@router.post("/rewards/programs/{code}/items")
def create_item(code: str, body: ItemIn, uow: UowDep, actor: Manager) -> Any:
    return render(service.create_item(uow=uow, actor=actor, program_code=code, data=body), 201)


@router.get("/rewards/items/{item_id}")
def get_item(item_id: Id, uow: UowDep, actor: Reader) -> Any:
    return render(service.get_item(uow.c, actor=actor, item_id=item_id))


@router.patch("/rewards/items/{item_id}")
def update_item(item_id: Id, body: ItemUpdate, uow: UowDep, actor: Manager) -> Any:
    """Prices, stock, limits, validity, active flag; new prices apply to new redemptions."""
    return render(service.update_item(uow=uow, actor=actor, item_id=item_id, changes=body))


@router.post("/rewards/items/{item_id}/redemptions")
def redeem(item_id: Id, body: RedemptionIn, uow: UowDep, actor: Redeemer) -> Any:
    """Hold the member's points and reserve the units (201); the same ``idempotency_key``
    again returns the first redemption (200), with another request a 409."""
    out = service.redeem(uow=uow, actor=actor, item_id=item_id, body=body)
    return render(out, 200 if out["replayed"] else 201)


@router.get("/rewards/redemptions/{redemption_id}")
def get_redemption(redemption_id: Id, uow: UowDep, actor: Reader) -> Any:
    return render(service.get_redemption(uow.c, actor=actor, redemption_id=redemption_id))


@router.post("/rewards/redemptions/{redemption_id}/fulfil")
def fulfil(redemption_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    """Hand the reward over: points spent, units sold."""
    return render(service.fulfil(uow=uow, actor=actor, redemption_id=redemption_id))


@router.post("/rewards/redemptions/{redemption_id}/cancel")
def cancel(redemption_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    """Give the points and the units back."""
    return render(service.cancel(uow=uow, actor=actor, redemption_id=redemption_id))


@router.get("/rewards/members/{member_id}/redemptions")
def member_redemptions(member_id: Id, uow: UowDep, actor: Reader) -> Any:
    return render({"items": service.member_redemptions(uow.c, actor=actor,
                                                       member_id=member_id)})
