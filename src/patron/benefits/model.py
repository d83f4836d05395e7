"""Birthday, anniversary and referral rules, pure Python: when a gift is due, how much a
birthday multiplier adds, invite codes, and which purchase qualifies a referral."""

from __future__ import annotations

import calendar
import datetime as dt
import secrets
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo

# No 0/O, 1/I/L: read aloud or typed from a poster without mistakes.
INVITE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
INVITE_LENGTH = 8


def new_invite_code() -> str:
    return "".join(secrets.choice(INVITE_ALPHABET) for _ in range(INVITE_LENGTH))


def normalize_invite_code(raw: str) -> str:
    return raw.strip().upper().replace("-", "").replace(" ", "")


def local_day(at: dt.datetime, tz: str) -> dt.date:
    return at.astimezone(ZoneInfo(tz)).date()


def month_bounds(year: int, month: int, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """The local calendar month as [start, end) in UTC."""
    zone = ZoneInfo(tz)
    start = dt.datetime(year, month, 1, tzinfo=zone)
    end = (dt.datetime(year + 1, 1, 1, tzinfo=zone) if month == 12
           else dt.datetime(year, month + 1, 1, tzinfo=zone))
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def birthday_points_due(birthday: dt.date | None, today: dt.date) -> bool:
    """A birthday-month bonus is given on any day of the birthday month (the daily job gives it
    on the first; a job that missed days catches up within the month)."""
    return birthday is not None and birthday.month == today.month


def multiplier_settles_on(year: int, month: int, pending_days: int) -> dt.date:
    """The day a birthday month's multiplier bonus is paid: after the month and the program's
    return window, so that purchases returned inside the window do not count."""
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, last) + dt.timedelta(days=pending_days + 1)


def multiplier_bonus(points: int, multiplier: Decimal) -> int:
    """Extra points that make the month's points ``multiplier`` times what they were."""
    if points <= 0 or multiplier <= 1:
        return 0
    return int((Decimal(points) * (multiplier - 1)).to_integral_value(rounding=ROUND_FLOOR))


def anniversary_on(enrolled: dt.date, year: int) -> dt.date:
    """The membership anniversary in ``year``; 29 February falls on the 28th in common years."""
    if enrolled.month == 2 and enrolled.day == 29 and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return enrolled.replace(year=year)


def anniversary_due(enrolled: dt.date, today: dt.date) -> int | None:
    """The year whose anniversary gift is due on ``today`` (from the anniversary to the year's
    end), or None; never in the year of enrolment."""
    if today.year <= enrolled.year or today < anniversary_on(enrolled, today.year):
        return None
    return today.year


@dataclass(frozen=True)
class Purchase:
    order_id: int
    purchased_at: dt.datetime
    net_spend: Decimal  # what was paid minus what was refunded


@dataclass(frozen=True)
class Qualification:
    outcome: str  # qualified | wait | expired
    order_id: int | None = None


def referral_outcome(purchases: list[Purchase], *, linked_at: dt.datetime,
                     qualify_until: dt.datetime, min_spend: Decimal, pending_days: int,
                     now: dt.datetime) -> Qualification:
    """The new member's first purchase from the link until ``qualify_until`` whose spend, net
    of refunds, reaches ``min_spend`` qualifies once the program's return window has passed
    (a purchase refunded inside the window does not count). Until then: wait. With none by the
    deadline plus the window: expired."""
    window = dt.timedelta(days=pending_days)
    for p in sorted(purchases, key=lambda p: (p.purchased_at, p.order_id)):
        if not (linked_at <= p.purchased_at < qualify_until) or p.net_spend < min_spend:
            continue
        if p.purchased_at + window <= now:
            return Qualification("qualified", p.order_id)
        return Qualification("wait")
    if now >= qualify_until + window:
        return Qualification("expired")
    return Qualification("wait")
