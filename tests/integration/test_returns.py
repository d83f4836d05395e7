from decimal import Decimal

import pytest
from sqlalchemy import select

from patron.customers import figures
from patron.customers.tables import customer_figures
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.orders.tables import order_lines, orders
from patron.security.model import SYSTEM
from tests.factories import T0, make_org, order


def _setup(uow):
    make_org(uow)
    out = record_orders(uow=uow, orders_in=[order("R1", identifiers={"phone": "13812341234"})],
                        source="api", actor=SYSTEM)
    return out[0].customer_id


def ret(external_id="RT1", **kw):
    body = {"external_id": external_id, "channel": "pos", "store": "SH01",
            "order_external_id": "R1", "returned_at": T0.replace(hour=15).isoformat()}
    body.update(kw)
    return ReturnIn.model_validate(body)


def net_spend(uow, cid):
    return uow.c.execute(select(customer_figures.c.net_spend).where(
        customer_figures.c.customer_id == cid)).scalar_one()


def test_partial_return_refunds_in_proportion_and_updates_figures(uow):
    cid = _setup(uow)
    out = record_return(uow=uow, ret=ret(lines=[{"sku": "LATTE", "quantity": "1"}]),
                        actor=SYSTEM)
    assert out["status"] == "created"
    assert out["amount"] == "28.00"
    assert net_spend(uow, cid) == Decimal("43.00")
    assert figures.compare(uow.c) == []


def test_retried_return_is_recorded_once(uow):
    cid = _setup(uow)
    body = ret(lines=[{"sku": "LATTE", "quantity": "1"}])
    record_return(uow=uow, ret=body, actor=SYSTEM)
    again = record_return(uow=uow, ret=body, actor=SYSTEM)
    assert again["status"] == "duplicate"
    assert net_spend(uow, cid) == Decimal("43.00")


def test_return_id_reused_with_other_content_is_a_conflict(uow):
    _setup(uow)
    record_return(uow=uow, ret=ret(lines=[{"sku": "LATTE", "quantity": "1"}]), actor=SYSTEM)
    with pytest.raises(Conflict):
        record_return(uow=uow, ret=ret(lines=[{"sku": "LATTE", "quantity": "2"}]),
                      actor=SYSTEM)


def test_cannot_return_more_than_was_bought_across_several_returns(uow):
    cid = _setup(uow)
    record_return(uow=uow, ret=ret("RT1", lines=[{"sku": "LATTE", "quantity": "2"}]),
                  actor=SYSTEM)
    with pytest.raises(ValidationFailed) as err:
        record_return(uow=uow, ret=ret("RT2", lines=[{"sku": "LATTE", "quantity": "1"}]),
                      actor=SYSTEM)
    assert err.value.fields[0].reason == "return_exceeds_quantity"
    assert net_spend(uow, cid) == Decimal("15.00")
    returned = uow.c.execute(select(order_lines.c.returned_quantity).where(
        order_lines.c.sku == "LATTE")).scalar_one()
    assert returned == Decimal(2)


def test_full_return_after_partial_refunds_exactly_the_rest(uow):
    cid = _setup(uow)
    record_return(uow=uow, ret=ret("RT1", lines=[{"sku": "LATTE", "quantity": "1"}]),
                  actor=SYSTEM)
    out = record_return(uow=uow, ret=ret("RT2", full=True), actor=SYSTEM)
    assert out["amount"] == "43.00"
    assert net_spend(uow, cid) == Decimal("0.00")
    refunded = uow.c.execute(select(orders.c.refunded_amount)).scalar_one()
    assert refunded == Decimal("71.00")
    assert figures.compare(uow.c) == []


def test_return_for_unknown_order_is_not_found(uow):
    _setup(uow)
    with pytest.raises(NotFound):
        record_return(uow=uow, ret=ret(order_external_id="NOPE", full=True), actor=SYSTEM)


def test_return_dated_before_the_order_is_refused(uow):
    _setup(uow)
    with pytest.raises(ValidationFailed):
        record_return(uow=uow, ret=ret(full=True,
                                       returned_at=T0.replace(hour=1).isoformat()),
                      actor=SYSTEM)


def test_full_return_of_an_order_with_an_order_level_discount_refunds_what_was_paid(uow):
    make_org(uow)
    out = record_orders(uow=uow, orders_in=[order("R1", identifiers={"phone": "13812341234"},
                                                  discount="5.00")],
                        source="api", actor=SYSTEM)
    cid = out[0].customer_id
    res = record_return(uow=uow, ret=ret(full=True), actor=SYSTEM)
    assert res["amount"] == "66.00"
    assert net_spend(uow, cid) == Decimal("0.00")
    assert figures.compare(uow.c) == []


def test_partial_return_of_a_discounted_order_refunds_the_lines_paid_share(uow):
    make_org(uow)
    record_orders(uow=uow, orders_in=[order("R1", discount="7.10")], source="api", actor=SYSTEM)
    res = record_return(uow=uow, ret=ret(lines=[{"sku": "LATTE", "quantity": "2"}]),
                        actor=SYSTEM)
    # 56.00 of 71.00 before the discount; 63.90 paid in all -> 50.40 for the lattes
    assert res["amount"] == "50.40"
    rest = record_return(uow=uow, ret=ret("RT2", full=True), actor=SYSTEM)
    assert rest["amount"] == "13.50"


def test_allocation_sums_exactly():
    from patron.orders.returns import allocate

    parts = allocate(Decimal("10.00"), [Decimal("3.33"), Decimal("3.33"), Decimal("3.34")])
    assert sum(parts) == Decimal("10.00")
