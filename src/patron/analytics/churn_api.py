"""Churn risk over HTTP: one customer's score and the latest evaluation runs. Routes parse,
call the service, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from patron.analytics import churn_service
from patron.analytics.api import render
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["analytics"])

Reader = Annotated[Actor, Depends(require("dashboard.read"))]


@router.get("/customers/{customer_id}/churn")
def customer_churn(customer_id: int, uow: UowDep, actor: Reader) -> Any:
    """The customer's current churn score (null before the first `churn-score` refresh)."""
    return render(churn_service.customer_churn(uow.c, actor=actor, customer_id=customer_id))


@router.get("/analytics/churn/evaluations")
def churn_evaluations(uow: UowDep, actor: Reader,
                      limit: Annotated[int, Query(ge=1, le=100)] = 10) -> Any:
    """The latest churn-model evaluations, newest first: AUC, Brier score and calibration of
    the model and of the naive days-since-last-purchase rule (owners and analysts)."""
    return render(churn_service.churn_evaluations(uow.c, actor=actor, limit=limit))
