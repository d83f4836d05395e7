"""Stored value at the POS checkout on SQLite and PostgreSQL: it pays after points, each way of
paying takes exactly its amount; a refund gives it back in proportion; holds reserve it; many
tills paying from one card never overdraw it."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from decimal import Decimal

import pytest

from patron.checkout import service
from patron.checkout.schemas import CommitIn, HoldIn, QuoteIn, RefundIn
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict
from patron.loyalty.verify import verify
from patron.security.model import SYSTEM
from patron.storedvalue import service as storedvalue
from patron.storedvalue.schemas import SettingsIn, TopUpIn
from tests.checkout_factories import NOW, basket, sale, setup_member
from tests.loyalty_factories import points

TOPPED = NOW - dt.timedelta(days=1)


def with_card(uow, member, amount="100"):
    storedvalue.configure(uow=uow, actor=SYSTEM, code="BB", body=SettingsIn(), now=TOPPED)
    storedvalue.topup(uow=uow, actor=SYSTEM, member_id=member["id"], now=TOPPED,
                      body=TopUpIn.model_validate({"idempotency_key": "top", "amount": amount,
                                                   "store": "SH01"}))


def card(uow, member):
    out = storedvalue.balance(uow.c, actor=SYSTEM, member_id=member["id"], now=NOW)
    uow.rollback()
    return out["spendable"]


def commit(uow, body, now=NOW):
    return service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(body), now=now)


def test_two_ways_of_paying_on_one_checkout_never_wipe_each_other_out(uow):
    # Points and stored value on one checkout each take exactly their amount.
    member = setup_member(uow)
    with_card(uow, member)
    q = service.quote(uow.c, actor=SYSTEM, now=NOW, body=QuoteIn.model_validate(
        basket(member["member_code"], redeem_points=500, stored_value_fen=2000)))
    uow.rollback()
    assert q["stored_value"] == {"balance_fen": 10000, "spend_fen": 2000}
    assert q["amounts"]["payable_fen"] == 6390 - 500 - 2000
    out = commit(uow, sale(member["member_code"], "k1", "SV-1", redeem_points=500,
                           stored_value_fen=2000, tender=3890))
    assert [p["method"] for p in out["payments"]] == ["points", "stored_value", "cash"]
    assert out["stored_value"]["spent_fen"] == 2000 and out["stored_value"]["balance_fen"] == 8000
    assert card(uow, member) == Decimal("80.00")
    assert points(uow, member["id"])["available"] == 300 + out["points"]["earned"]
    again = commit(uow, sale(member["member_code"], "k1", "SV-1", redeem_points=500,
                             stored_value_fen=2000, tender=3890))
    assert again["replayed"] and card(uow, member) == Decimal("80.00")
    big = [{"sku": "BEANS", "category": "grocery", "quantity": "2", "unit_price_fen": 8900}]
    with pytest.raises(Conflict) as exc:  # 16,020 fen after the member discount; 8,000 left
        commit(uow, {**sale(member["member_code"], "k2", "SV-2", stored_value_fen=9000,
                            tender=16020 - 9000), "lines": big})
    assert exc.value.message == "insufficient_balance"
    assert card(uow, member) == Decimal("80.00")


def test_a_refund_gives_stored_value_back_in_proportion(uow):
    member = setup_member(uow)
    with_card(uow, member)
    out = commit(uow, sale(member["member_code"], "k1", "SV-1", stored_value_fen=6390,
                           tender=0))
    assert card(uow, member) == Decimal("36.10")
    later = NOW + dt.timedelta(hours=1)
    first = service.refund(uow=uow, actor=SYSTEM, checkout_id=out["checkout_id"], now=later,
                           body=RefundIn.model_validate(
                               {"idempotency_key": "r1",
                                "lines": [{"line_no": 2, "quantity": "1"}]}))
    assert first["stored_value_returned_fen"] == 1350 and first["refund_to_tenders_fen"] == 0
    rest = service.refund(uow=uow, actor=SYSTEM, checkout_id=out["checkout_id"], now=later,
                          body=RefundIn.model_validate({"idempotency_key": "r2", "full": True}))
    assert rest["stored_value_returned_fen"] == 6390 - 1350
    assert card(uow, member) == Decimal("100.00")
    assert verify(uow.c)["differences"] == []


def test_stored_value_held_for_a_till_paying_in_steps(uow):
    member = setup_member(uow)
    with_card(uow, member)
    h = service.create_hold(uow=uow, actor=SYSTEM, now=NOW, body=HoldIn.model_validate(
        basket(member["member_code"], stored_value_fen=3000, idempotency_key="h1")))
    assert h["stored_value_operation_id"] and card(uow, member) == Decimal("70.00")
    out = commit(uow, sale(member["member_code"], "k1", "SV-1", stored_value_fen=3000,
                           tender=3390, hold_id=h["id"]))
    assert out["stored_value"]["operation_id"] == h["stored_value_operation_id"]
    assert card(uow, member) == Decimal("70.00")
    h2 = service.create_hold(uow=uow, actor=SYSTEM, now=NOW, body=HoldIn.model_validate(
        basket(member["member_code"], stored_value_fen=1000, idempotency_key="h2")))
    service.release_hold(uow=uow, actor=SYSTEM, hold_id=h2["id"], now=NOW)
    assert card(uow, member) == Decimal("70.00")


def test_many_tills_paying_from_one_card_never_overdraw_it(db_url):
    engine = get_engine(db_url)
    with UnitOfWork(engine) as uow:
        member = setup_member(uow)
        with_card(uow, member, "200")
    clients = 16 if engine.dialect.name == "postgresql" else 6
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)
    lock = threading.Lock()

    def till(n: int) -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                commit(uow, sale(member["member_code"], f"t{n}", f"T-{n}",
                                 stored_value_fen=6000, tender=390))
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
    assert outcomes == {"ok": 3, "insufficient_balance": clients - 3}
    with UnitOfWork(engine) as uow:
        assert card(uow, member) == Decimal("20.00")
