"""Stored value on SQLite and PostgreSQL: top-ups with versioned bonus rules, the spending
orders, refunds to the card, two-phase holds, cash-backs, adjustments, idempotency, the
database's own refusals, the inner functions a checkout composes, reports and verify."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pydantic
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from patron.db import UnitOfWork
from patron.errors import Conflict, Forbidden, NotFound, ValidationFailed
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from patron.storedvalue import reports, service
from patron.storedvalue.schemas import BonusRulesIn, HoldIn, SettingsIn, SpendIn
from patron.storedvalue.tables import sv_accounts, sv_entries, sv_lots, sv_operations
from patron.storedvalue.verify import verify
from tests.factories import T0
from tests.storedvalue_factories import (
    adjust,
    cashout,
    hold,
    money,
    refund,
    setup,
    spend,
    topup,
)

MIN = dt.timedelta(minutes=1)


def balance(uow: UnitOfWork, member: int, at: dt.datetime = T0) -> tuple[str, str, str, str]:
    return money(service.balance(uow.c, actor=SYSTEM, member_id=member, now=at))


def clean(uow: UnitOfWork) -> None:
    assert verify(uow.c)["differences"] == []


def cashier(org: dict[str, int]) -> Actor:
    return Actor(type="user", id=99, name="till", role="cashier",
                 store_ids=frozenset({org["SH01"]}))


def test_a_top_up_earns_by_the_bonus_rules_in_force_at_its_time(uow):
    s = setup(uow)
    m = s["member"]
    service.add_bonus_rules(uow=uow, actor=SYSTEM, code="BB", body=BonusRulesIn.model_validate(
        {"tiers": [{"min": "1000", "bonus": "150"}], "effective_from": (T0 + MIN).isoformat()}),
        now=T0 - MIN)
    first = topup(uow, m, "1000", "t1", at=T0)
    assert (first["principal"], first["bonus"]) == (Decimal("1000.00"), Decimal("120.00"))
    second = topup(uow, m, "1000", "t2", at=T0 + 2 * MIN)
    assert second["bonus"] == Decimal("150.00")
    small = topup(uow, m, "499.99", "t3", at=T0 + 3 * MIN)
    assert small["bonus"] == Decimal("0.00")
    assert balance(uow, m, T0 + 3 * MIN) == ("2499.99", "270.00", "0.00", "0.00")
    clean(uow)


def test_a_retried_top_up_is_credited_once(uow):
    m = setup(uow)["member"]
    first = topup(uow, m, "500", "till-1-0001")
    again = topup(uow, m, "500", "till-1-0001")
    assert again["replayed"] and again["id"] == first["id"]
    assert balance(uow, m) == ("500.00", "50.00", "0.00", "0.00")
    with pytest.raises(Conflict) as exc:
        topup(uow, m, "600", "till-1-0001")
    assert exc.value.message == "idempotency_key_reused"
    assert uow.c.execute(select(func.count()).select_from(sv_entries)).scalar_one() == 2
    clean(uow)


@pytest.mark.parametrize(("order", "used"), [
    ("bonus_first", ("30.00", "50.00")),
    ("principal_first", ("80.00", "0.00")),
    ("proportional", ("72.73", "7.27")),  # 80 x 50/550 = 7.2727 -> 7.27 bonus
])
def test_a_spend_uses_principal_and_bonus_in_the_programs_order(uow, order, used):
    m = setup(uow, spend_order=order)["member"]
    topup(uow, m, "500", "t1")
    out = spend(uow, m, "80", "s1", store="BJ01")
    assert (str(out["principal"]), str(out["bonus"])) == used
    assert out["store"] == "BJ01"
    clean(uow)


def test_a_spend_cannot_overdraw_the_card_and_writes_nothing(uow):
    m = setup(uow)["member"]
    topup(uow, m, "100", "t1")
    audits = uow.c.execute(select(func.count()).select_from(audit_log)).scalar_one()
    with pytest.raises(Conflict) as exc:
        spend(uow, m, "100.01", "s1")
    assert exc.value.message == "insufficient_balance"
    assert exc.value.params == {"wanted": Decimal("100.01"), "available": Decimal("100.00")}
    assert balance(uow, m) == ("100.00", "0.00", "0.00", "0.00")
    assert uow.c.execute(select(func.count()).select_from(audit_log)).scalar_one() == audits
    # A member who never topped up has nothing to spend either.
    other = setup_second_member(uow)
    with pytest.raises(Conflict) as exc:
        spend(uow, other, "0.01", "s3")
    assert exc.value.params["available"] == Decimal("0.00")
    clean(uow)


def setup_second_member(uow: UnitOfWork) -> int:
    from tests.loyalty_factories import enrol

    return int(enrol(uow, "13900000009")["id"])


def test_a_refund_restores_principal_and_bonus_in_the_proportions_the_spend_used(uow):
    m = setup(uow, spend_order="proportional")["member"]
    topup(uow, m, "500", "t1")  # 500 + 50
    s = spend(uow, m, "100", "s1")  # 90.91 principal, 9.09 bonus
    assert (s["principal"], s["bonus"]) == (Decimal("90.91"), Decimal("9.09"))
    r1 = refund(uow, s["id"], "30", "r1")
    assert (r1["principal"], r1["bonus"]) == (Decimal("27.27"), Decimal("2.73"))
    assert refund(uow, s["id"], "30", "r1")["replayed"]  # a retried refund
    r2 = refund(uow, s["id"], "30", "r2")
    assert (r2["principal"], r2["bonus"]) == (Decimal("27.28"), Decimal("2.72"))
    with pytest.raises(Conflict) as exc:
        refund(uow, s["id"], "40.01", "r3")
    assert exc.value.message == "refund_exceeds_spend"
    assert exc.value.params["refundable"] == Decimal("40.00")
    r3 = refund(uow, s["id"], "40", "r4")
    assert (r3["principal"], r3["bonus"]) == (Decimal("36.36"), Decimal("3.64"))
    assert balance(uow, m) == ("500.00", "50.00", "0.00", "0.00")
    with pytest.raises(Conflict):
        refund(uow, s["id"], "0.01", "r5")
    clean(uow)


def test_buy_refund_and_spend_again_never_creates_money(uow):
    m = setup(uow, spend_order="bonus_first")["member"]
    topup(uow, m, "500", "t1")
    s = spend(uow, m, "550", "s1")
    assert balance(uow, m) == ("0.00", "0.00", "0.00", "0.00")
    refund(uow, s["id"], "550", "r1")
    s2 = spend(uow, m, "550", "s2")
    refund(uow, s2["id"], "100", "r2")
    with pytest.raises(Conflict):
        refund(uow, s["id"], "1", "r3")
    assert balance(uow, m) == ("90.91", "9.09", "0.00", "0.00")  # 100 x 50/550 bonus
    clean(uow)


def test_a_hold_commits_into_a_spend_that_can_be_refunded(uow):
    m = setup(uow)["member"]
    topup(uow, m, "200", "t1")
    h = hold(uow, m, "80", "h1")
    assert h["status"] == "held" and balance(uow, m) == ("120.00", "0.00", "80.00", "0.00")
    with pytest.raises(Conflict) as exc:
        spend(uow, m, "120.01", "s1")
    assert exc.value.message == "insufficient_balance"
    done = service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + MIN)
    assert done["status"] == "committed"
    assert service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + MIN)["replayed"]
    with pytest.raises(Conflict):
        service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + MIN)
    refund(uow, h["id"], "80", "r1", at=T0 + 2 * MIN)
    assert balance(uow, m, T0 + 2 * MIN) == ("200.00", "0.00", "0.00", "0.00")
    clean(uow)


def test_a_released_hold_gives_the_money_back_and_cannot_be_committed(uow):
    m = setup(uow)["member"]
    topup(uow, m, "200", "t1")
    h = hold(uow, m, "80", "h1")
    service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + MIN)
    assert service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + MIN)["replayed"]
    assert balance(uow, m) == ("200.00", "0.00", "0.00", "0.00")
    with pytest.raises(Conflict) as exc:
        service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + MIN)
    assert exc.value.message == "hold_not_open"
    with pytest.raises(Conflict):
        refund(uow, h["id"], "1", "r1")
    clean(uow)


def test_an_expired_hold_releases_itself_lazily_and_cannot_be_committed(uow):
    m = setup(uow)["member"]
    topup(uow, m, "100", "t1")
    h = hold(uow, m, "100", "h1", minutes=5)
    later = T0 + 6 * MIN
    # Reading shows the money spendable before anything wrote the release.
    assert balance(uow, m, later) == ("100.00", "0.00", "0.00", "0.00")
    # The next write on the card releases it first, so it can spend the money.
    spend(uow, m, "60", "s1", at=later)
    op = uow.c.execute(select(sv_operations.c.status).where(sv_operations.c.id == h["id"])
                       ).scalar_one()
    assert op == "expired"
    with pytest.raises(Conflict) as exc:
        service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=later)
    assert exc.value.message == "hold_not_open"
    clean(uow)


def test_committing_an_expired_hold_is_refused_after_its_release_is_written(uow):
    m = setup(uow)["member"]
    topup(uow, m, "100", "t1")
    h = hold(uow, m, "100", "h1", minutes=5)
    with pytest.raises(Conflict) as exc:
        service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=T0 + 6 * MIN)
    assert exc.value.message == "stored_value_hold_expired"
    row = service.balance(uow.c, actor=SYSTEM, member_id=m, now=T0)  # as stored, not as seen
    assert money(row) == ("100.00", "0.00", "0.00", "0.00")
    assert service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"])["status"] == "expired"
    clean(uow)


def test_the_hold_job_releases_every_expired_hold(uow):
    s = setup(uow, phones=("13812345678", "13812345679"))
    for i, m in enumerate(s["members"]):
        topup(uow, m, "100", f"t{i}")
        hold(uow, m, "40", f"h{i}", minutes=5)
    stats = service.run_due(uow=uow, actor=SYSTEM, now=T0 + 10 * MIN)
    assert stats == {"accounts": 2, "holds_released": 2, "bonus_expired": "0.00"}
    assert uow.c.execute(select(func.sum(sv_accounts.c.principal_held))).scalar_one() == 0
    assert service.run_due(uow=uow, actor=SYSTEM, now=T0 + 10 * MIN)["accounts"] == 0
    clean(uow)


def test_a_cash_back_of_a_top_up_forfeits_bonus_in_proportion_and_is_audited(uow):
    s = setup(uow, spend_order="principal_first")
    m = s["member"]
    t = topup(uow, m, "500", "t1")  # 500 + 50
    spend(uow, m, "200", "s1")  # principal 200
    with pytest.raises(Forbidden):
        cashout(uow, t["id"], "c0", actor=cashier(s["org"]))
    out = cashout(uow, t["id"], "c1")  # all that is left: 300, bonus 50 x 300/500 = 30 lost
    assert (out["principal"], out["bonus"]) == (Decimal("300.00"), Decimal("30.00"))
    assert balance(uow, m) == ("0.00", "20.00", "0.00", "0.00")
    assert cashout(uow, t["id"], "c1")["replayed"]
    with pytest.raises(Conflict) as exc:
        cashout(uow, t["id"], "c2")
    assert exc.value.message == "nothing_to_cash_out"
    details = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "stored_value.cashout")).scalar_one()
    assert details["reason"] == "customer moving away" and details["principal"] == "300.00"
    clean(uow)


def test_a_cash_back_never_pays_more_than_the_unused_principal(uow):
    m = setup(uow)["member"]
    t = topup(uow, m, "100", "t1")
    spend(uow, m, "30", "s1")
    with pytest.raises(Conflict) as exc:
        cashout(uow, t["id"], "c1", "70.01")
    assert exc.value.message == "cashout_exceeds_unused"
    cashout(uow, t["id"], "c2", "70")
    clean(uow)


def test_manual_adjustments_need_the_permission_and_a_reason_and_are_audited(uow):
    s = setup(uow)
    m = s["member"]
    with pytest.raises(Forbidden):
        adjust(uow, m, "10", "a0", actor=cashier(s["org"]))
    with pytest.raises(pydantic.ValidationError):
        adjust(uow, m, "10", "a1", reason="x")
    adjust(uow, m, "10", "a1", bucket="bonus", reason="service recovery")
    with pytest.raises(Conflict) as exc:
        adjust(uow, m, "-10.01", "a2", bucket="bonus")
    assert exc.value.message == "insufficient_balance"
    adjust(uow, m, "-4", "a3", bucket="bonus")
    assert balance(uow, m) == ("0.00", "6.00", "0.00", "0.00")
    reasons = [d["reason"] for d in uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "stored_value.adjust")).scalars()]
    assert reasons == ["service recovery", "till error"]
    clean(uow)


def test_store_scoped_tills_act_only_at_their_stores(uow):
    s = setup(uow)
    m = s["member"]
    till = cashier(s["org"])
    with pytest.raises(ValidationFailed) as exc:
        topup(uow, m, "100", "t0", store="BJ01", actor=till)
    assert exc.value.fields[0].reason == "store_out_of_scope"
    with pytest.raises(ValidationFailed):
        topup(uow, m, "100", "t0", store=None, channel="mini_program", actor=till)
    topup(uow, m, "100", "t1", actor=till)
    elsewhere = spend(uow, m, "10", "s1", store="BJ01")
    with pytest.raises(NotFound):
        refund(uow, elsewhere["id"], "10", "r1", actor=till)
    here = spend(uow, m, "10", "s2", actor=till)
    refund(uow, here["id"], "10", "r2", actor=till)
    clean(uow)


def test_the_database_refuses_an_overdraft_whatever_the_writer_does(uow):
    m = setup(uow)["member"]
    t = topup(uow, m, "100", "t1")
    s = spend(uow, m, "60", "s1")
    conn = uow.c
    for stmt in (
        update(sv_accounts).values(principal=Decimal("-0.01")),
        update(sv_lots).values(principal_left=Decimal("100.01")),
        update(sv_operations).where(sv_operations.c.id == s["id"])
        .values(refunded_principal=Decimal("60.01")),
    ):
        with pytest.raises(IntegrityError):
            conn.execute(stmt)
        uow.rollback()
    with pytest.raises(IntegrityError):  # a spend entry may not add money
        conn.execute(text("INSERT INTO sv_entries (program_id, account_id, operation_id, "
                          "lot_id, kind, bucket, amount, actor, created_at) SELECT program_id, "
                          "account_id, id, (SELECT min(id) FROM sv_lots), 'spend', 'principal', "
                          "100, 'x', created_at FROM sv_operations WHERE id = :id"),
                     {"id": t["id"]})
    uow.rollback()
    clean(uow)


def test_the_inner_functions_write_inside_the_callers_transaction_without_committing(engine):
    with UnitOfWork(engine) as uow:
        m = setup(uow)["member"]
        topup(uow, m, "100", "t1")
    with UnitOfWork(engine) as uow:
        out = service.spend_in(uow.c, actor=SYSTEM, member_id=m, now=T0,
                               body=SpendIn(idempotency_key="s1", amount=Decimal("40"),
                                            store="SH01"))
        h = service.hold_in(uow.c, actor=SYSTEM, member_id=m, now=T0,
                            body=HoldIn.model_validate({"idempotency_key": "h1",
                                                        "amount": "10", "store": "SH01"}))
        service.commit_hold_in(uow.c, actor=SYSTEM, hold_id=h["id"], now=T0)
        assert out["balance"]["principal"] == Decimal("60.00")
        assert money(service.balance(uow.c, actor=SYSTEM, member_id=m, now=T0))[0] == "50.00"
        # the caller decides: here it rolls back (its order failed), and nothing happened
    with UnitOfWork(engine) as uow:
        assert balance(uow, m) == ("100.00", "0.00", "0.00", "0.00")
        assert uow.c.execute(select(func.count()).select_from(sv_operations)).scalar_one() == 1


def test_liability_by_store_of_top_up_and_inter_store_settlement(uow):
    s = setup(uow, spend_order="principal_first", phones=("13812345678", "13812345679"))
    a, b = s["members"]
    topup(uow, a, "500", "t1", store="SH01")  # 500 + 50 at SH01
    topup(uow, b, "300", "t2", store="BJ01")  # 300 at BJ01
    topup(uow, b, "100", "t3", store=None, channel="mini_program")  # head office
    spend(uow, a, "200", "s1", store="BJ01")  # SH01's money spent at BJ01
    s2 = spend(uow, b, "350", "s2", store="SH01")  # 300 BJ01's + 50 head office's at SH01
    refund(uow, s2["id"], "10", "r1")  # back to the newest lot first: head office's
    liab = reports.liability(uow.c, actor=SYSTEM, as_of=T0 + MIN)
    assert [(r["store"], str(r["principal"]), str(r["bonus"])) for r in liab["stores"]] == [
        (None, "60.00", "0.00"), ("SH01", "300.00", "50.00")]
    assert str(liab["total"]["principal"]) == "360.00"
    before = reports.liability(uow.c, actor=SYSTEM, as_of=T0 - MIN)
    assert before["stores"] == [] and str(before["total"]["total"]) == "0.00"
    settle = reports.settlement(uow.c, actor=SYSTEM, start=T0 - MIN, end=T0 + MIN)
    cells = {(row["topped_up_at"], c["store"]): str(c["principal"])
             for row in settle["matrix"] for c in row["spent_at"]}
    assert cells == {(None, "SH01"): "40.00", ("BJ01", "SH01"): "300.00",
                     ("SH01", "BJ01"): "200.00"}
    assert [(o["from"], o["to"], str(o["amount"])) for o in settle["owed"]] == [
        (None, "SH01", "40.00"), ("BJ01", "SH01", "100.00")]
    manager = Actor(type="user", id=5, name="m", role="manager",
                    store_ids=frozenset({s["org"]["BJ01"]}))
    mine = reports.liability(uow.c, actor=manager, as_of=T0 + MIN)
    assert mine["stores"] == [] and str(mine["total"]["total"]) == "0.00"
    theirs = reports.settlement(uow.c, actor=manager, start=T0 - MIN, end=T0 + MIN)
    assert {(o["from"], o["to"]) for o in theirs["owed"]} == {("BJ01", "SH01")}
    clean(uow)


def test_verify_reports_an_account_that_no_longer_adds_up(uow):
    m = setup(uow)["member"]
    topup(uow, m, "100", "t1")
    uow.c.execute(update(sv_accounts).values(bonus=Decimal("5")))
    diffs = verify(uow.c)["differences"]
    assert [d["check"] for d in diffs] == ["account_figures"]


def test_two_cards_paying_one_checkout_each_lose_only_their_share(engine):
    with UnitOfWork(engine) as uow:
        a, b = setup(uow, phones=("13812345678", "13812345679"))["members"]
        topup(uow, a, "100", "t1")
        topup(uow, b, "80", "t2")
    with UnitOfWork(engine) as uow:  # one checkout, one transaction, two cards
        for member, amount, key in ((a, "60", "pay-a"), (b, "50", "pay-b")):
            service.spend_in(uow.c, actor=SYSTEM, member_id=member, now=T0,
                             body=SpendIn(idempotency_key=key, amount=Decimal(amount),
                                          store="SH01"))
        uow.commit()
    with UnitOfWork(engine) as uow:
        assert balance(uow, a) == ("40.00", "0.00", "0.00", "0.00")
        assert balance(uow, b) == ("30.00", "0.00", "0.00", "0.00")
        clean(uow)


def bonus_expiring_after_a_month(uow: UnitOfWork, order: str = "bonus_first") -> int:
    m = setup(uow, spend_order=order)["member"]
    service.configure(uow=uow, actor=SYSTEM, code="BB", now=T0 - MIN, body=SettingsIn(
        spend_order=order, hold_minutes=15, bonus_expiry_months=1))
    return m


def test_bonus_expires_by_the_programs_rule_and_principal_never_does(uow):
    m = bonus_expiring_after_a_month(uow)
    t = topup(uow, m, "500", "t1")  # 2026-03-02 10:30 +08:00: bonus expires 2026-04-02 10:30
    expires = uow.c.execute(select(sv_lots.c.bonus_expires_at)).scalar_one()
    assert expires == dt.datetime(2026, 4, 2, 2, 30, tzinfo=dt.UTC)
    assert balance(uow, m, expires - MIN) == ("500.00", "50.00", "0.00", "0.00")
    # Seen as gone at once; written by the next write on the card.
    assert balance(uow, m, expires) == ("500.00", "0.00", "0.00", "0.00")
    (lot,) = service.balance(uow.c, actor=SYSTEM, member_id=m, now=expires - MIN)["lots"]
    assert (lot["topped_up_at"], str(lot["bonus"]), lot["bonus_expires_at"]) == (
        "SH01", "50.00", expires)
    years_later = expires + dt.timedelta(days=3650)
    out = spend(uow, m, "20", "s1", at=years_later)  # bonus first, but none is left
    assert (out["principal"], out["bonus"]) == (Decimal("20.00"), Decimal("0.00"))
    ops = uow.c.execute(select(sv_operations.c.kind, sv_operations.c.bonus,
                               sv_operations.c.parent_id).where(
        sv_operations.c.kind == "expire")).all()
    assert [tuple(r) for r in ops] == [("expire", Decimal("50.00"), t["id"])]
    liab = reports.liability(uow.c, actor=SYSTEM, as_of=years_later)
    assert str(liab["total"]["bonus"]) == "0.00" and str(liab["total"]["principal"]) == "480.00"
    clean(uow)


def test_bonus_given_back_to_an_expired_top_up_expires_at_once(uow):
    m = bonus_expiring_after_a_month(uow)
    topup(uow, m, "500", "t1")
    s = spend(uow, m, "100", "s1")  # bonus first: 50 bonus, 50 principal
    later = T0 + dt.timedelta(days=40)
    r = refund(uow, s["id"], "100", "r1", at=later)
    assert (r["principal"], r["bonus"]) == (Decimal("50.00"), Decimal("50.00"))
    assert balance(uow, m, later) == ("500.00", "0.00", "0.00", "0.00")
    clean(uow)


def test_bonus_held_before_its_expiry_can_still_be_committed(uow):
    m = bonus_expiring_after_a_month(uow)
    topup(uow, m, "500", "t1")
    expires = uow.c.execute(select(sv_lots.c.bonus_expires_at)).scalar_one()
    h = hold(uow, m, "30", "h1", minutes=60, at=expires - 10 * MIN)  # 30 of the 50 bonus
    at = expires + MIN
    assert service.run_due(uow=uow, actor=SYSTEM, now=at) == {
        "accounts": 1, "holds_released": 0, "bonus_expired": "20.00"}
    done = service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=at)
    assert done["status"] == "committed" and done["bonus"] == Decimal("30.00")
    assert balance(uow, m, at) == ("500.00", "0.00", "0.00", "0.00")
    clean(uow)


def test_bonus_a_released_hold_gives_back_after_its_expiry_expires_at_once(uow):
    m = bonus_expiring_after_a_month(uow)
    topup(uow, m, "500", "t1")
    expires = uow.c.execute(select(sv_lots.c.bonus_expires_at)).scalar_one()
    h = hold(uow, m, "30", "h1", minutes=60, at=expires - 10 * MIN)
    assert service.run_due(uow=uow, actor=SYSTEM, now=expires + MIN)["bonus_expired"] == "20.00"
    service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=expires + 2 * MIN)
    assert balance(uow, m, expires + 2 * MIN) == ("500.00", "0.00", "0.00", "0.00")
    assert uow.c.execute(select(func.count()).where(sv_operations.c.kind == "expire")
                         ).scalar_one() == 2
    clean(uow)
