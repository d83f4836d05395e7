"""Webhook rules, plain Python: which events exist, what a valid endpoint URL is, how a
delivery is signed and when a failed one is tried again."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from patron.errors import FieldError

EVENTS = ("order.recorded", "customer.created", "customers.merged", "customers.unmerged",
          "return.recorded", "automation.step")
ALL_EVENTS = "*"
STATUSES = ("pending", "sending", "delivered", "failed")

# Delay before attempt n+1 after n failed attempts; after MAX_ATTEMPTS the delivery is failed.
# About 43 hours in all, so a receiver that is down over a weekend night still gets everything.
BACKOFF = (dt.timedelta(seconds=30), dt.timedelta(minutes=2), dt.timedelta(minutes=10),
           dt.timedelta(hours=1), dt.timedelta(hours=6), dt.timedelta(hours=12),
           dt.timedelta(hours=24))
MAX_ATTEMPTS = len(BACKOFF) + 1
# Spread retries of many deliveries that failed together (a receiver restart) by +-20%.
JITTER = 0.2

SIGNATURE_PREFIX = "sha256="
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hint(secret: str) -> str:
    """Enough of a secret to tell which one a receiver holds, not enough to sign with."""
    return secret[:len(SECRET_PREFIX) + 4] + "…"


def url_errors(url: str) -> list[FieldError]:
    """An endpoint URL must be absolute http(s) with a host and no credentials in it."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number or out of range
    except ValueError:
        return [FieldError("url", "webhook_url_invalid")]
    if parts.scheme not in ("http", "https"):
        return [FieldError("url", "webhook_url_scheme")]
    if not parts.hostname:
        return [FieldError("url", "webhook_url_invalid")]
    if parts.username or parts.password:
        return [FieldError("url", "webhook_url_credentials")]
    if any(c.isspace() for c in url):
        return [FieldError("url", "webhook_url_invalid")]
    return []


def event_errors(events: Iterable[str]) -> list[FieldError]:
    events = list(events)
    if not events:
        return [FieldError("events", "webhook_events_empty")]
    return [FieldError("events", "webhook_event_unknown",
                       {"value": e, "expected": ", ".join(EVENTS)})
            for e in events if e not in EVENTS and e != ALL_EVENTS]


def subscribed(events: Iterable[str] | None, event: str) -> bool:
    chosen = set(events or ())
    return event in chosen or ALL_EVENTS in chosen


def body_bytes(*, delivery_id: int, event: str, created_at: dt.datetime,
               payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): the receiver must verify these, not a re-encoding."""
    return json.dumps({"id": delivery_id, "event": event,
                       "created_at": created_at.astimezone(dt.UTC).isoformat(),
                       "data": payload}, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode("utf-8")


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"`` keyed by the secret."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, *,
                     now: dt.datetime | None = None, tolerance: dt.timedelta | None =
                     dt.timedelta(minutes=5)) -> bool:
    """What a receiver does (docs/webhooks.md): constant-time compare, and refuse timestamps
    too far from its clock so that a captured request cannot be replayed later."""
    if tolerance is not None:
        try:
            sent = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
        except (ValueError, OverflowError, OSError):
            return False
        if abs((now or dt.datetime.now(dt.UTC)) - sent) > tolerance:
            return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)


def retry_delay(attempts: int, rng: random.Random | None = None) -> dt.timedelta:
    """The wait after ``attempts`` failed attempts (1-based), with jitter."""
    base = BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]
    factor = 1 + (rng or random).uniform(-JITTER, JITTER)
    return base * factor


def after_failure(attempts: int, now: dt.datetime,
                  rng: random.Random | None = None) -> tuple[str, dt.datetime]:
    """Status and next attempt time of a delivery whose attempt number ``attempts`` failed."""
    if attempts >= MAX_ATTEMPTS:
        return "failed", now
    return "pending", now + retry_delay(attempts, rng)


def succeeded(status_code: int) -> bool:
    # Redirects are not followed (a receiver that moved must be updated), so 3xx is a failure.
    return 200 <= status_code < 300
