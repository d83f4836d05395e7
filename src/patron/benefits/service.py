"""Birthday, anniversary and referral use cases: each program's settings, members' invite codes,
enrolment with an invite code (the new member is linked to the referrer in the enrolment's
transaction), and the scheduled job that grants birthday and anniversary gifts and rewards
referrals. Points always go through the loyalty ledger as adjustments whose reason names the
cause, under idempotency keys; every gift is at most once per member, kind and year (a unique
key), so the job can run again, or in two processes at once, without giving anything twice.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, insert, select, update

from patron.benefits.model import (
    Purchase,
    anniversary_due,
    birthday_points_due,
    local_day,
    month_bounds,
    multiplier_bonus,
    multiplier_settles_on,
    new_invite_code,
    normalize_invite_code,
    referral_outcome,
)
from patron.benefits.schemas import BenefitSettingsIn, ReferredEnrolIn
from patron.benefits.tables import (
    benefits_grants,
    benefits_invites,
    benefits_referral_claims,
    benefits_referrals,
    benefits_settings,
)
from patron.coupons.service import issue_coupons
from patron.coupons.tables import coupon_templates
from patron.customers.queries import visible_customer
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, NotFound
from patron.loyalty import persist
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn, EnrolIn
from patron.loyalty.service import _program, retrying
from patron.loyalty.tables import loyalty_members, loyalty_order_earnings, loyalty_programs
from patron.protection.fields import blind
from patron.security import audit
from patron.security.model import Actor

need = loyalty.need
invalid = loyalty.invalid
BATCH = 500
# Identifiers a customer pays with: orders record no payer on their payments, so the payment
# accounts are the WeChat and Alipay identities the customer's orders came with.
PAYMENT_KINDS = ("wechat_unionid", "wechat_openid", "alipay_user_id")

DEFAULTS: dict[str, Any] = {
    "birthday_mode": "none", "birthday_points": 0, "birthday_multiplier": None,
    "birthday_coupon_template_id": None,
    "anniversary_points": 0, "referral_referrer_points": 0, "referral_referee_points": 0,
    "referral_min_spend": Decimal(0), "referral_days": 30,
}


# --- settings -----------------------------------------------------------------------------------

def settings_of(conn: Connection, program_id: int) -> dict[str, Any]:
    row = conn.execute(select(benefits_settings).where(
        benefits_settings.c.program_id == program_id)).mappings().first()
    return ({**DEFAULTS, "birthday_since": None, "updated_at": None} if row is None
            else dict(row))


def _settings_out(program: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    return {"program": program["code"], "timezone": program["timezone"],
            **{k: s[k] for k in DEFAULTS}, "birthday_since": s["birthday_since"],
            "updated_at": s["updated_at"]}


def get_settings(conn: Connection, *, actor: Actor, program_code: str) -> dict[str, Any]:
    need(actor, "benefits.read")
    program = _program(conn, program_code)
    return _settings_out(program, settings_of(conn, int(program["id"])))


def put_settings(*, uow: UnitOfWork, actor: Actor, program_code: str, body: BenefitSettingsIn,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """Replace the program's birthday, anniversary and referral settings. Gifts already given
    stay; the job gives by the settings in force when it runs."""
    need(actor, "benefits.manage")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        program = _program(conn, program_code)
        values = body.model_dump()
        s = benefits_settings.c
        if body.birthday_coupon_template_id is not None:
            t = coupon_templates.c
            owner = conn.execute(select(t.program_id).where(
                t.id == body.birthday_coupon_template_id)).scalar()
            if owner is None or int(owner) != int(program["id"]):
                raise invalid("birthday_coupon_template_id", "coupon_template_not_in_program")
        before = settings_of(conn, int(program["id"]))
        changed = (before["birthday_mode"], before["birthday_multiplier"]) != (
            values["birthday_mode"], values["birthday_multiplier"])
        since = at if changed or before["birthday_since"] is None else before["birthday_since"]
        if before["updated_at"] is not None:
            conn.execute(update(benefits_settings).where(s.program_id == program["id"])
                         .values(**values, birthday_since=since, updated_at=at))
        else:
            conn.execute(insert(benefits_settings).values(
                **values, program_id=program["id"], birthday_since=since, updated_at=at))
        audit.record(conn, actor, "benefits.settings_changed", entity="loyalty_program",
                     entity_id=program["id"], details={"program": program_code, **{
                         k: str(v) if isinstance(v, Decimal) else v for k, v in values.items()}})
        out = _settings_out(program, settings_of(conn, int(program["id"])))
        uow.commit()
        return out

    return retrying(uow, work)


# --- invite codes and referrals -----------------------------------------------------------------

def _member(conn: Connection, actor: Actor, member_id: int) -> dict[str, Any]:
    row = conn.execute(select(loyalty_members).where(loyalty_members.c.id == member_id)
                       ).mappings().first()
    if row is None:
        raise NotFound("member_not_found")
    if actor.store_ids is not None:
        try:
            visible_customer(conn, actor, int(row["customer_id"]))
        except NotFound as exc:
            raise NotFound("member_not_found") from exc
    return dict(row)


def invite_code(*, uow: UnitOfWork, actor: Actor, member_id: int,
                now: dt.datetime | None = None) -> tuple[dict[str, Any], bool]:
    """The member's invite code, created on first request. Returns it and whether it is new."""
    need(actor, "benefits.refer")

    def work() -> tuple[dict[str, Any], bool]:
        at = now or utcnow()
        conn = uow.c
        member = _member(conn, actor, member_id)
        i = benefits_invites.c
        row = conn.execute(select(benefits_invites).where(i.member_id == member_id)
                           ).mappings().first()
        if row is not None:
            uow.commit()
            return _invite_out(dict(row)), False
        if member["status"] != "active":
            raise Conflict("member_closed")
        for _ in range(20):
            code = new_invite_code()
            if not conn.execute(select(i.member_id).where(i.code == code)).first():
                break
        else:  # pragma: no cover - 31^8 codes
            raise Conflict("invite_code_exhausted")
        conn.execute(insert(benefits_invites).values(
            member_id=member_id, program_id=member["program_id"], code=code, created_at=at))
        audit.record(conn, actor, "benefits.invite_created", entity="loyalty_member",
                     entity_id=member_id, details={"code": code})
        out = _invite_out({"member_id": member_id, "code": code, "created_at": at})
        uow.commit()
        return out, True

    return retrying(uow, work)


def _invite_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"member_id": int(row["member_id"]), "code": row["code"],
            "created_at": row["created_at"]}


def _survivor(conn: Connection, customer_id: int) -> int:
    """The profile a customer was merged into, if it was (merges may chain)."""
    seen = set()
    while customer_id not in seen:
        seen.add(customer_id)
        nxt = conn.execute(select(customers.c.merged_into_id).where(
            customers.c.id == customer_id)).scalar()
        if nxt is None:
            return customer_id
        customer_id = int(nxt)
    return customer_id


def enrol_referred(*, uow: UnitOfWork, actor: Actor, program_code: str, body: ReferredEnrolIn,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    """Enrol a new member with a friend's invite code: the enrolment and the link commit
    together. Someone already a member cannot be referred (409, nothing written)."""
    need(actor, "loyalty.enrol")
    need(actor, "benefits.refer")

    def work() -> dict[str, Any]:
        at = now or utcnow()
        conn = uow.c
        program = _program(conn, program_code)
        settings = settings_of(conn, int(program["id"]))
        if not (settings["referral_referrer_points"] or settings["referral_referee_points"]):
            raise Conflict("referrals_not_offered", params={"code": program_code})
        code = normalize_invite_code(body.invite_code)
        inv = conn.execute(select(benefits_invites).where(benefits_invites.c.code == code)
                           ).mappings().first()
        if inv is None:
            raise invalid("invite_code", "invite_code_unknown")
        if int(inv["program_id"]) != int(program["id"]):
            raise invalid("invite_code", "invite_code_other_program")
        referrer = persist.lock_members(conn, [int(inv["member_id"])])[int(inv["member_id"])]
        if referrer["status"] != "active":
            raise invalid("invite_code", "invite_code_inactive")
        member, created = loyalty.enrol_in(
            conn, actor=actor, program_code=program_code, now=at,
            body=EnrolIn.model_validate(body.model_dump(exclude={"invite_code"})))
        if not created:
            raise Conflict("not_a_new_member")
        if _survivor(conn, int(member["customer_id"])) == _survivor(
                conn, int(referrer["customer_id"])):
            raise invalid("invite_code", "self_referral")
        referral_id = int(conn.execute(insert(benefits_referrals).values(
            program_id=program["id"], referrer_member_id=referrer["id"],
            referee_member_id=member["id"], invite_code=code, linked_at=at,
            qualify_until=at + dt.timedelta(days=int(settings["referral_days"])),
            status="pending").returning(benefits_referrals.c.id)).scalar_one())
        audit.record(conn, actor, "benefits.referral_linked", entity="loyalty_member",
                     entity_id=member["id"], details={"referral_id": referral_id,
                                                      "referrer_member_id": int(referrer["id"]),
                                                      "invite_code": code})
        out = {"member": member, "referral": referral_out(conn, _referral(conn, referral_id))}
        uow.commit()
        return out

    return retrying(uow, work)


def _referral(conn: Connection, referral_id: int) -> dict[str, Any]:
    return dict(conn.execute(select(benefits_referrals).where(
        benefits_referrals.c.id == referral_id)).mappings().one())


def referral_out(conn: Connection, r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("id", "referrer_member_id", "referee_member_id", "invite_code",
                              "linked_at", "qualify_until", "status", "reason", "order_id",
                              "referrer_points", "referee_points", "finished_at")}


def member_benefits(conn: Connection, *, actor: Actor, member_id: int) -> dict[str, Any]:
    """A member's invite code, gifts, the referrals it made and the one that brought it."""
    need(actor, "benefits.read")
    _member(conn, actor, member_id)
    r, g = benefits_referrals.c, benefits_grants.c
    invite = conn.execute(select(benefits_invites).where(
        benefits_invites.c.member_id == member_id)).mappings().first()
    return {
        "member_id": member_id,
        "invite_code": invite["code"] if invite else None,
        "grants": [dict(x) for x in conn.execute(
            select(g.kind, g.year, g.points, g.operation_id, g.detail, g.granted_at)
            .where(g.member_id == member_id).order_by(g.year, g.kind)).mappings()],
        "referred_by": next((referral_out(conn, dict(x)) for x in conn.execute(
            select(benefits_referrals).where(r.referee_member_id == member_id)).mappings()),
            None),
        "referrals": [referral_out(conn, dict(x)) for x in conn.execute(
            select(benefits_referrals).where(r.referrer_member_id == member_id)
            .order_by(r.id)).mappings()],
    }


# --- the scheduled job --------------------------------------------------------------------------

def _credit(conn: Connection, actor: Actor, member_id: int, points: int, key: str,
            reason: str, at: dt.datetime) -> int | None:
    """Points through the loyalty ledger: an adjustment whose reason names the cause."""
    if points <= 0:
        return None
    op = loyalty.adjust_in(conn, actor=actor, member_id=member_id, now=at, visible=False,
                           body=AdjustIn(idempotency_key=key, points=points, reason=reason))
    return int(op["id"])


def _day_end(day: dt.date, tz: str) -> dt.datetime:
    nxt = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), ZoneInfo(tz))
    return (nxt - dt.timedelta(microseconds=1)).astimezone(dt.UTC)


def run(*, uow: UnitOfWork, actor: Actor, on: dt.date | None = None,
        now: dt.datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """The daily job: birthday gifts (bonus in the birthday month, or the multiplier's bonus
    once the month and its return window are over), anniversary gifts, and referral rewards
    for new members whose first qualifying purchase is past its return window. ``on``: the
    local day to run as, in each program's time zone (then as at that day's end); default
    today. Idempotent, and safe with two processes running it."""
    stats = {"birthday": 0, "birthday_points": 0, "anniversary": 0, "anniversary_points": 0,
             "referrals_rewarded": 0, "referrals_refused": 0, "referrals_expired": 0}
    real_now = now or utcnow()
    programs = [dict(p) for p in uow.c.execute(select(loyalty_programs).where(
        loyalty_programs.c.status == "active").order_by(loyalty_programs.c.id)).mappings()]
    uow.rollback()
    for program in programs:
        tz = program["timezone"]
        day = on or local_day(real_now, tz)
        at = min(real_now, _day_end(day, tz)) if on is not None else real_now
        settings = settings_of(uow.c, int(program["id"]))
        uow.rollback()
        if settings["birthday_mode"] != "none":
            _birthdays(uow, actor, program, settings, day, at, batch, stats)
        if settings["anniversary_points"]:
            _anniversaries(uow, actor, program, settings, day, at, batch, stats)
        _referrals(uow, actor, program, settings, at, batch, stats)
    audit.record(uow.c, actor, "benefits.run", details={
        "on": on.isoformat() if on else None, **stats})
    uow.commit()
    return stats


def _grant_batch(uow: UnitOfWork, actor: Actor, program: dict[str, Any], kind: str,
                 year: int, gifts: dict[int, tuple[int, str | None]], at: dt.datetime,
                 coupon_template_id: int | None = None) -> tuple[int, int]:
    """Give each member its gift (points, detail; or one coupon of ``coupon_template_id``) for
    ``year`` unless it already has one, in one transaction: members locked in id order, the
    grants re-read under the locks."""
    if not gifts:
        return 0, 0

    def work() -> tuple[int, int]:
        conn = uow.c
        locked = persist.lock_members(conn, gifts)
        g = benefits_grants.c
        done = set(conn.execute(select(g.member_id).where(
            g.member_id.in_(sorted(gifts)), g.kind == kind, g.year == year)).scalars())
        given = points_given = 0
        for member_id, (points, detail) in sorted(gifts.items()):
            if member_id in done or locked.get(member_id, {}).get("status") != "active":
                continue
            key = f"benefits:{kind}:{year}:{member_id}"
            op_id = issue_id = None
            if coupon_template_id is not None:
                try:
                    issued = issue_coupons(conn, actor=actor, template_id=coupon_template_id,
                                           member_ids=[member_id], quantity=1,
                                           idempotency_key=key, store_id=None, now=at)
                except Conflict as exc:
                    # Budget spent, template ended: nothing written; tried again next run.
                    audit.record(conn, actor, f"benefits.{kind}_not_granted",
                                 entity="loyalty_member", entity_id=member_id,
                                 details={"year": year, "reason": exc.message},
                                 outcome="refused")
                    continue
                issue_id = int(issued["id"])
                detail = (f"coupon {issued['coupons'][0]['code']}" if issued["coupons"]
                          else "no coupon: " + ", ".join(
                              s["reason"] for s in issued["skipped"]))
            else:
                op_id = _credit(conn, actor, member_id, points, key,
                                f"{kind} gift {year}" + (f" ({detail})" if detail else ""), at)
            conn.execute(insert(benefits_grants).values(
                program_id=program["id"], member_id=member_id, kind=kind, year=year,
                points=points, operation_id=op_id, coupon_issue_id=issue_id, detail=detail,
                granted_at=at))
            audit.record(conn, actor, f"benefits.{kind}_granted", entity="loyalty_member",
                         entity_id=member_id, details={"year": year, "points": points,
                                                       "operation_id": op_id,
                                                       "coupon_issue_id": issue_id})
            given += 1
            points_given += points
        uow.commit()
        return given, points_given

    return retrying(uow, work)


def _members_without_grant(conn: Connection, program_id: int, kind: str, year: int,
                           after: int, limit: int, *extra: Any) -> list[Any]:
    m, g, c = loyalty_members.c, benefits_grants.c, customers.c
    granted = select(g.member_id).where(g.member_id == m.id, g.kind == kind, g.year == year)
    return list(conn.execute(
        select(m.id, m.enrolled_at, c.birthday)
        .select_from(loyalty_members.join(customers, customers.c.id == m.customer_id))
        .where(m.program_id == program_id, m.status == "active", m.id > after,
               ~granted.exists(), *extra)
        .order_by(m.id).limit(limit)))


def _birthdays(uow: UnitOfWork, actor: Actor, program: dict[str, Any], settings: dict[str, Any],
               day: dt.date, at: dt.datetime, batch: int, stats: dict[str, int]) -> None:
    c = customers.c
    if settings["birthday_mode"] in ("points", "coupon"):
        coupon = settings["birthday_coupon_template_id"] if (
            settings["birthday_mode"] == "coupon") else None
        points = 0 if coupon is not None else int(settings["birthday_points"])
        after = 0
        while True:
            rows = _members_without_grant(uow.c, int(program["id"]), "birthday", day.year,
                                          after, batch, c.birthday.is_not(None),
                                          # birthdays are encrypted; their month and day are
                                          # kept apart (customers.birth_md, MMDD)
                                          c.birth_md.between(day.month * 100 + 1,
                                                             day.month * 100 + 31))
            uow.rollback()
            if not rows:
                return
            gifts: dict[int, tuple[int, str | None]] = {
                int(r.id): (points, None) for r in rows if birthday_points_due(r.birthday, day)}
            n, pts = _grant_batch(uow, actor, program, "birthday", day.year, gifts, at,
                                  coupon_template_id=coupon)
            stats["birthday"] += n
            stats["birthday_points"] += pts
            after = int(rows[-1].id)
    # Multiplier: the bonus on the birthday month's points is paid once the month and the
    # program's return window are over, this year's month or last year's (a December birthday
    # settles in January).
    multiplier = Decimal(settings["birthday_multiplier"])
    for year in (day.year - 1, day.year):
        after = 0
        while True:
            rows = _members_without_grant(uow.c, int(program["id"]), "birthday", year, after,
                                          batch, c.birthday.is_not(None))
            if not rows:
                uow.rollback()
                break
            gifts = {}
            for r in rows:
                month = r.birthday.month
                start, end = month_bounds(year, month, program["timezone"])
                settles = multiplier_settles_on(year, month, int(program["pending_days"]))
                # Only months that were over after these settings began and after enrolment.
                if (settles > day or end <= r.enrolled_at
                        or (settings["birthday_since"] is not None
                            and start < settings["birthday_since"])):
                    continue
                earned = _net_points(uow.c, int(r.id), start, end)
                gifts[int(r.id)] = (multiplier_bonus(earned, multiplier),
                                    f"x{multiplier.normalize()} on {earned} points of "
                                    f"{year}-{month:02d}")
            uow.rollback()
            n, pts = _grant_batch(uow, actor, program, "birthday", year, gifts, at)
            stats["birthday"] += n
            stats["birthday_points"] += pts
            after = int(rows[-1].id)


def _net_points(conn: Connection, member_id: int, start: dt.datetime, end: dt.datetime) -> int:
    e = loyalty_order_earnings.c
    row = conn.execute(select(e.points, e.points_clawed, e.points_excused,
                              e.points_written_off).where(
        e.member_id == member_id, e.purchased_at >= start, e.purchased_at < end)).all()
    return sum(int(x.points) - int(x.points_clawed) - int(x.points_excused)
               - int(x.points_written_off) for x in row)


def _anniversaries(uow: UnitOfWork, actor: Actor, program: dict[str, Any],
                   settings: dict[str, Any], day: dt.date, at: dt.datetime, batch: int,
                   stats: dict[str, int]) -> None:
    tz = program["timezone"]
    first_of_year = dt.datetime(day.year, 1, 1, tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)
    points = int(settings["anniversary_points"])
    after = 0
    while True:
        rows = _members_without_grant(uow.c, int(program["id"]), "anniversary", day.year,
                                      after, batch, loyalty_members.c.enrolled_at < first_of_year)
        uow.rollback()
        if not rows:
            return
        gifts: dict[int, tuple[int, str | None]] = {}
        for r in rows:
            enrolled = local_day(r.enrolled_at, tz)
            if anniversary_due(enrolled, day) is not None:
                gifts[int(r.id)] = (points, f"{day.year - enrolled.year} years")
        n, pts = _grant_batch(uow, actor, program, "anniversary", day.year, gifts, at)
        stats["anniversary"] += n
        stats["anniversary_points"] += pts
        after = int(rows[-1].id)


def _referrals(uow: UnitOfWork, actor: Actor, program: dict[str, Any], settings: dict[str, Any],
               at: dt.datetime, batch: int, stats: dict[str, int]) -> None:
    r = benefits_referrals.c
    after = 0
    while True:
        pending = [int(x) for x in uow.c.execute(select(r.id).where(
            r.program_id == program["id"], r.status == "pending", r.id > after)
            .order_by(r.id).limit(batch)).scalars()]
        uow.rollback()
        if not pending:
            return
        for referral_id in pending:
            outcome = retrying(uow, lambda rid=referral_id: _settle_referral(
                uow, actor, program, settings, rid, at))
            if outcome:
                stats[f"referrals_{outcome}"] += 1
        after = pending[-1]


def _settle_referral(uow: UnitOfWork, actor: Actor, program: dict[str, Any],
                     settings: dict[str, Any], referral_id: int, at: dt.datetime) -> str | None:
    """Decide one pending referral in its own transaction; returns what happened, if anything."""
    conn = uow.c
    first = _referral(conn, referral_id)
    locked = persist.lock_members(conn, [int(first["referrer_member_id"]),
                                         int(first["referee_member_id"])])
    ref = _referral(conn, referral_id)  # re-read under the locks: another run may have done it
    if ref["status"] != "pending":
        uow.rollback()
        return None
    e = loyalty_order_earnings.c
    purchases = [Purchase(int(x.order_id), x.purchased_at, x.spend - x.returned)
                 for x in conn.execute(select(e.order_id, e.purchased_at, e.spend, e.returned)
                                       .where(e.member_id == ref["referee_member_id"],
                                              e.purchased_at >= ref["linked_at"],
                                              e.purchased_at < ref["qualify_until"]))]
    decision = referral_outcome(purchases, linked_at=ref["linked_at"],
                                qualify_until=ref["qualify_until"],
                                min_spend=settings["referral_min_spend"],
                                pending_days=int(program["pending_days"]), now=at)
    if decision.outcome == "wait":
        uow.rollback()
        return None
    if decision.outcome == "expired":
        _finish(conn, actor, ref, "expired", "no_qualifying_purchase", at)
        uow.commit()
        return "expired"
    referrer, referee = (locked[int(ref["referrer_member_id"])],
                         locked[int(ref["referee_member_id"])])
    reason = _refusal(conn, program, ref, referrer, referee)
    if reason is not None:
        _finish(conn, actor, ref, "refused", reason, at, order_id=decision.order_id)
        uow.commit()
        return "refused"
    referee_customer = _survivor(conn, int(referee["customer_id"]))
    phone = conn.execute(select(customers.c.phone).where(customers.c.id == referee_customer)
                         ).scalar()
    claims = [{"program_id": program["id"], "kind": "payment_account",
               "value": _claim(f"{kind}:{value}"), "referral_id": referral_id}
              for kind, value in _payment_accounts(conn, referee_customer)]
    if phone:
        claims.append({"program_id": program["id"], "kind": "phone", "value": _claim(phone),
                       "referral_id": referral_id})
    if claims:  # unique per program: a second process, or a second friend, fails here
        conn.execute(insert(benefits_referral_claims), claims)
    referrer_points = int(settings["referral_referrer_points"])
    referee_points = int(settings["referral_referee_points"])
    reason_text = f"referral reward (referral {referral_id}, order {decision.order_id})"
    ops = {"referrer_operation_id": _credit(conn, actor, int(referrer["id"]), referrer_points,
                                            f"benefits:referral:{referral_id}:referrer",
                                            reason_text, at),
           "referee_operation_id": _credit(conn, actor, int(referee["id"]), referee_points,
                                           f"benefits:referral:{referral_id}:referee",
                                           reason_text, at)}
    _finish(conn, actor, ref, "rewarded", None, at, order_id=decision.order_id,
            referrer_points=referrer_points, referee_points=referee_points, **ops)
    uow.commit()
    return "rewarded"


def _payment_accounts(conn: Connection, customer_id: int) -> list[tuple[str, str]]:
    i = identities.c
    return [(x.kind, x.value) for x in conn.execute(
        select(i.kind, i.value).where(i.customer_id == customer_id, i.kind.in_(PAYMENT_KINDS))
        .order_by(i.kind, i.value_index))]


def _claim(value: str) -> str:
    """A claim is filed under the blind index of the phone or account, never the value."""
    return blind("referral-claim", value)


def _refusal(conn: Connection, program: dict[str, Any], ref: dict[str, Any],
             referrer: dict[str, Any], referee: dict[str, Any]) -> str | None:
    """Why this referral earns nothing: the two are one person (their profiles merged since),
    or the new member's phone or payment account already earned a referral reward."""
    if referrer["status"] != "active" or referee["status"] != "active":
        return "member_closed"
    referee_customer = _survivor(conn, int(referee["customer_id"]))
    if referee_customer == _survivor(conn, int(referrer["customer_id"])):
        return "self_referral"
    phone = conn.execute(select(customers.c.phone).where(customers.c.id == referee_customer)
                         ).scalar()
    referrer_phone = conn.execute(select(customers.c.phone).where(
        customers.c.id == _survivor(conn, int(referrer["customer_id"])))).scalar()
    if phone and phone == referrer_phone:
        return "self_referral"
    cl = benefits_referral_claims.c
    if phone and conn.execute(select(cl.id).where(
            cl.program_id == program["id"], cl.kind == "phone", cl.value == _claim(phone))
    ).first():
        return "phone_already_rewarded"
    accounts = [_claim(f"{k}:{v}") for k, v in _payment_accounts(conn, referee_customer)]
    if accounts and conn.execute(select(cl.id).where(
            cl.program_id == program["id"], cl.kind == "payment_account",
            cl.value.in_(accounts))).first():
        return "payment_account_already_rewarded"
    return None


def _finish(conn: Connection, actor: Actor, ref: dict[str, Any], status: str,
            reason: str | None, at: dt.datetime, **values: Any) -> None:
    conn.execute(update(benefits_referrals).where(benefits_referrals.c.id == ref["id"])
                 .values(status=status, reason=reason, finished_at=at, **values))
    audit.record(conn, actor, f"benefits.referral_{status}", entity="benefits_referral",
                 entity_id=ref["id"], details={"reason": reason, **{
                     k: v for k, v in values.items() if v is not None}})
