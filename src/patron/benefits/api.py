"""Birthday, anniversary and referral over HTTP under /api/v1/benefits: a program's settings,
a member's invite code and benefits, enrolment with an invite code."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from patron.benefits import service
from patron.benefits.schemas import BenefitSettingsIn, ReferredEnrolIn
from patron.deps import UowDep, require
from patron.loyalty.api import render
from patron.security.model import Actor

router = APIRouter(tags=["benefits"])

Manager = Annotated[Actor, Depends(require("benefits.manage"))]
Reader = Annotated[Actor, Depends(require("benefits.read"))]
Referrer = Annotated[Actor, Depends(require("benefits.refer"))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/benefits/programs/{code}/settings")
def get_settings(code: str, uow: UowDep, actor: Reader) -> Any:
    return render(service.get_settings(uow.c, actor=actor, program_code=code))


@router.put("/benefits/programs/{code}/settings")
def put_settings(code: str, body: BenefitSettingsIn, uow: UowDep, actor: Manager) -> Any:
    """Birthday gift (points in the birthday month, or a multiplier on its points),
    anniversary points, referral rewards, minimum spend and days to qualify."""
    return render(service.put_settings(uow=uow, actor=actor, program_code=code, body=body))


@router.post("/benefits/programs/{code}/referred-enrolments")
def enrol_referred(code: str, body: ReferredEnrolIn, uow: UowDep, actor: Referrer) -> Any:
    """Enrol a new member with a friend's invite code; enrolment and link commit together."""
    return render(service.enrol_referred(uow=uow, actor=actor, program_code=code, body=body),
                  201)


@router.post("/benefits/members/{member_id}/invite-code")
def invite_code(member_id: Id, uow: UowDep, actor: Referrer) -> Any:
    """The member's invite code: created on the first call (201), the same one after (200)."""
    out, created = service.invite_code(uow=uow, actor=actor, member_id=member_id)
    return render(out, 201 if created else 200)


@router.get("/benefits/members/{member_id}")
def member_benefits(member_id: Id, uow: UowDep, actor: Reader) -> Any:
    """Invite code, birthday and anniversary gifts, referrals made and the one that brought
    the member."""
    return render(service.member_benefits(uow.c, actor=actor, member_id=member_id))
