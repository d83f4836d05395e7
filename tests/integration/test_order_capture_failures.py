"""Scenarios in which loyalty and customer systems are known to have failed, shown impossible."""

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from patron.customers import figures
from patron.customers.service import undo_merge
from patron.customers.tables import customer_merges, customers, identities
from patron.db import UnitOfWork
from patron.orders.service import record_orders
from patron.orders.tables import orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order


def n(uow, table, *where):
    return uow.c.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_client_retrying_a_confirmation_records_the_order_once(uow):
    make_org(uow)
    body = order("POS-1", identifiers={"member_code": "M001"})
    results = [record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)[0]
               for _ in range(3)]
    assert [r.status for r in results] == ["created", "duplicate", "duplicate"]
    assert n(uow, orders) == 1


def test_offline_till_resending_its_whole_backlog_records_nothing_twice(uow):
    make_org(uow)
    backlog = [order(f"OFF-{i}", identifiers={"phone": f"1381234{i:04d}"}) for i in range(50)]
    first = record_orders(uow=uow, orders_in=backlog[:30], source="api", actor=SYSTEM)
    assert {r.status for r in first} == {"created"}
    again = record_orders(uow=uow, orders_in=backlog, source="api", actor=SYSTEM)
    assert [r.status for r in again] == ["duplicate"] * 30 + ["created"] * 20
    assert n(uow, orders) == 50
    assert figures.compare(uow.c) == []


def test_duplicate_document_number_sent_concurrently_is_recorded_once(engine):
    with UnitOfWork(engine) as uow:
        make_org(uow)
    body = order("DUP-1", identifiers={"phone": "13900001111"})

    def send(_):
        with UnitOfWork(engine) as uow:
            return record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)[0]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(send, range(6)))
    assert sorted(r.status for r in results) == ["created"] + ["duplicate"] * 5
    assert len({r.order_id for r in results}) == 1
    with UnitOfWork(engine) as uow:
        assert n(uow, orders) == 1
        assert n(uow, customers) == 1
        assert figures.compare(uow.c) == []


def test_new_customer_arriving_on_two_tills_at_once_gets_one_profile(engine):
    with UnitOfWork(engine) as uow:
        make_org(uow)

    def send(i):
        with UnitOfWork(engine) as uow:
            return record_orders(uow=uow, orders_in=[order(f"C-{i}", identifiers={
                "phone": "13900002222"})], source="api", actor=SYSTEM)[0]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(send, range(6)))
    assert {r.status for r in results} == {"created"}
    assert len({r.customer_id for r in results}) == 1
    with UnitOfWork(engine) as uow:
        assert n(uow, identities) == 1
        assert figures.compare(uow.c) == []


def test_merged_profile_keeps_its_purchase_history_and_the_merge_can_be_undone(uow):
    make_org(uow)
    a = record_orders(uow=uow, orders_in=[order("A1", identifiers={"phone": "13812341234"})],
                      source="api", actor=SYSTEM)[0].customer_id
    b = record_orders(uow=uow, orders_in=[
        order("B1", channel="meituan", store="SH01",
              identifiers={"platform_buyer_id": "mt-778"}),
        order("B2", channel="meituan", store="SH01",
              identifiers={"platform_buyer_id": "mt-778"})],
        source="api", actor=SYSTEM)[0].customer_id
    link = record_orders(uow=uow, orders_in=[order("L1", channel="meituan", identifiers={
        "platform_buyer_id": "mt-778", "phone": "+86 138 1234 1234"})], source="api",
        actor=SYSTEM)[0]
    assert link.customer_id == a
    assert n(uow, orders, orders.c.customer_id == a) == 4
    assert n(uow, orders, orders.c.customer_id == b) == 0
    assert figures.compare(uow.c) == []

    merge_id = uow.c.execute(select(customer_merges.c.id)).scalar_one()
    undo_merge(uow=uow, merge_id=merge_id, actor=SYSTEM)
    assert n(uow, orders, orders.c.customer_id == b) == 2
    assert n(uow, orders, orders.c.customer_id == a) == 2  # A1 and the linking order L1
    assert uow.c.execute(select(customers.c.merged_into_id).where(customers.c.id == b)
                         ).scalar_one() is None
    assert figures.compare(uow.c) == []


def test_one_order_linking_three_profiles_merges_all_into_the_oldest(uow):
    make_org(uow)
    ids = [record_orders(uow=uow, orders_in=[order(f"X{i}", identifiers=ident)],
                         source="api", actor=SYSTEM)[0].customer_id
           for i, ident in enumerate([{"phone": "13800000001"}, {"wechat_openid": "o-2"},
                                      {"member_code": "M3"}])]
    out = record_orders(uow=uow, orders_in=[order("X9", identifiers={
        "phone": "13800000001", "wechat_openid": "o-2", "member_code": "M3"})],
        source="api", actor=SYSTEM)[0]
    assert out.customer_id == min(ids)
    live = uow.c.execute(select(func.count()).select_from(customers).where(
        customers.c.merged_into_id.is_(None))).scalar_one()
    assert live == 1
    member = uow.c.execute(select(customers.c.member_code, customers.c.is_member).where(
        customers.c.id == min(ids))).one()
    assert tuple(member) == ("M3", True)
    assert figures.compare(uow.c) == []
