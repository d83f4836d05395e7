"""Rewards catalog rules, pure Python: when an item can be redeemed, what it costs, how many
units a member may still take, where a limit's calendar period starts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

PERIODS = ("day", "week", "month", "year")


def period_start(now: dt.datetime, period: str, tz: str) -> dt.datetime:
    """Start (UTC) of the calendar ``period`` holding ``now`` in the program's time zone: the
    local midnight of the day, of the week's Monday, of the month's or the year's first day."""
    local = now.astimezone(ZoneInfo(tz))
    day = local.date()
    if period == "week":
        day -= dt.timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    elif period == "year":
        day = day.replace(month=1, day=1)
    elif period != "day":
        raise ValueError(f"unknown period {period!r}")
    return dt.datetime.combine(day, dt.time(), ZoneInfo(tz)).astimezone(dt.UTC)


def unavailable_reason(*, active: bool, valid_from: dt.datetime, valid_until: dt.datetime | None,
                       now: dt.datetime) -> str | None:
    """Why an item cannot be redeemed at ``now`` (a message key), or None."""
    if not active:
        return "reward_inactive"
    if now < valid_from:
        return "reward_not_yet_valid"
    if valid_until is not None and now >= valid_until:
        return "reward_validity_ended"
    return None


def price(points_price: int, cash_price: Decimal, quantity: int) -> tuple[int, Decimal]:
    return points_price * quantity, cash_price * quantity


def units_left(stock: int | None, reserved: int, sold: int) -> int | None:
    """Units still on offer; None for unlimited stock."""
    return None if stock is None else stock - reserved - sold


@dataclass(frozen=True)
class LimitBreach:
    kind: str  # member | period
    limit: int
    used: int


def limit_breach(*, quantity: int, limit_per_member: int | None, used_ever: int,
                 limit_per_period: int | None, used_in_period: int) -> LimitBreach | None:
    """The first per-member limit ``quantity`` more units would exceed, or None. ``used_*``
    count the member's units held (not yet expired) or fulfilled."""
    if limit_per_member is not None and used_ever + quantity > limit_per_member:
        return LimitBreach("member", limit_per_member, used_ever)
    if limit_per_period is not None and used_in_period + quantity > limit_per_period:
        return LimitBreach("period", limit_per_period, used_in_period)
    return None
