"""The rows ingestion writes from prepared tuples (driver values built directly, without
SQLAlchemy's bind processors) are byte for byte the rows SQLAlchemy would have written."""

import datetime as dt

from sqlalchemy import Column, MetaData, Table, insert, select

from patron.orders.service import record_orders
from patron.orders.tables import order_lines, order_payments, orders
from patron.security.model import SYSTEM
from tests.factories import T0, make_org, order

# Encrypted columns differ between two writes of the same value (a fresh nonce each time):
# they are compared decrypted, below, not as stored.
ENCRYPTED = {"identifiers"}


def _copy(table: Table, md: MetaData) -> Table:
    return Table(f"copy_{table.name}", md, *[Column(c.name, c.type) for c in table.columns
                                             if c.name not in ENCRYPTED])


def _raw(conn, table: Table) -> list[tuple]:
    names = ", ".join(f'"{c.name}"' for c in table.columns if c.name not in ENCRYPTED)
    sql = f'SELECT {names} FROM "{table.name}" ORDER BY 1, 2'  # noqa: S608 - our own names
    rows = conn.exec_driver_sql(sql).all()
    return [tuple(r) for r in rows]


def test_prepared_rows_store_what_sqlalchemy_would_bind(uow):
    make_org(uow)
    bodies = [
        order("P1", identifiers={"phone": "13812341234", "member_code": "m-01"}),
        order("P2", channel="mini_program", store=None, at=T0 + dt.timedelta(microseconds=7),
              identifiers={"wechat_openid": "oW中文Xy"[:2] + "Xy"},
              lines=[{"sku": "APPLES", "category": "fruit", "quantity": "0.35",
                      "unit_price": "12.80"},
                     {"sku": "CAKE", "name": "蛋糕 \"x\" \\ tab\t", "quantity": "3",
                      "unit_price": "9.99", "discount": "0.97"}],
              payments=[{"method": "wechat_pay", "amount": "33.48"}]),
        order("P3", channel="meituan", store="BJ01",
              at=dt.datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=dt.timezone(
                  dt.timedelta(hours=-5))),
              identifiers={"platform_buyer_id": "mt-9"}, discount="1.00",
              payments=[{"method": "cash", "amount": "11"},
                        {"method": "coupon", "amount": "59.00"}]),
        order("P4", store="SH01", identifiers={}, lines=[], total="0.01"),
    ]
    out = record_orders(uow=uow, orders_in=bodies, source="import", actor=SYSTEM,
                        audit_each=False)
    assert [o.status for o in out] == ["created"] * 4, out
    md = MetaData()
    tables = [orders, order_lines, order_payments]
    copies = [_copy(t, md) for t in tables]
    md.create_all(uow.c)
    for table, copy in zip(tables, copies, strict=True):
        typed = [{k: v for k, v in r._mapping.items() if k not in ENCRYPTED}
                 for r in uow.c.execute(select(table))]
        assert typed, table.name
        uow.c.execute(insert(copy), typed)
        assert _raw(uow.c, table) == _raw(uow.c, copy), table.name
    stored = dict(uow.c.execute(select(orders.c.external_id, orders.c.identifiers)).all())
    assert stored == {"P1": [["phone", "", "+8613812341234"], ["member_code", "", "M-01"]],
                      "P2": [["wechat_openid", "", "oWXy"]],
                      "P3": [["platform_buyer_id", "meituan", "mt-9"]], "P4": []}
    uow.rollback()
