"""One customer's lifetime-value predictions and preferences over HTTP.

Both answer 404 for a customer outside the caller's scope, exactly like the other customer
routes. A customer the last ``patron analytics predict`` did not cover (or none has run yet)
gets ``"computed": false`` and empty figures rather than an error.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, select

from patron.analytics.clv_tables import customer_predictions
from patron.analytics.preferences import customer_preferences
from patron.customers.queries import visible_customer
from patron.deps import UowDep, require
from patron.errors import Forbidden
from patron.security.model import Actor

router = APIRouter(tags=["analytics"])

Reader = Annotated[Actor, Depends(require("customers.read"))]

PREDICTION_FIELDS = ("probability_alive", "expected_purchases_30d", "expected_purchases_90d",
                     "expected_next_purchase", "expected_average_spend", "clv_12m",
                     "calibration_end", "fitted_at")


def customer_prediction(conn: Connection, *, actor: Actor, customer_id: int) -> dict[str, Any]:
    """The stored prediction of one customer; ``NotFound`` outside the actor's scope."""
    if not actor.can("customers.read"):
        raise Forbidden("forbidden", params={"permission": "customers.read"})
    visible_customer(conn, actor, customer_id)
    p = customer_predictions.c
    row = conn.execute(select(*(getattr(p, f) for f in PREDICTION_FIELDS))
                       .where(p.customer_id == customer_id)).mappings().first()
    out: dict[str, Any] = {"customer_id": customer_id, "computed": row is not None}
    for name in PREDICTION_FIELDS:
        value = None if row is None else row[name]
        out[name] = round(value, 4) if isinstance(value, float) else value
    return out


def render(data: Any) -> JSONResponse:
    """Money as exact decimal strings, never floats."""
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}))


@router.get("/customers/{customer_id}/predictions")
def predictions(customer_id: int, uow: UowDep, actor: Reader) -> Any:
    """Probability of being active, expected purchases in 30 / 90 days, the expected next
    purchase date and the 12-month CLV, from the last prediction refresh."""
    return render(customer_prediction(uow.c, actor=actor, customer_id=customer_id))


@router.get("/customers/{customer_id}/preferences")
def preferences(customer_id: int, uow: UowDep, actor: Reader) -> Any:
    """Favourite categories, SKUs, store and channel; shares of orders per local hour slot and
    weekday; price sensitivity; median basket size."""
    return render(customer_preferences(uow.c, actor=actor, customer_id=customer_id))
