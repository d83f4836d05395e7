"""Scheduled loyalty work: ``patron loyalty expire`` (daily) and ``patron loyalty review-tiers``
(at each review period). Both work through members in batches, one transaction per batch, so
that a million members never sit in one transaction or in memory at once."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, or_, select, union, update

from patron.db import UnitOfWork, utcnow
from patron.loyalty import persist
from patron.loyalty.model import qualifying_tier, review_tier
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_lots,
    loyalty_members,
    loyalty_operations,
    loyalty_programs,
)
from patron.loyalty.tiering import TierChange, load_tiers, spend_12m, write_changes
from patron.security import audit
from patron.security.model import Actor

BATCH = 500


def _due_members(conn: Connection, now: dt.datetime, after: int, limit: int) -> list[int]:
    lt, op = loyalty_lots.c, loyalty_operations.c
    lots = select(lt.member_id.label("member_id")).where(
        lt.member_id > after,
        or_(and_(lt.activated.is_(True), lt.remaining > 0, lt.expires_at <= now),
            and_(lt.activated.is_(False), lt.available_at <= now)))
    holds = select(op.member_id.label("member_id")).where(
        op.member_id > after, op.status == "held", op.hold_expires_at <= now)
    u = union(lots, holds).subquery()
    return [int(m) for m in conn.execute(select(u.c.member_id).order_by(u.c.member_id)
                                         .limit(limit)).scalars()]


def run_due(*, uow: UnitOfWork, actor: Actor, now: dt.datetime | None = None,
            batch: int = BATCH) -> dict[str, int]:
    """Bring every member up to ``now``: release holds past their time, make pending points
    available after their return window, expire lots past their expiry, end manual tier grants
    past their end date, and write expiry reminders to the outbox."""
    now = now or utcnow()
    conn = uow.c
    stats = {"members": 0, "holds_expired": 0, "points_activated": 0, "points_expired": 0,
             "reminders": 0, "manual_tiers_ended": 0}
    after = 0
    while True:
        ids = _due_members(conn, now, after, batch)
        if not ids:
            break
        members = persist.lock_members(conn, ids)
        wallets, expired = persist.catch_up(conn, members, now=now, keys=persist.temp_keys())
        for w in wallets.values():
            for e in w.entries:
                if e.kind == "activate" and e.bucket == "available":
                    stats["points_activated"] += e.points
                elif e.kind == "expire":
                    stats["points_expired"] -= e.points
        persist.save(conn, wallets.values(),
                     program_of={m: int(r["program_id"]) for m, r in members.items()},
                     actor=actor.name, now=now)
        persist.finish_expired_holds(conn, expired, now)
        stats["holds_expired"] += len(expired)
        stats["members"] += len(ids)
        uow.commit()
        after = ids[-1]
    stats["manual_tiers_ended"] = _end_manual_tiers(uow, actor, now, batch)
    stats["reminders"] = _reminders(uow, now)
    audit.record(uow.c, actor, "loyalty.due_run", details={"now": now.isoformat(), **stats})
    uow.commit()
    return stats


def _end_manual_tiers(uow: UnitOfWork, actor: Actor, now: dt.datetime, batch: int) -> int:
    conn = uow.c
    m = loyalty_members.c
    ended = 0
    while True:
        ids = [int(i) for i in conn.execute(select(m.id).where(
            m.tier_manual_until.is_not(None), m.tier_manual_until <= now)
            .order_by(m.id).limit(batch)).scalars()]
        if not ids:
            return ended
        members = persist.lock_members(conn, ids)
        changes = _requalify(conn, members, now, reason="manual_end")
        write_changes(conn, changes, now=now, actor=actor.name)
        ended += len(changes)
        uow.commit()


def _requalify(conn: Connection, members: dict[int, dict[str, Any]], now: dt.datetime, *,
               reason: str) -> list[TierChange]:
    """Tier changes that set each member to the tier its figures qualify for."""
    programs = {int(r["id"]): dict(r) for r in conn.execute(select(loyalty_programs).where(
        loyalty_programs.c.id.in_(sorted({int(r["program_id"]) for r in members.values()})))
    ).mappings()}
    tiers = load_tiers(conn, programs)
    spend = spend_12m(conn, sorted(members), now)
    out = []
    for mid, row in sorted(members.items()):
        program = programs[int(row["program_id"])]
        q = qualifying_tier(tiers[int(program["id"])], basis=program["tier_basis"],
                            growth=int(row["growth_value"]), spend=spend[mid])
        out.append(TierChange(mid, row["tier_id"], q.id if q else None, reason,
                              growth_value=int(row["growth_value"]), spend=spend[mid]))
    return out


def _reminders(uow: UnitOfWork, now: dt.datetime, batch: int = 5000) -> int:
    """One message per member and expiry date, N days before (the program's
    ``reminder_days``), listing the points that will expire; never twice for the same date
    (the message's dedupe key). Queued in the message outbox (docs/messaging.md)."""
    conn = uow.c
    written = 0
    for program in conn.execute(select(loyalty_programs).where(
            loyalty_programs.c.reminder_days > 0)).mappings():
        tz = ZoneInfo(program["timezone"])
        horizon = now + dt.timedelta(days=int(program["reminder_days"]))
        lt = loyalty_lots.c
        while True:
            rows = conn.execute(select(lt.id, lt.member_id, lt.remaining, lt.expires_at).where(
                lt.program_id == program["id"], lt.activated.is_(True), lt.remaining > 0,
                lt.reminded_at.is_(None), lt.expires_at > now, lt.expires_at <= horizon)
                .order_by(lt.member_id, lt.id).limit(batch)).all()
            if not rows:
                break
            due: dict[tuple[int, dt.date], int] = defaultdict(int)
            for r in rows:
                due[(int(r.member_id), r.expires_at.astimezone(tz).date())] += int(r.remaining)
            members = {int(r.id): r for r in conn.execute(
                select(loyalty_members.c.id, loyalty_members.c.member_code,
                       loyalty_members.c.points_available, loyalty_members.c.customer_id)
                .where(loyalty_members.c.id.in_(sorted({m for m, _ in due}))))}
            channels = _consented_channels(conn, list(members))
            for (mid, day), points in sorted(due.items()):
                member = members[mid]
                if enqueue_reminder(conn, program=program, member=member, points=points,
                                    day=day, channels=channels.get(mid, []), now=now):
                    written += 1
            conn.execute(update(loyalty_lots).where(lt.id.in_([int(r.id) for r in rows]))
                         .values(reminded_at=now))
            uow.commit()
    return written


# The channel a reminder goes out on: the first of these the member consents to.
REMINDER_CHANNELS = ("wechat", "app", "sms", "email")


def enqueue_reminder(conn: Connection, *, program: Any, member: Any, points: int, day: dt.date,
                     channels: list[str], now: dt.datetime) -> bool:
    """Queue one expiry reminder; False when it was queued before. It is a marketing message
    (it invites the member to spend): it goes on the member's preferred consented channel and
    is suppressed, visibly, when the member consents to none or withdraws consent before it is
    sent."""
    from patron.messaging.service import enqueue_in
    from patron.messaging.tables import messages

    key = f"points_expiring:{int(member.id)}:{day.isoformat()}"
    if conn.execute(select(messages.c.id).where(messages.c.purpose == "marketing",
                                                messages.c.dedupe_key == key)).first():
        return False
    channel = next((c for c in REMINDER_CHANNELS if c in channels), "sms")
    enqueue_in(conn, customer_id=int(member.customer_id), program_id=int(program["id"]),
               channel=channel, template="points_expiring", purpose="marketing",
               dedupe_key=key, now=now,
               variables={"program": program["name"], "member_code": member.member_code,
                          "points": points, "expires_on": day.isoformat(),
                          "balance": int(member.points_available)})
    return True


def _consented_channels(conn: Connection, member_ids: list[int]) -> dict[int, list[str]]:
    """The marketing channels each member currently consents to (the deliverer picks one)."""
    c = loyalty_consents.c
    latest: dict[tuple[int, str], bool] = {}
    for r in conn.execute(select(c.member_id, c.kind, c.granted).where(
            c.member_id.in_(member_ids), c.kind != "privacy").order_by(c.id)):
        latest[(int(r.member_id), r.kind)] = bool(r.granted)
    out: dict[int, list[str]] = defaultdict(list)
    for (mid, kind), granted in sorted(latest.items()):
        if granted:
            out[mid].append(kind)
    return out


def review_tiers(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None,
                 program_code: str | None = None, batch: int = 2000) -> dict[str, int]:
    """The periodic tier review (docs/loyalty.md, "Tiers"): members whose figures fell below
    their tier move down, by at most the program's ``tier_max_downgrade`` levels, once the
    grace period since they reached it has passed and no manual grant is in force; members
    whose figures reach a higher tier move up."""
    as_of = as_of or utcnow()
    conn = uow.c
    stats = {"members": 0, "upgraded": 0, "downgraded": 0, "kept_by_grace": 0,
             "kept_by_grant": 0}
    q = select(loyalty_programs).where(loyalty_programs.c.status == "active")
    if program_code is not None:
        q = q.where(loyalty_programs.c.code == program_code)
    for program in [dict(r) for r in conn.execute(q).mappings()]:
        defs = load_tiers(conn, [int(program["id"])])[int(program["id"])]
        if not defs:
            continue
        by_id = {t.id: t for t in defs}
        m = loyalty_members.c
        after = 0
        while True:
            ids = [int(i) for i in conn.execute(select(m.id).where(
                m.program_id == program["id"], m.status == "active", m.id > after)
                .order_by(m.id).limit(batch)).scalars()]
            if not ids:
                break
            members = persist.lock_members(conn, ids)
            spend = (spend_12m(conn, ids, as_of) if program["tier_basis"] == "spend_12m"
                     else {})
            changes = []
            for mid, row in sorted(members.items()):
                s = spend.get(mid, Decimal(0))
                qualifies = qualifying_tier(defs, basis=program["tier_basis"],
                                            growth=int(row["growth_value"]), spend=s)
                current = by_id.get(row["tier_id"])
                decision = review_tier(defs, current=current, qualifies=qualifies,
                                       tier_since=row["tier_since"],
                                       manual_until=row["tier_manual_until"], as_of=as_of,
                                       grace_days=int(program["tier_grace_days"]),
                                       max_levels=int(program["tier_max_downgrade"]))
                stats["members"] += 1
                if decision.reason == "keep_grace":
                    stats["kept_by_grace"] += 1
                elif decision.reason == "keep_manual":
                    stats["kept_by_grant"] += 1
                target = decision.to_tier
                if decision.reason in ("upgrade", "downgrade") and target is not current:
                    stats["upgraded" if decision.reason == "upgrade" else "downgraded"] += 1
                    changes.append(TierChange(
                        mid, current.id if current else None, target.id if target else None,
                        decision.reason, growth_value=int(row["growth_value"]),
                        spend=s if program["tier_basis"] == "spend_12m" else None,
                        note="review"))
            write_changes(conn, changes, now=as_of, actor=actor.name)
            uow.commit()
            after = ids[-1]
    audit.record(conn, actor, "loyalty.tiers_reviewed",
                 details={"as_of": as_of.isoformat(), "program": program_code, **stats})
    uow.commit()
    return stats
