"""Purchase capture over HTTP: one order, a batch of up to 1,000, returns."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from patron.deps import UowDep, require
from patron.errors import Conflict, FieldError, ValidationFailed
from patron.orders import returns as returns_service
from patron.orders import service
from patron.orders.batcher import OrderBatcher
from patron.orders.schemas import OrderBatchIn, OrderIn, OrderOutcome, ReturnIn
from patron.security.model import Actor

router = APIRouter(tags=["orders"])
Writer = Annotated[Actor, Depends(require("orders.write"))]


@router.post("/orders", response_model=OrderOutcome, status_code=201,
             responses={200: {"description": "Already recorded with the same content"},
                        409: {"description": "Same id, different content"},
                        422: {"description": "Invalid order"}})
async def create_order(order: OrderIn, actor: Writer, request: Request) -> Any:
    """Record one purchase. Re-sending it is safe: the same content returns the first result
    (200) and writes nothing; the same channel + external id with other content is a 409
    that lists what differs. Concurrent requests share transactions (group commit). A
    created or duplicate order by a cached API key is usually answered by
    ``orders.fast_path`` with these same steps, before this route is reached."""
    outcome = await order_batcher(request.app).submit(order, actor)
    if outcome.status == "rejected":
        raise ValidationFailed("validation_failed", fields=[
            FieldError(e["field"], e["reason"], e.get("params") or {}) for e in outcome.errors])
    if outcome.status == "conflict":
        raise Conflict("order_conflict", differences=outcome.differences)
    status = 201 if outcome.status == "created" else 200
    return JSONResponse(outcome.model_dump(mode="json"), status_code=status)


def order_batcher(app: Any) -> OrderBatcher:
    """The process's group-commit batcher (this route and ``orders.fast_path`` share it)."""
    batcher = getattr(app.state, "order_batcher", None)
    if batcher is None:
        batcher = app.state.order_batcher = OrderBatcher()
    return batcher  # type: ignore[no-any-return]


@router.post("/orders/batch")
def create_orders_batch(batch: OrderBatchIn, uow: UowDep, actor: Writer) -> dict[str, Any]:
    """Record up to 1,000 orders. Each order is created, a duplicate, a conflict or rejected
    with its reasons; no order is ever half-written."""
    outcomes = service.record_orders(uow=uow, orders_in=batch.orders, source="api",
                                     actor=actor)
    summary: dict[str, int] = {"created": 0, "duplicate": 0, "conflict": 0, "rejected": 0}
    for o in outcomes:
        summary[o.status] += 1
    return {"summary": summary, "results": [o.model_dump(mode="json") for o in outcomes]}


@router.post("/returns", status_code=201)
def create_return(ret: ReturnIn, uow: UowDep, actor: Writer) -> Any:
    """Record a full or partial return against an order's lines; idempotent on its id."""
    result = returns_service.record_return(uow=uow, ret=ret, actor=actor)
    return JSONResponse(result, status_code=201 if result["status"] == "created" else 200)


__all__ = ["router", "Body"]
