"""The rewards catalog on SQLite and PostgreSQL: a redemption holds points and stock together,
is fulfilled or cancelled or expires by itself, never oversells, respects per-member and
per-period limits and the validity window, and leaves the ledger and the stock verifying."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from patron.errors import Conflict, ValidationFailed
from patron.loyalty import service as loyalty
from patron.loyalty.verify import verify
from patron.rewards import service
from patron.rewards.schemas import ItemUpdate
from patron.rewards.tables import rewards_items
from patron.security.model import SYSTEM
from tests.loyalty_factories import points
from tests.rewards_factories import NOW, add_item, redeem, setup_program, stock

A, B = "13800000001", "13800000002"


def clean(uow) -> None:
    assert verify(uow.c)["differences"] == []
    assert service.verify_stock(uow.c, NOW + dt.timedelta(days=400)) == []


def test_a_redemption_holds_points_and_stock_together_and_fulfilment_spends_them(uow):
    m = setup_program(uow, {A: 500})[A]
    item = add_item(uow, points_price=120, cash_price="9.90")
    r = redeem(uow, item["id"], m, "till-1", quantity=2)
    assert (r["status"], r["points"], r["cash"]) == ("held", 240, Decimal("19.80"))
    assert points(uow, m)["available"] == 260 and points(uow, m)["held"] == 240
    assert stock(uow, item["id"]) == {"stock": 5, "reserved": 2, "sold": 0}
    done = service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    assert done["status"] == "fulfilled"
    assert points(uow, m)["available"] == 260 and points(uow, m)["held"] == 0
    assert stock(uow, item["id"]) == {"stock": 5, "reserved": 0, "sold": 2}
    again = service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    assert again["replayed"] and stock(uow, item["id"])["sold"] == 2
    with pytest.raises(Conflict, match="redemption_fulfilled"):
        service.cancel(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    clean(uow)


def test_cancelling_a_redemption_gives_back_the_points_and_the_stock(uow):
    m = setup_program(uow, {A: 500})[A]
    item = add_item(uow)
    r = redeem(uow, item["id"], m, "till-1")
    out = service.cancel(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    assert out["status"] == "cancelled" and out["balance"] == {"available": 500, "held": 0}
    assert stock(uow, item["id"]) == {"stock": 5, "reserved": 0, "sold": 0}
    assert service.cancel(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)["replayed"]
    with pytest.raises(Conflict, match="redemption_not_open"):
        service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    assert points(uow, m)["available"] == 500
    clean(uow)


def test_a_retried_redemption_holds_once_and_another_request_under_its_key_is_refused(uow):
    m = setup_program(uow, {A: 500})[A]
    item = add_item(uow)
    first = redeem(uow, item["id"], m, "till-1")
    retry = redeem(uow, item["id"], m, "till-1")
    assert retry["replayed"] and retry["id"] == first["id"]
    assert points(uow, m)["held"] == 100 and stock(uow, item["id"])["reserved"] == 1
    with pytest.raises(Conflict, match="idempotency_key_reused"):
        redeem(uow, item["id"], m, "till-1", quantity=2)
    clean(uow)


def test_the_last_unit_cannot_be_sold_twice(uow):
    members = setup_program(uow, {A: 500, B: 500})
    item = add_item(uow, stock=1)
    redeem(uow, item["id"], members[A], "a-1")
    with pytest.raises(Conflict, match="reward_out_of_stock") as exc:
        redeem(uow, item["id"], members[B], "b-1")
    assert exc.value.params == {"wanted": 1, "available": 0}
    assert points(uow, members[B])["held"] == 0  # nothing held for the refused redemption
    clean(uow)


def test_the_database_refuses_an_oversold_item_whatever_the_code_does(uow):
    setup_program(uow, {A: 0})
    item = add_item(uow, stock=3)
    with pytest.raises(IntegrityError):
        uow.c.execute(update(rewards_items).where(rewards_items.c.id == item["id"])
                      .values(reserved=2, sold=2))
    uow.rollback()


def test_without_enough_points_no_stock_is_reserved(uow):
    m = setup_program(uow, {A: 150})[A]
    item = add_item(uow, stock=5)
    with pytest.raises(Conflict, match="insufficient_points"):
        redeem(uow, item["id"], m, "till-1", quantity=2)
    assert stock(uow, item["id"])["reserved"] == 0 and points(uow, m)["available"] == 150
    clean(uow)


def test_a_member_cannot_take_more_than_the_per_member_limit(uow):
    m = setup_program(uow, {A: 1000})[A]
    item = add_item(uow, limit_per_member=2)
    redeem(uow, item["id"], m, "k1")
    r2 = redeem(uow, item["id"], m, "k2")
    with pytest.raises(Conflict, match="reward_limit_reached"):
        redeem(uow, item["id"], m, "k3")
    # A cancelled redemption no longer counts.
    service.cancel(uow=uow, actor=SYSTEM, redemption_id=r2["id"], now=NOW)
    assert redeem(uow, item["id"], m, "k4")["status"] == "held"
    clean(uow)


def test_a_monthly_limit_resets_at_local_midnight_of_the_first(uow):
    m = setup_program(uow, {A: 1000})[A]
    item = add_item(uow, limit_per_period=1, limit_period="month")
    # 2026-03-31 23:30 in Shanghai, then 2026-04-01 00:10 in Shanghai
    late_march = dt.datetime(2026, 3, 31, 15, 30, tzinfo=dt.UTC)
    r = redeem(uow, item["id"], m, "k1", now=late_march)
    service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=late_march)
    with pytest.raises(Conflict, match="reward_period_limit_reached"):
        redeem(uow, item["id"], m, "k2", now=late_march + dt.timedelta(minutes=20))
    april = dt.datetime(2026, 3, 31, 16, 10, tzinfo=dt.UTC)
    assert redeem(uow, item["id"], m, "k3", now=april)["status"] == "held"


def test_an_item_outside_its_validity_or_inactive_cannot_be_redeemed(uow):
    m = setup_program(uow, {A: 1000})[A]
    later = add_item(uow, "LATER", valid_from=(NOW + dt.timedelta(days=1)).isoformat())
    gone = add_item(uow, "GONE", valid_until=(NOW - dt.timedelta(days=1)).isoformat())
    off = add_item(uow, "OFF", active=False)
    for item, reason in ((later, "reward_not_yet_valid"), (gone, "reward_validity_ended"),
                         (off, "reward_inactive")):
        with pytest.raises(Conflict, match=reason):
            redeem(uow, item["id"], m, f"k-{item['code']}")
    assert points(uow, m)["held"] == 0


def test_an_unfulfilled_redemption_expires_by_itself_and_gives_the_stock_back(uow):
    members = setup_program(uow, {A: 500, B: 500})
    item = add_item(uow, stock=1, hold_minutes=10)
    r = redeem(uow, item["id"], members[A], "a-1")
    assert r["hold_expires_at"] == NOW + dt.timedelta(minutes=10)
    later = NOW + dt.timedelta(minutes=11)
    assert service.get_item(uow.c, actor=SYSTEM, item_id=item["id"], now=NOW)["available"] == 0
    assert service.get_item(uow.c, actor=SYSTEM, item_id=item["id"],
                            now=NOW + dt.timedelta(minutes=11))["available"] == 1
    stats = service.expire_due(uow=uow, actor=SYSTEM, now=later)
    assert stats == {"redemptions_expired": 1, "units_returned": 1}
    assert points(uow, members[A])["available"] == 500 and points(uow, members[A])["held"] == 0
    assert stock(uow, item["id"])["reserved"] == 0
    with pytest.raises(Conflict, match="redemption_not_open"):
        service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=later)
    assert service.expire_due(uow=uow, actor=SYSTEM, now=later)["redemptions_expired"] == 0
    assert redeem(uow, item["id"], members[B], "b-1", now=later)["status"] == "held"
    clean(uow)


def test_fulfilling_after_the_hold_time_refuses_and_returns_points_and_stock(uow):
    m = setup_program(uow, {A: 500})[A]
    item = add_item(uow, hold_minutes=5)
    r = redeem(uow, item["id"], m, "a-1")
    with pytest.raises(Conflict, match="redemption_expired"):
        service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"],
                       now=NOW + dt.timedelta(minutes=6))
    assert points(uow, m)["available"] == 500 and stock(uow, item["id"])["reserved"] == 0
    clean(uow)


def test_units_of_lapsed_redemptions_go_to_the_next_member_before_any_job_runs(uow):
    members = setup_program(uow, {A: 500, B: 500})
    item = add_item(uow, stock=1, hold_minutes=5)
    ra = redeem(uow, item["id"], members[A], "a-1")
    later = NOW + dt.timedelta(minutes=6)
    assert service.get_item(uow.c, actor=SYSTEM, item_id=item["id"], now=NOW)["available"] == 0
    rb = redeem(uow, item["id"], members[B], "b-1", now=later)
    assert rb["status"] == "held" and stock(uow, item["id"])["reserved"] == 1
    assert service.get_redemption(uow.c, actor=SYSTEM, redemption_id=ra["id"])["status"] == \
        "expired"
    # A's points come back with the job (or A's next operation), never spent.
    service.expire_due(uow=uow, actor=SYSTEM, now=later)
    assert points(uow, members[A])["available"] == 500
    service.fulfil(uow=uow, actor=SYSTEM, redemption_id=rb["id"], now=later)
    assert stock(uow, item["id"]) == {"stock": 1, "reserved": 0, "sold": 1}
    clean(uow)


def test_stock_cannot_be_lowered_below_the_units_held_and_sold(uow):
    m = setup_program(uow, {A: 1000})[A]
    item = add_item(uow, stock=5)
    r = redeem(uow, item["id"], m, "k1", quantity=2)
    service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    redeem(uow, item["id"], m, "k2")
    with pytest.raises(ValidationFailed) as exc:
        service.update_item(uow=uow, actor=SYSTEM, item_id=item["id"],
                            changes=ItemUpdate(stock=2))
    assert exc.value.fields[0].reason == "stock_below_committed"
    out = service.update_item(uow=uow, actor=SYSTEM, item_id=item["id"],
                              changes=ItemUpdate(stock=3, points_price=200), now=NOW)
    assert (out["stock"], out["available"], out["points_price"]) == (3, 0, 200)


def test_a_new_price_applies_to_new_redemptions_only(uow):
    m = setup_program(uow, {A: 1000})[A]
    item = add_item(uow, points_price=100)
    first = redeem(uow, item["id"], m, "k1")
    service.update_item(uow=uow, actor=SYSTEM, item_id=item["id"],
                        changes=ItemUpdate(points_price=300))
    second = redeem(uow, item["id"], m, "k2")
    service.fulfil(uow=uow, actor=SYSTEM, redemption_id=first["id"], now=NOW)
    assert (first["points"], second["points"]) == (100, 300)
    assert points(uow, m)["available"] == 600
    clean(uow)


def test_a_member_of_another_program_cannot_redeem(uow):
    setup_program(uow, {A: 1000})
    from patron.org import service as org
    from tests.loyalty_factories import enrol, make_program

    org.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Tea")
    make_program(uow, code="TT", brand="B2")
    other = enrol(uow, B, program="TT")
    item = add_item(uow)
    with pytest.raises(ValidationFailed) as exc:
        redeem(uow, item["id"], other["id"], "k1")
    assert exc.value.fields[0].reason == "member_not_in_program"


def test_a_hold_released_outside_the_catalog_cannot_be_fulfilled_and_frees_the_stock(uow):
    m = setup_program(uow, {A: 500})[A]
    item = add_item(uow)
    r = redeem(uow, item["id"], m, "k1")
    loyalty.release_hold(uow=uow, actor=SYSTEM, hold_id=r["hold_id"], now=NOW)
    with pytest.raises(Conflict, match="redemption_not_open"):
        service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"], now=NOW)
    assert stock(uow, item["id"])["reserved"] == 0 and points(uow, m)["available"] == 500
    clean(uow)
