"""Order triggers, entered inside the transaction that records the orders: an order is never
recorded without the entries it triggers, nor an entry without its order. The steps run later,
in the automation worker (an entry is only a row here: no coupon or message in the order's
transaction)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, exists, select

from patron.automations import triggers
from patron.automations.engine import definition_of, insert_entries
from patron.automations.schemas import ORDER_TRIGGERS
from patron.automations.tables import automations
from patron.orders.hooks import RecordedOrder
from patron.security.model import Actor


def _active_order_trigger() -> ColumnElement[bool]:
    a = automations.c
    return (a.status == "active") & a.trigger_type.in_(ORDER_TRIGGERS)


def active_order_automations(conn: Connection) -> list[dict[str, Any]]:
    """The active automations that an order enters, in id order."""
    return [dict(r) for r in conn.execute(select(automations).where(_active_order_trigger())
                                          .order_by(automations.c.id)).mappings()]


def orders_hook_applies() -> ColumnElement[bool]:
    """Orders enter only :func:`active_order_automations`."""
    return exists().where(_active_order_trigger())


def on_orders_recorded(conn: Connection, recorded: Sequence[RecordedOrder], *, actor: Actor,
                       now: dt.datetime) -> None:
    for auto in active_order_automations(conn):
        definition = definition_of(conn, int(auto["id"]), int(auto["version"]))
        found = triggers.for_orders(conn, trigger_type=auto["trigger_type"],
                                    definition=definition, program_id=int(auto["program_id"]),
                                    orders=recorded, now=now)
        insert_entries(conn, automation=auto, candidates=found, now=now)
