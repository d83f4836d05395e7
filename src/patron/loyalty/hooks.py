"""Loyalty's part of recording purchases and returns (called by :mod:`patron.orders.hooks`,
inside the recording transaction): member orders earn points and growth value by the rules in
force at their purchase time; returns take back what the returned lines earned."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, exists

from patron.loyalty.earning import claw_back_for_return, earn_for_orders
from patron.loyalty.tables import loyalty_programs
from patron.orders.hooks import RecordedOrder, RecordedReturn
from patron.security.model import Actor


def orders_hook_applies() -> ColumnElement[bool]:
    """Orders earn only in an active program (``earning.active_programs``)."""
    return exists().where(loyalty_programs.c.status == "active")


def on_orders_recorded(conn: Connection, recorded: Sequence[RecordedOrder], *, actor: Actor,
                       now: dt.datetime) -> None:
    earn_for_orders(conn, recorded, actor=actor, now=now)


def on_return_recorded(conn: Connection, ret: RecordedReturn, *, actor: Actor,
                       now: dt.datetime) -> None:
    claw_back_for_return(conn, ret, actor=actor, now=now)
