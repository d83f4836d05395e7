"""When the nightly analytics refresh runs: the pure rule, on a travelling clock."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine

from patron.analytics.refresh_schedule import due_night, next_run, parse_refresh_at
from patron.config import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
THREE = dt.time(3, 0)


def local(zone: ZoneInfo, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone)


@pytest.mark.parametrize(("text", "expected"), [
    ("03:00", dt.time(3, 0)), ("3:05", dt.time(3, 5)), ("23:59", dt.time(23, 59)),
    ("00:00", dt.time(0, 0)), (" off ", None), ("OFF", None)])
def test_refresh_at_is_a_24_hour_time_or_off(text, expected):
    assert parse_refresh_at(text) == expected


@pytest.mark.parametrize("text", ["24:00", "3", "03:60", "3am", "", "nightly", "03:00:00"])
def test_anything_else_is_refused_with_the_reason(text):
    with pytest.raises(ValueError, match="HH:MM"):
        parse_refresh_at(text)


def test_settings_refuse_a_bad_time_or_zone_at_start(monkeypatch):
    monkeypatch.setenv("PATRON_ANALYTICS_REFRESH_AT", "25:00")
    with pytest.raises(ValueError, match="HH:MM"):
        Settings()
    monkeypatch.setenv("PATRON_ANALYTICS_REFRESH_AT", "Off")
    monkeypatch.setenv("PATRON_ANALYTICS_REFRESH_TZ", "Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        Settings()
    monkeypatch.setenv("PATRON_ANALYTICS_REFRESH_TZ", "Europe/Berlin")
    assert Settings().analytics_refresh_at == "off"


def test_before_three_the_next_run_is_tonight_after_it_tomorrow_night():
    with time_machine.travel(local(SHANGHAI, 2026, 6, 1, 2, 59, 59), tick=False):
        assert next_run(THREE, SHANGHAI) == local(SHANGHAI, 2026, 6, 1, 3, 0)
        assert due_night(THREE, SHANGHAI) is None  # last night's slot is 24 hours ago
    with time_machine.travel(local(SHANGHAI, 2026, 6, 1, 3, 0), tick=False):
        assert next_run(THREE, SHANGHAI) == local(SHANGHAI, 2026, 6, 2, 3, 0)
        assert due_night(THREE, SHANGHAI) == dt.date(2026, 6, 1)


def test_the_next_run_is_in_the_configured_zone_not_utc():
    # 20:00 UTC on 31 May is 04:00 on 1 June in Shanghai: tonight's 03:00 has passed there.
    with time_machine.travel(dt.datetime(2026, 5, 31, 20, 0, tzinfo=dt.UTC), tick=False):
        assert next_run(THREE, SHANGHAI) == dt.datetime(2026, 6, 1, 19, 0, tzinfo=dt.UTC)
        assert due_night(THREE, SHANGHAI) == dt.date(2026, 6, 1)


def test_a_server_down_at_three_catches_up_within_twelve_hours_only():
    with time_machine.travel(local(SHANGHAI, 2026, 6, 1, 14, 59), tick=False):
        assert due_night(THREE, SHANGHAI) == dt.date(2026, 6, 1)
    with time_machine.travel(local(SHANGHAI, 2026, 6, 1, 15, 0), tick=False):
        assert due_night(THREE, SHANGHAI) is None
        assert next_run(THREE, SHANGHAI) == local(SHANGHAI, 2026, 6, 2, 3, 0)


def test_off_is_never_due():
    with time_machine.travel(local(SHANGHAI, 2026, 6, 1, 3, 1), tick=False):
        assert due_night(None, SHANGHAI) is None


def test_a_time_skipped_by_daylight_saving_runs_an_hour_later_on_the_clock():
    # Berlin jumps from 02:00 to 03:00 on 29 March 2026: 02:30 does not exist that night.
    at = dt.time(2, 30)
    with time_machine.travel(local(BERLIN, 2026, 3, 29, 1, 0), tick=False):
        run = next_run(at, BERLIN)
    assert run.astimezone(BERLIN).replace(tzinfo=None) == dt.datetime(2026, 3, 29, 3, 30)
    with time_machine.travel(run - dt.timedelta(seconds=1), tick=False):
        assert due_night(at, BERLIN) is None
    with time_machine.travel(run, tick=False):
        assert due_night(at, BERLIN) == dt.date(2026, 3, 29)


def test_a_time_that_occurs_twice_runs_once_at_the_first():
    # Berlin goes back from 03:00 to 02:00 on 25 October 2026: 02:30 happens twice.
    at = dt.time(2, 30)
    with time_machine.travel(local(BERLIN, 2026, 10, 25, 0, 0), tick=False):
        first = next_run(at, BERLIN)
    assert first == dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC)  # 02:30 CEST
    with time_machine.travel(first + dt.timedelta(hours=1), tick=False):  # 02:30 CET
        assert due_night(at, BERLIN) == dt.date(2026, 10, 25)  # the same night, not a second
        assert next_run(at, BERLIN) == local(BERLIN, 2026, 10, 26, 2, 30)


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware"):
        next_run(THREE, SHANGHAI, dt.datetime(2026, 6, 1, 3, 0))
