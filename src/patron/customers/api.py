"""Customers over HTTP: search and list, profile, timeline, edit, reveal, till lookup, custom
fields, exports, merge and undo. Routes parse, call a service or a read function, render."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from patron.customers import custom_fields as fields_service
from patron.customers import export, queries, service
from patron.customers.schemas import (
    CustomerUpdate,
    CustomFieldCreate,
    CustomFieldUpdate,
    RevealIn,
)
from patron.deps import RecentAuth, UowDep, require
from patron.errors import FieldError, ValidationFailed
from patron.security.model import Actor
from patron.security.schemas import Id

router = APIRouter(tags=["customers"])

Reader = Annotated[Actor, Depends(require("customers.read"))]
Writer = Annotated[Actor, Depends(require("customers.write"))]
Revealer = Annotated[Actor, Depends(require("personal_data.reveal"))]
Looker = Annotated[Actor, Depends(require("customers.lookup"))]
Exporter = Annotated[Actor, Depends(require("export"))]
FieldAdmin = Annotated[Actor, Depends(require("admin.custom_fields"))]

CUSTOM_PREFIX = "cf."


def render(data: Any, status_code: int = 200) -> JSONResponse:
    """Money as exact decimal strings ("71.00"), never as floats."""
    return JSONResponse(jsonable_encoder(data, custom_encoder={Decimal: str}),
                        status_code=status_code)


def custom_filters(request: Request) -> dict[str, Any]:
    """``cf.<key>=value`` (equality, or contains for multi-choice) and ``cf.<key>.min`` /
    ``cf.<key>.max`` (number and date ranges) from the query string."""
    out: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith(CUSTOM_PREFIX) or value == "":
            continue
        key = name[len(CUSTOM_PREFIX):]
        if key.endswith((".min", ".max")):
            key, bound = key[:-4], key[-3:]
            slot = out.setdefault(key, {})
            if not isinstance(slot, dict):
                raise ValidationFailed("validation_failed", fields=[
                    FieldError(name, "custom_filter_mixed")])
            slot[bound] = value
        else:
            out[key] = value
    return out


class CustomerListParams(BaseModel):
    store: str | None = None
    channel: str | None = None
    member: bool | None = None
    created_from: dt.date | None = None
    created_to: dt.date | None = None
    last_purchase_from: dt.date | None = None
    last_purchase_to: dt.date | None = None
    min_orders: int | None = Field(default=None, ge=0, le=2**31 - 1)
    max_orders: int | None = Field(default=None, ge=0, le=2**31 - 1)
    min_net_spend: Decimal | None = Field(default=None, ge=-10**12, le=10**12)
    max_net_spend: Decimal | None = Field(default=None, ge=-10**12, le=10**12)
    consent: Literal["sms", "wechat", "app", "email"] | None = None


def _filters(params: CustomerListParams, request: Request) -> queries.CustomerFilters:
    return queries.CustomerFilters(**params.model_dump(), custom=custom_filters(request))


@router.get("/customers")
def list_or_search(uow: UowDep, actor: Reader, request: Request,
                   params: Annotated[CustomerListParams, Query()],
                   q: str | None = None, sort: str = "-created_at",
                   page: Annotated[int, Query(ge=1, le=10**6)] = 1,
                   page_size: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
    """With ``q``: search by phone, member code, any identifier or the start of the name
    (at most ``page_size`` matches). Without: the filtered, sorted, paginated list."""
    if q is not None and q.strip():
        items = queries.search_customers(uow.c, actor=actor, q=q, limit=min(page_size, 100))
        return render({"items": items, "total": len(items), "page": 1,
                       "page_size": page_size})
    return render(queries.list_customers(uow.c, actor=actor, filters=_filters(params, request),
                                         page=page, page_size=page_size, sort=sort))


@router.get("/customers/lookup")
def lookup(uow: UowDep, actor: Looker, kind: str, value: str, platform: str = "") -> Any:
    """At the till: an exact identifier to the member's id, code and masked name and phone."""
    return render(queries.lookup_member(uow.c, actor=actor, kind=kind, value=value,
                                        platform=platform))


@router.get("/customers/{customer_id}")
def get_customer(customer_id: int, uow: UowDep, actor: Reader) -> Any:
    return render(queries.get_customer(uow.c, actor=actor, customer_id=customer_id))


@router.patch("/customers/{customer_id}")
def update_customer(customer_id: int, body: CustomerUpdate, uow: UowDep, actor: Writer) -> Any:
    result = fields_service.update_customer(uow=uow, actor=actor, customer_id=customer_id,
                                            changes=body.model_dump(exclude_unset=True))
    return render(result)


@router.get("/customers/{customer_id}/timeline")
def timeline(customer_id: int, uow: UowDep, actor: Reader,
             date_from: dt.date | None = None, date_to: dt.date | None = None,
             store: str | None = None, channel: str | None = None,
             category: str | None = None, page: Annotated[int, Query(ge=1)] = 1,
             page_size: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
    return render(queries.customer_timeline(
        uow.c, actor=actor, customer_id=customer_id, date_from=date_from, date_to=date_to,
        store=store, channel=channel, category=category, page=page, page_size=page_size))


@router.post("/customers/{customer_id}/reveal", dependencies=[RecentAuth])
def reveal(customer_id: int, body: RevealIn, uow: UowDep, actor: Revealer) -> Any:
    """The full value of one personal field; every call is in the audit trail."""
    value = queries.reveal_personal_data(uow=uow, actor=actor, customer_id=customer_id,
                                         field=body.field)
    return render({"field": body.field, "value": value})


@router.get("/custom-fields")
def list_custom_fields(uow: UowDep, actor: Reader, include_inactive: bool = False) -> Any:
    return render({"items": fields_service.list_custom_fields(
        uow.c, actor=actor, include_inactive=include_inactive)})


@router.post("/custom-fields", status_code=201)
def create_custom_field(body: CustomFieldCreate, uow: UowDep, actor: FieldAdmin) -> Any:
    return render(fields_service.create_custom_field(uow=uow, actor=actor, **body.model_dump()),
                  status_code=201)


@router.patch("/custom-fields/{field_id}")
def update_custom_field(field_id: int, body: CustomFieldUpdate, uow: UowDep,
                        actor: FieldAdmin) -> Any:
    return render(fields_service.update_custom_field(
        uow=uow, actor=actor, field_id=field_id, changes=body.model_dump(exclude_unset=True)))


MEDIA = {"csv": "text/csv; charset=utf-8",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@router.get("/exports/customers.{fmt}", dependencies=[RecentAuth])
def export_customers(fmt: Literal["csv", "xlsx"], uow: UowDep, actor: Exporter,
                     request: Request, params: Annotated[CustomerListParams, Query()],
                     unmasked: bool = False,
                     purpose: Literal["analysis", "service", "marketing"] = "analysis"
                     ) -> FileResponse:
    """The customer list for the same filters as ``GET /customers``, masked unless
    ``unmasked=true`` is asked by someone who may reveal personal data. ``purpose=marketing``
    needs ``consent=<channel>`` and writes only customers whose consent to it is in force."""
    path = export.export_customers(uow=uow, actor=actor, filters=_filters(params, request),
                                   fmt=fmt, unmasked=unmasked, purpose=purpose)
    return FileResponse(path, media_type=MEDIA[fmt], filename=path.name)


@router.get("/exports/orders.{fmt}", dependencies=[RecentAuth])
def export_orders(fmt: Literal["csv", "xlsx"], uow: UowDep, actor: Exporter,
                  date_from: dt.date | None = None, date_to: dt.date | None = None,
                  store: str | None = None, channel: str | None = None,
                  category: str | None = None, unmasked: bool = False) -> FileResponse:
    path = export.export_orders(uow=uow, actor=actor, fmt=fmt, unmasked=unmasked, filters={
        "date_from": date_from, "date_to": date_to, "store": store, "channel": channel,
        "category": category})
    return FileResponse(path, media_type=MEDIA[fmt], filename=path.name)


class MergeIn(BaseModel):
    customer_ids: tuple[Id, Id]
    reason: str = Field(min_length=1, max_length=500)


@router.post("/customers/merge", status_code=201)
def merge(body: MergeIn, uow: UowDep,
          actor: Annotated[Actor, Depends(require("customers.merge"))]) -> dict[str, Any]:
    a, b = body.customer_ids
    merge_id = service.merge_customers(uow=uow, survivor_id=a, merged_id=b, reason=body.reason,
                                       actor=actor)
    return {"merge_id": merge_id, "survivor_id": min(a, b), "merged_id": max(a, b)}


@router.post("/customers/merges/{merge_id}/undo", status_code=200)
def undo(merge_id: int, uow: UowDep,
         actor: Annotated[Actor, Depends(require("customers.undo_merge"))]) -> dict[str, Any]:
    service.undo_merge(uow=uow, merge_id=merge_id, actor=actor)
    return {"merge_id": merge_id, "undone": True}
