"""Loyalty over HTTP under /api/v1/loyalty: programs, rules and tiers; members, enrolment and
consent; balance with lots, the ledger, tier history; redemptions, two-phase holds, adjustments
and transfers. Routes parse, call a service or a reader, render."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from patron.deps import RecentAuth, UowDep, require
from patron.loyalty import queries, service
from patron.loyalty.schemas import (
    AdjustIn,
    ConsentIn,
    EnrolIn,
    HoldIn,
    ProgramIn,
    ProgramSettings,
    RedeemIn,
    RuleVersionIn,
    TierGrantIn,
    TierIn,
    TierUpdate,
    TransferIn,
)
from patron.security.model import Actor

router = APIRouter(tags=["loyalty"])

Manager = Annotated[Actor, Depends(require("loyalty.manage"))]
Reader = Annotated[Actor, Depends(require("loyalty.read"))]
Looker = Annotated[Actor, Depends(require("loyalty.lookup"))]
Enroller = Annotated[Actor, Depends(require("loyalty.enrol"))]
Redeemer = Annotated[Actor, Depends(require("loyalty.redeem"))]
Adjuster = Annotated[Actor, Depends(require("loyalty.adjust"))]
Page = Annotated[int, Query(ge=1, le=100000)]
# Ids in the path fit the database's 64-bit keys; anything larger is a 422, not a driver error.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
PageSize = Annotated[int, Query(ge=1, le=200)]


def render(data: Any, status_code: int = 200) -> JSONResponse:
    """Money as exact decimal strings, never floats."""
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}),
                        status_code=status_code)


def _operation(result: dict[str, Any]) -> JSONResponse:
    return render(result, 200 if result.get("replayed") else 201)


@router.get("/loyalty/programs")
def list_programs(uow: UowDep, actor: Looker) -> Any:
    return render({"items": service.list_programs(uow.c, actor=actor)})


@router.post("/loyalty/programs")
def create_program(body: ProgramIn, uow: UowDep, actor: Manager) -> Any:
    """A program for a brand, with its first earning rules (in force now) and its tiers."""
    return render(service.create_program(uow=uow, actor=actor, data=body), 201)


@router.get("/loyalty/programs/{code}")
def get_program(code: str, uow: UowDep, actor: Looker) -> Any:
    return render(service.get_program(uow.c, actor=actor, code=code))


@router.patch("/loyalty/programs/{code}")
def update_program(code: str, body: ProgramSettings, uow: UowDep, actor: Manager) -> Any:
    return render(service.update_program(uow=uow, actor=actor, code=code, changes=body))


@router.get("/loyalty/programs/{code}/rules")
def list_rules(code: str, uow: UowDep, actor: Reader) -> Any:
    return render({"items": service.list_rule_versions(uow.c, actor=actor, code=code)})


@router.post("/loyalty/programs/{code}/rules")
def add_rules(code: str, body: RuleVersionIn, uow: UowDep, actor: Manager) -> Any:
    """A new version of the earning rules, in force from ``effective_from`` (now or later)."""
    return render(service.add_rule_version(uow=uow, actor=actor, code=code, body=body), 201)


@router.post("/loyalty/programs/{code}/tiers")
def create_tier(code: str, body: TierIn, uow: UowDep, actor: Manager) -> Any:
    return render(service.create_tier(uow=uow, actor=actor, code=code, tier=body), 201)


@router.patch("/loyalty/programs/{code}/tiers/{tier}")
def update_tier(code: str, tier: str, body: TierUpdate, uow: UowDep, actor: Manager) -> Any:
    return render(service.update_tier(uow=uow, actor=actor, code=code, tier_code=tier,
                                      changes=body))


@router.get("/loyalty/programs/{code}/members")
def list_members(code: str, uow: UowDep, actor: Reader, page: Page = 1,
                 page_size: PageSize = 50, tier: str | None = None) -> Any:
    return render(queries.list_members(uow.c, actor=actor, program=code, page=page,
                                       page_size=page_size, tier=tier))


@router.post("/loyalty/programs/{code}/members")
def enrol(code: str, body: EnrolIn, uow: UowDep, actor: Enroller) -> Any:
    """Enrol by phone (the customer is found or created) with privacy and marketing consent.
    201 for a new member, 200 with the existing membership otherwise."""
    member, created = service.enrol(uow=uow, actor=actor, program_code=code, body=body)
    return render(member, 201 if created else 200)


@router.get("/loyalty/programs/{code}/lookup")
def lookup(code: str, uow: UowDep, actor: Looker, member_code: str | None = None,
           phone: str | None = None) -> Any:
    """At the till: member code or phone to the member's tier, benefits and balance."""
    return render(queries.lookup(uow.c, actor=actor, program=code, member_code=member_code,
                                 phone=phone))


@router.get("/loyalty/members/{member_id}")
def get_member(member_id: Id, uow: UowDep, actor: Reader) -> Any:
    return render(queries.get_member(uow.c, actor=actor, member_id=member_id))


@router.get("/loyalty/members/{member_id}/balance")
def balance(member_id: Id, uow: UowDep, actor: Looker) -> Any:
    """Available, pending, held and owed points, the lots with their expiry dates."""
    return render(queries.balance(uow.c, actor=actor, member_id=member_id))


@router.get("/loyalty/members/{member_id}/ledger")
def ledger(member_id: Id, uow: UowDep, actor: Reader, page: Page = 1,
           page_size: PageSize = 50) -> Any:
    return render(queries.ledger(uow.c, actor=actor, member_id=member_id, page=page,
                                 page_size=page_size))


@router.get("/loyalty/members/{member_id}/tiers")
def tier_history(member_id: Id, uow: UowDep, actor: Reader) -> Any:
    return render({"items": queries.tier_history(uow.c, actor=actor, member_id=member_id)})


@router.post("/loyalty/members/{member_id}/tier")
def grant_tier(member_id: Id, body: TierGrantIn, uow: UowDep, actor: Manager) -> Any:
    """Grant a tier by hand until a date (an owner's decision, audited with its reason)."""
    return render(service.grant_tier(uow=uow, actor=actor, member_id=member_id, body=body))


@router.get("/loyalty/members/{member_id}/consents")
def consents(member_id: Id, uow: UowDep, actor: Reader) -> Any:
    return render({"items": queries.consent_history(uow.c, actor=actor, member_id=member_id)})


@router.post("/loyalty/members/{member_id}/consents")
def record_consent(member_id: Id, body: ConsentIn, uow: UowDep, actor: Enroller) -> Any:
    """Grant or withdraw one consent; returns the consents now in force."""
    return render(service.record_consent(uow=uow, actor=actor, member_id=member_id, body=body),
                  201)


@router.post("/loyalty/members/{member_id}/redeem")
def redeem(member_id: Id, body: RedeemIn, uow: UowDep, actor: Redeemer) -> Any:
    """Spend points now. The same ``idempotency_key`` again returns the first result (200);
    with a different request it is a 409."""
    return _operation(service.redeem(uow=uow, actor=actor, member_id=member_id, body=body))


@router.post("/loyalty/members/{member_id}/holds")
def hold(member_id: Id, body: HoldIn, uow: UowDep, actor: Redeemer) -> Any:
    """Reserve points; then commit or release the hold, or it expires by itself."""
    return _operation(service.hold(uow=uow, actor=actor, member_id=member_id, body=body))


@router.post("/loyalty/holds/{hold_id}/commit")
def commit_hold(hold_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    return render(service.commit_hold(uow=uow, actor=actor, hold_id=hold_id))


@router.post("/loyalty/holds/{hold_id}/release")
def release_hold(hold_id: Id, uow: UowDep, actor: Redeemer) -> Any:
    return render(service.release_hold(uow=uow, actor=actor, hold_id=hold_id))


@router.post("/loyalty/members/{member_id}/adjustments", dependencies=[RecentAuth])
def adjust(member_id: Id, body: AdjustIn, uow: UowDep, actor: Adjuster) -> Any:
    """A manual correction of points or growth value, with a reason (audited)."""
    return _operation(service.adjust(uow=uow, actor=actor, member_id=member_id, body=body))


@router.post("/loyalty/members/{member_id}/transfers", dependencies=[RecentAuth])
def transfer(member_id: Id, body: TransferIn, uow: UowDep, actor: Adjuster) -> Any:
    return _operation(service.transfer(uow=uow, actor=actor, member_id=member_id, body=body))

