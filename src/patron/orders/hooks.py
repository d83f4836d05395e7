"""What other areas do inside the transaction that records orders and returns.

Loyalty earns and claws back points in the same transaction as the purchase or return that
causes them, so that a purchase is never recorded without its points, nor points without their
purchase. Areas do not import each other's services for this: an area lists a module here whose
``on_orders_recorded(conn, orders, *, actor, now)`` and/or ``on_return_recorded(conn, ret, *,
actor, now)`` functions are called, when the module is installed, after the rows are written
and before the commit. A hook that raises rolls the whole chunk back.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Connection

from patron.security.model import Actor

# Modules that react to recorded purchases and returns, in the order they run.
# Tags after loyalty (their rules may read the points it has just written) and before
# automations (whose conditions may read tags).
HOOK_MODULES: tuple[str, ...] = ("patron.loyalty.hooks", "patron.coupons.hooks",
                                 "patron.tags.hooks", "patron.automations.hooks")


@dataclass(frozen=True, slots=True)
class RecordedLine:
    order_line_id: int | None  # None where the caller did not need the row id
    line_no: int
    sku: str
    category: str | None
    quantity: Decimal
    amount: Decimal  # after the line's own discount, before the order-level discount


@dataclass(frozen=True, slots=True)
class RecordedOrder:
    order_id: int
    customer_id: int | None  # None for a guest sale
    channel_code: str
    store_id: int | None
    store_code: str | None
    purchased_at: dt.datetime  # UTC
    local_time: dt.datetime  # in the store's time zone
    total: Decimal
    discount: Decimal  # order-level discount
    lines: tuple[RecordedLine, ...]
    payments: tuple[tuple[str, Decimal], ...]
    source: str


@dataclass(frozen=True, slots=True)
class ReturnedLine:
    order_line_id: int
    line_no: int
    quantity: Decimal
    amount: Decimal  # refunded for this line


@dataclass(frozen=True, slots=True)
class RecordedReturn:
    return_id: int
    order_id: int
    customer_id: int | None
    returned_at: dt.datetime  # UTC
    amount: Decimal
    lines: tuple[ReturnedLine, ...]
    order_total: Decimal
    full: bool  # the whole order has now been refunded


@cache
def _functions(name: str) -> tuple[Callable[..., Any], ...]:
    found = []
    for module_name in HOOK_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module_name == exc.name
                                           or module_name.startswith(exc.name + ".")):
                continue  # the area is not installed
            raise
        fn = getattr(module, name, None)
        if fn is not None:
            found.append(fn)
    return tuple(found)


def orders_recorded(conn: Connection, recorded: Sequence[RecordedOrder], *, actor: Actor,
                    now: dt.datetime) -> None:
    if not recorded:
        return
    for fn in _functions("on_orders_recorded"):
        fn(conn, recorded, actor=actor, now=now)


def return_recorded(conn: Connection, ret: RecordedReturn, *, actor: Actor,
                    now: dt.datetime) -> None:
    for fn in _functions("on_return_recorded"):
        fn(conn, ret, actor=actor, now=now)


def installed() -> bool:
    """Whether any hook would run (lets the hot path skip building the records)."""
    return bool(_functions("on_orders_recorded") or _functions("on_return_recorded"))
