"""RFM segments and lifecycle stages over HTTP: summaries, drill-downs, flows, one customer's
view, thresholds and the on-demand refresh. Routes parse, call the service, render."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from patron.analytics import service
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["analytics"])

Reader = Annotated[Actor, Depends(require("dashboard.read"))]
OrgAdmin = Annotated[Actor, Depends(require("admin.org"))]


def render(data: Any, status_code: int = 200) -> JSONResponse:
    """Money as exact decimal strings, never floats."""
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}),
                        status_code=status_code)


@router.get("/analytics/rfm/summary")
def rfm_summary(uow: UowDep, actor: Reader, scope: str = "overall") -> Any:
    """Customers per segment with average recency, frequency, monetary and scores, in the
    caller's language. ``scope``: ``overall``, ``store:CODE``, ``region:CODE``, ``brand:CODE``."""
    return render(service.rfm_summary(uow.c, actor=actor, scope=scope))


@router.get("/analytics/rfm/segments/{segment}/customers")
def segment_customers(segment: str, uow: UowDep, actor: Reader, scope: str = "overall",
                      page: Annotated[int, Query(ge=1)] = 1,
                      page_size: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
    """One segment's customers (masked), highest spend first."""
    return render(service.segment_customers(uow.c, actor=actor, segment=segment, scope=scope,
                                            page=page, page_size=page_size))


@router.get("/analytics/lifecycle/summary")
def lifecycle_summary(uow: UowDep, actor: Reader) -> Any:
    return render(service.lifecycle_summary(uow.c, actor=actor))


@router.get("/analytics/lifecycle/flows")
def lifecycle_flows(uow: UowDep, actor: Reader,
                    date_from: Annotated[dt.date, Query(alias="from")],
                    date_to: Annotated[dt.date, Query(alias="to")]) -> Any:
    """Stage changes between two dates (inclusive), counted per from -> to stage."""
    return render(service.lifecycle_flows(uow.c, actor=actor, date_from=date_from,
                                          date_to=date_to))


@router.get("/customers/{customer_id}/analytics")
def customer_analytics(customer_id: int, uow: UowDep, actor: Reader) -> Any:
    """Segment and scores (overall and per scope), stage and stage history of one customer."""
    return render(service.customer_analytics(uow.c, actor=actor, customer_id=customer_id))


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: dt.datetime | None = None


@router.post("/analytics/refresh")
def refresh(uow: UowDep, actor: Reader, body: RefreshIn | None = None) -> Any:
    """Recompute every RFM scope and the lifecycle stages now (owners and analysts)."""
    return render(service.refresh_all(uow=uow, actor=actor,
                                      as_of=body.as_of if body else None))


@router.get("/analytics/settings")
def get_thresholds(uow: UowDep, actor: Reader) -> Any:
    return render(service.get_thresholds(uow.c, actor=actor))


class ThresholdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rfm: dict[str, list[float] | None] | None = None
    lifecycle: dict[str, float | None] | None = Field(default=None)


@router.put("/analytics/settings")
def set_thresholds(body: ThresholdsIn, uow: UowDep, actor: OrgAdmin) -> Any:
    """Owner thresholds; a null or missing value restores the default (quantiles for RFM, the
    adaptive rhythm for lifecycle stages)."""
    return render(service.set_thresholds(uow=uow, actor=actor, rfm=body.rfm,
                                         lifecycle=body.lifecycle))
