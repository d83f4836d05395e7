"""Frequency caps and quiet hours, the rules without a database."""

import datetime as dt

from patron.messaging.limits import DeliveryLimits, exceeded_cap, parse_limits, quiet_until

SH = "Asia/Shanghai"


def at(local: str, tz: str = SH) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)


def limits(start: str, end: str) -> DeliveryLimits:
    parsed, errors = parse_limits({"quiet_hours": {"start": start, "end": end}})
    assert errors == []
    return parsed


def test_quiet_hours_wrapping_midnight_end_the_next_morning_in_the_stores_time_zone():
    q = limits("21:00", "09:00")
    assert quiet_until(q, at("2026-11-25T22:30"), SH) == at("2026-11-26T09:00")
    assert quiet_until(q, at("2026-11-26T03:00"), SH) == at("2026-11-26T09:00")
    assert quiet_until(q, at("2026-11-26T09:00"), SH) is None
    assert quiet_until(q, at("2026-11-26T20:59"), SH) is None
    # The same instant is 14:30 in London: not quiet there.
    assert quiet_until(q, at("2026-11-25T22:30"), "Europe/London") is None


def test_quiet_hours_within_one_day():
    q = limits("12:00", "14:00")
    assert quiet_until(q, at("2026-11-25T13:00"), SH) == at("2026-11-25T14:00")
    assert quiet_until(q, at("2026-11-25T14:00"), SH) is None
    assert quiet_until(DeliveryLimits(), at("2026-11-25T13:00"), SH) is None


def test_caps_refuse_the_message_over_the_days_or_the_weeks_cap():
    parsed, errors = parse_limits({"caps": {"sms": {"day": 1, "week": 3}}})
    assert errors == []
    assert exceeded_cap(parsed, "sms", {"day": 0, "week": 2}) is None
    assert exceeded_cap(parsed, "sms", {"day": 1, "week": 1}) == "day"
    assert exceeded_cap(parsed, "sms", {"day": 0, "week": 3}) == "week"
    assert exceeded_cap(parsed, "email", {"day": 9, "week": 9}) is None


def test_bad_limits_name_the_field():
    _, errors = parse_limits({"caps": {"fax": {"day": 1}, "sms": {"day": 5, "week": 2,
                                                                   "month": 1}},
                              "quiet_hours": {"start": "25:00", "end": "9"}, "other": 1})
    fields = {e.field: e.reason for e in errors}
    assert fields == {"other": "extra_forbidden", "caps.fax": "literal_error",
                      "caps.sms.month": "literal_error",
                      "caps.sms.day": "message_cap_day_over_week",
                      "quiet_hours.start": "message_time_format",
                      "quiet_hours.end": "message_time_format"}
    _, errors = parse_limits({"caps": {"sms": {"day": -1}}, "quiet_hours": {"start": "21:00",
                                                                            "end": "21:00"}})
    assert {e.field for e in errors} == {"caps.sms.day", "quiet_hours.end"}
