"""Personal-information rights over HTTP under /api/v1/privacy: data-subject requests with
their deadline, the copy, correction, deletion and refusal, the retention job, and the
personalised-marketing opt-out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from patron.deps import UowDep, require
from patron.loyalty.api import render
from patron.privacy import service
from patron.privacy.schemas import (
    CorrectionIn,
    PersonalisationIn,
    RefusalIn,
    RequestIn,
    RetentionIn,
)
from patron.security.model import Actor

router = APIRouter(tags=["privacy"])

Manager = Annotated[Actor, Depends(require("privacy.manage"))]
Writer = Annotated[Actor, Depends(require("customers.write"))]
Reader = Annotated[Actor, Depends(require("customers.read"))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/privacy/requests", status_code=201)
def create_request(body: RequestIn, uow: UowDep, actor: Manager) -> Any:
    """Record a person's request (access, correction, deletion); its deadline is fixed from
    when it was received."""
    return render(service.create_request(uow=uow, actor=actor, customer_id=body.customer_id,
                                         kind=body.kind, source=body.source, note=body.note,
                                         received_at=body.received_at), 201)


@router.get("/privacy/requests")
def list_requests(uow: UowDep, actor: Manager,
                  status: Annotated[str | None, Query(pattern="^(open|done|refused)$")] = None,
                  overdue: bool = False,
                  customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Any:
    return render(service.list_requests(uow.c, actor=actor, status=status, overdue=overdue,
                                        customer_id=customer_id))


@router.get("/privacy/requests/{request_id}")
def get_request(request_id: Id, uow: UowDep, actor: Manager) -> Any:
    return render(service.get_request(uow.c, actor=actor, request_id=request_id))


@router.post("/privacy/requests/{request_id}/copy")
def answer_access(request_id: Id, uow: UowDep, actor: Manager) -> Any:
    """Answer an access request: everything Patron holds about the person, as JSON."""
    r = service.get_request(uow.c, actor=actor, request_id=request_id)
    return render(service.person_copy(uow=uow, actor=actor, customer_id=r["customer_id"],
                                      request_id=request_id))


@router.post("/privacy/requests/{request_id}/correction")
def answer_correction(request_id: Id, body: CorrectionIn, uow: UowDep, actor: Manager) -> Any:
    return render(service.correct(uow=uow, actor=actor, request_id=request_id,
                                  changes=body.changes))


@router.post("/privacy/requests/{request_id}/erasure")
def answer_deletion(request_id: Id, uow: UowDep, actor: Manager) -> Any:
    """Answer a deletion request: anonymise the person; order amounts, ledgers and reports
    keep their sums."""
    return render(service.erase(uow=uow, actor=actor, request_id=request_id))


@router.post("/privacy/requests/{request_id}/refusal")
def refuse(request_id: Id, body: RefusalIn, uow: UowDep, actor: Manager) -> Any:
    return render(service.refuse(uow=uow, actor=actor, request_id=request_id,
                                 reason=body.reason))


@router.post("/privacy/retention/runs", status_code=201)
def run_retention(body: RetentionIn, uow: UowDep, actor: Manager) -> Any:
    """Anonymise customers inactive longer than the retention period (or count them, with
    ``dry_run``); the run is its own report."""
    return render(service.retention_run(uow=uow, actor=actor, dry_run=body.dry_run,
                                        inactive_days=body.inactive_days), 201)


@router.get("/privacy/retention/runs")
def retention_runs(uow: UowDep, actor: Manager) -> Any:
    return render(service.retention_runs(uow.c, actor=actor))


@router.get("/privacy/customers/{customer_id}/personalisation")
def get_personalisation(customer_id: Id, uow: UowDep, actor: Reader) -> Any:
    from patron.customers.queries import visible_customer

    visible_customer(uow.c, actor, customer_id)
    return render(service.personalisation(uow.c, customer_id))


@router.put("/privacy/customers/{customer_id}/personalisation")
def put_personalisation(customer_id: Id, body: PersonalisationIn, uow: UowDep,
                        actor: Writer) -> Any:
    """The person allows or refuses personalised marketing from automated scoring (PIPL
    article 24); each change is a new row of the consent ledger."""
    return render(service.set_personalisation(uow=uow, actor=actor, customer_id=customer_id,
                                              allowed=body.allowed, source=body.source,
                                              policy_version=body.policy_version))
