"""Frequency caps and quiet hours at send time, on SQLite and PostgreSQL: across every
marketing message whatever queued it; one-time codes and transactional messages pass."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from patron.db import UnitOfWork
from patron.errors import ValidationFailed
from patron.messaging import service
from patron.messaging.delivery import deliver_due
from patron.security.model import SYSTEM
from tests.messaging_factories import NOW, RecordingProvider, member_with, message, queue

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def every(provider):
    return dict.fromkeys(("sms", "email", "wechat", "app", "webhook"), provider)


def set_limits(engine, value):
    with UnitOfWork(engine) as uow:
        return service.set_limits(uow=uow, actor=SYSTEM, values=value)


def test_a_marketing_message_over_the_daily_cap_ends_suppressed_capped(engine):
    m = member_with(engine, sms=True)
    set_limits(engine, {"caps": {"sms": {"day": 1, "week": 2}}})
    first = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="a")
    second = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="b")
    code = queue(engine, customer_id=m["customer_id"], purpose="otp", template="otp_login",
                 key="otp")
    notice = queue(engine, customer_id=m["customer_id"], purpose="transactional", key="t")
    provider = RecordingProvider()
    stats = deliver_due(engine=engine, now=NOW, adapters=every(provider))
    assert (stats.delivered, stats.suppressed) == (3, 1)
    assert sorted(provider.sent) == sorted([first, code, notice])
    row = message(engine, second)
    assert (row["state"], row["reason"]) == ("suppressed", "capped")
    assert "day" in row["error"]
    # The next day one more goes out; the third within the week is over the weekly cap.
    third = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="c",
                  now=NOW + DAY + HOUR)
    fourth = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="d",
                   now=NOW + 2 * DAY + HOUR)
    deliver_due(engine=engine, now=NOW + DAY + HOUR, adapters=every(provider))
    deliver_due(engine=engine, now=NOW + 2 * DAY + HOUR, adapters=every(provider))
    assert message(engine, third)["state"] == "delivered"
    row = message(engine, fourth)
    assert (row["state"], row["reason"]) == ("suppressed", "capped") and "week" in row["error"]


def test_quiet_hours_defer_a_marketing_message_to_the_end_of_the_window_in_the_stores_zone(
        engine):
    m = member_with(engine, sms=True)
    set_limits(engine, {"quiet_hours": {"start": "21:00", "end": "09:00"}})
    late = NOW + 12 * HOUR + dt.timedelta(minutes=30)  # 22:30 in Shanghai
    mid = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="a", now=late)
    code = queue(engine, customer_id=m["customer_id"], purpose="otp", template="otp_login",
                 key="otp", now=late)
    provider = RecordingProvider()
    stats = deliver_due(engine=engine, now=late, adapters=every(provider))
    assert (stats.deferred, stats.delivered) == (1, 1) and provider.sent == [code]
    row = message(engine, mid)
    morning = NOW + DAY - HOUR  # 09:00 Shanghai the next day
    assert (row["state"], row["next_attempt_at"], row["attempts"]) == ("pending", morning, 0)
    assert deliver_due(engine=engine, now=morning - dt.timedelta(seconds=1),
                       adapters=every(provider)).claimed == 0
    deliver_due(engine=engine, now=morning, adapters=every(provider))
    assert message(engine, mid)["state"] == "delivered" and provider.sent == [code, mid]


def test_a_message_deferred_by_quiet_hours_is_capped_when_it_finally_goes(engine):
    m = member_with(engine, sms=True)
    set_limits(engine, {"caps": {"sms": {"day": 1}},
                        "quiet_hours": {"start": "21:00", "end": "09:00"}})
    late = NOW + 12 * HOUR
    deferred = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="a",
                     now=late)
    provider = RecordingProvider()
    deliver_due(engine=engine, now=late, adapters=every(provider))
    morning = NOW + DAY - HOUR
    sent = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="b",
                 now=morning - dt.timedelta(minutes=5))
    deliver_due(engine=engine, now=morning - dt.timedelta(minutes=5), adapters=every(provider))
    # 08:55 is still quiet: nothing yet. At 09:00 both are due; the cap lets one through.
    assert provider.sent == []
    deliver_due(engine=engine, now=morning, adapters=every(provider))
    states = sorted((message(engine, x)["state"], message(engine, x)["reason"])
                    for x in (deferred, sent))
    assert states == [("delivered", None), ("suppressed", "capped")] and len(provider.sent) == 1


def test_bad_limits_are_refused_and_nothing_changes(engine):
    set_limits(engine, {"caps": {"sms": {"day": 2}}})
    with pytest.raises(ValidationFailed) as exc:
        set_limits(engine, {"caps": {"sms": {"day": 3, "week": 1}},
                            "quiet_hours": {"start": "9pm", "end": "09:00"}})
    assert {f.field for f in exc.value.fields} == {"caps.sms.day", "quiet_hours.start"}
    with UnitOfWork(engine, readonly=True) as uow:
        assert service.get_limits(uow.c, actor=SYSTEM) == {"caps": {"sms": {"day": 2}},
                                                          "quiet_hours": None}


def test_four_workers_on_one_customer_never_exceed_the_cap(engine, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("several workers need PostgreSQL (SQLite has one writer)")
    m = member_with(engine, sms=True)
    set_limits(engine, {"caps": {"sms": {"day": 3}}})
    ids = [queue(engine, customer_id=m["customer_id"], purpose="marketing", key=f"k{i}")
           for i in range(24)]
    provider = RecordingProvider()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work():
        try:
            barrier.wait()
            deliver_due(engine=engine, now=NOW, limit=6, adapters=every(provider))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    states = [message(engine, i)["state"] for i in ids]
    assert states.count("delivered") == 3 and states.count("suppressed") == 21
    assert len(provider.sent) == 3
