"""Stored value over HTTP under /api/v1/stored-value: settings and bonus rules; a member's
balance, operations and entries; top-ups, spends, two-phase holds, refunds to the card,
cash-backs and adjustments; the liability and settlement reports. Routes parse, call a service
or a reader, render."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from patron.config import get_settings
from patron.deps import RecentAuth, UowDep, require
from patron.loyalty.api import render
from patron.security.model import Actor
from patron.storedvalue import queries, reports, service
from patron.storedvalue.schemas import (
    AdjustIn,
    BonusRulesIn,
    CashoutIn,
    HoldIn,
    RefundIn,
    SettingsIn,
    SpendIn,
    TopUpIn,
)

router = APIRouter(tags=["stored value"])

Manager = Annotated[Actor, Depends(require("stored_value.manage"))]
Reader = Annotated[Actor, Depends(require("stored_value.read"))]
Looker = Annotated[Actor, Depends(require("stored_value.lookup"))]
ToppingUp = Annotated[Actor, Depends(require("stored_value.topup"))]
Spender = Annotated[Actor, Depends(require("stored_value.spend"))]
Casher = Annotated[Actor, Depends(require("stored_value.cashout"))]
Adjuster = Annotated[Actor, Depends(require("stored_value.adjust"))]
# Ids in the path fit the database's 64-bit keys; anything larger is a 422, not a driver error.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
Page = Annotated[int, Query(ge=1, le=100000)]
PageSize = Annotated[int, Query(ge=1, le=200)]
PREFIX = "/stored-value"


def _operation(result: dict[str, Any]) -> JSONResponse:
    return render(result, 200 if result.get("replayed") else 201)


@router.get(PREFIX + "/programs/{code}")
def get_program(code: str, uow: UowDep, actor: Looker) -> Any:
    """Whether the program offers stored value, its spending order, hold time and bonus rules
    in force."""
    return render(service.get_program(uow.c, actor=actor, code=code))


@router.put(PREFIX + "/programs/{code}")
def configure(code: str, body: SettingsIn, uow: UowDep, actor: Manager) -> Any:
    """Offer stored value in the program, or change its spending order and hold time."""
    return render(service.configure(uow=uow, actor=actor, code=code, body=body))


@router.get(PREFIX + "/programs/{code}/bonus-rules")
def list_bonus_rules(code: str, uow: UowDep, actor: Looker) -> Any:
    return render({"items": service.list_bonus_rules(uow.c, actor=actor, code=code)})


@router.post(PREFIX + "/programs/{code}/bonus-rules")
def add_bonus_rules(code: str, body: BonusRulesIn, uow: UowDep, actor: Manager) -> Any:
    """A new version of the bonus tiers, in force from ``effective_from`` (now or later)."""
    return render(service.add_bonus_rules(uow=uow, actor=actor, code=code, body=body), 201)


@router.get(PREFIX + "/members/{member_id}")
def balance(member_id: Id, uow: UowDep, actor: Looker) -> Any:
    """Principal, bonus, held money and what can be spent now."""
    return render(service.balance(uow.c, actor=actor, member_id=member_id))


@router.get(PREFIX + "/members/{member_id}/operations")
def operations(member_id: Id, uow: UowDep, actor: Reader, page: Page = 1,
               page_size: PageSize = 50) -> Any:
    return render(queries.operations(uow.c, actor=actor, member_id=member_id, page=page,
                                     page_size=page_size))


@router.get(PREFIX + "/members/{member_id}/entries")
def entries(member_id: Id, uow: UowDep, actor: Reader, page: Page = 1,
            page_size: PageSize = 50) -> Any:
    return render(queries.entries(uow.c, actor=actor, member_id=member_id, page=page,
                                  page_size=page_size))


@router.post(PREFIX + "/members/{member_id}/top-ups")
def topup(member_id: Id, body: TopUpIn, uow: UowDep, actor: ToppingUp) -> Any:
    """Money paid onto the card at a store (or through a channel), with the bonus of the rules
    in force. The same ``idempotency_key`` again returns the first result (200); with a
    different request it is a 409."""
    return _operation(service.topup(uow=uow, actor=actor, member_id=member_id, body=body))


@router.post(PREFIX + "/members/{member_id}/spends")
def spend(member_id: Id, body: SpendIn, uow: UowDep, actor: Spender) -> Any:
    """Pay with the card now; not enough money is a 409 ``insufficient_balance``."""
    return _operation(service.spend(uow=uow, actor=actor, member_id=member_id, body=body))


@router.post(PREFIX + "/members/{member_id}/holds")
def hold(member_id: Id, body: HoldIn, uow: UowDep, actor: Spender) -> Any:
    """Reserve money; then commit or release the hold, or it expires by itself."""
    return _operation(service.hold(uow=uow, actor=actor, member_id=member_id, body=body))


@router.post(PREFIX + "/holds/{hold_id}/commit")
def commit_hold(hold_id: Id, uow: UowDep, actor: Spender) -> Any:
    return render(service.commit_hold(uow=uow, actor=actor, hold_id=hold_id))


@router.post(PREFIX + "/holds/{hold_id}/release")
def release_hold(hold_id: Id, uow: UowDep, actor: Spender) -> Any:
    return render(service.release_hold(uow=uow, actor=actor, hold_id=hold_id))


@router.post(PREFIX + "/spends/{spend_id}/refunds")
def refund(spend_id: Id, body: RefundIn, uow: UowDep, actor: Spender) -> Any:
    """Give (part of) a spend or committed hold back to the card, in the proportions of
    principal and bonus it used; never more than it used."""
    return _operation(service.refund(uow=uow, actor=actor, spend_id=spend_id, body=body))


@router.post(PREFIX + "/top-ups/{topup_id}/refunds")
def cashout(topup_id: Id, body: CashoutIn, uow: UowDep, actor: Casher) -> Any:
    """Pay unused principal of a top-up back in cash, with a reason; its bonus is forfeited in
    proportion."""
    return _operation(service.cashout(uow=uow, actor=actor, topup_id=topup_id, body=body))


@router.post(PREFIX + "/members/{member_id}/adjustments", dependencies=[RecentAuth])
def adjust(member_id: Id, body: AdjustIn, uow: UowDep, actor: Adjuster) -> Any:
    """A manual correction of principal or bonus, with a reason (audited)."""
    return _operation(service.adjust(uow=uow, actor=actor, member_id=member_id, body=body))


@router.get(PREFIX + "/reports/liability")
def liability(uow: UowDep, actor: Reader, as_of: dt.datetime | None = None,
              program: str | None = None) -> Any:
    """Outstanding principal and bonus by store of top-up, and the total."""
    if as_of is not None and as_of.tzinfo is None:
        from patron.loyalty.service import invalid

        raise invalid("as_of", "timezone_required")
    return render(reports.liability(uow.c, actor=actor, as_of=as_of, program=program))


@router.get(PREFIX + "/reports/settlement")
def settlement(uow: UowDep, actor: Reader,
               from_: Annotated[dt.date, Query(alias="from")],
               to: dt.date, program: str | None = None) -> Any:
    """Principal topped up at one store and spent at another over the local days ``from`` to
    ``to`` (inclusive), and what each store owes another."""
    start, end = reports.day_bounds(from_, to, get_settings().default_timezone)
    return render(reports.settlement(uow.c, actor=actor, start=start, end=end, program=program))
