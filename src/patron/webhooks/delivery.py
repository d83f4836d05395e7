"""Sending queued webhook deliveries: claim, POST signed, record the outcome.

At least once: a delivery is claimed (status ``sending`` with a lease) in one short
transaction, sent with no transaction open, and its outcome written in another. A worker that
dies between sending and writing leaves the delivery to be sent again when its lease runs out,
so receivers de-duplicate on ``X-Patron-Delivery``.

Claiming is safe with any number of workers: on PostgreSQL ``SELECT ... FOR UPDATE SKIP
LOCKED`` lets each worker take rows no other worker holds; on SQLite ``BEGIN IMMEDIATE`` makes
the claim the only writer.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine, select, update

from patron import __version__, workers
from patron.config import get_settings
from patron.db import UnitOfWork, utcnow
from patron.protection.fields import Sealed
from patron.protection.redact import scrub
from patron.webhooks import model, targets
from patron.webhooks.tables import webhook_deliveries, webhook_endpoints

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(10.0)
# Claimed a few at a time so that a crashed worker strands only a few, and only for LEASE.
CLAIM_BATCH = 10
# Long enough to send a whole batch to receivers that all time out. A delivery whose lease
# has less than SEND_BUDGET left is not sent but handed back.
LEASE = dt.timedelta(minutes=5)
SEND_BUDGET = dt.timedelta(seconds=45)
ERROR_CHARS = 500


@dataclass
class DeliveryStats:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    # Sent, but another worker had taken the delivery over (our lease ran out) before we could
    # write the outcome; that worker's outcome stands.
    lease_lost: int = 0
    # Claimed but handed back unsent because the batch ran out of lease time.
    released: int = 0


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    event: str
    payload: dict[str, Any]
    created_at: dt.datetime
    attempts: int
    url: str
    secret: str
    lease_until: dt.datetime


@dataclass(frozen=True, slots=True)
class _Attempt:
    ok: bool
    status_code: int | None
    error: str | None


def new_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False,
                        headers={"User-Agent": f"Patron-Webhooks/{__version__}"})


def deliver_due(*, engine: Engine, limit: int = 100, now: dt.datetime | None = None,
                client: httpx.Client | None = None,
                rng: random.Random | None = None) -> DeliveryStats:
    """Send up to ``limit`` deliveries that are due (pending and ``next_attempt_at <= now``, or
    sending with a lease that ran out) and record each outcome. ``now`` fixes the clock (tests,
    replays); by default it is the real time."""
    clock: Callable[[], dt.datetime] = (lambda: now) if now is not None else utcnow
    stats = DeliveryStats()
    own_client = client is None
    http = client if client is not None else new_client()
    try:
        while stats.claimed < limit:
            batch = _claim(engine, clock(), min(CLAIM_BATCH, limit - stats.claimed))
            if not batch:
                break
            stats.claimed += len(batch)
            for i, item in enumerate(batch):
                if clock() + SEND_BUDGET > item.lease_until:
                    # Slow receivers ate the lease: hand the rest back rather than send them
                    # when another worker may already be allowed to.
                    stats.released += _release(engine, batch[i:], clock())
                    break
                attempt = _send(http, item, clock)
                _record(engine, item, attempt, clock(), stats, rng)
    finally:
        if own_client:
            http.close()
    return stats


def _claim(engine: Engine, now: dt.datetime, limit: int) -> list[_Claimed]:
    d, e = webhook_deliveries, webhook_endpoints
    with UnitOfWork(engine) as uow:
        q = (select(d.c.id, d.c.event, d.c.payload, d.c.created_at, d.c.attempts, e.c.url,
                    e.c.secret)
             .join(e, e.c.id == d.c.endpoint_id)
             # A 'sending' row is due once its lease (kept in next_attempt_at) has run out.
             .where(d.c.status.in_(("pending", "sending")), d.c.next_attempt_at <= now,
                    e.c.active.is_(True))
             .order_by(d.c.next_attempt_at, d.c.id).limit(limit))
        if uow.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True, of=d)
        rows = uow.c.execute(q).all()
        if not rows:
            return []
        lease_until = now + LEASE
        uow.c.execute(update(d).where(d.c.id.in_([r.id for r in rows]))
                      .values(status="sending", next_attempt_at=lease_until))
        uow.commit()
    return [_Claimed(int(r.id), r.event, r.payload, r.created_at, int(r.attempts), r.url,
                     r.secret, lease_until) for r in rows]


def _release(engine: Engine, items: list[_Claimed], now: dt.datetime) -> int:
    d = webhook_deliveries
    released = 0
    with UnitOfWork(engine) as uow:
        for item in items:
            released += uow.c.execute(update(d).where(
                d.c.id == item.id, d.c.status == "sending",
                d.c.next_attempt_at == item.lease_until).values(status="pending",
                                                                next_attempt_at=now)).rowcount
        uow.commit()
    return released


def _send(http: httpx.Client, item: _Claimed, clock: Callable[[], dt.datetime]) -> _Attempt:
    body = model.body_bytes(delivery_id=item.id, event=item.event, created_at=item.created_at,
                            payload=item.payload)
    timestamp = int(clock().timestamp())
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Patron-Event": item.event,
        "X-Patron-Delivery": str(item.id),
        "X-Patron-Timestamp": str(timestamp),
        "X-Patron-Signature": model.signature(item.secret, timestamp, body),
    }
    # Resolved and checked now, and sent to the address checked (DNS rebinding): see targets.
    try:
        target = targets.pinned(
            item.url, allow_private=get_settings().webhook_allow_private_targets)
    except targets.TargetRefused as exc:
        return _Attempt(False, None, f"TargetRefused: {exc}"[:ERROR_CHARS])
    except targets.TargetUnresolved as exc:
        return _Attempt(False, None, f"ConnectError: cannot resolve {exc}"[:ERROR_CHARS])
    headers["Host"] = target.host
    extensions = {"sni_hostname": target.hostname} if target.url.startswith("https:") else {}
    try:
        response = http.post(target.url, content=body, headers=headers, extensions=extensions)
    except Exception as exc:  # timeouts, refused connections, bad TLS, a URL httpx refuses
        return _Attempt(False, None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    if model.succeeded(response.status_code):
        return _Attempt(True, response.status_code, None)
    excerpt = response.text[:300].strip()
    return _Attempt(False, response.status_code,
                    f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else ""))


def _record(engine: Engine, item: _Claimed, attempt: _Attempt, now: dt.datetime,
            stats: DeliveryStats, rng: random.Random | None) -> None:
    attempts = item.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now,
                              "last_status_code": attempt.status_code,
                              "last_error": None if attempt.error is None
                              else Sealed((item.id,), scrub(attempt.error))}
    if attempt.ok:
        values.update(status="delivered", delivered_at=now, next_attempt_at=now)
    else:
        status, next_at = model.after_failure(attempts, now, rng)
        values.update(status=status, next_attempt_at=next_at)
    d = webhook_deliveries
    with UnitOfWork(engine) as uow:
        # Only while we still hold the lease: the lease end doubles as our claim token.
        result = uow.c.execute(update(d).where(d.c.id == item.id, d.c.status == "sending",
                                               d.c.next_attempt_at == item.lease_until)
                               .values(**values))
        uow.commit()
    if result.rowcount != 1:
        stats.lease_lost += 1
        log.warning("webhook delivery %s: lease lost before its outcome was recorded", item.id)
    elif attempt.ok:
        stats.delivered += 1
    elif values["status"] == "failed":
        stats.failed += 1
        log.warning("webhook delivery %s failed for good after %s attempts: %s", item.id,
                    attempts, scrub(attempt.error or ""))
    else:
        stats.retrying += 1


def run_worker(engine: Engine, *, interval: float = 5.0, once: bool = False, limit: int = 100,
               stop: threading.Event | None = None,
               on_stats: Callable[[DeliveryStats], None] | None = None) -> None:
    """Deliver what is due, then every ``interval`` seconds until ``stop`` is set. A full batch
    is followed at once by the next. Database or network trouble is logged and waited out,
    except with ``once``, where it is raised."""
    with new_client() as http:
        workers.poll(lambda: deliver_due(engine=engine, limit=limit, client=http),
                     what="webhook delivery", interval=interval, once=once, limit=limit,
                     stop=stop, on_stats=on_stats, log=log)


def start_background_worker(engine: Engine, *, interval: float = 5.0) -> Callable[[], None]:
    """Run :func:`run_worker` in a daemon thread; returns the function that stops it (waiting
    for the delivery in flight, at most about one request timeout)."""
    return workers.start_in_thread(run_worker, engine, interval=interval, name="patron-webhooks",
                                   join_timeout=(TIMEOUT.read or 10.0) + 5.0)
