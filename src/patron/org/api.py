"""Stores, channels, brands, regions, categories and products over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from patron.deps import UowDep, require, signed_in_only
from patron.org import service
from patron.org.schemas import (
    BrandCreate,
    CategoryCreate,
    ChannelCreate,
    ProductCreate,
    RegionCreate,
    StoreCreate,
)
from patron.org.tables import brands, categories, channels, products, regions, stores
from patron.security.model import Actor

router = APIRouter(tags=["organisation"])
Admin = Annotated[Actor, Depends(require("admin.org"))]
# The organisation's reference data (store scope applied): every till and page needs it.
Reader = Annotated[Actor, Depends(signed_in_only("organisation reference data, store-scoped"))]


def _rows(uow: UowDep, table: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in uow.c.execute(select(table).order_by(table.c.id)).mappings()]


@router.get("/stores")
def list_stores(uow: UowDep, actor: Reader) -> list[dict[str, Any]]:
    rows = _rows(uow, stores)
    return [r for r in rows if actor.sees_store(r["id"])]


@router.post("/stores", status_code=201)
def create_store(body: StoreCreate, uow: UowDep, actor: Admin) -> dict[str, int]:
    return {"id": service.create_store(uow=uow, actor=actor, **body.model_dump())}


@router.get("/channels")
def list_channels(uow: UowDep, actor: Reader) -> list[dict[str, Any]]:
    return _rows(uow, channels)


@router.post("/channels", status_code=201)
def create_channel(body: ChannelCreate, uow: UowDep, actor: Admin) -> dict[str, int]:
    return {"id": service.create_channel(uow=uow, actor=actor, **body.model_dump())}


@router.get("/brands")
def list_brands(uow: UowDep, actor: Reader) -> list[dict[str, Any]]:
    return _rows(uow, brands)


@router.post("/brands", status_code=201)
def create_brand(body: BrandCreate, uow: UowDep, actor: Admin) -> dict[str, int]:
    return {"id": service.create_brand(uow=uow, actor=actor, **body.model_dump())}


@router.get("/regions")
def list_regions(uow: UowDep, actor: Reader) -> list[dict[str, Any]]:
    return _rows(uow, regions)


@router.post("/regions", status_code=201)
def create_region(body: RegionCreate, uow: UowDep, actor: Admin) -> dict[str, int]:
    return {"id": service.create_region(uow=uow, actor=actor, **body.model_dump())}


@router.get("/categories")
def list_categories(uow: UowDep, actor: Reader) -> list[dict[str, Any]]:
    return _rows(uow, categories)


@router.post("/categories", status_code=201)
def create_category(body: CategoryCreate, uow: UowDep, actor: Admin) -> dict[str, int]:
    return {"id": service.create_category(uow=uow, actor=actor, **body.model_dump())}


@router.get("/products")
def list_products(uow: UowDep, actor: Reader) -> list[dict[str, Any]]:
    return [{**r, "list_price": None if r["list_price"] is None else str(r["list_price"])}
            for r in _rows(uow, products)]


@router.post("/products", status_code=201)
def create_product(body: ProductCreate, uow: UowDep, actor: Admin) -> dict[str, int]:
    return {"id": service.create_product(uow=uow, actor=actor, **body.model_dump())}
