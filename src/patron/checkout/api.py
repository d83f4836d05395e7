"""The POS checkout over HTTP under /api/v1/checkout: quote, commit, two-phase holds, refunds
and a till's offline queue. Amounts are integer fen. Routes parse, call the service, render."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from patron.checkout import service
from patron.checkout.schemas import CommitIn, HoldIn, OfflineBatchIn, QuoteIn, RefundIn
from patron.db import UnitOfWork, get_engine
from patron.deps import UowDep, request_language, require
from patron.i18n import t
from patron.security.model import Actor

router = APIRouter(tags=["checkout"])

Seller = Annotated[Actor, Depends(require("checkout.sell"))]
Refunder = Annotated[Actor, Depends(require("checkout.refund"))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


def read_uow() -> Iterator[UnitOfWork]:
    """A read-only transaction: on SQLite it does not take the writer lock."""
    with UnitOfWork(get_engine(), readonly=True) as uow:
        yield uow


ReadUow = Annotated[UnitOfWork, Depends(read_uow)]


def render(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}),
                        status_code=status_code)


@router.post("/checkout/quote")
def quote(body: QuoteIn, uow: ReadUow, actor: Seller) -> Any:
    """The member, tier and its benefits, the basket's prices with the member discount, the
    points the member may redeem (and their value) and will earn. Writes nothing."""
    return render(service.quote(uow.c, actor=actor, body=body))


@router.post("/checkout/commits", status_code=201)
def commit(body: CommitIn, uow: UowDep, actor: Seller) -> Any:
    """Record the sale and everything that pays it in one transaction. The same
    ``idempotency_key`` again returns the first result (200); with another request a 409."""
    out = service.commit(uow=uow, actor=actor, body=body)
    return render(out, 200 if out.get("replayed") else 201)


@router.get("/checkout/commits/{checkout_id}")
def get_commit(checkout_id: Id, uow: ReadUow, actor: Seller) -> Any:
    return render(service.get_checkout(uow.c, actor=actor, checkout_id=checkout_id))


@router.post("/checkout/commits/{checkout_id}/refunds", status_code=201)
def refund(checkout_id: Id, body: RefundIn, uow: UowDep, actor: Refunder) -> Any:
    """A full or partial refund: the return, the points clawed back, the points that paid
    given back, in one transaction; idempotent on the key."""
    out = service.refund(uow=uow, actor=actor, checkout_id=checkout_id, body=body)
    return render(out, 200 if out.get("replayed") else 201)


@router.post("/checkout/holds", status_code=201)
def create_hold(body: HoldIn, uow: UowDep, actor: Seller) -> Any:
    """Reserve what will pay a basket (a till paying in steps); expires by itself."""
    out = service.create_hold(uow=uow, actor=actor, body=body)
    return render(out, 200 if out.get("replayed") else 201)


@router.get("/checkout/holds/{hold_id}")
def get_hold(hold_id: Id, uow: ReadUow, actor: Seller) -> Any:
    return render(service.get_hold(uow.c, actor=actor, hold_id=hold_id))


@router.post("/checkout/holds/{hold_id}/release")
def release_hold(hold_id: Id, uow: UowDep, actor: Seller) -> Any:
    return render(service.release_hold(uow=uow, actor=actor, hold_id=hold_id))


@router.post("/checkout/offline-batches")
def offline_batch(body: OfflineBatchIn, uow: UowDep, actor: Seller, request: Request) -> Any:
    """A till's offline queue: applied in purchase-time order, each entry on its own; the
    result of each entry in the order sent."""
    out = service.sync_offline(uow=uow, actor=actor, body=body)
    lang = request_language(request)
    for r in out["results"]:
        err = r.get("error")
        if err:
            err["message"] = t(err["code"], lang, **err["params"])
            for f in err["fields"]:
                f["message"] = t(f["reason"], lang, **f["params"])
    return render(out)
