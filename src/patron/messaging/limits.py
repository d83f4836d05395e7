"""Delivery limits for marketing messages, plain Python: frequency caps per customer, channel and
day/week, and quiet hours in the customer's store's time zone.

Both are applied by the worker when a marketing message is about to be sent (not when it is
queued), across every message whatever queued it (campaigns, automations, reminders): a message
due during quiet hours waits for the end of the quiet window; one over a cap ends
``suppressed`` with reason ``capped``. One-time codes and transactional messages are neither
capped nor held back.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from patron.errors import FieldError

CAPPED_CHANNELS = ("sms", "email", "wechat", "app")
WINDOWS = {"day": dt.timedelta(days=1), "week": dt.timedelta(days=7)}
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_CAP = 1000


@dataclass(frozen=True)
class DeliveryLimits:
    """``caps``: {channel: {"day": n, "week": n}} (a missing entry is no cap);
    ``quiet_start``/``quiet_end``: local times; the window may wrap midnight (21:00-09:00)."""

    caps: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    quiet_start: dt.time | None = None
    quiet_end: dt.time | None = None

    @property
    def has_quiet_hours(self) -> bool:
        return (self.quiet_start is not None and self.quiet_end is not None
                and self.quiet_start != self.quiet_end)

    def as_json(self) -> dict[str, Any]:
        return {"caps": {ch: dict(c) for ch, c in self.caps.items()},
                "quiet_hours": ({"start": self.quiet_start.strftime("%H:%M"),
                                 "end": self.quiet_end.strftime("%H:%M")}
                                if self.has_quiet_hours else None)}


NO_LIMITS = DeliveryLimits()


def parse_limits(value: Mapping[str, Any] | None) -> tuple[DeliveryLimits, list[FieldError]]:
    """Read ``{"caps": {...}, "quiet_hours": {"start": "21:00", "end": "09:00"} | null}``;
    returns the limits and what is wrong with the input (field, reason)."""
    errors: list[FieldError] = []
    value = value or {}
    for key in sorted(set(value) - {"caps", "quiet_hours"}):
        errors.append(FieldError(key, "extra_forbidden"))
    caps: dict[str, dict[str, int]] = {}
    raw_caps = value.get("caps") or {}
    if not isinstance(raw_caps, Mapping):
        errors.append(FieldError("caps", "dict_type"))
        raw_caps = {}
    for channel, windows in raw_caps.items():
        if channel not in CAPPED_CHANNELS:
            errors.append(FieldError(f"caps.{channel}", "literal_error",
                                     {"expected": ", ".join(CAPPED_CHANNELS)}))
            continue
        if not isinstance(windows, Mapping):
            errors.append(FieldError(f"caps.{channel}", "dict_type"))
            continue
        out: dict[str, int] = {}
        for window, n in windows.items():
            if window not in WINDOWS:
                errors.append(FieldError(f"caps.{channel}.{window}", "literal_error",
                                         {"expected": "day, week"}))
            elif n is None:
                continue
            elif isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CAP:
                errors.append(FieldError(f"caps.{channel}.{window}", "less_than_equal",
                                         {"le": MAX_CAP}))
            else:
                out[window] = n
        if "day" in out and "week" in out and out["day"] > out["week"]:
            errors.append(FieldError(f"caps.{channel}.day", "message_cap_day_over_week"))
        if out:
            caps[channel] = out
    start = end = None
    quiet = value.get("quiet_hours")
    if quiet is not None:
        if not isinstance(quiet, Mapping):
            errors.append(FieldError("quiet_hours", "dict_type"))
        else:
            for name in ("start", "end"):
                text = quiet.get(name)
                m = TIME_RE.match(text) if isinstance(text, str) else None
                if m is None:
                    errors.append(FieldError(f"quiet_hours.{name}", "message_time_format"))
                elif name == "start":
                    start = dt.time(int(m.group(1)), int(m.group(2)))
                else:
                    end = dt.time(int(m.group(1)), int(m.group(2)))
            if start is not None and start == end:
                errors.append(FieldError("quiet_hours.end", "message_quiet_hours_empty"))
    return DeliveryLimits(caps=caps, quiet_start=start, quiet_end=end), errors


def quiet_until(limits: DeliveryLimits, now: dt.datetime, tz: str) -> dt.datetime | None:
    """When the quiet window that ``now`` falls in ends (UTC), or None outside quiet hours.
    The window is read in ``tz`` (the store's time zone) and may wrap midnight."""
    if not limits.has_quiet_hours:
        return None
    assert limits.quiet_start is not None and limits.quiet_end is not None
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    t = local.time()
    start, end = limits.quiet_start, limits.quiet_end
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:  # wraps midnight: [start, 24:00) and [00:00, end)
        inside = t >= start or t < end
        end_day = local.date() + dt.timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    return dt.datetime.combine(end_day, end, zone).astimezone(dt.UTC)


def exceeded_cap(limits: DeliveryLimits, channel: str, sent_in: Mapping[str, int]) -> str | None:
    """The window (``day``/``week``) whose cap the next message would exceed, given how many
    marketing messages on ``channel`` went to the customer in each window (``sent_in``)."""
    for window, cap in sorted((limits.caps.get(channel) or {}).items()):
        if sent_in.get(window, 0) >= cap:
            return window
    return None
