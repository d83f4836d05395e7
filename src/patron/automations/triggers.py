"""Finding who a trigger fires for, as (customer_id, member_id, occurrence) candidates.

Order triggers (first purchase, every order, spend crossing a threshold) are found from the
orders of one recorded chunk, inside its transaction (:mod:`patron.automations.hooks`). The
others look at the data: tier history, birthdays, last purchases, lifecycle transitions, point
lots, coupons, segment membership, a cron tick. Each candidate names its occurrence so that the
same event never enters twice (the entries' unique key), however often it is looked for and by
however many processes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, func, select

from patron.analytics.tables import lifecycle_transitions
from patron.automations import audience
from patron.automations.schemas import Definition
from patron.automations.tables import automation_segment_members
from patron.coupons.tables import coupons
from patron.customers.tables import customer_figures, customers
from patron.loyalty.tables import loyalty_lots, loyalty_members, loyalty_tier_history, loyalty_tiers

Candidate = tuple[int, int, str]  # customer_id, member_id, occurrence


def _member_filter(program_id: int) -> Any:
    m = loyalty_members.c
    return and_(m.program_id == program_id, m.status == "active")


def scan(conn: Connection, *, automation: dict[str, Any], definition: Definition,
         program: dict[str, Any], now: dt.datetime) -> list[Candidate]:
    """Candidates of a trigger that looks at the data (not order triggers, not schedules)."""
    trigger = definition.trigger
    program_id = int(program["id"])
    since = automation["activated_at"] or now
    tz = program["timezone"]
    m = loyalty_members.c
    t = trigger.type
    if t == "tier_changed":
        h = loyalty_tier_history.c
        q = (select(m.customer_id, m.id, h.id.label("hid"))
             .select_from(loyalty_tier_history.join(loyalty_members, m.id == h.member_id))
             .where(_member_filter(program_id),
                    h.reason == ("upgrade" if trigger.direction == "up" else "downgrade"),
                    h.effective_at >= since, h.effective_at <= now))
        if trigger.tier:
            q = q.join(loyalty_tiers, loyalty_tiers.c.id == h.to_tier_id).where(
                loyalty_tiers.c.code == trigger.tier)
        return [(int(r[0]), int(r[1]), f"tier:{r[2]}") for r in conn.execute(q)]
    if t == "birthday":
        today = now.astimezone(ZoneInfo(tz)).date()
        days = [today + dt.timedelta(days=n) for n in range(trigger.days_before + 1)]
        c = customers.c
        # birthdays are encrypted; their month and day are kept apart (customers.birth_md)
        wanted = set()
        for d in days:
            wanted.add(d.month * 100 + d.day)
            if d.month == 2 and d.day == 28 and not _leap(d.year):
                wanted.add(229)
        q = (select(m.customer_id, m.id, c.birthday)
             .select_from(loyalty_members.join(customers, c.id == m.customer_id))
             .where(_member_filter(program_id), c.birth_md.in_(sorted(wanted))))
        out = []
        for cid, mid, birthday in conn.execute(q):
            year = today.year
            if (birthday.month, birthday.day) < (today.month, today.day):
                year += 1  # the window crosses New Year: next year's birthday
            out.append((int(cid), int(mid), f"birthday:{year}"))
        return out
    if t == "days_since_last_purchase":
        f = customer_figures.c
        q = (select(m.customer_id, m.id, f.last_order_at)
             .select_from(loyalty_members.join(customer_figures,
                                               f.customer_id == m.customer_id))
             .where(_member_filter(program_id),
                    f.last_order_at <= now - dt.timedelta(days=trigger.days),
                    f.last_order_at > now - dt.timedelta(days=trigger.days
                                                         + trigger.within_days)))
        return [(int(r[0]), int(r[1]), f"lapse:{r[2].astimezone(dt.UTC).isoformat()}")
                for r in conn.execute(q)]
    if t == "lifecycle_stage":
        lt = lifecycle_transitions.c
        q = (select(m.customer_id, m.id, lt.id)
             .select_from(lifecycle_transitions.join(loyalty_members,
                                                     m.customer_id == lt.customer_id))
             .where(_member_filter(program_id), lt.to_stage == trigger.to,
                    lt.recorded_at >= since))
        if trigger.from_:
            q = q.where(lt.from_stage == trigger.from_)
        return [(int(r[0]), int(r[1]), f"stage:{r[2]}") for r in conn.execute(q)]
    if t == "points_expiring":
        lot = loyalty_lots.c
        q = (select(m.customer_id, m.id, func.min(lot.expires_at), func.sum(lot.remaining))
             .select_from(loyalty_lots.join(loyalty_members, m.id == lot.member_id))
             .where(_member_filter(program_id), lot.remaining > 0, lot.activated.is_(True),
                    lot.expires_at > now, lot.expires_at <= now + dt.timedelta(days=trigger.days))
             .group_by(m.customer_id, m.id))
        zone = ZoneInfo(tz)
        return [(int(r[0]), int(r[1]), f"points_expiring:{r[2].astimezone(zone).date()}")
                for r in conn.execute(q) if int(r[3]) >= trigger.min_points]
    if t == "coupon_expiring":
        cp = coupons.c
        q = (select(m.customer_id, m.id, cp.id)
             .select_from(coupons.join(loyalty_members, m.id == cp.member_id))
             .where(_member_filter(program_id), cp.status == "available",
                    cp.valid_until > now, cp.valid_until <= now + dt.timedelta(days=trigger.days)))
        if trigger.coupon_template_id is not None:
            q = q.where(cp.template_id == trigger.coupon_template_id)
        return [(int(r[0]), int(r[1]), f"coupon:{r[2]}") for r in conn.execute(q)]
    if t == "joined_segment":
        return joined_segment(conn, automation=automation, segment=trigger.segment,
                              program_id=program_id, now=now)
    raise ValueError(f"not a scanned trigger: {t}")


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def joined_segment(conn: Connection, *, automation: dict[str, Any], segment: dict[str, Any],
                   program_id: int, now: dt.datetime, write: bool = True) -> list[Candidate]:
    """Members in the segment now who were not at the previous look. The first look records
    the baseline and fires for nobody. ``write=False`` (a dry run) only reads."""
    s = automation_segment_members.c
    current = {int(r[0]): int(r[1]) for r in conn.execute(
        audience.matching(conn, program_id, segment, as_of=now))}
    before = set(conn.execute(select(s.customer_id).where(
        s.automation_id == automation["id"])).scalars())
    first_look = automation["scanned_at"] is None
    joined = sorted(set(current) - before)
    if write:
        left = sorted(before - set(current))
        if left:
            conn.execute(automation_segment_members.delete().where(
                s.automation_id == automation["id"], s.customer_id.in_(left)))
        if joined:
            from patron.db import upsert

            conn.execute(upsert(conn, automation_segment_members).values([
                {"automation_id": automation["id"], "customer_id": cid, "since": now}
                for cid in joined]).on_conflict_do_nothing(
                index_elements=["automation_id", "customer_id"]))
    if first_look:
        return []
    return [(cid, current[cid], f"joined:{now.isoformat()}") for cid in joined]


def for_orders(conn: Connection, *, trigger_type: str, definition: Definition, program_id: int,
               orders: Sequence[Any], now: dt.datetime) -> list[Candidate]:
    """Candidates of an order trigger among one recorded chunk's orders (figures already
    include them). Orders older than a week when recorded (imports of history) are left out."""
    from patron.automations.model import ORDER_TRIGGER_MAX_AGE

    recent = [o for o in orders if o.customer_id is not None
              and now - o.purchased_at <= ORDER_TRIGGER_MAX_AGE]
    if not recent:
        return []
    m = loyalty_members.c
    customer_ids = sorted({int(o.customer_id) for o in recent})
    member_of = dict(conn.execute(select(m.customer_id, m.id).where(
        _member_filter(program_id), m.customer_id.in_(customer_ids))).all())
    recent = [o for o in recent if o.customer_id in member_of]
    if not recent:
        return []
    if trigger_type == "every_order":
        return [(int(o.customer_id), int(member_of[o.customer_id]), f"order:{o.order_id}")
                for o in recent]
    f = customer_figures.c
    figures = {int(r.customer_id): r for r in conn.execute(
        select(f.customer_id, f.order_count, f.net_spend).where(
            f.customer_id.in_(sorted(member_of))))}
    in_chunk: dict[int, list[Any]] = {}
    for o in recent:
        in_chunk.setdefault(int(o.customer_id), []).append(o)
    out: list[Candidate] = []
    for cid, mine in sorted(in_chunk.items()):
        fig = figures.get(cid)
        if fig is None:
            continue
        if trigger_type == "first_purchase":
            if int(fig.order_count) == len(mine):  # every order it has is in this chunk
                out.append((cid, int(member_of[cid]), "first_purchase"))
        elif trigger_type == "spend_threshold":
            threshold = Decimal(definition.trigger.amount)  # type: ignore[union-attr]
            after = Decimal(fig.net_spend)
            before = after - sum((Decimal(o.total) for o in mine), Decimal(0))
            if before < threshold <= after:
                out.append((cid, int(member_of[cid]), f"spend:{threshold}"))
    return out
