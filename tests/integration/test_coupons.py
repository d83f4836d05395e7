"""Coupons on SQLite and PostgreSQL: templates and their versions, issuing under limits and
budgets, evaluation, redemption exactly once, two-phase holds, restoring on refund, the liability
report and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from patron.coupons import service
from patron.coupons.model import Line
from patron.coupons.schemas import BasketIn, TemplateIn, TemplateUpdate
from patron.coupons.tables import coupon_operations, coupon_templates, coupon_uses, coupons
from patron.db import utcnow
from patron.errors import Conflict, Forbidden, ValidationFailed
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.coupon_factories import basket, coupon_row, give, hold, make_template, redeem
from tests.factories import make_org, order
from tests.loyalty_factories import enrol, give_back, make_program

MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)


@pytest.fixture
def club(uow):
    ids = make_org(uow)
    make_program(uow)
    return ids


@pytest.fixture
def members(uow, club):
    return [enrol(uow, p)["id"] for p in ("13812345678", "13812345679", "13812345670")]


def codes_of(issue):
    return [c["code"] for c in issue["coupons"]]


# --- templates and issuing ------------------------------------------------------------------------

def test_issuing_to_a_list_is_idempotent_per_request_key(uow, members):
    tpl = make_template(uow)
    first = give(uow, tpl["id"], members, "campaign-1")
    assert first["issued"] == 3 and len(set(codes_of(first))) == 3
    again = give(uow, tpl["id"], members, "campaign-1")
    assert again["replayed"] and codes_of(again) == codes_of(first)
    with pytest.raises(Conflict) as exc:
        give(uow, tpl["id"], members[:2], "campaign-1")
    assert exc.value.message == "idempotency_key_reused"
    uow.rollback()
    assert uow.c.execute(select(func.count()).select_from(coupons)).scalar_one() == 3
    row = uow.c.execute(select(coupon_templates)).mappings().one()
    assert row["issued_count"] == 3 and row["issued_value"] == Decimal("30.00")


def test_the_per_member_limit_gives_what_is_left_and_reports_the_rest(uow, members):
    tpl = make_template(uow, limits={"per_member_limit": 2})
    out = give(uow, tpl["id"], members[:1], "k1", quantity=3)
    assert out["issued"] == 2
    assert out["skipped"] == [{"member_id": members[0], "reason": "coupon_member_limit_reached",
                               "issued": 2}]
    none = give(uow, tpl["id"], members[:2], "k2")
    assert none["issued"] == 1 and none["coupons"][0]["member_id"] == members[1]
    # The database refuses a third slot whatever the code does.
    with pytest.raises(IntegrityError):
        uow.c.execute(update(coupons).where(coupons.c.member_id == members[0])
                      .values(member_seq=coupons.c.member_seq + 1))
    uow.rollback()


def test_the_budget_stops_issuing_when_spent_in_count_or_face_value(uow, members):
    by_count = make_template(uow, "C", limits={"total_limit": 3})
    give(uow, by_count["id"], members[:2], "a")
    with pytest.raises(Conflict) as exc:
        give(uow, by_count["id"], members, "b")
    assert exc.value.message == "coupon_budget_exhausted"
    assert exc.value.params == {"wanted": 3, "left": 1}
    uow.rollback()
    by_value = make_template(uow, "V", limits={"budget_value": "25"})
    assert give(uow, by_value["id"], members[:2], "c")["issued"] == 2
    with pytest.raises(Conflict):
        give(uow, by_value["id"], members[2:], "d")
    uow.rollback()
    # The database refuses a counter past the budget whatever the code does.
    with pytest.raises(IntegrityError):
        uow.c.execute(update(coupon_templates).where(coupon_templates.c.id == by_count["id"])
                      .values(issued_count=4))
    uow.rollback()


def test_a_budget_in_value_needs_a_face_value(uow, club):
    with pytest.raises(ValidationFailed) as exc:
        make_template(uow, "P", kind="percent", amount_off=None, percent_off="10",
                      limits={"budget_value": "100"})
    assert exc.value.fields[0].reason == "coupon_face_value_unknown"


def test_a_template_change_does_not_alter_coupons_already_issued(uow, members):
    tpl = make_template(uow)
    old = codes_of(give(uow, tpl["id"], members[:1], "v1"))[0]
    changed = service.update_template(uow=uow, actor=SYSTEM, template_id=tpl["id"],
                                      changes=TemplateUpdate.model_validate({"terms": {
                                          "kind": "amount", "amount_off": "20",
                                          "valid_days": 30}, "note": "richer"}))
    assert changed["version"] == 2 and changed["terms"]["amount_off"] == Decimal("20.00")
    new = codes_of(give(uow, tpl["id"], members[:1], "v2"))[0]
    out = redeem(uow, members[0], [old], "r-old")
    assert out["discount"] == Decimal("10.00")
    out = redeem(uow, members[0], [new], "r-new")
    assert out["discount"] == Decimal("20.00")
    full = service.get_template(uow.c, actor=SYSTEM, template_id=tpl["id"])
    assert [v["version"] for v in full["versions"]] == [1, 2]


def test_expired_or_paused_templates_create_no_coupons(uow, members):
    soon = utcnow() + DAY
    tpl = make_template(uow, "X", valid_days=None, valid_to=soon.isoformat())
    with pytest.raises(Conflict) as exc:
        give(uow, tpl["id"], members[:1], "late", now=soon + MINUTE)
    assert exc.value.message == "coupon_template_expired"
    uow.rollback()
    service.update_template(uow=uow, actor=SYSTEM, template_id=tpl["id"],
                            changes=TemplateUpdate(status="paused"))
    with pytest.raises(Conflict) as exc:
        give(uow, tpl["id"], members[:1], "paused")
    assert exc.value.message == "coupon_template_not_active"
    uow.rollback()


def test_issuing_to_members_of_another_program_is_refused_by_field(uow, members):
    tpl = make_template(uow)
    with pytest.raises(ValidationFailed) as exc:
        give(uow, tpl["id"], [members[0], 999999], "x")
    assert [f.field for f in exc.value.fields] == ["member_ids.1"]


def test_templates_name_known_stores_and_channels(uow, club):
    with pytest.raises(ValidationFailed) as exc:
        make_template(uow, stores=["SH01", "NOPE"], channels=["nochannel"])
    assert [f.field for f in exc.value.fields] == ["terms.stores.1", "terms.channels.0"]


def test_only_owners_manage_templates_and_store_staff_issue_at_their_stores(uow, members, club):
    manager = Actor(type="user", id=2, name="m", role="manager",
                    store_ids=frozenset({club["SH01"]}))
    with pytest.raises(Forbidden):
        service.create_template(uow=uow, actor=manager, data=TemplateIn.model_validate({
            "program": "BB", "code": "M", "name": "m",
            "terms": {"kind": "amount", "amount_off": "1", "valid_days": 1}}))
    tpl = make_template(uow)
    with pytest.raises(ValidationFailed):
        give(uow, tpl["id"], members[:1], "bj", store="BJ01", actor=manager)
    uow.rollback()
    out = give(uow, tpl["id"], members[:1], "sh", store="SH01", actor=manager)
    assert out["issued"] == 1


# --- evaluation and redemption --------------------------------------------------------------------

def test_evaluate_names_the_reason_for_each_refused_coupon_and_writes_nothing(uow, members):
    a = make_template(uow, "A", with_coupons=True)
    b = make_template(uow, "B", kind="percent", amount_off=None, percent_off="10",
                      with_coupons=True, categories=["bakery"])
    mine = codes_of(give(uow, a["id"], members[:2], "a")) + codes_of(
        give(uow, b["id"], members[:1], "b"))
    theirs = mine[1]
    b_in = BasketIn.model_validate(basket())
    combo, unknown = service.evaluate(uow.c, member_id=members[0], basket=b_in.basket(utcnow()),
                                      codes=[mine[0], mine[2], theirs, "NOPE"])
    assert [a.coupon.code for a in combo.accepted] == [mine[0], mine[2]]
    # 10.00 off 71.00, then 10% of what is left of the croissant (15.00 - 2.11 = 12.89 -> 1.29)
    assert [a.discount for a in combo.accepted] == [1000, 129]
    assert [r.reason for r in unknown] == ["coupon_not_found", "coupon_not_found"]
    uow.rollback()
    assert uow.c.execute(select(func.count()).select_from(coupon_operations)).scalar_one() == 0


def test_a_redeemed_coupon_cannot_be_used_again_and_its_key_replays(uow, members):
    tpl = make_template(uow)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "i"))
    first = redeem(uow, members[0], [code], "till1-0001")
    assert first["status"] == "committed" and first["discount"] == Decimal("10.00")
    assert coupon_row(uow, code)["status"] == "redeemed"
    again = redeem(uow, members[0], [code.lower()], "till1-0001")
    assert again["replayed"] and again["id"] == first["id"]
    with pytest.raises(Conflict) as exc:
        redeem(uow, members[0], [code], "till2-0001")
    assert exc.value.message == "coupon_refused"
    assert [(f.field, f.reason) for f in exc.value.fields] == [("codes.0", "coupon_used")]
    uow.rollback()
    with pytest.raises(Conflict) as exc:
        redeem(uow, members[0], [code], "till1-0001", basket=basket(shipping_fee="5"))
    assert exc.value.message == "idempotency_key_reused"
    uow.rollback()
    assert uow.c.execute(select(func.count()).select_from(coupon_uses)).scalar_one() == 1


def test_a_coupons_expiry_date_is_enforced_without_any_job(uow, members):
    tpl = make_template(uow, valid_days=1)
    issued_at = utcnow() - 2 * DAY
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a", now=issued_at))
    with pytest.raises(Conflict) as exc:
        redeem(uow, members[0], [code], "late")
    assert exc.value.fields[0].reason == "coupon_expired"
    uow.rollback()
    # A till whose clock says the purchase happened while the coupon was valid may still use it.
    paid_at = issued_at + dt.timedelta(hours=2)
    out = redeem(uow, members[0], [code], "offline", basket=basket(
        purchased_at=paid_at.isoformat()))
    assert out["status"] == "committed"


def test_a_made_up_purchase_time_cannot_bring_an_expired_coupon_back(uow, members):
    tpl = make_template(uow, valid_days=1)
    issued_at = utcnow() - 5 * DAY
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a", now=issued_at))
    with pytest.raises(ValidationFailed) as exc:
        redeem(uow, members[0], [code], "old", basket=basket(
            purchased_at=(issued_at + MINUTE).isoformat()))
    assert exc.value.fields[0].reason == "coupon_purchase_too_old"
    uow.rollback()
    with pytest.raises(ValidationFailed) as exc:
        redeem(uow, members[0], [code], "future", basket=basket(
            purchased_at=(utcnow() + DAY).isoformat()))
    assert exc.value.fields[0].reason == "coupon_purchase_in_future"
    uow.rollback()


def test_two_coupons_on_one_checkout_do_not_wipe_each_other(uow, members):
    a = make_template(uow, "A", with_coupons=True)
    b = make_template(uow, "B", kind="shipping", amount_off=None, with_coupons=True)
    ca = codes_of(give(uow, a["id"], members[:1], "a", quantity=2))
    (cb,) = codes_of(give(uow, b["id"], members[:1], "b"))
    out = redeem(uow, members[0], [ca[0], cb], "checkout-1", basket=basket(shipping_fee="8"))
    assert [(u["code"], u["discount"]) for u in out["coupons"]] == [
        (ca[0], Decimal("10.00")), (cb, Decimal("8.00"))]
    assert out["discount"] == Decimal("18.00")
    assert coupon_row(uow, ca[0])["status"] == "redeemed"
    assert coupon_row(uow, cb)["status"] == "redeemed"
    assert coupon_row(uow, ca[1])["status"] == "available"  # the member's other coupon untouched
    # A second checkout with the other coupon leaves the first checkout's coupons as they are.
    redeem(uow, members[0], [ca[1]], "checkout-2")
    assert {coupon_row(uow, c)["status"] for c in (*ca, cb)} == {"redeemed"}
    assert uow.c.execute(select(func.count()).select_from(coupon_uses)).scalar_one() == 3


def test_the_database_refuses_a_second_use_of_a_coupon_in_the_same_generation(uow, members):
    tpl = make_template(uow)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a"))
    out = redeem(uow, members[0], [code], "r")
    use = dict(uow.c.execute(select(coupon_uses)).mappings().one())
    # Were the lock and the compare-and-set ever bypassed, a second use could still not be
    # written for the same coupon and generation.
    with pytest.raises(IntegrityError):
        uow.c.execute(insert(coupon_uses).values(
            **{k: v for k, v in use.items() if k != "id"}))
    uow.rollback()
    assert out["coupons"][0]["status"] == "committed"


def test_a_refused_coupon_refuses_the_whole_checkout(uow, members):
    a = make_template(uow, "A")
    b = make_template(uow, "B", min_spend="100")
    (ca,) = codes_of(give(uow, a["id"], members[:1], "a"))
    (cb,) = codes_of(give(uow, b["id"], members[:1], "b"))
    with pytest.raises(Conflict) as exc:
        redeem(uow, members[0], [ca, cb], "k")
    assert [f.reason for f in exc.value.fields] == ["coupon_not_combinable"]
    uow.rollback()
    assert coupon_row(uow, ca)["status"] == "available"


def test_a_cashier_redeems_only_at_a_store_of_theirs(uow, members, club):
    cashier = Actor(type="user", id=3, name="c", role="cashier",
                    store_ids=frozenset({club["SH01"]}))
    tpl = make_template(uow)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a"))
    with pytest.raises(ValidationFailed):
        redeem(uow, members[0], [code], "k", actor=cashier, basket=basket(store="BJ01"))
    uow.rollback()
    assert redeem(uow, members[0], [code], "k2", actor=cashier)["status"] == "committed"
    actions = set(uow.c.execute(select(audit_log.c.action)).scalars())
    assert {"coupons.issued", "coupons.redeem", "coupons.template_created"} <= actions


def test_a_revoked_coupon_cannot_be_used_and_a_used_one_cannot_be_revoked(uow, members):
    tpl = make_template(uow)
    cs = codes_of(give(uow, tpl["id"], members[:1], "a", quantity=3))
    ids = [coupon_row(uow, c)["id"] for c in cs]
    out = service.revoke(uow=uow, actor=SYSTEM, coupon_id=ids[0], reason="issued by mistake")
    assert out["status"] == "revoked"
    assert service.revoke(uow=uow, actor=SYSTEM, coupon_id=ids[0], reason="again")["status"] \
        == "revoked"
    with pytest.raises(Conflict) as exc:
        redeem(uow, members[0], [cs[0]], "r0")
    assert exc.value.fields[0].reason == "coupon_revoked"
    uow.rollback()
    redeem(uow, members[0], [cs[1]], "r1")
    hold(uow, members[0], [cs[2]], "h2")
    for cid, reason in ((ids[1], "coupon_used"), (ids[2], "coupon_held")):
        with pytest.raises(Conflict) as exc:
            service.revoke(uow=uow, actor=SYSTEM, coupon_id=cid, reason="fraud case")
        assert exc.value.fields[0].reason == reason
        uow.rollback()
    assert service.liability(uow.c, actor=SYSTEM)["total"]["count"] == 1  # the held one
    details = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "coupons.revoked")).scalars().all()
    assert [d["reason"] for d in details] == ["issued by mistake"]


# --- holds ----------------------------------------------------------------------------------------

def test_a_held_coupon_cannot_be_used_by_another_till_until_released(uow, members):
    tpl = make_template(uow)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a"))
    h = hold(uow, members[0], [code], "till1-h1")
    assert h["status"] == "held" and coupon_row(uow, code)["status"] == "held"
    with pytest.raises(Conflict) as exc:
        hold(uow, members[0], [code], "till2-h1")
    assert exc.value.fields[0].reason == "coupon_held"
    uow.rollback()
    released = service.release_hold(uow=uow, actor=SYSTEM, operation_id=h["id"])
    assert released["status"] == "released"
    assert service.release_hold(uow=uow, actor=SYSTEM, operation_id=h["id"])["replayed"]
    h2 = hold(uow, members[0], [code], "till2-h1")
    done = service.commit_hold(uow=uow, actor=SYSTEM, operation_id=h2["id"])
    assert done["status"] == "committed" and coupon_row(uow, code)["status"] == "redeemed"
    assert service.commit_hold(uow=uow, actor=SYSTEM, operation_id=h2["id"])["replayed"]
    with pytest.raises(Conflict):
        service.release_hold(uow=uow, actor=SYSTEM, operation_id=h2["id"])
    uow.rollback()
    with pytest.raises(Conflict):
        service.commit_hold(uow=uow, actor=SYSTEM, operation_id=h["id"])
    uow.rollback()
    assert coupon_row(uow, code)["generation"] == 1


def test_a_hold_expires_by_itself_and_cannot_be_committed_after(uow, members):
    tpl = make_template(uow)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a"))
    now = utcnow()
    h = hold(uow, members[0], [code], "h1", now=now, minutes=2)
    later = now + 3 * MINUTE
    # Another till may use it once the hold has run out, even before any job ran.
    other = hold(uow, members[0], [code], "h2", now=later, basket=basket(
        purchased_at=later.isoformat()))
    assert other["status"] == "held"
    with pytest.raises(Conflict) as exc:
        service.commit_hold(uow=uow, actor=SYSTEM, operation_id=h["id"], now=later)
    assert exc.value.message == "coupon_hold_not_open"
    uow.rollback()
    assert uow.c.execute(select(coupon_operations.c.status).where(
        coupon_operations.c.id == h["id"])).scalar_one() == "expired"


def test_committing_an_expired_hold_writes_the_expiry_and_refuses(uow, members):
    tpl = make_template(uow)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a"))
    now = utcnow()
    h = hold(uow, members[0], [code], "h1", now=now, minutes=1)
    with pytest.raises(Conflict) as exc:
        service.commit_hold(uow=uow, actor=SYSTEM, operation_id=h["id"], now=now + 2 * MINUTE)
    assert exc.value.message == "coupon_hold_expired"
    uow.rollback()
    assert coupon_row(uow, code)["status"] == "available"


def test_the_expiry_job_releases_every_hold_past_its_time(uow, members):
    tpl = make_template(uow)
    cs = codes_of(give(uow, tpl["id"], members[:1], "a", quantity=3))
    now = utcnow()
    for i, c in enumerate(cs):
        hold(uow, members[0], [c], f"h{i}", now=now, minutes=1 + 10 * i)
    out = service.expire_holds(uow=uow, actor=SYSTEM, now=now + 5 * MINUTE)
    assert out == {"expired_holds": 1}
    assert [coupon_row(uow, c)["status"] for c in cs] == ["available", "held", "held"]


# --- refunds --------------------------------------------------------------------------------------

def _paid_order(uow, members, *, restore=True, ref_first=False, external="R1", **terms):
    tpl = make_template(uow, restore_on_refund=restore, **terms)
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a"))
    from patron.orders.service import record_orders

    def record():
        record_orders(uow=uow, orders_in=[order(external, at=utcnow() - MINUTE,
                                                identifiers={"phone": "13812345678"})],
                      source="api", actor=SYSTEM)

    if not ref_first:
        record()
    out = redeem(uow, members[0], [code], "r", order={"channel": "pos", "store": "SH01",
                                                     "external_id": external})
    if ref_first:
        assert out["order_id"] is None
        record()
    return code, out


def test_a_full_refund_restores_the_coupon_when_the_template_says_so(uow, members):
    code, out = _paid_order(uow, members)
    assert out["order_id"] is not None
    give_back(uow, "RT1", "R1", at=utcnow(), full=True)
    row = coupon_row(uow, code)
    assert row["status"] == "available" and row["generation"] == 1
    assert uow.c.execute(select(coupon_uses.c.status)).scalar_one() == "restored"
    # And it can be used again, once.
    assert redeem(uow, members[0], [code], "r-again")["status"] == "committed"


def test_a_refund_of_an_order_recorded_after_the_redemption_finds_the_coupon(uow, members):
    code, _ = _paid_order(uow, members, ref_first=True)
    give_back(uow, "RT1", "R1", at=utcnow(), full=True)
    assert coupon_row(uow, code)["status"] == "available"


def test_a_refund_keeps_the_coupon_used_when_the_template_says_not_to_restore(uow, members):
    code, _ = _paid_order(uow, members, restore=False)
    give_back(uow, "RT1", "R1", at=utcnow(), full=True)
    assert coupon_row(uow, code)["status"] == "redeemed"


def test_a_partial_return_restores_nothing_until_the_order_is_fully_refunded(uow, members):
    code, _ = _paid_order(uow, members)
    give_back(uow, "RT1", "R1", at=utcnow(), lines=[{"line_no": 1, "quantity": "2"}])
    assert coupon_row(uow, code)["status"] == "redeemed"
    give_back(uow, "RT2", "R1", at=utcnow(), lines=[{"line_no": 2, "quantity": "1"}])
    assert coupon_row(uow, code)["status"] == "available"


def test_a_refund_after_the_coupon_expired_does_not_restore_it(uow, members):
    tpl = make_template(uow, valid_days=1)
    issued_at = utcnow() - 2 * DAY
    (code,) = codes_of(give(uow, tpl["id"], members[:1], "a", now=issued_at))
    from patron.orders.service import record_orders

    paid_at = issued_at + dt.timedelta(hours=1)
    record_orders(uow=uow, orders_in=[order("R1", at=paid_at,
                                            identifiers={"phone": "13812345678"})],
                  source="api", actor=SYSTEM)
    redeem(uow, members[0], [code], "r", now=paid_at,
           basket=basket(purchased_at=paid_at.isoformat()),
           order={"channel": "pos", "store": "SH01", "external_id": "R1"})
    give_back(uow, "RT1", "R1", at=utcnow(), full=True)
    assert coupon_row(uow, code)["status"] == "redeemed"


# --- liability ------------------------------------------------------------------------------------

def test_the_liability_report_counts_outstanding_coupons_by_template_month_and_store(uow,
                                                                                    members):
    ten = make_template(uow, "TEN")
    pct = make_template(uow, "PCT", kind="percent", amount_off=None, percent_off="10")
    cs = codes_of(give(uow, ten["id"], members, "a"))
    give(uow, pct["id"], members[:2], "b", store="BJ01")
    redeem(uow, members[0], [cs[0]], "r")
    hold(uow, members[1], [cs[1]], "h")  # held is still outstanding
    report = service.liability(uow.c, actor=SYSTEM, program="BB")
    assert report["total"] == {"count": 4, "face_value": Decimal("20.00"),
                               "without_face_value": 2}
    assert [(t["code"], t["count"], t["face_value"]) for t in report["by_template"]] == [
        ("PCT", 2, Decimal("0.00")), ("TEN", 2, Decimal("20.00"))]
    assert [(s["store"], s["count"]) for s in report["by_store"]] == [("BJ01", 2), ("SH01", 2)]
    (month,) = report["by_month"]
    assert month["count"] == 4 and len(month["month"]) == 7
    later = service.liability(uow.c, actor=SYSTEM, now=utcnow() + 31 * DAY)
    assert later["total"]["count"] == 0  # expired coupons are no liability


def test_the_cli_lists_templates_issues_and_reports_liability(db_url, uow, members):
    from patron.cli import app

    tpl = make_template(uow)
    runner = CliRunner()
    listed = runner.invoke(app, ["coupons", "templates"])
    assert listed.exit_code == 0, listed.output
    assert "TEN" in listed.output
    issued = runner.invoke(app, ["coupons", "issue", str(tpl["id"]), "--member",
                                 str(members[0]), "--member", str(members[1]),
                                 "--key", "cli-1"])
    assert issued.exit_code == 0, issued.output
    assert json.loads(issued.output)["issued"] == 2
    report = runner.invoke(app, ["coupons", "liability", "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["total"]["count"] == 2
    expired = runner.invoke(app, ["coupons", "expire-holds"])
    assert expired.exit_code == 0 and json.loads(expired.output) == {"expired_holds": 0}


def test_basket_lines_without_numbers_are_numbered_around_the_given_ones():
    b = BasketIn.model_validate({"lines": [
        {"sku": "A", "quantity": "1", "unit_price": "1"},
        {"sku": "B", "quantity": "1", "unit_price": "1", "line_no": 1}]}).basket(utcnow())
    assert [(ln.line_no, ln.sku) for ln in b.lines] == [(2, "A"), (1, "B")]
    assert isinstance(b.lines[0], Line)
