"""Deliveries to a real HTTP receiver on 127.0.0.1, on SQLite and PostgreSQL.

The receiver checks each request's signature the way docs/webhooks.md tells receivers to, by
hand with ``hmac``, so that a wrong signature fails these tests whatever Patron's code says.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, utcnow
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.webhooks import delivery, model, service
from patron.webhooks.tables import webhook_deliveries
from tests.factories import make_org, order


@pytest.fixture(autouse=True)
def private_targets_allowed(monkeypatch):
    """The receivers here listen on 127.0.0.1, which Patron refuses by default."""
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_valid: bool
    answered: int

    @property
    def delivery_id(self) -> str:
        return self.headers["x-patron-delivery"]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver in a thread. ``answer(request, nth_attempt)`` picks the status."""

    answer: Callable[[Received, int], int] = lambda r, n: 200
    delay: float = 0.0
    secrets: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if receiver.delay:
                    time.sleep(receiver.delay)
                r = Received(headers, body, receiver.valid(headers, body), 0)
                with receiver._lock:
                    nth = 1 + sum(1 for x in receiver.received
                                  if x.headers.get("x-patron-delivery")
                                  == headers.get("x-patron-delivery"))
                    r.answered = receiver.answer(r, nth)
                    receiver.received.append(r)
                self.send_response(r.answered)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def valid(self, headers: dict[str, str], body: bytes) -> bool:
        ts, sig = headers.get("x-patron-timestamp", ""), headers.get("x-patron-signature", "")
        return any(hmac.compare_digest(
            "sha256=" + hmac.new(s.encode(), ts.encode() + b"." + body,
                                 hashlib.sha256).hexdigest(), sig) for s in self.secrets)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/patron"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"


def add_endpoint(engine, url: str, events: list[str], receiver: Receiver | None = None) -> int:
    with UnitOfWork(engine) as uow:
        created = service.create_endpoint(uow=uow, actor=SYSTEM, url=url, events=events)
    if receiver is not None:
        receiver.secrets.append(created["secret"])
    return int(created["id"])


def deliveries(engine) -> list[dict[str, Any]]:
    with UnitOfWork(engine, readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(select(webhook_deliveries)
                                               .order_by(webhook_deliveries.c.id)).mappings()]


def fail_first_attempt(r: Received, nth: int) -> int:
    return 500 if nth == 1 else 204


def test_order_events_are_signed_retried_after_a_500_and_then_delivered(engine):
    with UnitOfWork(engine) as uow:
        make_org(uow)
    with Receiver(answer=fail_first_attempt) as rx:
        add_endpoint(engine, rx.url, ["order.recorded", "customer.created"], rx)
        with UnitOfWork(engine) as uow:
            out = record_orders(uow=uow, orders_in=[order("W1", identifiers={
                "phone": "13812341234"})], source="api", actor=SYSTEM)
        order_id, customer_id = out[0].order_id, out[0].customer_id

        t0 = utcnow()
        first = delivery.deliver_due(engine=engine, now=t0)
        assert (first.claimed, first.retrying, first.delivered) == (2, 2, 0)
        rows = deliveries(engine)
        assert {r["event"] for r in rows} == {"order.recorded", "customer.created"}
        for r in rows:
            assert (r["status"], r["attempts"], r["last_status_code"]) == ("pending", 1, 500)
            assert r["last_error"].startswith("HTTP 500")
            # 30 s backoff, +-20% jitter
            assert t0 + dt.timedelta(seconds=24) <= r["next_attempt_at"] <= t0 + dt.timedelta(
                seconds=36)

        assert delivery.deliver_due(engine=engine, now=t0 + dt.timedelta(seconds=10)).claimed == 0
        second = delivery.deliver_due(engine=engine, now=t0 + dt.timedelta(seconds=40))
        assert (second.claimed, second.delivered) == (2, 2)

    rows = deliveries(engine)
    assert [(r["status"], r["attempts"], r["last_status_code"], r["last_error"]) for r in rows] \
        == [("delivered", 2, 204, None)] * 2
    assert all(r["delivered_at"] == t0 + dt.timedelta(seconds=40) for r in rows)
    assert len(rx.received) == 4
    assert all(r.signature_valid for r in rx.received)
    assert Counter(r.delivery_id for r in rx.received) == {str(r["id"]): 2 for r in rows}
    for r in rx.received:
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-patron-event"] == r.json["event"]
        assert r.headers["x-patron-delivery"] == str(r.json["id"])
        assert int(r.headers["x-patron-timestamp"]) in (int(t0.timestamp()),
                                                       int(t0.timestamp()) + 40)
        assert model.verify_signature(rx.secrets[0], r.headers["x-patron-timestamp"], r.body,
                                      r.headers["x-patron-signature"])
    by_event = {r.json["event"]: r.json for r in rx.received}
    assert by_event["order.recorded"]["data"] == {
        "order_id": order_id, "external_id": "W1", "channel": "pos",
        "customer_id": customer_id, "total": "71.00"}
    assert by_event["customer.created"]["data"] == {"customer_id": customer_id}


def test_merged_customers_event_after_an_order_links_two_profiles(engine):
    with UnitOfWork(engine) as uow:
        make_org(uow)
    with Receiver() as rx:
        endpoint = add_endpoint(engine, rx.url, ["customers.merged"], rx)
        with UnitOfWork(engine) as uow:
            a = record_orders(uow=uow, orders_in=[order("M1", identifiers={
                "phone": "13812341234"})], source="api", actor=SYSTEM)[0].customer_id
            b = record_orders(uow=uow, orders_in=[order("M2", channel="mini_program", store=None,
                                                        identifiers={"wechat_openid": "oX1"})],
                              source="api", actor=SYSTEM)[0].customer_id
            record_orders(uow=uow, orders_in=[order("M3", identifiers={
                "phone": "13812341234", "wechat_openid": "oX1"})], source="api", actor=SYSTEM)
        stats = delivery.deliver_due(engine=engine)
    assert stats.delivered == 1
    [got] = rx.received
    assert got.signature_valid
    assert got.json["event"] == "customers.merged"
    assert got.json["data"]["survivor_id"] == a and got.json["data"]["merged_id"] == b
    with UnitOfWork(engine, readonly=True) as uow:
        page = service.list_deliveries(uow.c, endpoint_id=endpoint, status="delivered")
        view = service.get_endpoint(uow.c, endpoint)
    assert page["total"] == 1 and page["items"][0]["event"] == "customers.merged"
    assert view["deliveries"] == {"pending": 0, "sending": 0, "delivered": 1, "failed": 0}
    assert view["last_delivered_at"] is not None


def test_receiver_that_is_down_fails_the_delivery_after_the_last_attempt(engine):
    endpoint = add_endpoint(engine, closed_port_url(), ["customers.merged"])
    with UnitOfWork(engine) as uow:
        service.enqueue(uow.c, "customers.merged", [{"survivor_id": 1, "merged_id": 2}])
        uow.commit()
    now = utcnow()
    waits = []
    for attempt in range(1, model.MAX_ATTEMPTS + 1):
        stats = delivery.deliver_due(engine=engine, now=now)
        assert stats.claimed == 1
        [row] = deliveries(engine)
        assert row["attempts"] == attempt
        assert row["last_status_code"] is None
        assert "ConnectError" in row["last_error"]
        if attempt < model.MAX_ATTEMPTS:
            assert row["status"] == "pending"
            waits.append(row["next_attempt_at"] - now)
            now = row["next_attempt_at"]
    assert row["status"] == "failed"
    for wait, base in zip(waits, model.BACKOFF, strict=True):
        assert base * 0.8 <= wait <= base * 1.2
    assert delivery.deliver_due(engine=engine, now=now + dt.timedelta(days=30)).claimed == 0
    with UnitOfWork(engine, readonly=True) as uow:
        assert service.get_endpoint(uow.c, endpoint)["deliveries"]["failed"] == 1


def test_receiver_too_slow_to_answer_counts_as_a_failed_attempt(engine):
    with Receiver(delay=1.0) as rx:
        add_endpoint(engine, rx.url, ["*"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "return.recorded", [{"return_id": 1}])
            uow.commit()
        with httpx.Client(timeout=0.2) as client:
            stats = delivery.deliver_due(engine=engine, client=client)
    assert stats.retrying == 1
    [row] = deliveries(engine)
    assert row["status"] == "pending" and row["attempts"] == 1
    assert "Timeout" in row["last_error"]


def test_redirect_is_not_followed_and_counts_as_failed(engine):
    with Receiver(answer=lambda r, n: 302) as rx:
        add_endpoint(engine, rx.url, ["*"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": 1}])
            uow.commit()
        delivery.deliver_due(engine=engine)
    [row] = deliveries(engine)
    assert (row["status"], row["last_status_code"]) == ("pending", 302)


def test_delivery_of_a_worker_that_died_mid_send_is_due_again_when_its_lease_ends(engine):
    with Receiver() as rx:
        add_endpoint(engine, rx.url, ["order.recorded"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": 9}])
            uow.commit()
        t0 = utcnow()
        [stranded] = delivery._claim(engine, t0, 10)  # a worker claims it, then dies
        assert deliveries(engine)[0]["status"] == "sending"
        assert delivery.deliver_due(engine=engine, now=t0 + dt.timedelta(minutes=1)).claimed == 0
        later = t0 + delivery.LEASE + dt.timedelta(seconds=1)
        assert delivery.deliver_due(engine=engine, now=later).delivered == 1
        # Had the first worker only stalled, its late outcome must not overwrite the new one.
        stats = delivery.DeliveryStats()
        delivery._record(engine, stranded, delivery._Attempt(False, 500, "HTTP 500"),
                         later, stats, None)
    assert stats.lease_lost == 1
    [row] = deliveries(engine)
    assert (row["status"], row["attempts"]) == ("delivered", 1)
    assert len(rx.received) == 1


def test_disabled_endpoint_gets_nothing_new_and_queued_deliveries_wait(engine):
    with Receiver() as rx:
        endpoint = add_endpoint(engine, rx.url, ["order.recorded"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": 1}])
            uow.commit()
        with UnitOfWork(engine) as uow:
            service.disable_endpoint(uow=uow, actor=SYSTEM, endpoint_id=endpoint)
        with UnitOfWork(engine) as uow:
            assert service.enqueue(uow.c, "order.recorded", [{"order_id": 2}]) == 0
            uow.commit()
        assert delivery.deliver_due(engine=engine).claimed == 0
        with UnitOfWork(engine) as uow:
            service.update_endpoint(uow=uow, actor=SYSTEM, endpoint_id=endpoint, active=True)
        assert delivery.deliver_due(engine=engine).delivered == 1
    assert [r.json["data"] for r in rx.received] == [{"order_id": 1}]


def test_redelivery_is_a_new_delivery_of_the_same_event_signed_with_the_rotated_secret(engine):
    with Receiver() as rx:
        endpoint = add_endpoint(engine, rx.url, ["order.recorded"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": 1}])
            uow.commit()
        delivery.deliver_due(engine=engine)
        first = deliveries(engine)[0]["id"]
        with UnitOfWork(engine) as uow:
            new_secret = service.rotate_secret(uow=uow, actor=SYSTEM, endpoint_id=endpoint)
        rx.secrets[:] = [new_secret]
        with UnitOfWork(engine) as uow:
            again = service.redeliver(uow=uow, actor=SYSTEM, delivery_id=first)
        assert delivery.deliver_due(engine=engine).delivered == 1
    old, new = rx.received
    assert new.delivery_id == str(again) != old.delivery_id
    assert new.json["data"] == old.json["data"] and new.json["created_at"] == old.json[
        "created_at"]
    assert old.signature_valid and new.signature_valid
    assert not rx.valid(old.headers, old.body)  # the old secret no longer signs anything
    assert deliveries(engine)[1]["redelivery_of"] == first
    with UnitOfWork(engine, readonly=True) as uow:
        actions = list(uow.c.execute(select(audit_log.c.action).order_by(audit_log.c.id))
                       .scalars())
    assert actions[-3:] == ["webhook.created", "webhook.secret_rotated", "webhook.redelivered"]


def test_concurrent_workers_never_send_the_same_delivery_twice(engine):
    # Four workers and no delay at the receiver: without row locks on the claim this sends
    # deliveries twice in almost every run (checked by removing SKIP LOCKED).
    with Receiver() as rx:
        add_endpoint(engine, rx.url, ["order.recorded"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": i} for i in range(200)])
            uow.commit()
        start = threading.Barrier(4)
        results: list[delivery.DeliveryStats] = []

        def work() -> None:
            start.wait()
            results.append(delivery.deliver_due(engine=engine, limit=1000))

        workers = [threading.Thread(target=work) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
    counts = Counter(r.delivery_id for r in rx.received)
    assert len(counts) == 200
    assert max(counts.values()) == 1
    assert sum(1 for s in results if s.claimed) >= 2  # they really worked at the same time
    assert sum(s.delivered for s in results) == 200
    assert {r["status"] for r in deliveries(engine)} == {"delivered"}


@pytest.mark.parametrize(("url", "events", "field", "reason"), [
    ("ftp://example.com/hook", ["order.recorded"], "url", "webhook_url_scheme"),
    ("https://example.com/hook", ["order.deleted"], "events", "webhook_event_unknown"),
])
def test_bad_endpoint_is_refused_and_nothing_is_written(engine, url, events, field, reason):
    from patron.errors import ValidationFailed
    from patron.webhooks.tables import webhook_endpoints

    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create_endpoint(uow=uow, actor=SYSTEM, url=url, events=events)
    assert [(f.field, f.reason) for f in exc.value.fields] == [(field, reason)]
    with UnitOfWork(engine, readonly=True) as uow:
        assert uow.c.execute(select(webhook_endpoints.c.id)).first() is None


def test_batch_that_ran_out_of_lease_time_hands_deliveries_back_unsent(engine, monkeypatch):
    # A lease shorter than the time one send may take: nothing may be sent under it.
    monkeypatch.setattr(delivery, "LEASE", delivery.SEND_BUDGET - dt.timedelta(seconds=1))
    with Receiver() as rx:
        add_endpoint(engine, rx.url, ["order.recorded"], rx)
        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": 1}, {"order_id": 2}])
            uow.commit()
        now = utcnow()
        stats = delivery.deliver_due(engine=engine, now=now, limit=2)
    assert (stats.claimed, stats.released, stats.delivered) == (2, 2, 0)
    assert rx.received == []
    assert [(r["status"], r["attempts"], r["next_attempt_at"]) for r in deliveries(engine)] \
        == [("pending", 0, now)] * 2


def test_background_worker_delivers_until_stopped(engine):
    with Receiver() as rx:
        add_endpoint(engine, rx.url, ["order.recorded"], rx)
        stop = delivery.start_background_worker(engine, interval=0.05)
        try:
            with UnitOfWork(engine) as uow:
                service.enqueue(uow.c, "order.recorded", [{"order_id": 1}])
                uow.commit()
            for _ in range(200):
                if deliveries(engine)[0]["status"] == "delivered":
                    break
                time.sleep(0.05)
        finally:
            stop()
    assert deliveries(engine)[0]["status"] == "delivered"
    assert len(rx.received) == 1 and rx.received[0].signature_valid
