"""Rule tags kept current as purchases and returns are recorded: the rule tags are evaluated
again for the customers of the chunk, in the recording transaction (see
:mod:`patron.orders.hooks`). Conditions that move with the calendar alone (windows, recency,
birthdays) or with analytics (RFM, lifecycle, predictions) are brought up to date for everyone
by the nightly analytics refresh and ``patron tags refresh``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, Connection, exists

from patron.orders.hooks import RecordedOrder, RecordedReturn
from patron.security.model import Actor
from patron.tags import service
from patron.tags.tables import tags


def orders_hook_applies() -> ColumnElement[bool]:
    """Only rule tags are evaluated again (``service.rule_tags``)."""
    return exists().where(tags.c.kind == "rule")


def on_orders_recorded(conn: Connection, orders: list[RecordedOrder], *, actor: Actor,
                       now: dt.datetime) -> None:
    service.refresh_rules_for(conn, (o.customer_id for o in orders), now=now, note="order")


def on_return_recorded(conn: Connection, ret: RecordedReturn, *, actor: Actor,
                       now: dt.datetime) -> None:
    service.refresh_rules_for(conn, [ret.customer_id], now=now, note="return")
