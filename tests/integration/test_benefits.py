"""Birthday, anniversary and referral on SQLite and PostgreSQL: gifts given once per member and
year whatever runs the job, in the program's time zone, through the loyalty ledger with their
cause; referrals rewarded once on the first qualifying purchase after its return window, never
twice for the same phone or payment account, never to oneself."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.benefits import service
from patron.benefits.schemas import BenefitSettingsIn, ReferredEnrolIn
from patron.benefits.tables import benefits_grants, benefits_referrals
from patron.coupons.tables import coupons
from patron.customers.custom_fields import update_customer
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, ValidationFailed
from patron.loyalty.tables import loyalty_entries, loyalty_operations
from patron.loyalty.verify import verify
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.coupon_factories import make_template
from tests.factories import make_org, order
from tests.loyalty_factories import buy, enrol, give_back, make_program, points

SH = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2024, 6, 1, 10, 0, tzinfo=SH)  # the program and first members
A, B, C = "13800000001", "13800000002", "13800000003"


def setup(uow, *, pending_days: int = 0, **settings: Any) -> dict[str, int]:
    make_org(uow)
    make_program(uow, now=START, pending_days=pending_days, expiry_months=120)
    service.put_settings(uow=uow, actor=SYSTEM, program_code="BB", now=START,
                         body=BenefitSettingsIn.model_validate(settings))
    return {}


def member(uow, phone: str, *, at: dt.datetime = START, birthday: str | None = None
           ) -> dict[str, Any]:
    m = enrol(uow, phone, now=at)
    if birthday:
        update_customer(uow=uow, actor=SYSTEM, customer_id=m["customer_id"],
                        changes={"birthday": birthday})
    return m


def pay(uow, external_id: str, identifiers: dict[str, str], at: dt.datetime) -> None:
    """A purchase carrying more identifiers than a phone (a WeChat or Alipay payer)."""
    (out,) = record_orders(uow=uow, orders_in=[order(external_id, at=at,
                                                     identifiers=identifiers)],
                           source="api", actor=SYSTEM, now=at + dt.timedelta(minutes=1))
    assert out.status == "created", out


def run(uow, day: str, **kw: Any) -> dict[str, int]:
    return service.run(uow=uow, actor=SYSTEM, on=dt.date.fromisoformat(day), **kw)


def gifts(uow, member_id: int) -> list[tuple[str, int, int]]:
    g = benefits_grants.c
    return [tuple(r) for r in uow.c.execute(select(g.kind, g.year, g.points).where(
        g.member_id == member_id).order_by(g.year, g.kind))]


def test_a_birthday_month_bonus_is_given_once_a_year_however_often_the_job_runs(uow):
    setup(uow, birthday_mode="points", birthday_points=200)
    m = member(uow, A, birthday="1990-04-15")
    other = member(uow, B, birthday="1991-07-01")
    nobody = member(uow, C)
    assert run(uow, "2025-03-31")["birthday"] == 0
    assert run(uow, "2025-04-01")["birthday"] == 1
    assert run(uow, "2025-04-01")["birthday"] == 0
    assert run(uow, "2025-04-30")["birthday"] == 0
    assert gifts(uow, m["id"]) == [("birthday", 2025, 200)]
    assert points(uow, m["id"])["available"] == 200
    assert gifts(uow, other["id"]) == [] and gifts(uow, nobody["id"]) == []
    run(uow, "2026-04-10")
    assert gifts(uow, m["id"]) == [("birthday", 2025, 200), ("birthday", 2026, 200)]
    e = loyalty_entries.c
    reasons = uow.c.execute(select(e.reason).where(e.member_id == m["id"])).scalars().all()
    assert reasons == ["birthday gift 2025", "birthday gift 2026"]
    assert verify(uow.c)["differences"] == []


def test_a_birthday_coupon_is_issued_once_in_the_birthday_month_within_its_budget(uow):
    setup(uow)
    template = make_template(uow, "BDAY", limits={"total_limit": 1}, now=START)
    with pytest.raises(ValidationFailed) as exc:
        service.put_settings(uow=uow, actor=SYSTEM, program_code="BB", now=START,
                             body=BenefitSettingsIn(birthday_mode="coupon",
                                                    birthday_coupon_template_id=9999))
    assert exc.value.fields[0].reason == "coupon_template_not_in_program"
    service.put_settings(uow=uow, actor=SYSTEM, program_code="BB", now=START,
                         body=BenefitSettingsIn(birthday_mode="coupon",
                                                birthday_coupon_template_id=template["id"]))
    first = member(uow, A, birthday="1990-04-15")
    second = member(uow, B, birthday="1992-04-02")
    stats = run(uow, "2025-04-02")
    assert (stats["birthday"], stats["birthday_points"]) == (1, 0)
    assert run(uow, "2025-04-03")["birthday"] == 0  # the budget is spent: nothing for B
    c = coupons.c
    held = uow.c.execute(select(c.member_id, c.code)).all()
    assert [m for m, _ in held] == [first["id"]]
    (grant,) = uow.c.execute(select(benefits_grants)).mappings().all()
    assert (grant["member_id"], grant["points"]) == (first["id"], 0)
    assert grant["detail"] == f"coupon {held[0].code}" and grant["coupon_issue_id"]
    assert gifts(uow, second["id"]) == []
    assert points(uow, first["id"])["available"] == 0


def test_the_birthday_month_begins_at_midnight_in_the_programs_time_zone(uow):
    setup(uow, birthday_mode="points", birthday_points=100)
    m = member(uow, A, birthday="1990-04-01")
    # 31 March 23:30 in Shanghai is still March for the program, 1 April 00:30 is April,
    # although both are 31 March in UTC.
    assert service.run(uow=uow, actor=SYSTEM,
                       now=dt.datetime(2025, 3, 31, 15, 30, tzinfo=dt.UTC))["birthday"] == 0
    assert service.run(uow=uow, actor=SYSTEM,
                       now=dt.datetime(2025, 3, 31, 16, 30, tzinfo=dt.UTC))["birthday"] == 1
    assert gifts(uow, m["id"]) == [("birthday", 2025, 100)]


def test_two_jobs_running_at_once_give_each_gift_and_referral_reward_once(db_url):
    engine = get_engine(db_url)
    with UnitOfWork(engine) as uow:
        setup(uow, birthday_mode="points", birthday_points=50, anniversary_points=30,
              referral_referrer_points=300, referral_referee_points=100)
        ids = [member(uow, f"1380000{i:04d}", birthday="1990-06-15")["id"] for i in range(12)]
        code, _ = service.invite_code(uow=uow, actor=SYSTEM, member_id=ids[0], now=START)
        friend = referred(uow, "13900000009", code["code"], dt.datetime(2025, 5, 20, tzinfo=SH))
        buy(uow, "FRIEND-1", phone="13900000009", at=dt.datetime(2025, 5, 21, tzinfo=SH))
    errors: list[BaseException] = []
    results: list[dict[str, int]] = []
    barrier = threading.Barrier(2)

    def job() -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                results.append(service.run(uow=uow, actor=SYSTEM, on=dt.date(2025, 6, 2),
                                           batch=5))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert sum(r["birthday"] for r in results) == 12
    assert sum(r["anniversary"] for r in results) == 12
    assert sum(r["referrals_rewarded"] for r in results) == 1
    with UnitOfWork(engine) as uow:
        g = benefits_grants.c
        counts = uow.c.execute(select(g.kind, func.count()).group_by(g.kind)).all()
        assert sorted(tuple(c) for c in counts) == [("anniversary", 12), ("birthday", 12)]
        assert points(uow, ids[0])["available"] == 80 + 300
        assert all(points(uow, i)["available"] == 80 for i in ids[1:])
        assert points(uow, friend["member"]["id"])["available"] == 71 + 100
        o = loyalty_operations.c
        assert uow.c.execute(select(func.count()).where(o.kind == "adjust")).scalar_one() == 26
        assert verify(uow.c)["differences"] == []


def test_a_birthday_multiplier_pays_its_bonus_once_the_month_and_return_window_are_over(uow):
    setup(uow, pending_days=7, birthday_mode="multiplier", birthday_multiplier="2")
    m = member(uow, A, birthday="1990-04-15")
    buy(uow, "APR-1", phone=A, at=dt.datetime(2025, 4, 3, 12, 0, tzinfo=SH))
    buy(uow, "APR-2", phone=A, at=dt.datetime(2025, 4, 20, 12, 0, tzinfo=SH))
    buy(uow, "MAY-1", phone=A, at=dt.datetime(2025, 5, 2, 12, 0, tzinfo=SH))
    give_back(uow, "RT-APR-2", "APR-2", at=dt.datetime(2025, 4, 22, 12, 0, tzinfo=SH),
              full=True)
    assert run(uow, "2025-04-30")["birthday"] == 0
    assert run(uow, "2025-05-07")["birthday"] == 0  # still inside the return window
    stats = run(uow, "2025-05-08")
    # 71 points earned on APR-1 (APR-2 was refunded, MAY-1 is outside the month): x2 adds 71.
    assert stats["birthday"] == 1 and stats["birthday_points"] == 71
    assert gifts(uow, m["id"]) == [("birthday", 2025, 71)]
    assert run(uow, "2025-05-20")["birthday"] == 0
    assert verify(uow.c)["differences"] == []


def test_an_anniversary_gift_comes_on_the_day_and_never_in_the_year_of_enrolment(uow):
    setup(uow, anniversary_points=500)
    m = member(uow, A, at=dt.datetime(2024, 6, 10, 9, 0, tzinfo=SH))
    assert run(uow, "2024-12-31")["anniversary"] == 0
    assert run(uow, "2025-06-09")["anniversary"] == 0
    assert run(uow, "2025-06-10")["anniversary"] == 1
    assert run(uow, "2025-12-31")["anniversary"] == 0
    assert run(uow, "2026-07-01")["anniversary"] == 1  # a job that missed the day catches up
    assert gifts(uow, m["id"]) == [("anniversary", 2025, 500), ("anniversary", 2026, 500)]


def referral_setup(uow, **extra: Any) -> tuple[dict[str, Any], str]:
    setup(uow, referral_referrer_points=300, referral_referee_points=100,
          referral_min_spend="50", referral_days=14, **extra)
    referrer = member(uow, A)
    code, created = service.invite_code(uow=uow, actor=SYSTEM, member_id=referrer["id"])
    assert created
    return referrer, code["code"]


def referred(uow, phone: str, code: str, at: dt.datetime) -> dict[str, Any]:
    body = ReferredEnrolIn.model_validate({"phone": phone, "privacy": {"version": "2026-01"},
                                           "source": "app", "invite_code": code})
    return service.enrol_referred(uow=uow, actor=SYSTEM, program_code="BB", body=body, now=at)


def referral_row(uow, referral_id: int) -> dict[str, Any]:
    return dict(uow.c.execute(select(benefits_referrals).where(
        benefits_referrals.c.id == referral_id)).mappings().one())


T1 = dt.datetime(2025, 3, 1, 10, 0, tzinfo=SH)
DAY = dt.timedelta(days=1)


def test_a_referral_rewards_both_members_once_after_the_first_qualifying_purchase(uow):
    referrer, code = referral_setup(uow, pending_days=7)
    again, created = service.invite_code(uow=uow, actor=SYSTEM, member_id=referrer["id"])
    assert again["code"] == code and not created
    out = referred(uow, B, code.lower(), T1)
    ref = out["referral"]
    assert ref["status"] == "pending" and ref["referrer_member_id"] == referrer["id"]
    new = out["member"]["id"]
    small = [{"sku": "TEA", "category": "tea", "quantity": "1", "unit_price": "20.00"}]
    buy(uow, "B-SMALL", phone=B, at=T1 + dt.timedelta(days=1), lines=small)  # under 50
    buy(uow, "B-FIRST", phone=B, at=T1 + dt.timedelta(days=2))  # 71.00
    assert run(uow, "2025-03-05")["referrals_rewarded"] == 0  # inside the return window
    assert run(uow, "2025-03-11")["referrals_rewarded"] == 1
    row = referral_row(uow, ref["id"])
    assert (row["status"], row["referrer_points"], row["referee_points"]) == ("rewarded", 300,
                                                                               100)
    assert points(uow, referrer["id"])["available"] == 300
    assert points(uow, new)["available"] == 71 + 20 + 100
    assert run(uow, "2025-03-12")["referrals_rewarded"] == 0
    o = loyalty_operations.c
    reasons = uow.c.execute(select(o.reason).where(o.idempotency_key.like("benefits:referral:%"))
                            ).scalars().all()
    assert len(reasons) == 2 and all(f"referral {ref['id']}" in r for r in reasons)
    assert verify(uow.c)["differences"] == []


def test_a_purchase_refunded_inside_the_return_window_does_not_qualify(uow):
    _referrer, code = referral_setup(uow, pending_days=7)
    ref = referred(uow, B, code, T1)["referral"]
    buy(uow, "B-1", phone=B, at=T1 + dt.timedelta(days=1))
    give_back(uow, "RT-B-1", "B-1", at=T1 + dt.timedelta(days=3), full=True)
    assert run(uow, "2025-03-20")["referrals_rewarded"] == 0
    assert run(uow, "2025-03-23")["referrals_expired"] == 1  # 14 days + 7 of return window
    assert referral_row(uow, ref["id"])["reason"] == "no_qualifying_purchase"


def test_a_purchase_after_the_qualifying_days_earns_no_referral_reward(uow):
    _referrer, code = referral_setup(uow)
    ref = referred(uow, B, code, T1)
    buy(uow, "B-LATE", phone=B, at=T1 + dt.timedelta(days=15))
    stats = run(uow, "2025-03-20")
    assert stats["referrals_expired"] == 1 and stats["referrals_rewarded"] == 0
    assert referral_row(uow, ref["referral"]["id"])["status"] == "expired"


def test_a_member_cannot_refer_itself(uow):
    referrer, code = referral_setup(uow)
    with pytest.raises(Conflict, match="not_a_new_member"):
        referred(uow, A, code, T1)
    with pytest.raises(ValidationFailed) as exc:
        referred(uow, B, "ZZZZZZZZ", T1)
    assert exc.value.fields[0].reason == "invite_code_unknown"
    # A new member proven later to be the referrer (one order carries both phones: the
    # profiles merge) earns nothing.
    ref = referred(uow, B, code, T1)["referral"]
    pay(uow, "SAME-PERSON", {"phone": B, "wechat_openid": "o-shared"}, T1 + 1 * DAY)
    pay(uow, "SAME-PERSON-2", {"phone": A, "wechat_openid": "o-shared"}, T1 + 2 * DAY)
    stats = run(uow, "2025-03-10")
    assert (stats["referrals_rewarded"], stats["referrals_refused"]) == (0, 1)
    row = referral_row(uow, ref["id"])
    assert (row["status"], row["reason"]) == ("refused", "self_referral")
    assert points(uow, referrer["id"])["available"] == 71  # its own purchase, no reward


def test_the_same_phone_cannot_earn_a_referral_reward_twice(uow):
    _referrer, code = referral_setup(uow)
    first = referred(uow, B, code, T1)["referral"]
    buy(uow, "B-1", phone=B, at=T1 + dt.timedelta(days=1))
    assert run(uow, "2025-03-03")["referrals_rewarded"] == 1
    # The same person signs up again with a second phone and buys; a later order paid with
    # the WeChat account of the first sign-up proves them one person (the profiles merge into
    # the first, whose phone already earned a reward).
    second = referred(uow, C, code, T1 + dt.timedelta(days=3))["referral"]
    buy(uow, "C-1", phone=C, at=T1 + dt.timedelta(days=4))
    pay(uow, "B-2", {"phone": B, "wechat_openid": "o-first"}, T1 + 5 * DAY)
    pay(uow, "C-2", {"phone": C, "wechat_openid": "o-first"}, T1 + 6 * DAY)
    stats = run(uow, "2025-03-10")
    assert (stats["referrals_rewarded"], stats["referrals_refused"]) == (0, 1)
    row = referral_row(uow, second["id"])
    assert (row["status"], row["reason"]) == ("refused", "phone_already_rewarded")
    assert referral_row(uow, first["id"])["status"] == "rewarded"
    assert verify(uow.c)["differences"] == []


def test_the_same_payment_account_cannot_earn_a_referral_reward_twice(uow):
    _referrer, code = referral_setup(uow)
    # C has bought before as a guest: an older profile, not yet a member.
    buy(uow, "C-GUEST", phone=C, at=T1 - dt.timedelta(days=30))
    first = referred(uow, B, code, T1)["referral"]
    pay(uow, "B-1", {"phone": B, "alipay_user_id": "2088000000000001"}, T1 + 1 * DAY)
    assert run(uow, "2025-03-03")["referrals_rewarded"] == 1
    # C, referred in turn, buys; then pays with the Alipay account that earned B's reward:
    # B's profile merges into C's (the older), whose phone earned nothing yet.
    second = referred(uow, C, code, T1 + dt.timedelta(days=3))["referral"]
    buy(uow, "C-1", phone=C, at=T1 + dt.timedelta(days=4))
    pay(uow, "C-2", {"phone": C, "alipay_user_id": "2088000000000001"}, T1 + 5 * DAY)
    stats = run(uow, "2025-03-10")
    assert (stats["referrals_rewarded"], stats["referrals_refused"]) == (0, 1)
    row = referral_row(uow, second["id"])
    assert (row["status"], row["reason"]) == ("refused", "payment_account_already_rewarded")
    assert referral_row(uow, first["id"])["status"] == "rewarded"
    assert verify(uow.c)["differences"] == []
