import datetime as dt
import json
import random

import pytest

from patron.webhooks import model

NOW = dt.datetime(2026, 3, 2, 2, 30, tzinfo=dt.UTC)


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    # The expected value comes from `openssl dgst -sha256 -hmac whsec_test`.
    sig = model.signature("whsec_test", 1764000000, b'{"id":1}')
    assert sig == "sha256=bcf2d6a7acc087ebebf499c5c37a1cfa87b3903702e6799c8c82ec0cc99be09c"


def test_receiver_check_accepts_fresh_signed_body_and_refuses_tampering_and_replay():
    body = b'{"id":7,"event":"order.recorded"}'
    ts = str(int(NOW.timestamp()))
    header = model.signature("s3cret", ts, body)
    assert model.verify_signature("s3cret", ts, body, header, now=NOW)
    assert not model.verify_signature("other", ts, body, header, now=NOW)
    assert not model.verify_signature("s3cret", ts, body + b" ", header, now=NOW)
    assert not model.verify_signature("s3cret", ts, body, header,
                                      now=NOW + dt.timedelta(minutes=6))
    assert not model.verify_signature("s3cret", "yesterday", body, header, now=NOW)


def test_body_carries_delivery_id_event_time_and_data_in_utc():
    body = model.body_bytes(delivery_id=12, event="customer.created",
                            created_at=dt.datetime(2026, 3, 2, 10, 30,
                                                   tzinfo=dt.timezone(dt.timedelta(hours=8))),
                            payload={"customer_id": 5, "name": "王芳"})
    assert json.loads(body) == {"id": 12, "event": "customer.created",
                                "created_at": "2026-03-02T02:30:00+00:00",
                                "data": {"customer_id": 5, "name": "王芳"}}
    assert "王芳".encode() in body  # UTF-8, not \u escapes


@pytest.mark.parametrize("url", ["https://hooks.example.cn/patron", "http://127.0.0.1:8080/x",
                                 "https://例子.中国/hook?token=1"])
def test_http_and_https_urls_are_accepted(url):
    assert model.url_errors(url) == []


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/x", "webhook_url_scheme"),
    ("example.com/hook", "webhook_url_scheme"),
    ("javascript:alert(1)", "webhook_url_scheme"),
    ("https://", "webhook_url_invalid"),
    ("https://example.com:99999/", "webhook_url_invalid"),
    ("https://exa mple.com/", "webhook_url_invalid"),
    ("https://user:pw@example.com/", "webhook_url_credentials"),
])
def test_bad_urls_are_refused_with_a_reason(url, reason):
    assert [(e.field, e.reason) for e in model.url_errors(url)] == [("url", reason)]


def test_unknown_and_missing_events_are_refused_naming_each():
    assert model.event_errors(["order.recorded", "*"]) == []
    errors = model.event_errors(["order.recorded", "order.deleted", "nope"])
    assert [(e.field, e.params["value"]) for e in errors] == [("events", "order.deleted"),
                                                              ("events", "nope")]
    assert [e.reason for e in model.event_errors([])] == ["webhook_events_empty"]


def test_star_subscribes_to_every_event():
    assert model.subscribed(["*"], "customers.merged")
    assert model.subscribed(["order.recorded"], "order.recorded")
    assert not model.subscribed(["order.recorded"], "customer.created")
    assert not model.subscribed(None, "order.recorded")


def test_backoff_grows_from_thirty_seconds_with_bounded_jitter():
    rng = random.Random(7)
    for attempts, base in enumerate(model.BACKOFF, start=1):
        for _ in range(50):
            delay = model.retry_delay(attempts, rng)
            assert base * 0.8 <= delay <= base * 1.2
    assert model.BACKOFF[0] == dt.timedelta(seconds=30)
    assert list(model.BACKOFF) == sorted(model.BACKOFF)


def test_jitter_spreads_retries_of_deliveries_that_failed_together():
    rng = random.Random(1)
    delays = {model.retry_delay(1, rng) for _ in range(20)}
    assert len(delays) > 10


def test_delivery_fails_for_good_after_the_last_attempt():
    status, at = model.after_failure(1, NOW, random.Random(0))
    assert status == "pending" and NOW + dt.timedelta(seconds=24) <= at <= NOW + dt.timedelta(
        seconds=36)
    assert model.after_failure(model.MAX_ATTEMPTS - 1, NOW)[0] == "pending"
    assert model.after_failure(model.MAX_ATTEMPTS, NOW) == ("failed", NOW)
    assert model.MAX_ATTEMPTS == 8


def test_only_2xx_counts_as_delivered():
    assert model.succeeded(200) and model.succeeded(204)
    assert not any(model.succeeded(c) for c in (301, 302, 400, 410, 500, 503))


def test_secret_hint_does_not_reveal_the_secret():
    secret = model.new_secret()
    assert secret.startswith("whsec_") and len(secret) > 40
    hint = model.secret_hint(secret)
    assert secret.startswith(hint.rstrip("…")) and len(hint) < 12
    assert model.new_secret() != secret
