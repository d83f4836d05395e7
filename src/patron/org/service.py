"""Organisation reference data: brands, regions, stores, channels, categories, products."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from patron.db import UnitOfWork
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.org.tables import brands, categories, channels, products, regions, stores
from patron.security import audit
from patron.security.model import Actor

CHANNEL_KINDS = ("pos", "mini_program", "app", "online_mall", "platform")

# The channels every organisation starts with; owners add more (another platform) as data.
DEFAULT_CHANNELS = [
    ("pos", "门店收银 Store POS", "pos", True),
    ("mini_program", "小程序 Mini-program", "mini_program", False),
    ("app", "App", "app", False),
    ("online_mall", "线上商城 Online mall", "online_mall", False),
    ("meituan", "美团 Meituan", "platform", False),
    ("eleme", "饿了么 Eleme", "platform", False),
    ("jd", "京东 JD", "platform", False),
    ("tmall", "淘宝/天猫 Taobao/Tmall", "platform", False),
    ("douyin", "抖音 Douyin", "platform", False),
    ("youzan", "有赞 Youzan", "platform", False),
]


@dataclass(frozen=True, slots=True)
class StoreRef:
    id: int
    code: str
    timezone: str
    brand_id: int | None
    region_id: int | None


@dataclass(frozen=True, slots=True)
class ChannelRef:
    id: int
    code: str
    kind: str
    requires_store: bool


# Stores and channels change rarely and are read by every order: each process keeps them for a
# few seconds (and reloads at once on an unknown code), so a till's order does not pay two
# extra queries. Writes through this module clear the cache of the process that made them.
REFERENCE_TTL_SECONDS = 10.0


@dataclass(frozen=True)
class _ReferenceData:
    stores: dict[str, StoreRef]
    channels: dict[str, ChannelRef]
    expires: float


_reference_cache: dict[str, _ReferenceData] = {}


def clear_reference_cache() -> None:
    _reference_cache.clear()


def _load_reference(conn: Connection) -> _ReferenceData:
    import time

    data = _ReferenceData(
        stores={r.code: StoreRef(r.id, r.code, r.timezone, r.brand_id, r.region_id)
                for r in conn.execute(select(stores.c.id, stores.c.code, stores.c.timezone,
                                             stores.c.brand_id, stores.c.region_id))},
        channels={r.code: ChannelRef(r.id, r.code, r.kind, bool(r.requires_store))
                  for r in conn.execute(select(channels.c.id, channels.c.code, channels.c.kind,
                                               channels.c.requires_store)
                                        .where(channels.c.active.is_(True)))},
        expires=time.monotonic() + REFERENCE_TTL_SECONDS,
    )
    _reference_cache[str(conn.engine.url)] = data
    return data


class Reference:
    """Store and channel codes resolved to ids, for one connection (one unit of work)."""

    def __init__(self, conn: Connection) -> None:
        import time

        self.conn = conn
        data = _reference_cache.get(str(conn.engine.url))
        if data is None or data.expires <= time.monotonic():
            data = _load_reference(conn)
        self._data = data
        self._reloaded = False

    def _lookup(self, table: str, code: str) -> Any:
        found = getattr(self._data, table).get(code)
        if found is None and not self._reloaded:
            self._data = _load_reference(self.conn)
            self._reloaded = True
            found = getattr(self._data, table).get(code)
        return found

    def store(self, code: str | None) -> StoreRef | None:
        return None if code is None else self._lookup("stores", code)

    def channel(self, code: str) -> ChannelRef | None:
        return self._lookup("channels", code)


def ensure_default_channels(conn: Connection) -> None:
    existing = set(conn.execute(select(channels.c.code)).scalars())
    rows = [dict(code=c, name=n, kind=k, requires_store=r)
            for c, n, k, r in DEFAULT_CHANNELS if c not in existing]
    if rows:
        conn.execute(insert(channels), rows)
        clear_reference_cache()


MAX_ID = 2**63 - 1


def check_references(conn: Connection, table: Any, values: dict[str, Any]) -> None:
    """A 422 naming the field, rather than the database's foreign-key error (a 500), when a
    referenced id does not exist."""
    bad = []
    for name, value in values.items():
        column = table.c.get(name)
        if value is None or column is None or not column.foreign_keys:
            continue
        target = next(iter(column.foreign_keys)).column
        if not (isinstance(value, int) and 0 < value <= MAX_ID) or conn.execute(
                select(target).where(target == value)).first() is None:
            bad.append(FieldError(name, "unknown_reference"))
    if bad:
        raise ValidationFailed("validation_failed", fields=bad)


def _create(uow: UnitOfWork, table: Any, key: str, values: dict[str, Any], actor: Actor,
            entity: str) -> int:
    conn = uow.c
    check_references(conn, table, values)
    if conn.execute(select(table.c.id).where(table.c[key] == values[key])).first():
        raise Conflict("already_exists", params={key: values[key]})
    new_id = conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
    audit.record(conn, actor, f"{entity}.created", entity=entity, entity_id=new_id,
                 details={key: values[key]})
    uow.commit()
    clear_reference_cache()
    return int(new_id)


def create_brand(*, uow: UnitOfWork, actor: Actor, code: str, name: str) -> int:
    return _create(uow, brands, "code", {"code": code, "name": name}, actor, "brand")


def create_region(*, uow: UnitOfWork, actor: Actor, code: str, name: str) -> int:
    return _create(uow, regions, "code", {"code": code, "name": name}, actor, "region")


def create_store(*, uow: UnitOfWork, actor: Actor, code: str, name: str, city: str = "",
                 timezone: str = "Asia/Shanghai", brand_id: int | None = None,
                 region_id: int | None = None) -> int:
    return _create(uow, stores, "code", dict(code=code, name=name, city=city, timezone=timezone,
                                              brand_id=brand_id, region_id=region_id),
                   actor, "store")


def create_channel(*, uow: UnitOfWork, actor: Actor, code: str, name: str, kind: str,
                   requires_store: bool = False) -> int:
    return _create(uow, channels, "code", dict(code=code, name=name, kind=kind,
                                                requires_store=requires_store), actor, "channel")


def create_category(*, uow: UnitOfWork, actor: Actor, code: str, name: str,
                    parent_id: int | None = None) -> int:
    return _create(uow, categories, "code", dict(code=code, name=name, parent_id=parent_id),
                   actor, "category")


def create_product(*, uow: UnitOfWork, actor: Actor, sku: str, name: str,
                   category_id: int | None = None, brand_id: int | None = None,
                   list_price: Any = None) -> int:
    return _create(uow, products, "sku", dict(sku=sku, name=name, category_id=category_id,
                                               brand_id=brand_id, list_price=list_price),
                   actor, "product")


def set_active(*, uow: UnitOfWork, actor: Actor, table: Any, entity: str, entity_id: int,
               active: bool) -> None:
    conn = uow.c
    result = conn.execute(update(table).where(table.c.id == entity_id).values(active=active))
    if result.rowcount == 0:
        raise NotFound(entity)
    audit.record(conn, actor, f"{entity}.{'activated' if active else 'deactivated'}",
                 entity=entity, entity_id=entity_id)
    uow.commit()
    clear_reference_cache()
