"""Dashboards over HTTP, under ``/api/v1/analytics/dashboards``: breakdowns, members against
non-members, cohorts, RFM x lifecycle structure, the customers behind any figure (and their
audited export), promotions, and the on-demand refresh. Routes parse, call the service,
render."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from patron.analytics import dashboards_service as service
from patron.deps import RecentAuth, UowDep, require
from patron.security.model import Actor

router = APIRouter(prefix="/analytics/dashboards", tags=["dashboards"])

Reader = Annotated[Actor, Depends(require("dashboard.read"))]
Exporter = Annotated[Actor, Depends(require("export"))]
OrgAdmin = Annotated[Actor, Depends(require("admin.org"))]
DateFrom = Annotated[dt.date, Query(alias="from")]
DateTo = Annotated[dt.date, Query(alias="to")]
MEDIA = {"csv": "text/csv; charset=utf-8",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
CELL_PARAMS = ("view", "by", "key", "from", "to", "scope", "channel", "member", "metric",
               "cohort", "k", "segment", "stage")


def render(data: Any, status_code: int = 200) -> JSONResponse:
    """Money as exact decimal strings, never floats."""
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}),
                        status_code=status_code)


@router.get("/breakdown")
def breakdown(uow: UowDep, actor: Reader, by: str, date_from: DateFrom, date_to: DateTo,
              scope: str = "overall", channel: str | None = None,
              member: str | None = None) -> Any:
    """Sales, refunds, orders, customers, new / returning / repeat customers, repurchase rate,
    average order value and frequency per ``by`` (store, region, brand, channel, category,
    day, week, month) over ``from``..``to`` (local dates), with the period's total.
    ``scope``: overall, store:CODE, region:CODE, brand:CODE; ``member``: member, non_member,
    guest."""
    return render(service.breakdown(uow.c, actor=actor, by=by, date_from=date_from,
                                    date_to=date_to, scope=scope, channel=channel,
                                    member=member))


@router.get("/members")
def members(uow: UowDep, actor: Reader, date_from: DateFrom, date_to: DateTo,
            scope: str = "overall", channel: str | None = None) -> Any:
    """Members, non-member customers and guest orders side by side for a period."""
    return render(service.members_report(uow.c, actor=actor, date_from=date_from,
                                         date_to=date_to, scope=scope, channel=channel))


@router.get("/cohorts")
def cohorts(uow: UowDep, actor: Reader, scope: str = "overall", channel: str | None = None,
            member: str | None = None,
            month_from: Annotated[str | None, Query(alias="from")] = None,
            month_to: Annotated[str | None, Query(alias="to")] = None,
            months: Annotated[int, Query(ge=0, le=36)] = 12) -> Any:
    """Monthly acquisition cohorts (``from``/``to`` as YYYY-MM, default the last twelve
    months) with the share of each buying again in each of the next ``months`` months."""
    return render(service.cohorts(uow.c, actor=actor, scope=scope, channel=channel,
                                  member=member, month_from=month_from, month_to=month_to,
                                  horizon=months))


@router.get("/structure")
def structure(uow: UowDep, actor: Reader, scope: str = "overall",
              member: str | None = None) -> Any:
    """Customers per RFM segment (of the scope) and lifecycle stage."""
    return render(service.structure(uow.c, actor=actor, scope=scope, member=member))


def _cell(request: Request) -> dict[str, Any]:
    return {k: v for k, v in request.query_params.items() if k in CELL_PARAMS}


@router.get("/customers")
def customers(request: Request, uow: UowDep, actor: Reader,
              page: Annotated[int, Query(ge=1)] = 1,
              page_size: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
    """The customers behind one figure: the figure's own parameters (``view`` breakdown,
    cohort or structure; ``by``, ``key``, ``from``, ``to``, ``scope``, ``channel``,
    ``member``, ``metric``; or ``cohort`` and ``k``; or ``segment`` and ``stage``), masked,
    paginated; ``total`` equals the figure."""
    return render(service.drill_customers(uow.c, actor=actor, params=_cell(request),
                                          page=page, page_size=page_size))


@router.get("/customers.{fmt}", dependencies=[RecentAuth])
def export_customers(fmt: Literal["csv", "xlsx"], request: Request, uow: UowDep,
                     actor: Exporter, unmasked: bool = False) -> Response:
    """The same list as a file, through the audited customer export."""
    service._need(actor)
    path = service.export_cell_customers(uow=uow, actor=actor, params=_cell(request), fmt=fmt,
                                         unmasked=unmasked)
    return FileResponse(path, media_type=MEDIA[fmt], filename=path.name)


# --- promotions -----------------------------------------------------------------------------

class PromotionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120)
    starts_on: dt.date
    ends_on: dt.date
    store: str | None = None
    brand: str | None = None


class PromotionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=120)
    starts_on: dt.date | None = None
    ends_on: dt.date | None = None
    store: str | None = None
    brand: str | None = None


@router.get("/promotions")
def list_promotions(uow: UowDep, actor: Reader) -> Any:
    return render(service.list_promotions(uow.c, actor=actor))


@router.post("/promotions", status_code=201)
def create_promotion(body: PromotionCreate, uow: UowDep, actor: OrgAdmin) -> Any:
    """A promotion window (local dates, inclusive), chain-wide or for one store or brand."""
    return render(service.create_promotion(uow=uow, actor=actor, **body.model_dump()),
                  status_code=201)


@router.get("/promotions/{promotion_id}")
def get_promotion(promotion_id: int, uow: UowDep, actor: Reader) -> Any:
    return render(service.get_promotion(uow.c, actor=actor, promotion_id=promotion_id))


@router.patch("/promotions/{promotion_id}")
def update_promotion(promotion_id: int, body: PromotionUpdate, uow: UowDep,
                     actor: OrgAdmin) -> Any:
    """Change some fields; ``"store": null`` / ``"brand": null`` make it chain-wide."""
    changes = body.model_dump(exclude_unset=True)
    return render(service.update_promotion(uow=uow, actor=actor, promotion_id=promotion_id,
                                           **changes))


@router.delete("/promotions/{promotion_id}", status_code=204,
               dependencies=[Depends(require("records.delete"))])
def delete_promotion(promotion_id: int, uow: UowDep, actor: OrgAdmin) -> Response:
    service.delete_promotion(uow=uow, actor=actor, promotion_id=promotion_id)
    return Response(status_code=204)


@router.get("/promotions/{promotion_id}/comparison")
def promotion_comparison(promotion_id: int, uow: UowDep, actor: Reader) -> Any:
    """Members, non-members and guests during the promotion against the same number of days
    before it, with each figure's change."""
    return render(service.promotion_comparison(uow.c, actor=actor, promotion_id=promotion_id))


# --- refresh --------------------------------------------------------------------------------

class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: dt.datetime | None = None
    full: bool = False


@router.get("/status")
def status(uow: UowDep, actor: Reader) -> Any:
    """When the rollups were last refreshed, and how."""
    return render(service.refresh_status(uow.c, actor=actor))


@router.post("/refresh")
def refresh(uow: UowDep, actor: Reader, body: RefreshIn | None = None) -> Any:
    """Bring the rollups up to date now (owners and analysts): incremental unless ``full``."""
    return render(service.refresh_dashboards(uow=uow, actor=actor,
                                             as_of=body.as_of if body else None,
                                             full=bool(body and body.full)))
