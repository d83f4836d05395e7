"""Write the demo organisation (brands, regions, stores, category tree, products) through the
organisation services, so that it is audited like any owner's set-up. Safe to run again: what
exists already is left alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from patron.db import UnitOfWork
from patron.demo.catalogue import BRANDS, PRODUCTS, REGIONS, STORES
from patron.org import service as org
from patron.org.tables import brands, categories, products, regions, stores
from patron.security.model import Actor


@dataclass
class SeedResult:
    created: dict[str, int] = field(default_factory=dict)  # entity -> how many were new
    store_ids: dict[str, int] = field(default_factory=dict)  # store code -> id


def seed_organisation(*, uow: UnitOfWork, actor: Actor) -> SeedResult:
    conn = uow.c
    result = SeedResult(created={"brand": 0, "region": 0, "store": 0, "category": 0,
                                 "product": 0})

    def existing(table: Any, key: str) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in conn.execute(select(table.c[key], table.c.id))}

    brand_ids = existing(brands, "code")
    for b in BRANDS:
        if b.code not in brand_ids:
            brand_ids[b.code] = org.create_brand(uow=uow, actor=actor, code=b.code, name=b.name)
            result.created["brand"] += 1

    region_ids = existing(regions, "code")
    for code, name in REGIONS:
        if code not in region_ids:
            region_ids[code] = org.create_region(uow=uow, actor=actor, code=code, name=name)
            result.created["region"] += 1

    store_ids = existing(stores, "code")
    for s in STORES:
        if s.code not in store_ids:
            store_ids[s.code] = org.create_store(
                uow=uow, actor=actor, code=s.code, name=s.name, city=s.city,
                timezone="Asia/Shanghai", brand_id=brand_ids[s.brand],
                region_id=region_ids[s.region])
            result.created["store"] += 1
    result.store_ids = store_ids

    category_ids = existing(categories, "code")
    for b in BRANDS:
        root_code, root_name = b.root_category
        if root_code not in category_ids:
            category_ids[root_code] = org.create_category(uow=uow, actor=actor, code=root_code,
                                                          name=root_name)
            result.created["category"] += 1
        for code, name, _weight in b.categories:
            if code not in category_ids:
                category_ids[code] = org.create_category(
                    uow=uow, actor=actor, code=code, name=name,
                    parent_id=category_ids[root_code])
                result.created["category"] += 1

    product_ids = existing(products, "sku")
    brand_of_sku = {p.sku: p.sku.split("-", 1)[0] for p in PRODUCTS}
    for p in PRODUCTS:
        if p.sku not in product_ids:
            org.create_product(uow=uow, actor=actor, sku=p.sku, name=p.name,
                               category_id=category_ids[p.category],
                               brand_id=brand_ids[brand_of_sku[p.sku]], list_price=p.list_price)
            result.created["product"] += 1
    org.ensure_default_channels(conn)
    uow.commit()
    return result
