"""Earning inside the order-recording transaction and clawback on returns, on SQLite and
PostgreSQL. Expected points are worked out by hand: the test basket (tests.factories.order) is
2 lattes at 28.00 (coffee) and a croissant at 15.00 net (bakery), 71.00 in all."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from sqlalchemy import event, func, select

from patron.db import bulk_insert
from patron.errors import Conflict
from patron.loyalty import service
from patron.loyalty.jobs import run_due
from patron.loyalty.schemas import ProgramSettings, RedeemIn, RuleVersionIn
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_lots,
    loyalty_members,
    loyalty_order_earnings,
    loyalty_tier_history,
)
from patron.loyalty.verify import verify
from patron.orders.service import record_orders
from patron.org import service as org
from patron.security.model import SYSTEM
from tests.factories import T0, make_org, order
from tests.loyalty_factories import START, buy, enrol, give_back, make_program, points

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@pytest.fixture
def club(uow):
    make_org(uow)
    return make_program(uow)


def entries(uow, member_id):
    e = loyalty_entries.c
    return [(r.kind, r.bucket, r.points) for r in uow.c.execute(
        select(e.kind, e.bucket, e.points).where(e.member_id == member_id).order_by(e.id))]


def clean(uow):
    report = verify(uow.c)
    assert report["differences"] == []


def test_a_member_order_earns_points_and_growth_with_its_cause(uow, club):
    m = enrol(uow)
    out = buy(uow, "O1")
    assert points(uow, m["id"]) == {"available": 71, "pending": 0, "held": 0, "owed": 0,
                                    "growth": 71}
    row = uow.c.execute(select(loyalty_entries).where(
        loyalty_entries.c.kind == "earn", loyalty_entries.c.bucket == "available")
    ).mappings().one()
    assert (row["cause_type"], row["cause_id"], row["order_id"]) == (
        "order", str(out.order_id), out.order_id)
    assert row["rule_version_id"] is not None
    lot = uow.c.execute(select(loyalty_lots)).mappings().one()
    # rolling 12 months from 2026-03-02 10:30 in Shanghai
    assert lot["expires_at"] == dt.datetime(2027, 3, 2, 2, 30, tzinfo=dt.UTC)
    clean(uow)


def test_a_retried_order_confirmation_earns_once(uow, club):
    m = enrol(uow)
    buy(uow, "O1")
    again = buy(uow, "O1")
    assert again.status == "duplicate"
    # the same document twice in one batch, as a till that resends its queue does
    out = record_orders(uow=uow, orders_in=[order("O2", identifiers={"phone": "13812345678"}),
                                            order("O2", identifiers={"phone": "13812345678"})],
                        source="api", actor=SYSTEM, now=T0 + HOUR)
    assert [o.status for o in out] == ["created", "duplicate"]
    assert points(uow, m["id"])["available"] == 142
    clean(uow)


def test_an_offline_till_that_retries_its_sync_does_not_double_the_points(uow, club):
    m = enrol(uow)
    backlog = [order(f"OFF-{i}", at=T0 + i * HOUR, identifiers={"phone": "13812345678"})
               for i in range(30)]
    record_orders(uow=uow, orders_in=backlog[:20], source="api", actor=SYSTEM,
                  now=T0 + 2 * DAY)
    # The connection dropped before the till saw the answer: it sends everything again.
    out = record_orders(uow=uow, orders_in=backlog, source="api", actor=SYSTEM,
                        now=T0 + 2 * DAY)
    assert [o.status for o in out].count("created") == 10
    assert points(uow, m["id"])["available"] == 30 * 71
    earned = uow.c.execute(select(func.count()).select_from(loyalty_order_earnings)
                           ).scalar_one()
    assert earned == 30
    clean(uow)


def test_guests_non_members_and_other_brands_earn_nothing(uow, club):
    m = enrol(uow)
    b2 = org.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Tea Time")
    org.create_store(uow=uow, actor=SYSTEM, code="GZ01", name="广州店", brand_id=b2)
    record_orders(uow=uow, orders_in=[
        order("G1"),  # a guest
        order("N1", identifiers={"phone": "13900000000"}),  # a customer, not a member
        order("X1", store="GZ01", identifiers={"phone": "13812345678"}),  # another brand
        order("W1", channel="mini_program", store=None,  # no store, channel not claimed
              identifiers={"phone": "13812345678"}),
    ], source="api", actor=SYSTEM, now=T0 + HOUR)
    assert points(uow, m["id"])["available"] == 0
    assert uow.c.execute(select(func.count()).select_from(loyalty_entries)).scalar_one() == 0
    # Once the program claims the mini-program's orders, they earn.
    service.update_program(uow=uow, actor=SYSTEM, code="BB",
                           changes=ProgramSettings(storeless_channels=["mini_program"]))
    record_orders(uow=uow, orders_in=[order("W2", channel="mini_program", store=None,
                                            identifiers={"phone": "13812345678"})],
                  source="api", actor=SYSTEM, now=T0 + HOUR)
    assert points(uow, m["id"])["available"] == 71


def test_purchases_before_enrolment_earn_nothing(uow, club):
    m = enrol(uow, now=T0 + DAY)
    buy(uow, "EARLY", at=T0, now=T0 + 2 * DAY)
    buy(uow, "LATE", at=T0 + 2 * DAY)
    assert points(uow, m["id"])["available"] == 71


def test_a_late_order_earns_by_the_rules_in_force_at_its_purchase_time(uow, club):
    m = enrol(uow)
    service.add_rule_version(uow=uow, actor=SYSTEM, code="BB", now=T0 - DAY,
                             body=RuleVersionIn.model_validate({
                                 "effective_from": (T0 + DAY).isoformat(),
                                 "rules": {"points_per_yuan": "2"}}))
    # Recorded three days later, bought before the new rules: one point per yuan.
    buy(uow, "OLD", at=T0, now=T0 + 3 * DAY)
    buy(uow, "NEW", at=T0 + 2 * DAY, now=T0 + 3 * DAY)
    assert points(uow, m["id"])["available"] == 71 + 142
    versions = dict(uow.c.execute(select(loyalty_order_earnings.c.points,
                                         loyalty_order_earnings.c.rule_version_id)).all())
    assert versions[71] != versions[142]


def test_rules_cannot_be_changed_for_the_past(uow, club):
    from patron.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as exc:
        service.add_rule_version(uow=uow, actor=SYSTEM, code="BB", now=T0,
                                 body=RuleVersionIn.model_validate({
                                     "effective_from": (T0 - DAY).isoformat(), "rules": {}}))
    assert exc.value.fields[0].reason == "effective_in_past"


def test_a_late_order_whose_points_already_expired_earns_and_expires_them_at_once(uow, club):
    m = enrol(uow)
    buy(uow, "ANCIENT", at=T0, now=T0 + 400 * DAY)
    assert points(uow, m["id"])["available"] == 0
    assert entries(uow, m["id"]) == [("earn", "available", 71), ("earn", "growth", 71),
                                     ("expire", "available", -71)]
    clean(uow)


def test_tier_upgrades_at_once_and_each_order_earns_by_the_tier_at_its_purchase_time(uow, club):
    m = enrol(uow)
    big = [{"sku": "BEANS", "category": "coffee", "quantity": "40", "unit_price": "25.00"}]
    buy(uow, "BIG", at=T0, lines=big)  # 1,000.00 at SILVER (x1): growth reaches GOLD's 1,000
    r = uow.c.execute(select(loyalty_members.c.tier_id, loyalty_members.c.growth_value)
                      .where(loyalty_members.c.id == m["id"])).one()
    gold = next(t for t in club["tiers"] if t["code"] == "GOLD")
    assert (r.tier_id, r.growth_value) == (gold["id"], 1000)
    history = uow.c.execute(select(loyalty_tier_history.c.reason).where(
        loyalty_tier_history.c.member_id == m["id"]).order_by(loyalty_tier_history.c.id)
    ).scalars().all()
    assert history == ["enrol", "upgrade"]
    buy(uow, "AFTER", at=T0 + 2 * HOUR)  # 71 x 1.5 = 106.5 -> 106
    # An offline till syncs a purchase made before the upgrade: SILVER's x1 applies.
    buy(uow, "BEFORE", at=T0 - HOUR, now=T0 + 3 * HOUR)
    assert points(uow, m["id"])["available"] == 1000 + 106 + 71
    clean(uow)


def test_a_daily_cap_holds_across_separate_chunks(uow):
    make_org(uow)
    make_program(uow, rules={"caps": {"per_day": 100}})
    m = enrol(uow)
    buy(uow, "D1", at=T0)
    buy(uow, "D2", at=T0 + HOUR)  # 29 left of the day's 100
    buy(uow, "D3", at=T0 + 2 * HOUR)  # none left
    buy(uow, "N1", at=T0 + DAY)
    assert points(uow, m["id"])["available"] == 71 + 29 + 0 + 71
    clean(uow)


def test_pending_points_become_available_after_the_return_window(uow):
    make_org(uow)
    make_program(uow, pending_days=7)
    m = enrol(uow)
    buy(uow, "P1", at=T0)
    assert points(uow, m["id"])["pending"] == 71
    run_due(uow=uow, actor=SYSTEM, now=T0 + 6 * DAY)
    assert points(uow, m["id"])["pending"] == 71
    stats = run_due(uow=uow, actor=SYSTEM, now=T0 + 7 * DAY + HOUR)
    assert stats["points_activated"] == 71
    assert points(uow, m["id"])["available"] == 71 and points(uow, m["id"])["pending"] == 0
    assert entries(uow, m["id"])[-2:] == [("activate", "pending", -71),
                                          ("activate", "available", 71)]
    clean(uow)


def test_a_return_inside_the_window_cancels_the_pending_points(uow):
    make_org(uow)
    make_program(uow, pending_days=7)
    m = enrol(uow)
    buy(uow, "P1", at=T0)
    with time_machine.travel(T0 + 2 * DAY, tick=False):
        give_back(uow, "RT1", "P1", at=T0 + 2 * DAY, lines=[{"line_no": 1, "quantity": "1"}])
        assert points(uow, m["id"]) == {"available": 0, "pending": 43, "held": 0, "owed": 0,
                                        "growth": 43}
        give_back(uow, "RT2", "P1", at=T0 + 2 * DAY, full=True)
    assert points(uow, m["id"]) == {"available": 0, "pending": 0, "held": 0, "owed": 0,
                                    "growth": 0}
    run_due(uow=uow, actor=SYSTEM, now=T0 + 8 * DAY)
    assert points(uow, m["id"])["available"] == 0
    clean(uow)


def test_buy_refund_keep_the_points_cannot_happen(uow, club):
    m = enrol(uow)
    buy(uow, "O1")
    give_back(uow, "RT1", "O1", at=T0 + DAY, full=True)
    assert points(uow, m["id"]) == {"available": 0, "pending": 0, "held": 0, "owed": 0,
                                    "growth": 0}
    row = uow.c.execute(select(loyalty_order_earnings)).mappings().one()
    assert (row["points_clawed"], row["growth_clawed"], row["returned"]) == (
        71, 71, Decimal("71.00"))
    clean(uow)


def test_partial_returns_claw_back_what_the_returned_lines_earned(uow):
    make_org(uow)
    make_program(uow, rules={"multipliers": {"category": {"coffee": "2"}}})
    m = enrol(uow)
    buy(uow, "O1")  # lattes 56 x 2 = 112, croissant 15: 127
    assert points(uow, m["id"])["available"] == 127
    give_back(uow, "RT1", "O1", at=T0 + DAY, lines=[{"line_no": 2, "quantity": "1"}])
    assert points(uow, m["id"])["available"] == 112  # the croissant's 15, not 127 x 15/71
    give_back(uow, "RT2", "O1", at=T0 + DAY, lines=[{"line_no": 1, "quantity": "1"}])
    assert points(uow, m["id"])["available"] == 56
    give_back(uow, "RT3", "O1", at=T0 + DAY, lines=[{"line_no": 1, "quantity": "1"}])
    assert points(uow, m["id"]) == {"available": 0, "pending": 0, "held": 0, "owed": 0,
                                    "growth": 0}
    clean(uow)


def _redeem(uow, member_id, pts, key):
    return service.redeem(uow=uow, actor=SYSTEM, member_id=member_id,
                          body=RedeemIn(idempotency_key=key, points=pts, store="SH01"),
                          now=T0 + 2 * HOUR)


def test_points_already_spent_become_a_debt_that_the_next_points_pay(uow, club):
    m = enrol(uow)
    buy(uow, "O1")
    _redeem(uow, m["id"], 60, "spend-1")
    give_back(uow, "RT1", "O1", at=T0 + DAY, full=True)
    assert points(uow, m["id"]) == {"available": 0, "pending": 0, "held": 0, "owed": 60,
                                    "growth": 0}
    with pytest.raises(Conflict):
        _redeem(uow, m["id"], 1, "spend-2")
    buy(uow, "O2", at=T0 + 2 * DAY)
    assert points(uow, m["id"])["available"] == 11 and points(uow, m["id"])["owed"] == 0
    clean(uow)


def test_write_off_policy_forgives_points_already_spent(uow):
    make_org(uow)
    make_program(uow, clawback_policy="write_off")
    m = enrol(uow)
    buy(uow, "O1")
    _redeem(uow, m["id"], 60, "spend-1")
    give_back(uow, "RT1", "O1", at=T0 + DAY, full=True)
    assert points(uow, m["id"])["owed"] == 0 and points(uow, m["id"])["available"] == 0
    row = uow.c.execute(select(loyalty_order_earnings)).mappings().one()
    assert (row["points_clawed"], row["points_written_off"]) == (11, 60)
    clean(uow)


def test_expired_points_are_not_clawed_back_from_other_points(uow, club):
    m = enrol(uow)
    buy(uow, "O1", at=T0)
    buy(uow, "O2", at=T0 + 300 * DAY)
    run_due(uow=uow, actor=SYSTEM, now=T0 + 370 * DAY)  # O1's lot expired
    assert points(uow, m["id"])["available"] == 71
    give_back(uow, "RT1", "O1", at=T0 + 370 * DAY, full=True)
    assert points(uow, m["id"])["available"] == 71  # nothing left to take back: excused
    row = uow.c.execute(select(loyalty_order_earnings).where(
        loyalty_order_earnings.c.points_excused > 0)).mappings().one()
    assert row["points_excused"] == 71
    clean(uow)


def test_a_merged_profile_keeps_earning_for_its_membership(uow, club):
    # An older profile known by its WeChat openid; the member enrols with a phone.
    record_orders(uow=uow, orders_in=[order("OLD", at=START - DAY,
                                            identifiers={"wechat_openid": "oX"})],
                  source="api", actor=SYSTEM, now=START)
    m = enrol(uow)
    # An order carrying both merges the member's profile into the older one.
    (out,) = record_orders(uow=uow, orders_in=[order("BOTH", identifiers={
        "phone": "13812345678", "wechat_openid": "oX"})], source="api", actor=SYSTEM,
        now=T0 + HOUR)
    assert out.customer_id != m["customer_id"]
    assert points(uow, m["id"])["available"] == 71
    clean(uow)


def test_a_closed_program_enrols_and_earns_no_more(uow, club):
    m = enrol(uow)
    service.update_program(uow=uow, actor=SYSTEM, code="BB",
                           changes=ProgramSettings(status="closed"))
    with pytest.raises(Conflict) as exc:
        enrol(uow, "13900000001")
    assert exc.value.message == "program_closed"
    buy(uow, "O1")
    assert points(uow, m["id"])["available"] == 0


def test_the_database_refuses_entries_that_break_an_invariant(uow, club):
    from sqlalchemy.exc import IntegrityError

    m = enrol(uow)
    out = buy(uow, "O1")
    base = {"program_id": 1, "member_id": m["id"], "actor": "test", "created_at": T0}
    bad = [
        # the same order earning twice
        {"kind": "earn", "bucket": "available", "points": 71, "cause_type": "order",
         "cause_id": str(out.order_id)},
        # an earn with a negative sign, an expiry adding points, an unknown kind
        {"kind": "earn", "bucket": "available", "points": -5, "cause_type": "order",
         "cause_id": "x1"},
        {"kind": "expire", "bucket": "available", "points": 5, "cause_type": "lot",
         "cause_id": "x2"},
        {"kind": "gift", "bucket": "available", "points": 5, "cause_type": "order",
         "cause_id": "x3"},
    ]
    for row in bad:
        with pytest.raises(IntegrityError):
            uow.c.execute(loyalty_entries.insert().values(**base, **row))
        uow.rollback()
    for stmt in (loyalty_lots.update().values(remaining=-1),
                 loyalty_lots.update().values(remaining=loyalty_lots.c.points + 1),
                 loyalty_members.update().values(points_available=-1),
                 loyalty_members.update().values(points_owed=5)):  # owed while holding points
        with pytest.raises(IntegrityError):
            uow.c.execute(stmt)
        uow.rollback()
    clean(uow)


@pytest.mark.parametrize("size", [2000])
def test_a_chunk_of_orders_costs_the_same_few_statements_whatever_its_size(uow, club,
                                                                          monkeypatch, size):
    from patron.loyalty import hooks

    # 2,000 customers, then every one of them a member.
    phones = [f"1380000{i:04d}" for i in range(size)]
    record_orders(uow=uow, orders_in=[order(f"C{i}", at=START - DAY,
                                            identifiers={"phone": p})
                                      for i, p in enumerate(phones)],
                  source="import", actor=SYSTEM, now=START, audit_each=False)
    from patron.customers.tables import identities

    customer_ids = uow.c.execute(select(identities.c.customer_id).where(
        identities.c.kind == "phone")).scalars().all()
    bulk_insert(uow.c, loyalty_members, [{
        "program_id": club["id"], "customer_id": int(c), "member_code": f"M{c}",
        "status": "active", "enrolled_at": START, "enrolled_channel": "api",
        "updated_at": START} for c in customer_ids])
    uow.commit()
    counts = []
    real = hooks.earn_for_orders

    def counting(conn, recorded, **kw):
        seen = []

        def count(*_a):
            seen.append(1)

        event.listen(conn, "before_cursor_execute", count)
        try:
            return real(conn, recorded, **kw)
        finally:
            event.remove(conn, "before_cursor_execute", count)
            counts.append((len(recorded), len(seen)))

    monkeypatch.setattr(hooks, "earn_for_orders", counting)
    for n, tag in ((20, "A"), (size, "B")):
        record_orders(uow=uow, orders_in=[order(f"{tag}{i}", at=T0, identifiers={"phone": p})
                                          for i, p in enumerate(phones[:n])],
                      source="import", actor=SYSTEM, now=T0 + HOUR, audit_each=False)
    (small, q_small), (large, q_large) = counts
    assert (small, large) == (20, size)
    assert q_large == q_small and q_large <= 20, counts
    total = uow.c.execute(select(func.sum(loyalty_members.c.points_available))).scalar_one()
    assert total == (20 + size) * 71
    clean(uow)
