"""Sending queued messages: claim with a lease, write the attempt, send, write the outcome.

1. **Claim** (one short transaction): due messages (pending and due, or 'sending' whose lease
   ran out) are locked (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite ``BEGIN IMMEDIATE``, one
   writer), checked (expired, consent for marketing, an address) and either ended there
   (failed / suppressed) or marked 'sending' with a lease.
2. **Attempt** (its own transaction, before the provider is called): an attempt row 'started'.
3. **Send** with no transaction open; the message id is the provider's idempotency key.
4. **Outcome** (its own transaction): delivered, retry with backoff, or failed; written only
   while the lease is still ours.

A worker that dies after 1 leaves a message with no open attempt: the next worker sends it
when the lease runs out. One that dies after 2 or 3 leaves an attempt 'started' with no
outcome: the provider may or may not have the message. The next worker sends it again only if
the channel's provider de-duplicates on the message id for long enough (SMS gateway, WeChat
template messages within 10 minutes, webhooks, the log); otherwise (SMTP) the message fails
with ``outcome_unknown`` rather than risk a second copy. An owner may retry it knowingly.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from patron import workers
from patron.db import UnitOfWork, utcnow
from patron.messaging import limits as limits_model
from patron.messaging import model
from patron.messaging.adapters import Adapter, Outgoing, Result
from patron.messaging.tables import message_attempts, messages
from patron.protection.fields import Sealed
from patron.protection.redact import scrub

log = logging.getLogger(__name__)

CLAIM_BATCH = 10
LEASE = dt.timedelta(minutes=5)
SEND_BUDGET = dt.timedelta(seconds=45)


@dataclass
class DeliveryStats:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    suppressed: int = 0
    # Marketing messages due in quiet hours, moved to the end of the quiet window.
    deferred: int = 0
    # Sent, but another worker had taken the message over before the outcome was written.
    lease_lost: int = 0
    released: int = 0
    # Messages whose previous worker died mid-send, sent again under the same idempotency key.
    resent_after_crash: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Claimed:
    outgoing: Outgoing
    attempts: int
    lease_until: dt.datetime


def deliver_due(*, engine: Engine, limit: int = 100, now: dt.datetime | None = None,
                adapters: Mapping[str, Adapter] | None = None,
                rng: random.Random | None = None) -> DeliveryStats:
    """Send up to ``limit`` due messages and record each outcome. ``now`` fixes the clock
    (tests); ``adapters`` the channel adapters (by default from the settings)."""
    from patron.messaging.channels import configured_adapters

    clock: Callable[[], dt.datetime] = (lambda: now) if now is not None else utcnow
    chosen = adapters if adapters is not None else configured_adapters()
    try:
        return _deliver(engine, limit, clock, chosen, rng)
    finally:
        if adapters is None:
            close_adapters(chosen)


def close_adapters(adapters: Mapping[str, Adapter]) -> None:
    """Close the adapters' HTTP connections (those that keep some)."""
    for adapter in {id(a): a for a in adapters.values()}.values():
        close = getattr(adapter, "close", None)
        if close is not None:
            close()


def _deliver(engine: Engine, limit: int, clock: Callable[[], dt.datetime],
             chosen: Mapping[str, Adapter], rng: random.Random | None) -> DeliveryStats:
    stats = DeliveryStats()
    while stats.claimed < limit:
        batch, seen = claim(engine, clock(), min(CLAIM_BATCH, limit - stats.claimed), chosen,
                            stats)
        if not seen:
            break
        stats.claimed += seen
        for i, item in enumerate(batch):
            if clock() + SEND_BUDGET > item.lease_until:
                stats.released += _release(engine, batch[i:], clock())
                break
            adapter = chosen[item.outgoing.channel]
            attempt_id = _begin_attempt(engine, item, adapter.name, clock())
            if attempt_id is None:
                stats.lease_lost += 1
                continue
            result = _send(adapter, item.outgoing)
            _record(engine, item, attempt_id, result, clock(), stats, rng)
    return stats


def _sealed_error(row_id: int, error: str | None) -> Sealed | None:
    """An error text for ``messages.error`` or ``message_attempts.error``: a provider's answer
    may quote the address, so masked and encrypted, bound to the row."""
    return None if error is None else Sealed((row_id,), scrub(error))


def _end(conn: Connection, message_id: int, state: str, reason: str, now: dt.datetime,
         error: str | None = None, address: str | None = None) -> None:
    values: dict[str, Any] = {"state": state, "reason": reason,
                              "error": _sealed_error(message_id, error),
                              "finished_at": now, "next_attempt_at": now}
    if address is not None:
        values["address"] = Sealed((message_id,), address)
    conn.execute(update(messages).where(messages.c.id == message_id).values(**values))


def claim(engine: Engine, now: dt.datetime, limit: int, adapters: Mapping[str, Adapter],
          stats: DeliveryStats) -> tuple[list[_Claimed], int]:
    """Lock up to ``limit`` due messages, end those that must not be sent, lease the others.
    Returns the leased ones and how many were looked at."""
    from patron.messaging import service

    m = messages.c
    with UnitOfWork(engine) as uow:
        conn = uow.c
        q = (select(messages).where(m.state.in_(("pending", "sending")), m.next_attempt_at <= now)
             .order_by(m.next_attempt_at, m.id).limit(limit))
        if uow.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = [dict(r) for r in conn.execute(q).mappings()]
        lease_until = now + LEASE
        out: list[_Claimed] = []
        live = {int(r["id"]): service.live_customer(conn, r["customer_id"]) for r in rows}
        limits = service.delivery_limits(conn)
        if limits.caps:
            service.lock_for_caps(conn, [cid for r in rows if r["purpose"] == "marketing"
                                         and (cid := live[int(r["id"])]) is not None])
        for r in rows:
            mid = int(r["id"])
            adapter = adapters.get(r["channel"])
            if r["state"] == "sending" and not _may_send_again(conn, r, now, adapter, stats):
                stats.failed += 1
                continue
            if r["expires_at"] is not None and r["expires_at"] <= now:
                _end(conn, mid, "failed", "expired", now)
                stats.failed += 1
                continue
            customer_id = live[mid]
            if r["purpose"] == "marketing":
                refused = service.marketing_refusal(conn, customer_id, r["program_id"],
                                                    r["channel"])
                if refused:
                    _end(conn, mid, "suppressed", refused, now)
                    stats.suppressed += 1
                    continue
                until = limits_model.quiet_until(
                    limits, now, service.local_timezone(conn, customer_id, r["program_id"]))
                if until is not None:
                    # Quiet hours: not an attempt, just later (and checked again then).
                    conn.execute(update(messages).where(m.id == mid).values(
                        state="pending", next_attempt_at=until))
                    stats.deferred += 1
                    continue
                assert customer_id is not None  # no consent without a customer
                window = limits_model.exceeded_cap(
                    limits, r["channel"],
                    service.sent_in_windows(conn, customer_id, r["channel"], now)
                    if limits.caps.get(r["channel"]) else {})
                if window is not None:
                    _end(conn, mid, "suppressed", "capped", now,
                         error=f"frequency cap per {window} reached")
                    stats.suppressed += 1
                    continue
            address = r["to_address"] or service.address_of(conn, customer_id, r["channel"])
            if not address:
                _end(conn, mid, "failed", "no_address", now)
                stats.failed += 1
                continue
            if adapter is None:
                _end(conn, mid, "failed", "no_adapter", now, address=address)
                stats.failed += 1
                continue
            conn.execute(update(messages).where(m.id == mid).values(
                state="sending", next_attempt_at=lease_until, address=Sealed((mid,), address),
                sent_at=func.coalesce(m.sent_at, now)))
            out.append(_Claimed(Outgoing(
                id=mid, channel=r["channel"], address=address, purpose=r["purpose"],
                template=r["template"], lang=r["lang"], subject=r["subject"], body=r["body"],
                data=dict(r["data"] or {}), variables=dict(r["variables"] or {}),
                customer_id=customer_id,
                unsubscribe_url=(service.unsubscribe_url(conn, mid)
                                 if r["purpose"] == "marketing" else None)),
                int(r["attempts"]), lease_until))
        uow.commit()
    return out, len(rows)


def _may_send_again(conn: Connection, row: dict[str, Any], now: dt.datetime,
                    adapter: Adapter | None, stats: DeliveryStats) -> bool:
    """A message left 'sending' by a worker that died. Without an open attempt it was never
    handed to the provider; with one, only a provider that de-duplicates makes a resend safe."""
    a = message_attempts.c
    open_attempt = conn.execute(select(a.id, a.started_at).where(
        a.message_id == row["id"], a.outcome == "started").order_by(a.number.desc()).limit(1)
    ).first()
    if open_attempt is None:
        return True
    window = adapter.idempotency_window if adapter is not None else None
    per_message = getattr(adapter, "resend_window", None)
    if per_message is not None:
        window = per_message(dict(row["data"] or {}))
    safe = model.resend_is_safe(started_at=open_attempt.started_at, now=now,
                                idempotency_window=window)
    conn.execute(update(message_attempts).where(a.id == open_attempt.id).values(
        outcome="unknown", finished_at=now, error=_sealed_error(
            open_attempt.id, "the worker stopped before the provider's answer was recorded")))
    if safe:
        stats.resent_after_crash += 1
        return True
    _end(conn, int(row["id"]), "failed", "outcome_unknown", now,
         error="the worker stopped mid-send and this channel's provider does not "
               "de-duplicate: not sent again automatically")
    log.warning("message %s: outcome unknown after a worker stopped mid-send; not resent",
                row["id"])
    return False


def _release(engine: Engine, items: list[_Claimed], now: dt.datetime) -> int:
    m = messages.c
    released = 0
    with UnitOfWork(engine) as uow:
        for item in items:
            released += uow.c.execute(update(messages).where(
                m.id == item.outgoing.id, m.state == "sending",
                m.next_attempt_at == item.lease_until).values(state="pending",
                                                              next_attempt_at=now)).rowcount
        uow.commit()
    return released


def _begin_attempt(engine: Engine, item: _Claimed, adapter: str,
                   now: dt.datetime) -> int | None:
    """The attempt row, committed before the provider is called; None when the lease is no
    longer ours (another worker took the message over)."""
    m = messages.c
    number = item.attempts + 1
    with UnitOfWork(engine) as uow:
        held = uow.c.execute(update(messages).where(
            m.id == item.outgoing.id, m.state == "sending",
            m.next_attempt_at == item.lease_until).values(attempts=number)).rowcount
        if held != 1:
            return None
        attempt_id = int(uow.c.execute(insert(message_attempts).values(
            message_id=item.outgoing.id, number=number, adapter=adapter, started_at=now,
            outcome="started").returning(message_attempts.c.id)).scalar_one())
        uow.commit()
    return attempt_id


def _send(adapter: Adapter, message: Outgoing) -> Result:
    try:
        return adapter.send(message)
    except Exception as exc:  # an adapter bug or an unexpected library error: try again later
        # Not log.exception: the exception's text (and a traceback's locals) may quote the
        # address; its type and masked text say what went wrong.
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error("message %s: adapter %s raised %s", message.id, adapter.name, scrub(error))
        return Result("retry", error=error)


def _record(engine: Engine, item: _Claimed, attempt_id: int, result: Result, now: dt.datetime,
            stats: DeliveryStats, rng: random.Random | None) -> None:
    number = item.attempts + 1
    values: dict[str, Any] = {"error": _sealed_error(item.outgoing.id, result.error)}
    if result.status == "delivered":
        values.update(state="delivered", reason=None, finished_at=now, next_attempt_at=now,
                      provider_message_id=result.provider_id)
    elif result.status == "failed":
        values.update(state="failed", reason=result.reason or "rejected", finished_at=now,
                      next_attempt_at=now)
    else:
        state, next_at = model.after_failure(number, now, rng)
        values.update(state=state, next_attempt_at=next_at)
        if state == "failed":
            values.update(reason="attempts_exhausted", finished_at=now)
    m = messages.c
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(message_attempts).where(message_attempts.c.id == attempt_id)
                      .values(outcome=result.status, finished_at=now,
                              provider_message_id=result.provider_id,
                              error=_sealed_error(attempt_id, result.error)))
        written = uow.c.execute(update(messages).where(
            m.id == item.outgoing.id, m.state == "sending",
            m.next_attempt_at == item.lease_until).values(**values)).rowcount
        uow.commit()
    if written != 1:
        stats.lease_lost += 1
        log.warning("message %s: lease lost before its outcome was recorded", item.outgoing.id)
    elif values["state"] == "delivered":
        stats.delivered += 1
    elif values["state"] == "failed":
        stats.failed += 1
        log.warning("message %s failed (%s): %s", item.outgoing.id, values["reason"],
                    scrub(result.error or ""))
    else:
        stats.retrying += 1


def run_worker(engine: Engine, *, interval: float = 5.0, once: bool = False, limit: int = 100,
               stop: threading.Event | None = None,
               on_stats: Callable[[DeliveryStats], None] | None = None) -> None:
    """Deliver what is due, then every ``interval`` seconds until ``stop`` is set. A full round
    is followed at once by the next. Trouble is logged and waited out, except with ``once``."""
    from patron.messaging.channels import configured_adapters

    # One set of adapters for the worker's life: connections and WeChat's access token are
    # kept between rounds.
    adapters = configured_adapters()
    try:
        workers.poll(lambda: deliver_due(engine=engine, limit=limit, adapters=adapters),
                     what="message delivery", interval=interval, once=once, limit=limit,
                     stop=stop, on_stats=on_stats, log=log)
    finally:
        close_adapters(adapters)


def start_background_worker(engine: Engine, *, interval: float = 5.0) -> Callable[[], None]:
    """:func:`run_worker` in a daemon thread; returns the function that stops it."""
    return workers.start_in_thread(run_worker, engine, interval=interval, name="patron-messages",
                                   join_timeout=20.0)
