"""The message outbox on SQLite and PostgreSQL: recorded in the caller's transaction, sent once
by the worker, retried with backoff, suppressed without consent, and never sent twice when a
worker dies."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading

import pytest
from sqlalchemy import func, select, update

from patron.customers.tables import customers
from patron.db import UnitOfWork
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.messaging import delivery, service
from patron.messaging.adapters import LogAdapter, failed, retry
from patron.messaging.delivery import deliver_due
from patron.messaging.tables import messages
from patron.security.model import SYSTEM
from tests.messaging_factories import (
    E164,
    NOW,
    DiesAfterSending,
    RecordingProvider,
    WorkerDied,
    attempts,
    member_with,
    message,
    queue,
)

LEASE = delivery.LEASE


def every(provider):
    return dict.fromkeys(("sms", "email", "wechat", "app", "webhook"), provider)


def count(engine) -> int:
    with UnitOfWork(engine, readonly=True) as uow:
        return uow.c.execute(select(func.count()).select_from(messages)).scalar_one()


def test_a_message_is_written_in_the_callers_transaction_and_vanishes_with_its_rollback(engine):
    m = member_with(engine, sms=True)
    with UnitOfWork(engine) as uow:
        service.enqueue_in(uow.c, customer_id=m["customer_id"], channel="sms",
                           template="otp_login", variables={"code": "1", "minutes": 5},
                           purpose="otp", dedupe_key="rolled-back")
        # no commit: the caller's transaction fails
    assert count(engine) == 0
    mid = queue(engine, customer_id=m["customer_id"], template="otp_login", purpose="otp")
    row = message(engine, mid)
    assert row["state"] == "pending" and row["body"].startswith("您的登录验证码是 482913")
    assert row["expires_at"] == NOW + dt.timedelta(minutes=10)


def test_the_same_dedupe_key_queues_one_message_and_another_message_under_it_is_refused(engine):
    m = member_with(engine, sms=True)
    first = queue(engine, customer_id=m["customer_id"], key="reminder-1")
    again = queue(engine, customer_id=m["customer_id"], key="reminder-1")
    assert first == again and count(engine) == 1
    # The key is unique per purpose: an OTP may use the same text as a reminder's key.
    other = queue(engine, customer_id=m["customer_id"], key="reminder-1", purpose="marketing")
    assert other != first
    with pytest.raises(Conflict) as exc:
        queue(engine, customer_id=m["customer_id"], key="reminder-1", channel="email")
    assert exc.value.message == "message_dedupe_key_reused"


def test_a_message_with_variables_its_template_does_not_declare_is_refused_when_queued(engine):
    m = member_with(engine)
    with pytest.raises(ValidationFailed) as exc:
        queue(engine, customer_id=m["customer_id"], template="otp_login",
              variables={"code": "1", "minutes": 5, "name": "x"})
    assert [(f.field, f.reason) for f in exc.value.fields] == [
        ("variables.name", "message_variable_unknown")]
    with pytest.raises(ValidationFailed) as exc:
        queue(engine, customer_id=m["customer_id"], template="otp_login", variables={"code": "1"})
    assert exc.value.fields[0].reason == "message_variable_missing"
    with pytest.raises(ValidationFailed) as exc:
        queue(engine, customer_id=m["customer_id"], template="nope", variables={})
    assert exc.value.fields[0].reason == "message_template_unknown"
    assert count(engine) == 0


def test_the_log_adapter_delivers_a_one_time_code_to_the_server_log(engine, caplog):
    mid = queue(engine, customer_id=None, to=E164, template="otp_login", purpose="otp")
    with caplog.at_level(logging.INFO, logger="patron.messages"):
        stats = deliver_due(engine=engine, now=NOW, adapters=every(LogAdapter()))
    assert stats.delivered == 1
    # the code is there; the address masked (docs/data-protection.md)
    masked = E164[:-8] + "****" + E164[-4:]
    assert any("482913" in r.getMessage() and masked in r.getMessage()
               for r in caplog.records)
    assert not any(E164 in r.getMessage() for r in caplog.records)
    row = message(engine, mid)
    assert row["state"] == "delivered" and row["address"] == E164
    assert [a["outcome"] for a in attempts(engine, mid)] == ["delivered"]
    # Nothing left to send.
    assert deliver_due(engine=engine, now=NOW, adapters=every(LogAdapter())).claimed == 0


def test_a_worker_that_dies_after_claiming_leaves_the_message_to_be_sent_once_later(engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    provider = RecordingProvider()
    stats = delivery.DeliveryStats()
    claimed, _ = delivery.claim(engine, NOW, 10, every(provider), stats)  # then the worker dies
    assert [c.outgoing.id for c in claimed] == [mid] and message(engine, mid)["state"] == "sending"
    # Another worker does not take it while the lease holds ...
    assert deliver_due(engine=engine, now=NOW + LEASE / 2, adapters=every(provider)).claimed == 0
    # ... and sends it once the lease has run out: it was never handed to the provider.
    stats = deliver_due(engine=engine, now=NOW + LEASE + dt.timedelta(seconds=1),
                        adapters=every(provider))
    assert stats.delivered == 1 and provider.sent == [mid]
    assert message(engine, mid)["state"] == "delivered"
    assert deliver_due(engine=engine, now=NOW + 2 * LEASE, adapters=every(provider)).claimed == 0
    assert provider.sent == [mid]


def test_a_worker_that_dies_after_sending_does_not_send_again_where_the_provider_cannot_deduplicate(
        engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    provider = RecordingProvider()  # no idempotency keys, like SMTP
    with pytest.raises(WorkerDied):
        deliver_due(engine=engine, now=NOW, adapters=every(DiesAfterSending(provider)))
    assert provider.sent == [mid]
    assert [a["outcome"] for a in attempts(engine, mid)] == ["started"]
    later = NOW + LEASE + dt.timedelta(seconds=1)
    stats = deliver_due(engine=engine, now=later, adapters=every(provider))
    assert stats.failed == 1 and provider.sent == [mid]
    row = message(engine, mid)
    assert (row["state"], row["reason"]) == ("failed", "outcome_unknown")
    assert [a["outcome"] for a in attempts(engine, mid)] == ["unknown"]


def test_a_worker_that_dies_after_sending_is_followed_by_a_resend_the_provider_deduplicates(
        engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    provider = RecordingProvider(dedupes=True)
    with pytest.raises(WorkerDied):
        deliver_due(engine=engine, now=NOW, adapters=every(DiesAfterSending(provider)))
    stats = deliver_due(engine=engine, now=NOW + LEASE + dt.timedelta(seconds=1),
                        adapters=every(provider))
    assert stats.delivered == 1 and stats.resent_after_crash == 1
    # Handed over twice under the same id, sent once.
    assert [r.id for r in provider.received] == [mid, mid] and provider.sent == [mid]
    assert [a["outcome"] for a in attempts(engine, mid)] == ["unknown", "delivered"]
    assert message(engine, mid)["state"] == "delivered"


def test_failures_are_retried_with_growing_waits_then_the_message_fails(engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    provider = RecordingProvider([retry("HTTP 503")] * 6)
    rng = random.Random(7)
    at, waits = NOW, []
    for _ in range(6):
        stats = deliver_due(engine=engine, now=at, adapters=every(provider), rng=rng)
        assert stats.claimed == 1
        row = message(engine, mid)
        if row["state"] == "failed":
            break
        waits.append(row["next_attempt_at"] - at)
        # Not due a moment before its time.
        assert deliver_due(engine=engine, now=row["next_attempt_at"] - dt.timedelta(seconds=1),
                           adapters=every(provider)).claimed == 0
        at = row["next_attempt_at"]
    expected = [dt.timedelta(seconds=30), dt.timedelta(minutes=2), dt.timedelta(minutes=10),
                dt.timedelta(hours=1), dt.timedelta(hours=6)]
    assert len(waits) == 5
    for wait, base in zip(waits, expected, strict=True):
        assert base * 0.8 <= wait <= base * 1.2
    row = message(engine, mid)
    assert (row["state"], row["reason"], row["attempts"]) == ("failed", "attempts_exhausted", 6)
    assert row["error"] == "HTTP 503" and len(provider.sent) == 6


def test_a_provider_that_refuses_a_message_for_good_fails_it_at_once(engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    provider = RecordingProvider([failed("rejected", "invalid number")])
    deliver_due(engine=engine, now=NOW, adapters=every(provider))
    row = message(engine, mid)
    assert (row["state"], row["reason"], row["error"]) == ("failed", "rejected", "invalid number")


def test_marketing_without_consent_for_the_channel_is_suppressed_and_never_sent(engine):
    m = member_with(engine, sms=False, email=True)
    sms = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="a")
    webhook = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="b",
                    channel="webhook")
    email = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="c",
                  channel="email")
    service_msg = queue(engine, customer_id=m["customer_id"], purpose="transactional", key="d")
    with UnitOfWork(engine) as uow:
        from patron.customers.protect import profile_values

        for cid in uow.c.execute(select(customers.c.id)).scalars():
            uow.c.execute(update(customers).where(customers.c.id == cid)
                          .values(profile_values(cid, {"email": "li@example.cn"})))
        uow.commit()
    provider = RecordingProvider()
    stats = deliver_due(engine=engine, now=NOW, adapters=every(provider))
    assert (stats.suppressed, stats.delivered) == (2, 2)
    assert (message(engine, sms)["state"], message(engine, sms)["reason"]) == (
        "suppressed", "no_consent")
    assert message(engine, webhook)["state"] == "suppressed"
    assert sorted(provider.sent) == sorted([email, service_msg])
    assert attempts(engine, sms) == []


def test_an_unsubscribe_before_sending_suppresses_a_marketing_message(engine):
    m = member_with(engine, sms=True)
    first = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="a")
    second = queue(engine, customer_id=m["customer_id"], purpose="marketing", key="b")
    body = message(engine, first)["body"]  # SMS marketing carries the STOP footer
    assert body.endswith("回复TD退订")
    from patron.messaging import model

    with UnitOfWork(engine) as uow:
        link = model.unsubscribe_token(service.signing_key(uow.c), first)
        uow.commit()
    with UnitOfWork(engine) as uow:
        out = service.unsubscribe(uow=uow, token=link, actor=SYSTEM)
    assert out == {"channel": "sms", "memberships": 1}
    stats = deliver_due(engine=engine, now=NOW, adapters=every(RecordingProvider()))
    assert stats.suppressed == 2
    assert message(engine, second)["reason"] == "unsubscribed"


def test_a_one_time_code_is_sent_without_marketing_consent_but_not_after_it_expired(engine):
    m = member_with(engine)  # no marketing consent at all
    sent = queue(engine, customer_id=m["customer_id"], template="otp_login", purpose="otp",
                 key="otp-1")
    late = queue(engine, customer_id=m["customer_id"], template="otp_login", purpose="otp",
                 key="otp-2", now=NOW - dt.timedelta(minutes=11))
    provider = RecordingProvider()
    deliver_due(engine=engine, now=NOW, adapters=every(provider))
    assert provider.sent == [sent]
    assert message(engine, sent)["address"] == E164
    assert (message(engine, late)["state"], message(engine, late)["reason"]) == (
        "failed", "expired")


def test_a_message_to_a_profile_without_an_address_fails_without_an_attempt(engine):
    m = member_with(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="email")
    deliver_due(engine=engine, now=NOW, adapters=every(RecordingProvider()))
    row = message(engine, mid)
    assert (row["state"], row["reason"]) == ("failed", "no_address") and attempts(engine, mid) == []


def test_an_owner_retries_a_failed_message_and_it_is_sent(engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    deliver_due(engine=engine, now=NOW,
                adapters=every(RecordingProvider([failed("rejected", "blocked")])))
    with UnitOfWork(engine) as uow, pytest.raises(NotFound):
        service.retry_message(uow=uow, actor=SYSTEM, message_id=mid + 1000, now=NOW)
    with UnitOfWork(engine) as uow:
        service.retry_message(uow=uow, actor=SYSTEM, message_id=mid, now=NOW)
    provider = RecordingProvider()
    deliver_due(engine=engine, now=NOW, adapters=every(provider))
    assert provider.sent == [mid] and message(engine, mid)["attempts"] == 2
    with UnitOfWork(engine) as uow, pytest.raises(Conflict) as exc:
        service.retry_message(uow=uow, actor=SYSTEM, message_id=mid, now=NOW)
    assert exc.value.message == "message_not_failed"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_several_workers_on_postgresql_never_send_the_same_message_twice(engine):
    m = member_with(engine, sms=True)
    ids = [queue(engine, customer_id=m["customer_id"], key=f"k{i}") for i in range(240)]
    sent: list[int] = []
    lock = threading.Lock()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with lock:
                sent.append(int(record.args[0]))  # type: ignore[index]

    handler = Collect(level=logging.INFO)
    logger = logging.getLogger("patron.messages")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            for _ in range(80):
                if deliver_due(engine=engine, now=NOW, limit=7,
                               adapters=every(LogAdapter())).claimed == 0:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logger.removeHandler(handler)
    assert errors == []
    assert sorted(sent) == sorted(ids)  # every message once, none twice
    with UnitOfWork(engine, readonly=True) as uow:
        states = dict(uow.c.execute(select(messages.c.state, func.count())
                                    .group_by(messages.c.state)).all())
    assert states == {"delivered": 240}


def test_points_expiry_reminders_reach_consenting_members_and_are_suppressed_for_the_others(
        engine):
    from patron.loyalty.jobs import run_due
    from tests.factories import T0, make_org
    from tests.loyalty_factories import buy, enrol, make_program

    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow)
        yes = enrol(uow, "13800000001", marketing={"sms": True})
        no = enrol(uow, "13800000002")
        buy(uow, "O1", phone="13800000001")
        buy(uow, "O2", phone="13800000002")
    day = dt.timedelta(days=1)
    with UnitOfWork(engine) as uow:
        assert run_due(uow=uow, actor=SYSTEM, now=T0 + 340 * day)["reminders"] == 2
    provider = RecordingProvider()
    stats = deliver_due(engine=engine, now=T0 + 340 * day, adapters=every(provider))
    assert (stats.delivered, stats.suppressed) == (1, 1)
    (sent,) = provider.received
    assert sent.customer_id == yes["customer_id"] and sent.address == "+8613800000001"
    assert sent.body.startswith("您有 71 积分将于 2027-03-02 到期")
    assert sent.body.endswith("回复TD退订")
    with UnitOfWork(engine, readonly=True) as uow:
        other = uow.c.execute(select(messages).where(
            messages.c.customer_id == no["customer_id"])).mappings().one()
    assert (other["state"], other["reason"]) == ("suppressed", "no_consent")
    # The next day's job queues nothing new: one reminder per member and expiry date.
    with UnitOfWork(engine) as uow:
        assert run_due(uow=uow, actor=SYSTEM, now=T0 + 341 * day)["reminders"] == 0
