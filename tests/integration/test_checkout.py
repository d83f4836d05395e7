"""The POS checkout on SQLite and PostgreSQL: quotes write nothing and promise what the purchase
earns; commits apply the member discount, points and the order at once, once per key; holds,
refunds and offline queues; each KNOWN-FAILURES scenario in scope named after what it proves
cannot happen."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from patron.checkout import service
from patron.checkout.schemas import CommitIn, HoldIn, OfflineBatchIn, QuoteIn, RefundIn
from patron.checkout.tables import checkout_commits
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.loyalty.tables import loyalty_entries, loyalty_order_earnings, loyalty_tiers
from patron.loyalty.verify import verify
from patron.orders.tables import order_lines, order_payments, orders
from patron.security.model import SYSTEM, Actor
from tests.checkout_factories import NOW, basket, row_counts, sale, setup_member
from tests.loyalty_factories import points

LATER = NOW + dt.timedelta(minutes=10)


def quote(uow, body, now=NOW):
    out = service.quote(uow.c, actor=SYSTEM, body=QuoteIn.model_validate(body), now=now)
    uow.rollback()
    return out


def commit(uow, body, now=NOW, **kw):
    return service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(body), now=now,
                          **kw)


def test_a_quote_writes_nothing_and_shows_discount_points_and_earning(uow):
    member = setup_member(uow)
    before = row_counts(uow)
    q = quote(uow, basket(member["member_code"], redeem_points=500))
    assert row_counts(uow) == before
    assert q["member"]["tier"]["code"] == "GOLD" and q["member"]["phone"] == "138****5678"
    assert q["tier_benefits"]["member_discount_percent"] == "10"
    assert q["tier_benefits"]["free_items"] == [{"sku": "WATER", "name": "矿泉水",
                                                  "quantity": 1}]
    # 2 x 28.00 + 15.00 = 71.00; 10% member discount = 7.10; points 500 = 5.00
    assert q["amounts"] == {"gross_fen": 7100, "tier_discount_fen": 710,
                            "coupon_discount_fen": 0, "total_fen": 6390,
                            "points_value_fen": 500, "stored_value_fen": 0,
                            "payable_fen": 5890}
    assert [ln["tier_discount_fen"] for ln in q["lines"]] == [560, 150]
    p = q["points"]
    assert p["available"] == 800 and p["max_redeemable"] == 800 and p["max_value_fen"] == 800
    assert p["redeem"] == 500 and p["redeem_value_fen"] == 500
    # Points paid with points earn nothing: 58.90 paid otherwise x 1 point/yuan x GOLD 1.5.
    assert p["will_earn"] == 88


def test_the_quoted_points_are_what_the_commit_earns(uow):
    member = setup_member(uow)
    for redeem in (0, 300, 400):
        q = quote(uow, basket(member["member_code"], redeem_points=redeem))
        out = commit(uow, sale(member["member_code"], f"k{redeem}", f"R-{redeem}",
                               redeem_points=redeem, tender=q["amounts"]["payable_fen"]))
        assert out["points"]["earned"] == q["points"]["will_earn"] > 0
        assert out["amounts"] == q["amounts"]
        member_points = points(uow, member["id"])
        assert out["points"]["balance"]["available"] == member_points["available"]


def test_points_can_never_pay_more_than_the_basket(uow):
    member = setup_member(uow, points=9000)
    q = quote(uow, basket(member["member_code"]))
    assert q["points"]["max_redeemable"] == 6390 and q["points"]["max_value_fen"] == 6390
    with pytest.raises(ValidationFailed) as exc:
        quote(uow, basket(member["member_code"], redeem_points=6391))
    assert exc.value.fields[0].field == "redeem_points"
    assert exc.value.fields[0].reason == "points_exceed_payable"
    out = commit(uow, sale(member["member_code"], "all", "R-ALL", redeem_points=6390,
                           tender=0))
    assert out["amounts"]["payable_fen"] == 0 and out["points"]["earned"] == 0


def test_a_guest_checks_out_without_a_member(uow):
    setup_member(uow)
    q = quote(uow, basket())
    assert q["member"] is None and q["points"] is None and q["amounts"]["total_fen"] == 7100
    out = commit(uow, sale(None, "g1", "G-1", tender=7100))
    assert out["order_id"] and out["points"] is None
    with pytest.raises(ValidationFailed) as exc:
        quote(uow, basket(redeem_points=10))
    assert exc.value.fields[0].reason == "member_required"


def test_the_order_is_a_normal_order_with_its_discounts_and_payments(uow):
    member = setup_member(uow)
    out = commit(uow, sale(member["member_code"], "n1", "N-1", redeem_points=300,
                           payments=[{"method": "wechat_pay", "amount_fen": 5000},
                                     {"method": "cash", "amount_fen": 1090}]))
    o = uow.c.execute(select(orders).where(orders.c.id == out["order_id"])).mappings().one()
    assert o["external_id"] == "N-1" and o["source"] == "checkout"
    assert o["customer_id"] == member["customer_id"] and str(o["total_amount"]) == "63.90"
    lines = uow.c.execute(select(order_lines.c.discount).where(
        order_lines.c.order_id == o["id"]).order_by(order_lines.c.line_no)).scalars().all()
    assert [str(d) for d in lines] == ["5.60", "1.50"]  # the member discount
    pays = dict(uow.c.execute(select(order_payments.c.method, order_payments.c.amount).where(
        order_payments.c.order_id == o["id"])).all())
    assert {k: str(v) for k, v in pays.items()} == {"points": "3.00", "wechat_pay": "50.00",
                                                    "cash": "10.90"}


def test_a_retried_confirmation_never_earns_or_redeems_twice(uow):
    member = setup_member(uow)
    body = sale(member["member_code"], "till1-0001", "R-1", redeem_points=200, tender=6190)
    first = commit(uow, body)
    again = commit(uow, body, now=LATER)
    assert again["replayed"] is True and first["replayed"] is False
    assert {k: v for k, v in again.items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"}
    assert uow.c.execute(select(func.count()).select_from(orders)).scalar_one() == 1
    e = loyalty_entries.c
    kinds = uow.c.execute(select(e.kind, func.count()).where(e.member_id == member["id"])
                          .group_by(e.kind)).all()
    assert dict(kinds) == {"adjust": 2, "redeem": 1, "earn": 2}  # points + growth
    assert points(uow, member["id"])["available"] == 800 - 200 + first["points"]["earned"]


def test_the_same_key_with_other_content_is_refused(uow):
    member = setup_member(uow)
    commit(uow, sale(member["member_code"], "k1", "R-1", tender=6390))
    with pytest.raises(Conflict) as exc:
        commit(uow, sale(member["member_code"], "k1", "R-1", redeem_points=10, tender=6380))
    assert exc.value.message == "idempotency_key_reused"


def test_a_duplicate_document_number_is_never_processed_twice(uow):
    member = setup_member(uow)
    commit(uow, sale(member["member_code"], "k1", "DOC-7", redeem_points=100, tender=6290))
    before = points(uow, member["id"])
    with pytest.raises(Conflict) as exc:
        commit(uow, sale(member["member_code"], "k2", "DOC-7", redeem_points=100,
                         tender=6290))
    assert exc.value.message == "order_number_taken"
    assert points(uow, member["id"]) == before
    assert uow.c.execute(select(func.count()).select_from(checkout_commits)).scalar_one() == 1


def test_a_failure_at_the_last_step_leaves_nothing_half_applied(uow, monkeypatch):
    member = setup_member(uow)
    before = row_counts(uow)
    balance = points(uow, member["id"])

    def broken(*_a, **_k):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(service, "_finish", broken)
    with pytest.raises(RuntimeError):
        commit(uow, sale(member["member_code"], "k1", "R-1", redeem_points=500, tender=5890))
    uow.rollback()
    assert row_counts(uow) == before
    assert points(uow, member["id"]) == balance


def test_the_member_discount_follows_the_tier_held_at_the_purchase_time(uow):
    member = setup_member(uow, gold=False)
    q = quote(uow, basket(member["member_code"]))
    assert q["member"]["tier"]["code"] == "SILVER" and q["amounts"]["tier_discount_fen"] == 0
    assert q["tier_benefits"]["member_discount_percent"] == "0"


def test_the_member_discount_is_taken_per_line_rounded_half_up(uow):
    member = setup_member(uow)
    lines = [{"sku": "TEA", "category": "tea", "quantity": "1", "unit_price_fen": 1005},
             {"sku": "LATTE", "category": "coffee", "quantity": "3", "unit_price_fen": 2815}]
    q = quote(uow, basket(member["member_code"], lines=lines))
    assert [ln["tier_discount_fen"] for ln in q["lines"]] == [101, 845]  # 100.5, 844.5


def test_benefits_saved_before_the_schema_never_break_a_checkout(uow):
    member = setup_member(uow)
    uow.c.execute(update(loyalty_tiers).where(loyalty_tiers.c.code == "GOLD").values(
        benefits={"discount": "9折", "member_discount_percent": "lots"}))
    uow.commit()
    q = quote(uow, basket(member["member_code"]))
    assert q["amounts"]["tier_discount_fen"] == 0 and q["member"]["tier"]["code"] == "GOLD"


def test_a_member_found_by_phone_and_an_unknown_one(uow):
    member = setup_member(uow)
    q = quote(uow, {**basket(), "member": {"phone": "138 1234 5678"}})
    assert q["member"]["id"] == member["id"]
    with pytest.raises(NotFound):
        quote(uow, {**basket(), "member": {"member_code": "0000000000"}})
    with pytest.raises(ValidationFailed) as exc:
        quote(uow, {**basket(), "member": {"qr": "not-a-card"}})
    assert exc.value.fields[0].field == "member.qr"


def test_a_cashier_only_checks_out_at_their_stores(uow):
    member = setup_member(uow)
    from patron.org.service import Reference

    sh01 = Reference(uow.c).store("SH01").id
    cashier = Actor(type="user", id=9, name="cashier", role="cashier",
                    store_ids=frozenset({sh01}))
    body = CommitIn.model_validate(sale(member["member_code"], "c1", "C-1", store="BJ01",
                                        tender=6390))
    with pytest.raises(ValidationFailed) as exc:
        service.commit(uow=uow, actor=cashier, body=body, now=NOW)
    assert exc.value.fields[0].reason == "store_out_of_scope"
    ok = service.commit(uow=uow, actor=cashier, body=body.model_copy(update={"store": "SH01"}),
                        now=NOW)
    assert ok["store"] == "SH01"


# --- holds ------------------------------------------------------------------------------------

def hold(uow, body, now=NOW):
    return service.create_hold(uow=uow, actor=SYSTEM, body=HoldIn.model_validate(body), now=now)


def test_a_till_paying_in_steps_holds_points_then_commits_them(uow):
    member = setup_member(uow)
    h = hold(uow, basket(member["member_code"], redeem_points=300, idempotency_key="h1"))
    assert h["status"] == "held" and h["points"] == 300
    assert points(uow, member["id"])["held"] == 300
    again = hold(uow, basket(member["member_code"], redeem_points=300, idempotency_key="h1"))
    assert again["id"] == h["id"] and again["replayed"]
    with pytest.raises(ValidationFailed) as exc:
        commit(uow, sale(member["member_code"], "k1", "H-1", redeem_points=200, tender=6190,
                         hold_id=h["id"]))
    assert exc.value.fields[0].reason == "hold_mismatch"
    out = commit(uow, sale(member["member_code"], "k1", "H-1", redeem_points=300, tender=6090,
                           hold_id=h["id"]), now=NOW + dt.timedelta(minutes=3))
    assert out["points"]["redeemed"] == 300 and out["points"]["operation_id"] == h[
        "points_operation_id"]
    p = points(uow, member["id"])
    assert p["held"] == 0 and p["available"] == 500 + out["points"]["earned"]
    assert service.get_hold(uow.c, actor=SYSTEM, hold_id=h["id"])["status"] == "committed"
    with pytest.raises(Conflict):
        service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=LATER)
    assert verify(uow.c)["differences"] == []


def test_a_released_hold_gives_the_points_back_and_cannot_pay(uow):
    member = setup_member(uow)
    h = hold(uow, basket(member["member_code"], redeem_points=300, idempotency_key="h1"))
    r = service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=LATER)
    assert r["status"] == "released" and points(uow, member["id"])["available"] == 800
    assert service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=LATER)["replayed"]
    with pytest.raises(Conflict) as exc:
        commit(uow, sale(member["member_code"], "k1", "H-1", redeem_points=300, tender=6090,
                         hold_id=h["id"]), now=LATER)
    assert exc.value.message == "checkout_hold_not_open"


def test_a_hold_expires_by_itself(uow):
    member = setup_member(uow)
    h = hold(uow, basket(member["member_code"], redeem_points=300, idempotency_key="h1",
                         minutes=5))
    late = NOW + dt.timedelta(minutes=6)
    assert service.get_hold(uow.c, actor=SYSTEM, hold_id=h["id"], now=late)["status"] == (
        "expired")
    with pytest.raises(Conflict) as exc:
        commit(uow, sale(member["member_code"], "k1", "H-1", redeem_points=300, tender=6090,
                         hold_id=h["id"]), now=late)
    assert exc.value.message == "hold_expired"
    # The next operation on the member releases the expired points.
    q = quote(uow, basket(member["member_code"]), now=late)
    assert q["points"]["available"] == 800


# --- refunds ----------------------------------------------------------------------------------

def refund(uow, checkout_id, body, now=LATER):
    return service.refund(uow=uow, actor=SYSTEM, checkout_id=checkout_id,
                          body=RefundIn.model_validate(body), now=now)


def test_buy_refund_and_keep_the_points_cannot_happen(uow):
    member = setup_member(uow)
    out = commit(uow, sale(member["member_code"], "k1", "R-1", redeem_points=500, tender=5890))
    earned = out["points"]["earned"]
    assert points(uow, member["id"])["available"] == 300 + earned
    r = refund(uow, out["checkout_id"], {"idempotency_key": "rf1", "full": True})
    assert r["amount_fen"] == 6390 and r["points_returned"] == 500
    assert r["refund_to_tenders_fen"] == 5890
    assert points(uow, member["id"])["available"] == 800  # earned taken back, paid given back
    assert refund(uow, out["checkout_id"], {"idempotency_key": "rf1", "full": True})["replayed"]
    with pytest.raises(Conflict):
        refund(uow, out["checkout_id"], {"idempotency_key": "rf1",
                                         "lines": [{"line_no": 1, "quantity": "1"}]})
    assert verify(uow.c)["differences"] == []


def test_a_partial_refund_gives_back_points_in_proportion(uow):
    member = setup_member(uow)
    out = commit(uow, sale(member["member_code"], "k1", "R-1", redeem_points=639, tender=5751))
    first = refund(uow, out["checkout_id"], {"idempotency_key": "rf1",
                                             "lines": [{"line_no": 1, "quantity": "1"}]})
    # Line 1 paid 50.40 - its share of nothing: 2520 fen of 6390 refunded -> 252 points back.
    assert first["amount_fen"] == 2520 and first["points_returned"] == 252
    rest = refund(uow, out["checkout_id"], {"idempotency_key": "rf2", "full": True})
    assert rest["points_returned"] == 639 - 252
    row = service.get_checkout(uow.c, actor=SYSTEM, checkout_id=out["checkout_id"])
    assert len(row["refunds"]) == 2
    assert verify(uow.c)["differences"] == []


# --- offline tills ----------------------------------------------------------------------------

def offline(uow, entries, now):
    return service.sync_offline(uow=uow, actor=SYSTEM,
                                body=OfflineBatchIn.model_validate({"entries": entries}),
                                now=now)


def test_an_offline_till_retrying_its_sync_never_doubles_the_points(uow):
    member = setup_member(uow)
    at = [NOW - dt.timedelta(hours=h) for h in (1, 3, 2)]
    entries = [sale(member["member_code"], f"off-{i}", f"OFF-{i}", tender=6390,
                    purchased_at=t.isoformat()) for i, t in enumerate(at)]
    first = offline(uow, entries, NOW)
    assert first["summary"] == {"created": 3}
    assert first["applied_order"] == [1, 2, 0]  # purchase-time order
    ids = [first["results"][i]["checkout"]["checkout_id"] for i in (1, 2, 0)]
    assert ids == sorted(ids)
    after = points(uow, member["id"])
    again = offline(uow, entries + [sale(member["member_code"], "off-9", "OFF-0",
                                         tender=6390, purchased_at=at[0].isoformat())], LATER)
    assert again["summary"] == {"replayed": 3, "duplicate": 1}
    assert points(uow, member["id"]) == after
    earned = uow.c.execute(select(func.count()).select_from(loyalty_order_earnings)
                           ).scalar_one()
    assert earned == 3


def test_an_offline_sale_earns_by_the_tier_held_at_its_purchase_time(uow):
    member = setup_member(uow, gold=False)
    old = NOW - dt.timedelta(days=1)
    from patron.loyalty import service as loyalty
    from patron.loyalty.schemas import AdjustIn

    loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"],
                   body=AdjustIn(idempotency_key="g", points=1000, bucket="growth",
                                 reason="became gold"), now=NOW - dt.timedelta(hours=1))
    out = offline(uow, [sale(member["member_code"], "o1", "O-1", tender=7100,
                             purchased_at=old.isoformat())], NOW)
    checkout = out["results"][0]["checkout"]
    assert checkout["amounts"]["tier_discount_fen"] == 0  # SILVER at the purchase
    assert checkout["points"]["earned"] == 71  # no GOLD multiplier either


def test_points_that_expired_between_an_offline_sale_and_its_sync_cannot_pay_for_it(uow):
    member = setup_member(uow, points=0, gold=False, since=NOW - dt.timedelta(days=500))
    from patron.loyalty import service as loyalty
    from patron.loyalty.schemas import AdjustIn

    # Points valid at the purchase, expired (12 months after they were given) before the sync.
    given = NOW - dt.timedelta(days=370)
    loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"],
                   body=AdjustIn(idempotency_key="old", points=400, reason="old points"),
                   now=given)
    bought = given + dt.timedelta(days=360)
    before = row_counts(uow)
    out = offline(uow, [sale(member["member_code"], "o1", "O-1", redeem_points=400,
                             tender=6700, purchased_at=bought.isoformat())], NOW)
    result = out["results"][0]
    assert result["status"] == "refused"
    assert result["error"]["code"] == "insufficient_points"
    assert result["error"]["params"] == {"wanted": 400, "available": 0}
    assert row_counts(uow) == before  # nothing of the entry was applied


def test_an_offline_sales_points_already_past_their_expiry_expire_at_the_sync(uow):
    member = setup_member(uow, points=0, gold=False, since=NOW - dt.timedelta(days=500))
    bought = NOW - dt.timedelta(days=400)  # a year-old receipt: 12-month points
    out = offline(uow, [sale(member["member_code"], "o1", "O-1", tender=7100,
                             purchased_at=bought.isoformat())], NOW)
    assert out["results"][0]["checkout"]["points"]["earned"] == 71
    p = points(uow, member["id"])
    assert p["available"] == 0 and p["pending"] == 0
    assert verify(uow.c)["differences"] == []
