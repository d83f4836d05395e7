import datetime as dt
from decimal import Decimal

from sqlalchemy import func, select

from patron.customers import figures
from patron.customers.tables import customer_figures, customers, identities
from patron.orders.service import record_orders
from patron.orders.tables import order_lines, orders
from patron.security.model import SYSTEM
from tests.factories import T0, make_org, order


def count(uow, table):
    return uow.c.execute(select(func.count()).select_from(table)).scalar_one()


def test_order_creates_customer_and_figures(uow):
    make_org(uow)
    out = record_orders(uow=uow, orders_in=[order("R1", identifiers={"phone": "13812341234"})],
                        source="api", actor=SYSTEM)
    assert out[0].status == "created"
    cid = out[0].customer_id
    assert cid is not None
    row = uow.c.execute(select(customer_figures).where(
        customer_figures.c.customer_id == cid)).mappings().one()
    assert row["order_count"] == 1
    assert row["total_spend"] == Decimal("71.00")
    assert row["purchase_days"] == 1
    ident = uow.c.execute(select(identities.c.value)).scalar_one()
    assert ident == "+8613812341234"
    assert count(uow, order_lines) == 2
    assert figures.compare(uow.c) == []


def test_retried_order_is_recorded_once(uow):
    make_org(uow)
    body = order("R1", identifiers={"phone": "13812341234"})
    first = record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)
    again = record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)
    assert again[0].status == "duplicate"
    assert again[0].order_id == first[0].order_id
    assert count(uow, orders) == 1
    fig = uow.c.execute(select(customer_figures.c.order_count)).scalar_one()
    assert fig == 1


def test_a_repeat_within_one_chunk_is_answered_like_a_retry(uow):
    # Two requests of the single-order API carrying the same order can share a group: the
    # repeat gets the first's order and customer ids, as a later retry does.
    make_org(uow)
    body = order("R1", identifiers={"phone": "13812341234"})
    out = record_orders(uow=uow, orders_in=[body, body, order("R1", discount="1.00")],
                        source="api", actor=SYSTEM)
    assert [o.status for o in out] == ["created", "duplicate", "conflict"]
    assert out[0].order_id is not None and out[0].customer_id is not None
    assert {(o.order_id, o.customer_id) for o in out} == {(out[0].order_id, out[0].customer_id)}
    later = record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)
    assert (later[0].status, later[0].order_id, later[0].customer_id) == (
        "duplicate", out[0].order_id, out[0].customer_id)
    assert count(uow, orders) == 1


def test_same_id_different_content_is_a_conflict_naming_the_field(uow):
    make_org(uow)
    record_orders(uow=uow, orders_in=[order("R1")], source="api", actor=SYSTEM)
    changed = order("R1", lines=[{"sku": "LATTE", "category": "coffee", "quantity": "3",
                                  "unit_price": "28.00"}])
    out = record_orders(uow=uow, orders_in=[changed], source="api", actor=SYSTEM)
    assert out[0].status == "conflict"
    assert [d["field"] for d in out[0].differences] == ["discount", "lines", "total"]


def test_retry_is_a_duplicate_in_any_notation_and_whatever_digest_was_stored(uow):
    # "2" and "2.000" pieces, "28" and "28.00" yuan are the same facts; and an order stored with
    # a digest of an older form is compared by its facts, not flagged as a conflict.
    make_org(uow)
    first = record_orders(uow=uow, orders_in=[order("R1")], source="api", actor=SYSTEM)[0]
    same = order("R1", lines=[
        {"sku": "LATTE", "category": "coffee", "quantity": "2.000", "unit_price": "28"},
        {"sku": "CROISSANT", "category": "bakery", "quantity": "1", "unit_price": "16.5",
         "discount": "1.5"}])
    assert record_orders(uow=uow, orders_in=[same], source="api",
                         actor=SYSTEM)[0].status == "duplicate"
    uow.c.execute(orders.update().where(orders.c.id == first.order_id)
                  .values(content_hash="0" * 64))
    again = record_orders(uow=uow, orders_in=[order("R1")], source="api", actor=SYSTEM)[0]
    assert (again.status, again.order_id) == ("duplicate", first.order_id)
    changed = order("R1", at=T0 + dt.timedelta(seconds=1))
    assert record_orders(uow=uow, orders_in=[changed], source="api",
                         actor=SYSTEM)[0].status == "conflict"


def test_order_linking_two_customers_merges_them(uow):
    make_org(uow)
    a = record_orders(uow=uow, orders_in=[order("R1", identifiers={"phone": "13812341234"})],
                      source="api", actor=SYSTEM)[0].customer_id
    b = record_orders(uow=uow, orders_in=[order("R2", channel="mini_program", store=None,
                                                identifiers={"wechat_openid": "oX1"})],
                      source="api", actor=SYSTEM)[0].customer_id
    assert a != b
    out = record_orders(uow=uow, orders_in=[order("R3", identifiers={
        "phone": "13812341234", "wechat_openid": "oX1"})], source="api", actor=SYSTEM)
    assert out[0].customer_id == a
    merged = uow.c.execute(select(customers.c.merged_into_id).where(customers.c.id == b)
                           ).scalar_one()
    assert merged == a
    n = uow.c.execute(select(customer_figures.c.order_count).where(
        customer_figures.c.customer_id == a)).scalar_one()
    assert n == 3
    assert figures.compare(uow.c) == []


def test_batch_rejects_bad_order_alone(uow):
    make_org(uow)
    bad = order("R2", lines=[{"sku": "X", "quantity": "-1", "unit_price": "3"}])
    out = record_orders(uow=uow, orders_in=[order("R1"), bad, order("R3", store="NOPE")],
                        source="api", actor=SYSTEM)
    assert [o.status for o in out] == ["created", "rejected", "rejected"]
    assert out[1].errors[0]["field"] == "lines.0.quantity"
    assert out[2].errors[0]["reason"] == "unknown_store"
    assert count(uow, orders) == 1


def test_customer_page_figures_include_average_order_value(uow):
    from patron.customers.queries import get_customer

    make_org(uow)
    bodies = [order("A1", identifiers={"phone": "13812341234"}),
              order("A2", identifiers={"phone": "13812341234"},
                    lines=[{"sku": "TEA", "category": "tea", "quantity": "1",
                            "unit_price": "20.00"}])]
    cid = record_orders(uow=uow, orders_in=bodies, source="api", actor=SYSTEM)[0].customer_id
    page = get_customer(uow.c, actor=SYSTEM, customer_id=cid)
    assert page["figures"]["order_count"] == 2
    assert page["figures"]["average_order_value"] == Decimal("45.50")
    assert page["figures"]["purchase_days"] == 1


def test_rows_written_only_in_bulk_are_committed(db_url):
    # A unit of work whose only statements go through the driver's COPY/executemany must
    # still commit them (they bypass SQLAlchemy's automatic begin).
    from patron.db import UnitOfWork, bulk_insert, get_engine, utcnow
    from patron.protection.fields import Sealed

    engine = get_engine(db_url)
    now = utcnow()
    with UnitOfWork(engine) as uow:
        bulk_insert(uow.c, customers, [{"id": 7, "name": Sealed((7,), "批量"),
                                        "custom_fields": {},
                                        "created_at": now, "updated_at": now}])
        uow.commit()
    with UnitOfWork(engine) as uow:
        assert uow.c.execute(select(customers.c.name).where(customers.c.id == 7)
                             ).scalar_one() == "批量"


def test_small_and_large_chunks_write_the_same_rows(uow, monkeypatch):
    # PostgreSQL writes small groups in one JSON statement and large chunks by COPY.
    import patron.db

    make_org(uow)
    bodies = [order(f"S{i}", identifiers={"phone": f"138{i:08d}"}) for i in range(12)]
    record_orders(uow=uow, orders_in=bodies[:6], source="api", actor=SYSTEM)
    monkeypatch.setattr(patron.db, "JSON_INSERT_ROWS", 5)
    record_orders(uow=uow, orders_in=bodies[6:], source="import", actor=SYSTEM)
    assert count(uow, orders) == 12 and count(uow, order_lines) == 24
    assert count(uow, identities) == 12
    assert figures.compare(uow.c) == []
    stored = uow.c.execute(select(orders.c.identifiers).where(orders.c.external_id == "S7")
                           ).scalar_one()
    assert stored == [["phone", "", "+8613800000007"]]


def test_record_orders_runs_with_the_collector_paused(uow, monkeypatch):
    import gc

    from patron.orders import service

    make_org(uow)
    seen = []
    real = service.record_orders_in

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "record_orders_in", spy)
    gc.enable()
    out = service.record_orders(uow=uow, orders_in=[order("GC1")], source="api", actor=SYSTEM)
    assert out[0].status == "created"
    assert seen == [False]
    assert gc.isenabled()


def test_the_same_value_under_another_kind_or_platform_is_another_identity(uow):
    # Identities are found by their value's blind index, which is the same whatever the kind
    # or platform: only the kind and platform asked for may match.
    make_org(uow)
    first = record_orders(uow=uow, orders_in=[
        order("P1", channel="meituan", store=None, identifiers={"platform_buyer_id": "u77"})],
        source="api", actor=SYSTEM)
    later = record_orders(uow=uow, orders_in=[
        order("P2", channel="eleme", store=None, identifiers={"platform_buyer_id": "u77"}),
        order("P3", channel="meituan", store=None, identifiers={"platform_buyer_id": "u77"}),
        order("P4", identifiers={"member_code": "u77"})], source="api", actor=SYSTEM)
    assert [o.status for o in later] == ["created"] * 3
    assert later[1].customer_id == first[0].customer_id
    assert len({first[0].customer_id, later[0].customer_id, later[2].customer_id}) == 3
    assert count(uow, identities) == 3
    assert figures.compare(uow.c) == []
