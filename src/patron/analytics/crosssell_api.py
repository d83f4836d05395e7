"""Cross-sell over HTTP: the stored association rules of a scope and one customer's
next-best products. Routes parse, call the service, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from patron.analytics import crosssell_service as service
from patron.analytics.api import render
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["analytics"])

Reader = Annotated[Actor, Depends(require("dashboard.read"))]
CustomerReader = Annotated[Actor, Depends(require("customers.read"))]


@router.get("/analytics/rules")
def rules(uow: UowDep, actor: Reader, level: str = "category", store: str | None = None,
          limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    """The rules last computed for a store (``store=CODE``) or overall, strongest lift
    first."""
    return render(service.list_rules(uow.c, actor=actor, level=level, store=store,
                                     limit=limit))


@router.get("/customers/{customer_id}/recommendations")
def customer_recommendations(customer_id: int, uow: UowDep, actor: CustomerReader) -> Any:
    """The customer's next-best products from the last refresh (404 outside the caller's
    stores)."""
    return render(service.recommendations_for(uow.c, actor=actor, customer_id=customer_id))
