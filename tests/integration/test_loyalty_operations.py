"""Enrolment, consent, redemptions, holds, adjustments, transfers, the daily job, tier reviews,
manual grants and ledger verification, on SQLite and PostgreSQL."""

import datetime as dt
import json

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from patron.customers.tables import customers
from patron.errors import Conflict, Forbidden, NotFound, ValidationFailed
from patron.loyalty import queries, service
from patron.loyalty.jobs import review_tiers, run_due
from patron.loyalty.schemas import (
    AdjustIn,
    ConsentIn,
    EnrolIn,
    HoldIn,
    ProgramIn,
    RedeemIn,
    TierGrantIn,
    TransferIn,
)
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_entries,
    loyalty_lots,
    loyalty_members,
    loyalty_operations,
    loyalty_tier_history,
)
from patron.loyalty.verify import verify
from patron.messaging.tables import messages
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import T0, make_org, order
from tests.loyalty_factories import buy, enrol, make_program, member_row, points

SEC = dt.timedelta(seconds=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
NOW = T0 + 2 * HOUR


@pytest.fixture
def club(uow):
    make_org(uow)
    return make_program(uow)


@pytest.fixture
def member(uow, club):
    m = enrol(uow)
    buy(uow, "O1")  # 71 points
    return m


def redeem(uow, member_id, pts, key, now=NOW, actor=SYSTEM, store="SH01"):
    return service.redeem(uow=uow, actor=actor, member_id=member_id,
                          body=RedeemIn(idempotency_key=key, points=pts, store=store), now=now)


def hold(uow, member_id, pts, key, now=NOW, minutes=None):
    return service.hold(uow=uow, actor=SYSTEM, member_id=member_id,
                        body=HoldIn(idempotency_key=key, points=pts, store="SH01",
                                    minutes=minutes), now=now)


def clean(uow):
    assert verify(uow.c)["differences"] == []


# --- enrolment and consent ------------------------------------------------------------------

def test_enrolment_by_phone_creates_the_customer_and_a_member_code_that_orders_resolve(uow,
                                                                                     club):
    m = enrol(uow, "+86 138-1234-5678", name="王小明")
    assert m["phone"] == "138****5678" and m["tier"]["code"] == "SILVER"
    code = m["member_code"]
    assert code.isdigit() and len(code) == 11
    c = uow.c.execute(select(customers).where(customers.c.id == m["customer_id"])
                      ).mappings().one()
    assert (c["phone"], c["is_member"], c["member_code"]) == ("+8613812345678", True, code)
    # A till that only knows the member code records an order: it finds the same profile.
    (out,) = record_orders(uow=uow, orders_in=[order("MC1", identifiers={"member_code": code})],
                           source="api", actor=SYSTEM, now=T0)
    assert out.customer_id == m["customer_id"]
    assert points(uow, m["id"])["available"] == 71
    # Enrolling again changes nothing and returns the membership.
    again, created = service.enrol(uow=uow, actor=SYSTEM, program_code="BB",
                                   body=EnrolIn.model_validate({
                                       "phone": "13812345678",
                                       "privacy": {"version": "2026-01"}}))
    assert (created, again["id"]) == (False, m["id"])
    assert uow.c.execute(select(func.count()).select_from(loyalty_members)).scalar_one() == 1


def test_enrolment_needs_the_current_privacy_policy_and_a_valid_phone(uow, club):
    with pytest.raises(ValidationFailed) as exc:
        enrol(uow, privacy={"version": "2025-01"})
    assert (exc.value.fields[0].field, exc.value.fields[0].reason) == (
        "privacy.version", "privacy_version_outdated")
    with pytest.raises(ValidationFailed) as exc:
        enrol(uow, "12345")
    assert exc.value.fields[0].field == "phone"


def test_a_customer_can_belong_to_several_brands_programs(uow, club):
    from patron.org import service as org

    org.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Tea Time")
    make_program(uow, code="TT", brand="B2")
    a = enrol(uow)
    b = enrol(uow, program="TT")
    assert a["customer_id"] == b["customer_id"] and a["member_code"] != b["member_code"]


def test_consent_is_revocable_and_its_history_kept(uow, club):
    m = enrol(uow, marketing={"sms": True})
    assert m["consents"]["sms"]["granted"] is True
    now = service.record_consent(uow=uow, actor=SYSTEM, member_id=m["id"],
                                 body=ConsentIn(kind="sms", granted=False, source="app"))
    assert now["sms"]["granted"] is False and now["sms"]["source"] == "app"
    history = queries.consent_history(uow.c, actor=SYSTEM, member_id=m["id"])
    assert [(h["kind"], h["granted"]) for h in history if h["kind"] == "sms"] == [
        ("sms", True), ("sms", False)]
    assert history[0] == {**history[0], "kind": "privacy", "granted": True,
                          "version": "2026-01"}
    actions = uow.c.execute(select(audit_log.c.action).where(
        audit_log.c.action.like("loyalty.consent%"))).scalars().all()
    assert actions == ["loyalty.consent_withdrawn"]
    # Withdrawing privacy consent is recorded too (what follows from it is the data
    # protection work's business).
    service.record_consent(uow=uow, actor=SYSTEM, member_id=m["id"],
                           body=ConsentIn(kind="privacy", granted=False))
    assert uow.c.execute(select(func.count()).select_from(loyalty_consents)).scalar_one() == 7


# --- redemption and idempotency -------------------------------------------------------------

def test_redemption_spends_soonest_expiring_points_first_for_their_value(uow, member):
    buy(uow, "O2", at=T0 - 30 * DAY, now=T0)  # an older lot: expires sooner
    out = redeem(uow, member["id"], 100, "r-1")
    assert out["status"] == "done" and str(out["value"]) == "1.00"  # 100 points per yuan
    lots = uow.c.execute(select(loyalty_lots.c.earned_at, loyalty_lots.c.remaining)
                         .order_by(loyalty_lots.c.earned_at)).all()
    assert [r.remaining for r in lots] == [0, 42]  # 71 from the older lot, 29 from the newer
    clean(uow)


def test_the_balance_does_not_collapse_at_expiry_after_spending(uow, member):
    buy(uow, "O2", at=T0 + 300 * DAY)
    redeem(uow, member["id"], 100, "r-1", now=T0 + 301 * DAY)  # 71 of O1's lot, 29 of O2's
    stats = run_due(uow=uow, actor=SYSTEM, now=T0 + 366 * DAY)  # O1's lot expires: empty
    assert stats["points_expired"] == 0
    assert points(uow, member["id"])["available"] == 42
    clean(uow)


def test_points_held_for_one_document_cannot_be_spent_by_another(uow, member):
    other = enrol(uow, "13900000009")
    hold(uow, member["id"], 71, "pos-hold-1")
    with pytest.raises(Conflict):
        redeem(uow, member["id"], 1, "online-redeem-1")
    uow.rollback()
    with pytest.raises(Conflict):
        service.transfer(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                         body=TransferIn(idempotency_key="t", to_member_id=other["id"],
                                         points=1, reason="gift"))
    uow.rollback()
    assert points(uow, member["id"]) == {**points(uow, member["id"]), "available": 0,
                                         "held": 71}
    clean(uow)


def test_a_retried_redemption_returns_the_first_result_and_spends_once(uow, member):
    first = redeem(uow, member["id"], 50, "till-7-0001")
    again = redeem(uow, member["id"], 50, "till-7-0001")
    assert again["id"] == first["id"] and again["replayed"] is True
    assert points(uow, member["id"])["available"] == 21
    with pytest.raises(Conflict) as exc:
        redeem(uow, member["id"], 51, "till-7-0001")
    assert exc.value.message == "idempotency_key_reused"
    clean(uow)


def test_redeeming_more_than_the_balance_is_refused_and_writes_nothing(uow, member):
    with pytest.raises(Conflict) as exc:
        redeem(uow, member["id"], 72, "r-1")
    assert exc.value.params == {"wanted": 72, "available": 71}
    uow.rollback()
    assert uow.c.execute(select(func.count()).select_from(loyalty_operations)).scalar_one() == 0
    assert points(uow, member["id"])["available"] == 71


def test_expired_points_cannot_be_spent_even_before_the_expiry_job_runs(uow, member):
    with pytest.raises(Conflict):
        redeem(uow, member["id"], 1, "late", now=T0 + 400 * DAY)
    uow.rollback()
    out = queries.balance(uow.c, actor=SYSTEM, member_id=member["id"], now=T0 + 400 * DAY)
    assert (out["available"], out["spendable"]) == (71, 0)  # not yet swept, not spendable
    assert out["lots"][0]["state"] == "expired"


def test_a_cashier_redeems_only_for_a_store_of_theirs(uow, member, club):
    cashier = Actor(type="user", id=9, name="cashier", role="cashier",
                    store_ids=frozenset({999_999}))  # another store
    with pytest.raises(ValidationFailed) as exc:
        redeem(uow, member["id"], 10, "c-1", actor=cashier)
    assert exc.value.fields[0].reason == "store_out_of_scope"
    with pytest.raises(ValidationFailed) as exc:
        redeem(uow, member["id"], 10, "c-2", actor=cashier, store=None)
    assert exc.value.fields[0].reason == "store_required_in_scope"
    analyst = Actor(type="user", id=8, name="analyst", role="analyst")
    with pytest.raises(Forbidden):
        redeem(uow, member["id"], 10, "c-3", actor=analyst)


# --- holds ----------------------------------------------------------------------------------

def test_a_hold_then_commit_redeems_once(uow, member):
    h = hold(uow, member["id"], 30, "h-1")
    assert h["status"] == "held" and points(uow, member["id"])["held"] == 30
    assert points(uow, member["id"])["available"] == 41
    done = service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=NOW)
    again = service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=NOW)
    assert done["status"] == again["status"] == "committed"
    assert points(uow, member["id"])["held"] == 0 and points(uow, member["id"])["available"] == 41
    with pytest.raises(Conflict):
        service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=NOW)
    clean(uow)


def test_a_released_hold_gives_the_points_back_to_their_lots(uow, member):
    h = hold(uow, member["id"], 30, "h-1")
    service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=NOW)
    assert points(uow, member["id"])["available"] == 71
    with pytest.raises(Conflict):
        service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=NOW)
    kinds = uow.c.execute(select(loyalty_entries.c.kind, loyalty_entries.c.bucket,
                                 loyalty_entries.c.points)
                          .where(loyalty_entries.c.kind.in_(("hold", "release")))
                          .order_by(loyalty_entries.c.id)).all()
    assert [tuple(k) for k in kinds] == [("hold", "available", -30), ("hold", "held", 30),
                                         ("release", "held", -30),
                                         ("release", "available", 30)]
    clean(uow)


def test_a_hold_expires_by_itself_and_cannot_be_committed_after(uow, member):
    h = hold(uow, member["id"], 30, "h-1", minutes=10)
    with pytest.raises(Conflict) as exc:
        service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=NOW + 11 * 60 * SEC)
    assert exc.value.message == "hold_expired"
    assert points(uow, member["id"]) == {**points(uow, member["id"]), "available": 71, "held": 0}
    op = uow.c.execute(select(loyalty_operations.c.status)).scalar_one()
    assert op == "expired"
    # The daily job releases holds nobody touched.
    h2 = hold(uow, member["id"], 20, "h-2", now=NOW + HOUR)
    stats = run_due(uow=uow, actor=SYSTEM, now=NOW + 2 * HOUR)
    assert stats["holds_expired"] == 1 and points(uow, member["id"])["held"] == 0
    assert service.release_hold(uow=uow, actor=SYSTEM, hold_id=h2["id"],
                                now=NOW + 3 * HOUR)["status"] == "expired"
    clean(uow)



# --- adjustments and transfers --------------------------------------------------------------

def test_manual_adjustments_need_the_permission_and_a_reason_and_are_audited(uow, member):
    cashier = Actor(type="user", id=9, name="cashier", role="cashier")
    body = AdjustIn(idempotency_key="adj-1", points=50, reason="coffee machine broke")
    with pytest.raises(Forbidden):
        service.adjust(uow=uow, actor=cashier, member_id=member["id"], body=body, now=NOW)
    with pytest.raises(Exception):  # noqa: B017 - pydantic refuses a missing reason
        AdjustIn(idempotency_key="adj-2", points=5, reason="")
    out = service.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], body=body, now=NOW)
    assert out["reason"] == "coffee machine broke" and points(uow, member["id"])["available"] == 121
    service.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                   body=AdjustIn(idempotency_key="adj-3", points=-100, reason="fraud"))
    assert points(uow, member["id"])["available"] == 21
    with pytest.raises(Conflict):
        service.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                       body=AdjustIn(idempotency_key="adj-4", points=-22, reason="too much"))
    uow.rollback()
    audited = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "loyalty.adjust").order_by(audit_log.c.id)).scalars().all()
    assert [a["reason"] for a in audited] == ["coffee machine broke", "fraud"]
    reasons = uow.c.execute(select(loyalty_entries.c.reason).where(
        loyalty_entries.c.kind == "adjust").order_by(loyalty_entries.c.id)).scalars().all()
    assert reasons == ["coffee machine broke", "fraud"]
    clean(uow)


def test_a_growth_adjustment_upgrades_at_once(uow, member, club):
    service.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                   body=AdjustIn(idempotency_key="g-1", points=929, bucket="growth",
                                 reason="anniversary bonus"))
    gold = next(t for t in club["tiers"] if t["code"] == "GOLD")
    assert member_row(uow, member["id"])["tier_id"] == gold["id"]
    clean(uow)


def test_a_transfer_keeps_the_points_expiry_dates(uow, member):
    other = enrol(uow, "13900000009")
    service.transfer(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                     body=TransferIn(idempotency_key="t-1", to_member_id=other["id"],
                                     points=40, reason="family"))
    assert points(uow, member["id"])["available"] == 31
    assert points(uow, other["id"])["available"] == 40
    expiries = uow.c.execute(select(loyalty_lots.c.expires_at).order_by(loyalty_lots.c.id)
                             ).scalars().all()
    assert expiries[0] == expiries[1]
    with pytest.raises(ValidationFailed):
        service.transfer(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                         body=TransferIn(idempotency_key="t-2", to_member_id=member["id"],
                                         points=1, reason="self"))
    clean(uow)


# --- the daily job ----------------------------------------------------------------------------

def test_the_daily_job_expires_lots_and_reminds_members_once_before(uow, club):
    m = enrol(uow, marketing={"sms": True, "wechat": True})
    buy(uow, "O1")  # expires 2027-03-02 10:30 in Shanghai
    run_due(uow=uow, actor=SYSTEM, now=T0 + 300 * DAY)  # 30 days' notice: not yet
    assert uow.c.execute(select(func.count()).select_from(messages)).scalar_one() == 0
    stats = run_due(uow=uow, actor=SYSTEM, now=T0 + 340 * DAY)
    again = run_due(uow=uow, actor=SYSTEM, now=T0 + 341 * DAY)
    assert (stats["reminders"], again["reminders"]) == (1, 0)
    # Queued in the message outbox, on the member's preferred consented channel.
    msg = uow.c.execute(select(messages)).mappings().one()
    assert msg["template"] == "points_expiring" and msg["customer_id"] == m["customer_id"]
    assert msg["purpose"] == "marketing" and msg["channel"] == "wechat"
    assert msg["dedupe_key"] == f"points_expiring:{m['id']}:2027-03-02"
    assert msg["variables"]["points"] == 71 and msg["variables"]["expires_on"] == "2027-03-02"
    assert "71" in msg["body"] and "2027-03-02" in msg["body"]
    stats = run_due(uow=uow, actor=SYSTEM, now=T0 + 366 * DAY)
    assert stats["points_expired"] == 71 and points(uow, m["id"])["available"] == 0
    assert run_due(uow=uow, actor=SYSTEM, now=T0 + 367 * DAY)["points_expired"] == 0
    clean(uow)


def test_points_expire_under_end_of_next_year(uow):
    make_org(uow)
    make_program(uow, expiry_mode="end_of_next_year")
    m = enrol(uow)
    buy(uow, "O1")
    new_year_2028 = dt.datetime(2027, 12, 31, 16, 0, tzinfo=dt.UTC)
    run_due(uow=uow, actor=SYSTEM, now=new_year_2028 - SEC)
    assert points(uow, m["id"])["available"] == 71
    run_due(uow=uow, actor=SYSTEM, now=new_year_2028)
    assert points(uow, m["id"])["available"] == 0
    clean(uow)


def test_a_program_refuses_a_lifetime_of_decades(uow, club):
    from pydantic import ValidationError
    from sqlalchemy.exc import IntegrityError

    from patron.loyalty.tables import loyalty_programs

    with pytest.raises(ValidationError):
        ProgramIn.model_validate({"code": "X", "brand": "B1", "name": "x",
                                  "privacy_version": "1", "expiry_months": 324})
    with pytest.raises(IntegrityError):
        uow.c.execute(update(loyalty_programs).values(expiry_months=324))


# --- tiers ------------------------------------------------------------------------------------

def _tier(uow, member_id, club):
    tier_id = member_row(uow, member_id)["tier_id"]
    return next(t["code"] for t in club["tiers"] if t["id"] == tier_id)


def test_the_review_downgrades_by_at_most_one_level_after_the_grace_period(uow, club):
    m = enrol(uow)
    service.adjust(uow=uow, actor=SYSTEM, member_id=m["id"], now=T0,
                   body=AdjustIn(idempotency_key="g", points=6000, bucket="growth",
                                 reason="migration"))
    assert _tier(uow, m["id"], club) == "PLATINUM"
    service.adjust(uow=uow, actor=SYSTEM, member_id=m["id"], now=T0 + HOUR,
                   body=AdjustIn(idempotency_key="g2", points=-6000, bucket="growth",
                                 reason="correction"))
    assert _tier(uow, m["id"], club) == "PLATINUM"  # never down between reviews
    stats = review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 100 * DAY)
    assert stats["kept_by_grace"] == 1 and _tier(uow, m["id"], club) == "PLATINUM"
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 366 * DAY)
    assert _tier(uow, m["id"], club) == "GOLD"  # one level at a time
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 500 * DAY)
    assert _tier(uow, m["id"], club) == "GOLD"  # GOLD's own grace runs from its review
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 733 * DAY)
    assert _tier(uow, m["id"], club) == "SILVER"
    reasons = uow.c.execute(select(loyalty_tier_history.c.reason).where(
        loyalty_tier_history.c.member_id == m["id"]).order_by(loyalty_tier_history.c.id)
    ).scalars().all()
    assert reasons == ["enrol", "upgrade", "downgrade", "downgrade"]
    clean(uow)


def test_tiers_come_from_growth_value_not_the_spendable_balance(uow, club):
    m = enrol(uow)
    big = [{"sku": "BEANS", "category": "coffee", "quantity": "40", "unit_price": "25.00"}]
    buy(uow, "BIG", lines=big)
    redeem(uow, m["id"], 1000, "spend-all")
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 400 * DAY)
    assert points(uow, m["id"])["available"] == 0
    assert _tier(uow, m["id"], club) == "GOLD"  # growth 1,000 still qualifies


def test_spend_based_tiers_use_the_rolling_twelve_months(uow):
    make_org(uow)
    club = make_program(uow, tier_basis="spend_12m", tier_grace_days=0)
    m = enrol(uow)
    big = [{"sku": "BEANS", "category": "coffee", "quantity": "40", "unit_price": "25.00"}]
    buy(uow, "BIG", lines=big)  # 1,000.00: GOLD's minimum spend exactly
    assert _tier(uow, m["id"], club) == "GOLD"
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 364 * DAY)
    assert _tier(uow, m["id"], club) == "GOLD"
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 366 * DAY)  # the purchase left the window
    assert _tier(uow, m["id"], club) == "SILVER"


def test_a_manually_granted_tier_ends_on_its_date(uow, club):
    m = enrol(uow)
    service.grant_tier(uow=uow, actor=SYSTEM, member_id=m["id"], now=T0,
                       body=TierGrantIn(tier="PLATINUM", until=T0 + 30 * DAY,
                                        reason="VIP guest of the founder"))
    assert _tier(uow, m["id"], club) == "PLATINUM"
    review_tiers(uow=uow, actor=SYSTEM, as_of=T0 + 10 * DAY)
    assert _tier(uow, m["id"], club) == "PLATINUM"
    stats = run_due(uow=uow, actor=SYSTEM, now=T0 + 31 * DAY)
    assert stats["manual_tiers_ended"] == 1 and _tier(uow, m["id"], club) == "SILVER"
    assert member_row(uow, m["id"])["tier_manual_until"] is None
    history = queries.tier_history(uow.c, actor=SYSTEM, member_id=m["id"])
    assert [(h["from"], h["to"], h["reason"]) for h in history] == [
        (None, "SILVER", "enrol"), ("SILVER", "PLATINUM", "manual_grant"),
        ("PLATINUM", "SILVER", "manual_end")]
    with pytest.raises(ValidationFailed):
        service.grant_tier(uow=uow, actor=SYSTEM, member_id=m["id"], now=T0 + 40 * DAY,
                           body=TierGrantIn(tier="SILVER", until=T0 + 90 * DAY, reason="noop"))
    clean(uow)


# --- verification -----------------------------------------------------------------------------

def test_verify_reports_every_tampered_figure_lot_and_tier(uow, member, club):
    assert verify(uow.c)["differences"] == []
    uow.c.execute(update(loyalty_members).values(points_available=1000))
    uow.c.execute(update(loyalty_lots).values(remaining=1))
    gold = next(t for t in club["tiers"] if t["code"] == "GOLD")
    uow.c.execute(update(loyalty_members).values(tier_id=gold["id"]))
    checks = {d["check"] for d in verify(uow.c)["differences"]}
    assert {"member_figures", "lot_remaining", "lots_cover_figures", "tier_history"} <= checks


def test_the_ledger_verify_command_exits_1_on_a_difference(uow, member, db_url):
    from patron.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["differences"] == 0
    uow.c.execute(update(loyalty_members).values(growth_value=5))
    uow.commit()
    result = runner.invoke(app, ["ledger", "verify"])
    assert result.exit_code == 1
    assert json.loads(result.output)["first"][0]["check"] == "member_figures"


def test_the_job_commands_print_what_they_did(uow, member, db_url):
    from patron.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["loyalty", "expire", "--now", "2027-03-03T00:00:00+08:00"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["points_expired"] == 71
    result = runner.invoke(app, ["loyalty", "review-tiers", "--as-of", "2027-03-03"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["members"] == 1
    assert runner.invoke(app, ["loyalty", "expire", "--now", "soon"]).exit_code == 2


def test_a_manager_sees_only_members_of_their_stores(uow, member):
    from patron.org import service as org
    from patron.org.tables import stores

    other = org.create_store(uow=uow, actor=SYSTEM, code="HZ01", name="杭州店", brand_id=1)
    sh01 = uow.c.execute(select(stores.c.id).where(stores.c.code == "SH01")).scalar_one()
    elsewhere = Actor(type="user", id=7, name="mgr", role="manager",
                      store_ids=frozenset({other}))
    with pytest.raises(NotFound):
        queries.ledger(uow.c, actor=elsewhere, member_id=member["id"])
    assert queries.list_members(uow.c, actor=elsewhere, program="BB")["total"] == 0
    here = Actor(type="user", id=7, name="mgr", role="manager", store_ids=frozenset({sh01}))
    assert queries.ledger(uow.c, actor=here, member_id=member["id"])["total"] == 2
    assert queries.list_members(uow.c, actor=here, program="BB")["total"] == 1
