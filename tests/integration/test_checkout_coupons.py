"""Coupons at the POS checkout on SQLite and PostgreSQL: the quote shows what the coupons area's
stacking policy makes of them; a commit redeems them exactly once with the order; holds reserve
them; a full refund gives them back (coupons' own rule); two tills never use one coupon."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from sqlalchemy import select

from patron.checkout import service
from patron.checkout.schemas import CommitIn, HoldIn, QuoteIn, RefundIn
from patron.coupons.tables import coupons
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict
from patron.orders.tables import order_lines
from patron.security.model import SYSTEM
from tests.checkout_factories import NOW, basket, sale, setup_member
from tests.coupon_factories import give, make_template

ISSUED = NOW - dt.timedelta(days=1)


def coupon_for(uow, member, code="TEN", **terms):
    t = make_template(uow, code, now=ISSUED - dt.timedelta(days=1), **terms)
    issued = give(uow, t["id"], [member["id"]], f"give-{code}", now=ISSUED)
    return issued["coupons"][0]["code"]


def status(uow, code):
    return uow.c.execute(select(coupons.c.status).where(coupons.c.code == code)).scalar_one()


def quote(uow, body):
    out = service.quote(uow.c, actor=SYSTEM, body=QuoteIn.model_validate(body), now=NOW)
    uow.rollback()
    return out


def commit(uow, body, now=NOW):
    return service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(body), now=now)


def test_a_quote_shows_what_the_coupons_take_off_after_the_member_discount(uow):
    member = setup_member(uow)
    code = coupon_for(uow, member)  # 10 yuan off
    q = quote(uow, basket(member["member_code"], coupons=[code, "NOPE-NOPE-NOPE"]))
    assert q["coupons"]["accepted"][0]["discount_fen"] == 1000
    assert q["coupons"]["refused"] == [{"code": "NOPE-NOPE-NOPE", "reason": "coupon_not_found",
                                        "params": {}}]
    assert q["amounts"]["tier_discount_fen"] == 710 and q["amounts"]["coupon_discount_fen"] == 1000
    assert q["amounts"]["total_fen"] == 5390
    assert status(uow, code) == "available"


def test_a_retried_checkout_redeems_its_coupon_once_and_the_coupon_cannot_pay_twice(uow):
    member = setup_member(uow)
    code = coupon_for(uow, member)
    body = sale(member["member_code"], "k1", "C-1", coupons=[code], tender=5390)
    first = commit(uow, body)
    assert first["amounts"]["coupon_discount_fen"] == 1000
    assert first["coupons"]["accepted"][0]["code"] == code
    assert commit(uow, body)["replayed"] is True
    assert status(uow, code) == "redeemed"
    discounts = uow.c.execute(select(order_lines.c.discount).where(
        order_lines.c.order_id == first["order_id"]).order_by(order_lines.c.line_no)
    ).scalars().all()
    assert str(sum(discounts)) == "17.10"  # 7.10 member discount + 10.00 coupon
    with pytest.raises(Conflict) as exc:
        commit(uow, sale(member["member_code"], "k2", "C-2", coupons=[code], tender=5390))
    assert exc.value.message == "coupon_refused"
    assert exc.value.fields[0].reason == "coupon_used"


def test_a_full_refund_gives_the_coupon_back(uow):
    member = setup_member(uow)
    code = coupon_for(uow, member)
    out = commit(uow, sale(member["member_code"], "k1", "C-1", coupons=[code], tender=5390))
    service.refund(uow=uow, actor=SYSTEM, checkout_id=out["checkout_id"],
                   body=RefundIn.model_validate({"idempotency_key": "r1", "full": True}),
                   now=NOW + dt.timedelta(hours=1))
    assert status(uow, code) == "available"


def test_a_coupon_held_for_a_till_paying_in_steps_then_committed_or_released(uow):
    member = setup_member(uow)
    code = coupon_for(uow, member)
    h = service.create_hold(uow=uow, actor=SYSTEM, now=NOW, body=HoldIn.model_validate(
        basket(member["member_code"], coupons=[code], redeem_points=100,
               idempotency_key="h1")))
    assert status(uow, code) == "held" and h["amounts"]["coupon_discount_fen"] == 1000
    out = commit(uow, sale(member["member_code"], "k1", "C-1", coupons=[code],
                           redeem_points=100, tender=5290, hold_id=h["id"]))
    assert out["amounts"]["total_fen"] == 5390 and status(uow, code) == "redeemed"
    other = coupon_for(uow, member, "FIVE", amount_off="5")
    h2 = service.create_hold(uow=uow, actor=SYSTEM, now=NOW, body=HoldIn.model_validate(
        basket(member["member_code"], coupons=[other], idempotency_key="h2")))
    service.release_hold(uow=uow, actor=SYSTEM, hold_id=h2["id"], now=NOW)
    assert status(uow, other) == "available"


def test_the_same_coupon_is_never_used_twice_by_concurrent_tills(db_url):
    engine = get_engine(db_url)
    with UnitOfWork(engine) as uow:
        member = setup_member(uow)
        code = coupon_for(uow, member)
    clients = 16 if engine.dialect.name == "postgresql" else 6
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)
    lock = threading.Lock()

    def till(n: int) -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                commit(uow, sale(member["member_code"], f"t{n}", f"T-{n}", coupons=[code],
                                 tender=5390))
            with lock:
                outcomes["ok"] += 1
        except Conflict as exc:
            with lock:
                outcomes[exc.message] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=till, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert outcomes["ok"] == 1 and sum(outcomes.values()) == clients
    assert set(outcomes) <= {"ok", "coupon_refused", "coupons_changed"}
