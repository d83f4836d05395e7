"""What other areas do inside the transaction that records orders and returns.

Loyalty earns and claws back points in the same transaction as the purchase or return that
causes them, so that a purchase is never recorded without its points, nor points without their
purchase. Areas do not import each other's services for this: an area lists a module here whose
``on_orders_recorded(conn, orders, *, actor, now)`` and/or ``on_return_recorded(conn, ret, *,
actor, now)`` functions are called, when the module is installed, after the rows are written
and before the commit. A hook that raises rolls the whole chunk back.

A module may also say when its order hook has anything to do: ``orders_hook_applies()``
returns an SQL condition (an ``EXISTS`` over its own configuration: an active loyalty program,
a rule tag, an active order automation) under which the hook would do nothing when false.
:func:`orders_recorded` asks every such condition, and the caller's own questions, in one
statement and calls only the hooks whose condition holds: a group of API orders then costs one
round trip for the configuration of every area instead of one per area.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

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
    # The caller refunds the money itself and settles the points a return cannot take back
    # (the POS checkout's refund, under the program's ``deduct_from_refund`` clawback policy).
    settles_points_in_money: bool = False


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


def _order_hooks() -> list[tuple[Callable[..., Any], Callable[[], ColumnElement[bool]] | None]]:
    """Each order hook with its module's ``orders_hook_applies`` (None: always call it)."""
    out = []
    for fn in _functions("on_orders_recorded"):
        module = next((sys.modules[name] for name in HOOK_MODULES
                       if getattr(sys.modules.get(name), "on_orders_recorded", None) is fn), None)
        out.append((fn, getattr(module, "orders_hook_applies", None)))
    return out


def orders_recorded(conn: Connection, recorded: Sequence[RecordedOrder], *, actor: Actor,
                    now: dt.datetime,
                    also: dict[str, ColumnElement[bool]] | None = None) -> dict[str, bool]:
    """Call the order hooks that apply. ``also``: the caller's own conditions, asked in the
    same statement as the hooks' (the recording asks whether any webhook endpoint is
    active); their answers are returned."""
    also = also or {}
    hooks = _order_hooks() if recorded else []
    asked = [(f"h{i}", _condition(applies)) for i, (_fn, applies) in enumerate(hooks)
             if applies is not None]
    asked += [(f"a_{name}", condition) for name, condition in also.items()]
    answers: dict[str, bool] = {}
    if asked:
        row = conn.execute(_question(asked)).one()
        answers = {label: bool(value) for (label, _c), value in zip(asked, row, strict=True)}
    for i, (fn, applies) in enumerate(hooks):
        if applies is None or answers[f"h{i}"]:
            fn(conn, recorded, actor=actor, now=now)
    return {name: answers[f"a_{name}"] for name in also}


@cache
def _condition(applies: Callable[[], ColumnElement[bool]]) -> ColumnElement[bool]:
    """An area's condition, built once: building it and the statement around it for every
    group of orders cost about 200 us of CPU, more than asking the database."""
    return applies()


_questions: dict[tuple[tuple[str, int], ...],
                 tuple[Select[Any], list[ColumnElement[bool]]]] = {}


def _question(asked: list[tuple[str, ColumnElement[bool]]]) -> Select[Any]:
    """``SELECT cond AS label, ...``, reused while the same condition objects are asked
    (they are kept with it, so that their ids name them)."""
    key = tuple((label, id(c)) for label, c in asked)
    hit = _questions.get(key)
    if hit is None:
        hit = (select(*[c.label(label) for label, c in asked]), [c for _label, c in asked])
        if len(_questions) < 64:
            _questions[key] = hit
    return hit[0]


def return_recorded(conn: Connection, ret: RecordedReturn, *, actor: Actor,
                    now: dt.datetime) -> None:
    for fn in _functions("on_return_recorded"):
        fn(conn, ret, actor=actor, now=now)
