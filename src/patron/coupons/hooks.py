"""Coupons' part of recording returns (called by :mod:`patron.orders.hooks`, inside the return's
transaction): a full refund of an order gives back the coupons it was paid with, when their
template says so and they are still valid."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from patron.coupons.service import restore_for_return
from patron.orders.hooks import RecordedReturn
from patron.security.model import Actor


def on_return_recorded(conn: Connection, ret: RecordedReturn, *, actor: Actor,
                       now: dt.datetime) -> None:
    restore_for_return(conn, order_id=ret.order_id, return_id=ret.return_id, full=ret.full,
                       actor=actor, now=now)
