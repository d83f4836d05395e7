"""When the nightly analytics refresh runs: plain rules on aware datetimes, no database.

The refresh runs once per local night at ``PATRON_ANALYTICS_REFRESH_AT`` ("03:00" by default)
in ``PATRON_ANALYTICS_REFRESH_TZ``. A night is named by the local date of its slot. A server
that was down at the time catches up when it comes back within ``CATCH_UP`` of the slot; a
night missed for longer is not replayed (the next night's refresh recomputes everything
anyway). A local time that does not exist on a daylight-saving day (02:30 when clocks jump
from 02:00 to 03:00) runs at the same offset as the hour before, i.e. an hour later on the
clock; a local time that occurs twice runs at the first.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

CATCH_UP = dt.timedelta(hours=12)
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_refresh_at(value: str) -> dt.time | None:
    """``"HH:MM"`` (24-hour clock) or ``"off"`` (None); anything else is a ValueError."""
    text = (value or "").strip()
    if text.lower() == "off":
        return None
    match = _HHMM.match(text)
    if match is None:
        raise ValueError(f"expected HH:MM (24-hour clock) or 'off', got {value!r}")
    return dt.time(int(match.group(1)), int(match.group(2)))


def slot_on(night: dt.date, at: dt.time, zone: ZoneInfo) -> dt.datetime:
    """The moment (UTC) of the slot of one local date."""
    return dt.datetime.combine(night, at, zone).astimezone(dt.UTC)


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def latest_slot(at: dt.time, zone: ZoneInfo, now: dt.datetime | None = None
                ) -> tuple[dt.date, dt.datetime]:
    """The last slot at or before ``now`` (default: the clock): its night (local date) and
    moment."""
    now = _now(now)
    night = now.astimezone(zone).date() + dt.timedelta(days=1)
    while slot_on(night, at, zone) > now:
        night -= dt.timedelta(days=1)
    return night, slot_on(night, at, zone)


def next_run(at: dt.time, zone: ZoneInfo, now: dt.datetime | None = None) -> dt.datetime:
    """The first slot strictly after ``now`` (default: the clock)."""
    night, _slot = latest_slot(at, zone, now)
    return slot_on(night + dt.timedelta(days=1), at, zone)


def due_night(at: dt.time | None, zone: ZoneInfo, now: dt.datetime | None = None,
              *, catch_up: dt.timedelta = CATCH_UP) -> dt.date | None:
    """The night whose refresh should run now if it has not run yet: the latest slot's, while
    ``now`` (default: the clock) is within ``catch_up`` of it. None when the schedule is off or
    nothing is due."""
    if at is None:
        return None
    now = _now(now)
    night, slot = latest_slot(at, zone, now)
    return night if now - slot < catch_up else None
