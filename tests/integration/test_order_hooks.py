"""Areas that react to purchases and returns do so inside the recording transaction."""

import sys
import types
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from patron.orders import hooks
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.orders.tables import orders
from patron.security.model import SYSTEM
from tests.factories import T0, make_org, order


@pytest.fixture
def seen(monkeypatch):
    calls = {"orders": [], "returns": [], "fail": False}
    module = types.ModuleType("patron_test_hook")

    def on_orders_recorded(conn, recorded, *, actor, now):
        calls["orders"].append(list(recorded))
        if calls["fail"]:
            raise RuntimeError("the reacting area refused")

    def on_return_recorded(conn, ret, *, actor, now):
        calls["returns"].append(ret)

    module.on_orders_recorded = on_orders_recorded
    module.on_return_recorded = on_return_recorded
    monkeypatch.setitem(sys.modules, "patron_test_hook", module)
    monkeypatch.setattr(hooks, "HOOK_MODULES", ("patron.not_installed.hooks", "patron_test_hook"))
    hooks._functions.cache_clear()
    yield calls
    hooks._functions.cache_clear()


def test_created_orders_reach_the_hook_once_with_their_facts(uow, seen):
    make_org(uow)
    body = order("H1", identifiers={"phone": "13812341234"})
    out = record_orders(uow=uow, orders_in=[body, order("H2")], source="api", actor=SYSTEM)
    record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)  # a retry
    assert len(seen["orders"]) == 1  # the duplicate reached nobody
    first, guest = seen["orders"][0]
    assert first.order_id == out[0].order_id and first.customer_id == out[0].customer_id
    assert guest.customer_id is None
    assert first.total == Decimal("71.00") and first.store_code == "SH01"
    assert [(ln.line_no, ln.sku, ln.amount) for ln in first.lines] == [
        (1, "LATTE", Decimal("56.00")), (2, "CROISSANT", Decimal("15.00"))]
    assert first.purchased_at == T0 and first.source == "api"


def test_the_hook_s_orders_are_built_as_it_reads_them(uow, seen, monkeypatch):
    # A hook that stops early (loyalty with no program stops at the first member order) costs
    # one record, not one per order; one that reads them all sees every order, in order.
    from patron.orders import service

    make_org(uow)
    built = []
    real = service._recorded

    def counting(it, source):
        built.append(it.index)
        return real(it, source)

    monkeypatch.setattr(service, "_recorded", counting)
    peeked = []

    def on_orders_recorded(conn, recorded, *, actor, now):
        peeked.append((len(recorded), next(iter(recorded)).order_id, recorded[-1].order_id,
                       [o.order_id for o in recorded[1:3]]))

    monkeypatch.setattr(sys.modules["patron_test_hook"], "on_orders_recorded",
                        on_orders_recorded)
    hooks._functions.cache_clear()
    out = record_orders(uow=uow, orders_in=[order(f"L{i}") for i in range(10)], source="api",
                        actor=SYSTEM)
    ids = [o.order_id for o in out]
    assert peeked == [(10, ids[0], ids[-1], ids[1:3])]
    assert sorted(built) == [0, 1, 2, 9]  # each built once, only those read


def test_a_failing_hook_rolls_the_orders_back(uow, seen):
    make_org(uow)
    seen["fail"] = True
    with pytest.raises(RuntimeError):
        record_orders(uow=uow, orders_in=[order("H1")], source="api", actor=SYSTEM)
    uow.rollback()  # what leaving the unit of work's block does
    assert uow.c.execute(select(func.count()).select_from(orders)).scalar_one() == 0


def test_returns_reach_the_hook_with_the_refunded_lines(uow, seen):
    make_org(uow)
    record_orders(uow=uow, orders_in=[order("R1", identifiers={"phone": "13812341234"})],
                  source="api", actor=SYSTEM)
    ret = ReturnIn.model_validate({
        "external_id": "RT1", "channel": "pos", "store": "SH01", "order_external_id": "R1",
        "returned_at": T0.replace(hour=15).isoformat(),
        "lines": [{"sku": "LATTE", "quantity": "1"}]})
    record_return(uow=uow, ret=ret, actor=SYSTEM)
    (got,) = seen["returns"]
    assert got.amount == Decimal("28.00") and not got.full
    assert [(ln.line_no, ln.quantity, ln.amount) for ln in got.lines] == [
        (1, Decimal("1"), Decimal("28.00"))]
    assert got.order_total == Decimal("71.00") and got.customer_id is not None
