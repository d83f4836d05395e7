"""The ``deduct_from_refund`` clawback policy at the POS checkout, on SQLite and PostgreSQL: a
refund that cannot take back the points its order earned (the member spent them) deducts their
value at the program's redemption rate from the money it gives back, exactly, once per key, in
the refund's transaction; what the money cannot cover is owed."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from patron.checkout import service
from patron.checkout.model import points_deduction_value, points_value
from patron.checkout.schemas import CommitIn, RefundIn
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import RedeemIn
from patron.loyalty.tables import loyalty_order_earnings
from patron.loyalty.verify import verify
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.storedvalue import service as storedvalue
from patron.storedvalue.schemas import SettingsIn, TopUpIn
from tests.checkout_factories import NOW, row_counts, sale, setup_member
from tests.loyalty_factories import points

LATER = NOW + dt.timedelta(hours=1)
RATE = 30  # points per yuan: 1 point is 3.33... fen, so every value here is rounded


def commit(uow, body, now=NOW):
    return service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(body), now=now)


def refund(uow, checkout_id, body, now=LATER):
    return service.refund(uow=uow, actor=SYSTEM, checkout_id=checkout_id,
                          body=RefundIn.model_validate(body), now=now)


def earning(uow, order_id):
    row = uow.c.execute(select(loyalty_order_earnings).where(
        loyalty_order_earnings.c.order_id == order_id)).mappings().one()
    uow.rollback()
    return row


def spend_all(uow, member, key="spend"):
    """The member spends every available point (a redemption at another till)."""
    have = points(uow, member["id"])["available"]
    loyalty.redeem(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW + dt.timedelta(
        minutes=30), body=RedeemIn(idempotency_key=key, points=have, store="SH01"))
    assert points(uow, member["id"])["available"] == 0
    return have


def bought_and_spent(uow, *, rate=RATE, **first):
    """A member with no points buys (earning points), then spends every point on a second
    sale: the first sale's points can no longer be taken back."""
    member = setup_member(uow, points=0, clawback_policy="deduct_from_refund",
                          redeem_points_per_yuan=rate)
    bought = commit(uow, sale(member["member_code"], "buy", "D-1", **first))
    earned = bought["points"]["earned"]
    assert earned > 0 and points(uow, member["id"])["available"] == earned
    assert spend_all(uow, member) == earned
    return member, bought, earned


def adds_up(r):
    """What the refund's money became: stored value, points given back, the deduction, and
    what the tenders give back, to the fen."""
    d = r["points_deduction"]
    paid_back = points_value(r["points_returned"], d["points_per_yuan"]) if (
        r["points_returned"]) else 0
    assert r["refund_before_deduction_fen"] == (
        r["amount_fen"] - r["stored_value_returned_fen"] - paid_back)
    assert r["refund_to_tenders_fen"] == r["refund_before_deduction_fen"] - d["deducted_fen"]
    assert r["refund_to_tenders_fen"] >= 0
    assert d["points"] == d["from_points"] + d["deducted"] + d["owed"]
    assert d["deducted_fen"] == points_deduction_value(d["deducted"], d["points_per_yuan"])


def test_buy_spend_the_points_refund_the_points_value_is_deducted_from_the_money(uow):
    member, bought, earned = bought_and_spent(uow, tender=6390)
    r = refund(uow, bought["checkout_id"], {"idempotency_key": "rf1", "full": True})
    value = points_deduction_value(earned, RATE)
    assert value == -(-earned * 100 // RATE) and value > earned * 100 // RATE  # rounded up
    assert r["points_deduction"] == {"points": earned, "from_points": 0, "deducted": earned,
                                     "deducted_fen": value, "owed": 0, "points_per_yuan": RATE}
    assert r["refund_to_tenders_fen"] == 6390 - value
    adds_up(r)
    # The points part goes into no debt; the balance is what it was.
    assert points(uow, member["id"]) == {**points(uow, member["id"]), "available": 0, "owed": 0}
    assert r["balance"]["owed"] == 0
    row = earning(uow, bought["order_id"])
    # Settled in money: written off on the order, no clawback entry in the ledger.
    assert (row["points_clawed"], row["points_written_off"]) == (0, earned)
    audit = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "checkout.refunded")).scalar_one()
    uow.rollback()
    assert (audit["points_deducted"], audit["deducted_fen"], audit["points_owed"],
            audit["refund_to_tenders_fen"]) == (earned, value, 0, 6390 - value)
    assert verify(uow.c)["differences"] == []


def test_under_owe_the_same_refund_gives_all_the_money_back_and_the_points_are_owed(uow):
    """The other policies are untouched: the same story under ``owe`` deducts nothing."""
    member = setup_member(uow, points=0, redeem_points_per_yuan=RATE)
    bought = commit(uow, sale(member["member_code"], "buy", "D-1", tender=6390))
    earned = bought["points"]["earned"]
    spend_all(uow, member)
    r = refund(uow, bought["checkout_id"], {"idempotency_key": "rf1", "full": True})
    assert r["refund_to_tenders_fen"] == 6390
    assert r["points_deduction"]["points"] == 0 and r["points_deduction"]["deducted_fen"] == 0
    assert points(uow, member["id"])["owed"] == earned
    assert verify(uow.c)["differences"] == []


def test_partial_refunds_deduct_each_its_share_and_never_twice(uow):
    member, bought, earned = bought_and_spent(uow, tender=6390)
    first = refund(uow, bought["checkout_id"], {"idempotency_key": "rf1",
                                                "lines": [{"line_no": 1, "quantity": "1"}]})
    second = refund(uow, bought["checkout_id"], {"idempotency_key": "rf2",
                                                 "lines": [{"line_no": 2, "quantity": "1"}]})
    rest = refund(uow, bought["checkout_id"], {"idempotency_key": "rf3", "full": True})
    parts = [first, second, rest]
    for r in parts:
        adds_up(r)
        assert r["points_deduction"]["owed"] == 0
    assert all(r["points_deduction"]["deducted"] > 0 for r in parts)
    assert sum(r["points_deduction"]["deducted"] for r in parts) == earned
    assert sum(r["amount_fen"] for r in parts) == 6390
    deducted_fen = sum(r["points_deduction"]["deducted_fen"] for r in parts)
    # Each refund rounds its own deduction up: together never less than the points' value,
    # and at most a fen more per refund.
    assert points_deduction_value(earned, RATE) <= deducted_fen <= (
        points_deduction_value(earned, RATE) + len(parts) - 1)
    assert sum(r["refund_to_tenders_fen"] for r in parts) == 6390 - deducted_fen
    assert points(uow, member["id"])["owed"] == 0
    assert earning(uow, bought["order_id"])["points_written_off"] == earned
    assert verify(uow.c)["differences"] == []


def test_a_retried_refund_returns_the_first_result_and_deducts_nothing_twice(uow):
    member, bought, earned = bought_and_spent(uow, tender=6390)
    body = {"idempotency_key": "rf1", "lines": [{"line_no": 1, "quantity": "2"}]}
    first = refund(uow, bought["checkout_id"], body)
    before = row_counts(uow), points(uow, member["id"]), earning(uow, bought["order_id"])
    again = refund(uow, bought["checkout_id"], body, now=LATER + dt.timedelta(minutes=5))
    assert again == {**first, "replayed": True}
    assert (row_counts(uow), points(uow, member["id"]),
            earning(uow, bought["order_id"])) == before
    assert first["points_deduction"]["deducted"] > 0
    assert verify(uow.c)["differences"] == []


def with_card(uow, member, amount="100"):
    storedvalue.configure(uow=uow, actor=SYSTEM, code="BB", body=SettingsIn(),
                          now=NOW - dt.timedelta(days=1))
    storedvalue.topup(uow=uow, actor=SYSTEM, member_id=member["id"],
                      now=NOW - dt.timedelta(days=1),
                      body=TopUpIn.model_validate({"idempotency_key": "top", "amount": amount,
                                                   "store": "SH01"}))


def test_an_order_paid_with_points_and_stored_value_takes_back_from_the_points_paid_first(uow):
    """The refund gives back the points that paid before it settles: those cover the points
    the member spent, and only the rest is deducted from the money."""
    member = setup_member(uow, points=30, clawback_policy="deduct_from_refund",
                          redeem_points_per_yuan=RATE)
    with_card(uow, member)
    # 63.90: 30 points pay 1.00, stored value 20.00, cash the rest (and earns).
    bought = commit(uow, sale(member["member_code"], "buy", "D-1", redeem_points=30,
                              stored_value_fen=2000, tender=6390 - 100 - 2000))
    earned = bought["points"]["earned"]
    assert spend_all(uow, member) == earned
    # Line 1 first (25.20 of 63.90): its share of the points that paid comes back and covers
    # part of the points its return takes back; the rest is deducted.
    first = refund(uow, bought["checkout_id"], {"idempotency_key": "rf1",
                                                "lines": [{"line_no": 1, "quantity": "1"}]})
    rest = refund(uow, bought["checkout_id"], {"idempotency_key": "rf2", "full": True})
    for r in (first, rest):
        adds_up(r)
        d = r["points_deduction"]
        assert d["from_points"] == min(d["points"], r["points_returned"])
        assert d["owed"] == 0
    assert first["points_returned"] + rest["points_returned"] == 30
    assert first["stored_value_returned_fen"] + rest["stored_value_returned_fen"] == 2000
    # The second refund's return already found the points the first gave back, and took them.
    row = earning(uow, bought["order_id"])
    deducted = sum(r["points_deduction"]["deducted"] for r in (first, rest))
    assert first["points_deduction"]["from_points"] > 0
    assert deducted > 0 and row["points_written_off"] == deducted
    assert row["points_clawed"] + deducted == earned
    # The points paid came back, less what covered the spent ones; no debt.
    assert points(uow, member["id"]) == {**points(uow, member["id"]),
                                         "available": 30 - row["points_clawed"], "owed": 0}
    assert verify(uow.c)["differences"] == []


def test_points_worth_more_than_the_refunds_money_deduct_what_it_can_and_owe_the_rest(uow):
    """At one point per yuan a gold member's points (1.5 per yuan spent) are worth more than
    the purchase: the refund deducts all the money it can, to the point, and the points its
    money cannot cover are owed, as under ``owe``."""
    member, bought, earned = bought_and_spent(uow, rate=1, tender=6390)
    r = refund(uow, bought["checkout_id"], {"idempotency_key": "rf1", "full": True})
    adds_up(r)
    d = r["points_deduction"]
    assert r["refund_before_deduction_fen"] == 6390
    assert d["deducted"] == 63 and d["deducted_fen"] == 6300  # 0.90 cannot buy a point
    assert r["refund_to_tenders_fen"] == 90
    assert d["owed"] == earned - 63 > 0
    assert points(uow, member["id"])["owed"] == d["owed"]
    row = earning(uow, bought["order_id"])
    assert (row["points_clawed"], row["points_written_off"]) == (d["owed"], 63)
    assert verify(uow.c)["differences"] == []


def test_a_failed_refund_deducts_nothing_and_leaves_nothing_half_applied(uow, monkeypatch):
    member, bought, earned = bought_and_spent(uow, tender=6390)
    before = row_counts(uow), points(uow, member["id"]), earning(uow, bought["order_id"])
    real = service.settle_refund_deduction

    def then_fail(*a, **k):
        real(*a, **k)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(service, "settle_refund_deduction", then_fail)
    with pytest.raises(RuntimeError):
        refund(uow, bought["checkout_id"], {"idempotency_key": "rf1", "full": True})
    uow.rollback()
    assert (row_counts(uow), points(uow, member["id"]),
            earning(uow, bought["order_id"])) == before
    monkeypatch.undo()
    r = refund(uow, bought["checkout_id"], {"idempotency_key": "rf1", "full": True})
    assert r["points_deduction"]["deducted"] == earned and not r["replayed"]


def test_a_return_recorded_without_the_checkout_owes_the_points(uow):
    """``POST /returns`` carries no money for Patron to deduct from: under
    ``deduct_from_refund`` the points it cannot take back are owed, never kept."""
    member, bought, earned = bought_and_spent(uow, tender=6390)
    record_return(uow=uow, actor=SYSTEM, ret=ReturnIn.model_validate({
        "external_id": "RET-1", "channel": "pos", "store": "SH01", "order_external_id": "D-1",
        "returned_at": LATER.isoformat(), "full": True}))
    assert points(uow, member["id"])["owed"] == earned
    row = earning(uow, bought["order_id"])
    assert (row["points_clawed"], row["points_written_off"]) == (earned, 0)
    assert verify(uow.c)["differences"] == []
