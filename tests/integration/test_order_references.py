"""Orders refer to a customer, channel and store that exist, and their lines and payments to an
order that exists, on both databases: SQLite checks its foreign keys per row, PostgreSQL checks
them once per statement (migration 0009, decision 0017). Whatever writes the rows, through
Patron's services or plain SQL."""

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from patron.orders.service import record_orders
from patron.orders.tables import order_lines, order_payments, orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order

ORPHANS = """
SELECT (SELECT count(*) FROM order_lines l WHERE NOT EXISTS (
          SELECT 1 FROM orders o WHERE o.id = l.order_id))
     + (SELECT count(*) FROM order_payments p WHERE NOT EXISTS (
          SELECT 1 FROM orders o WHERE o.id = p.order_id))
     + (SELECT count(*) FROM orders o WHERE o.customer_id IS NOT NULL AND NOT EXISTS (
          SELECT 1 FROM customers c WHERE c.id = o.customer_id))
     + (SELECT count(*) FROM orders o WHERE NOT EXISTS (
          SELECT 1 FROM channels c WHERE c.id = o.channel_id))
     + (SELECT count(*) FROM orders o WHERE o.store_id IS NOT NULL AND NOT EXISTS (
          SELECT 1 FROM stores s WHERE s.id = o.store_id))
"""


def _recorded(uow, *external_ids: str) -> list[int]:
    make_org(uow)
    out = record_orders(uow=uow, orders_in=[order(e, identifiers={"phone": "13812341234"},
                                                  payments=[{"method": "cash", "amount": "71.00"}])
                                            for e in external_ids],
                        source="import", actor=SYSTEM, audit_each=False)
    assert [o.status for o in out] == ["created"] * len(external_ids)
    return [int(o.order_id) for o in out]  # type: ignore[arg-type]


def _count(uow, table, order_id: int) -> int:
    return int(uow.c.execute(select(func.count()).select_from(table)
                             .where(table.c.order_id == order_id)).scalar_one())


def test_recorded_orders_have_their_lines_and_payments_and_no_orphans(uow):
    ids = _recorded(uow, "R1", "R2", "R3")
    for oid in ids:
        assert _count(uow, order_lines, oid) == 2
        assert _count(uow, order_payments, oid) == 1
    assert uow.c.execute(text(ORPHANS)).scalar_one() == 0


@pytest.mark.parametrize("table", ["order_lines", "order_payments"])
def test_a_row_naming_a_missing_order_is_refused_with_the_whole_statement(uow, table):
    [oid] = _recorded(uow, "R1")
    rows = {"order_lines": "(order_id, line_no, sku, quantity, unit_price, discount, amount, "
                           "returned_quantity) VALUES (:a, 9, 'X', 1000, 100, 0, 100, 0), "
                           "(:b, 1, 'X', 1000, 100, 0, 100, 0)",
            "order_payments": "(order_id, method, amount) VALUES (:a, 'cash', 100), "
                              "(:b, 'cash', 100)"}[table]
    with pytest.raises(IntegrityError):
        uow.c.execute(text(f"INSERT INTO {table} {rows}"), {"a": oid, "b": oid + 1000})
    uow.rollback()
    assert uow.c.execute(text(ORPHANS)).scalar_one() == 0
    assert _count(uow, order_lines if table == "order_lines" else order_payments, oid) == (
        2 if table == "order_lines" else 1)


@pytest.mark.parametrize("table", [order_lines, order_payments])
def test_moving_a_row_to_a_missing_order_is_refused(uow, table):
    [oid] = _recorded(uow, "R1")
    uow.commit()
    with pytest.raises(IntegrityError):
        uow.c.execute(table.update().where(table.c.order_id == oid)
                      .values(order_id=oid + 1000))
    uow.rollback()
    assert uow.c.execute(text(ORPHANS)).scalar_one() == 0


def test_moving_a_row_to_another_existing_order_is_allowed(uow):
    first, second = _recorded(uow, "R1", "R2")
    uow.c.execute(order_payments.update().where(order_payments.c.order_id == first)
                  .values(order_id=second))
    assert _count(uow, order_payments, second) == 2


def test_deleting_orders_deletes_their_lines_and_payments(uow):
    first, second, third = _recorded(uow, "R1", "R2", "R3")
    uow.commit()
    uow.c.execute(orders.delete().where(orders.c.id.in_([first, third])))
    uow.commit()
    for oid in (first, third):
        assert _count(uow, order_lines, oid) == 0
        assert _count(uow, order_payments, oid) == 0
    assert _count(uow, order_lines, second) == 2
    assert _count(uow, order_payments, second) == 1
    assert uow.c.execute(text(ORPHANS)).scalar_one() == 0


def test_an_order_with_lines_keeps_its_id(uow):
    [oid] = _recorded(uow, "R1")
    uow.commit()
    with pytest.raises(IntegrityError):
        uow.c.execute(orders.update().where(orders.c.id == oid).values(id=oid + 1000))
    uow.rollback()
    assert _count(uow, order_lines, oid) == 2


@pytest.mark.parametrize("column", ["customer_id", "channel_id", "store_id"])
def test_an_order_naming_a_missing_parent_is_refused(uow, column):
    [oid] = _recorded(uow, "R1")
    uow.commit()
    with pytest.raises(IntegrityError):
        uow.c.execute(orders.update().where(orders.c.id == oid).values({column: 424242}))
    uow.rollback()
    names = [c.name for c in orders.columns]
    copied = {n: n for n in names} | {"id": "id + 1", "external_id": "'R2'", column: "424242"}
    with pytest.raises(IntegrityError):
        uow.c.execute(text(f"INSERT INTO orders ({', '.join(names)}) SELECT "  # noqa: S608
                           f"{', '.join(copied[n] for n in names)} FROM orders WHERE id = :o"),
                      {"o": oid})
    uow.rollback()
    assert uow.c.execute(text(ORPHANS)).scalar_one() == 0


@pytest.mark.parametrize("parent", ["customers", "channels", "stores"])
def test_a_parent_of_orders_is_not_deleted_nor_renumbered(uow, parent):
    [oid] = _recorded(uow, "R1")
    uow.commit()
    column = {"customers": "customer_id", "channels": "channel_id", "stores": "store_id"}[parent]
    pid = uow.c.execute(select(orders.c[column]).where(orders.c.id == oid)).scalar_one()
    if parent == "customers":  # the rows that refer to a customer besides its orders
        for table in ("identities", "customer_figures", "rfm_changed_customers",
                      "lifecycle_changed_customers"):
            uow.c.execute(text(f"DELETE FROM {table} WHERE customer_id = :p"),  # noqa: S608
                          {"p": pid})
    with pytest.raises(IntegrityError):
        uow.c.execute(text(f"DELETE FROM {parent} WHERE id = :p"), {"p": pid})  # noqa: S608
    uow.rollback()
    with pytest.raises(IntegrityError):
        uow.c.execute(text(f"UPDATE {parent} SET id = :n WHERE id = :p"),  # noqa: S608
                      {"p": pid, "n": 424242})
    uow.rollback()
    assert uow.c.execute(text(ORPHANS)).scalar_one() == 0
    assert uow.c.execute(select(orders.c[column]).where(orders.c.id == oid)).scalar_one() == pid


def test_a_parent_without_orders_can_be_deleted(uow):
    make_org(uow)
    uow.c.execute(text("INSERT INTO channels (code, name, kind, requires_store) "
                       "VALUES ('spare', 'Spare', 'online', false)"))
    uow.commit()
    assert uow.c.execute(text("DELETE FROM channels WHERE code = 'spare'")).rowcount == 1
    uow.commit()


@pytest.mark.parametrize("table", ["identities", "customer_figures"])
def test_a_customers_identities_and_figures_refer_to_it(uow, table):
    [oid] = _recorded(uow, "R1")
    uow.commit()
    cid = uow.c.execute(select(orders.c.customer_id).where(orders.c.id == oid)).scalar_one()
    column = "customer_id"
    with pytest.raises(IntegrityError):
        uow.c.execute(text(f"UPDATE {table} SET {column} = 424242"))  # noqa: S608
    uow.rollback()
    copy = {"identities": "INSERT INTO identities (kind, namespace, value, value_index, "
                          "customer_id, created_at) SELECT kind, 'other', value, value_index, "
                          "424242, created_at FROM identities",
            "customer_figures": "INSERT INTO customer_figures (customer_id, counters) "
                                "VALUES (424242, '{}')"}[table]
    with pytest.raises(IntegrityError):
        uow.c.execute(text(copy))
    uow.rollback()
    uow.c.execute(text("DELETE FROM orders WHERE id = :o"), {"o": oid})
    with pytest.raises(IntegrityError):  # its identities and figures still refer to it
        uow.c.execute(text("DELETE FROM customers WHERE id = :c"), {"c": cid})
    uow.rollback()
    assert uow.c.execute(text(f"SELECT count(*) FROM {table} "  # noqa: S608
                              "WHERE customer_id = :c"), {"c": cid}).scalar_one() >= 1
