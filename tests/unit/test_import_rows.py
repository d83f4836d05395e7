"""Rows of an order file to order payloads, and column mappings: no database."""

import datetime as dt

import pytest

from patron.imports.model import (
    ColumnMapping,
    HeaderError,
    build_order,
    cell_text,
    check_mapping,
    group_orders,
    locate,
    outcome_errors,
    parse_datetime,
    read_row,
    resolve_header,
)
from patron.orders.schemas import OrderIn

HEADER = ["order_id", "channel", "store", "purchased_at", "phone", "payment_method", "sku",
          "product_name", "category", "quantity", "unit_price", "line_discount"]


def rows_of(header, data, mapping=None):
    layout = resolve_header(header, mapping)
    rows = [read_row(n, cells, layout) for n, cells in enumerate(data, start=2)]
    return layout, [r for r in rows if r is not None]


def test_consecutive_rows_of_one_order_become_one_order_with_lines():
    _, rows = rows_of(HEADER, [
        ["A1", "pos", "SH01", "2026-03-02 10:30:00", "13812341234", "wechat_pay", "LATTE", "拿铁",
         "coffee", "2", "28.00", ""],
        ["A1", "pos", "SH01", "", "", "", "CROISSANT", "", "bakery", "1", "16.50", "1.50"],
        ["A2", "pos", "SH01", "2026-03-02 11:00", "", "", "LATTE", "", "", "1", "28", ""],
    ])
    orders = [build_order(group) for group in group_orders(rows)]
    assert [o.first_row for o in orders] == [2, 4]
    first = orders[0]
    assert first.line_rows == [2, 3]
    order = OrderIn.model_validate(first.payload)
    assert order.external_id == "A1"
    assert order.purchased_at == dt.datetime(2026, 3, 2, 10, 30)  # naive: the store's time
    assert order.identifiers == {"phone": "13812341234"}
    assert [ln.sku for ln in order.lines] == ["LATTE", "CROISSANT"]
    assert order.lines[0].name == "拿铁"
    assert str(order.lines[1].discount) == "1.50"
    # One payment method pays the whole total, computed from the lines when not given.
    assert [(p.method, str(p.amount)) for p in order.payments] == [("wechat_pay", "71.00")]


def test_order_without_lines_takes_its_total():
    _, rows = rows_of(["order_id", "channel", "purchased_at", "total", "discount"],
                      [["M1", "meituan", "2026-03-02T10:30:00+08:00", "¥1,234.50", "3"]])
    order = OrderIn.model_validate(build_order(list(group_orders(rows))[0]).payload)
    assert order.lines == []
    assert str(order.total) == "1234.50"
    assert order.purchased_at.utcoffset() == dt.timedelta(hours=8)


def test_same_order_id_in_another_store_is_another_order():
    _, rows = rows_of(HEADER, [
        ["A1", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "", "1", "28", ""],
        ["A1", "pos", "BJ01", "2026-03-02 10:30", "", "", "LATTE", "", "", "1", "28", ""],
    ])
    assert [len(g) for g in group_orders(rows)] == [1, 1]


def test_unparseable_time_rejects_the_order_on_its_row_and_column():
    _, rows = rows_of(HEADER, [["A1", "pos", "SH01", "yesterday", "", "", "X", "", "", "1", "1",
                                ""]])
    order = build_order(rows)
    assert order.payload is None
    assert [(e.row, e.column, e.reason, e.value) for e in order.errors] == [
        (2, "purchased_at", "datetime_parsing", "yesterday")]


def test_accepted_time_formats():
    assert parse_datetime("2026/03/02 10:30") == dt.datetime(2026, 3, 2, 10, 30)
    assert parse_datetime("2026-03-02 10:30:15") == dt.datetime(2026, 3, 2, 10, 30, 15)
    assert parse_datetime("2026-03-02T02:30:00Z").utcoffset() == dt.timedelta(0)
    assert parse_datetime("02.03.2026 10:30", "%d.%m.%Y %H:%M") == dt.datetime(2026, 3, 2, 10,
                                                                               30)
    with pytest.raises(ValueError):
        parse_datetime("2026-03-02 10:30", "%d.%m.%Y %H:%M")


def test_excel_cells_read_as_they_are_shown():
    assert cell_text(13812341234.0) == "13812341234"
    assert cell_text(30.000000000000004) == "30"
    assert cell_text(28.5) == "28.5"
    assert cell_text(7) == "7"
    assert cell_text("  ") is None
    when = dt.datetime(2026, 3, 2, 10, 30)
    assert cell_text(when) is when


def test_rejection_fields_map_back_to_the_file_rows_and_columns():
    _, rows = rows_of(HEADER, [
        ["A1", "pos", "SH01", "2026-03-02 10:30", "12345", "", "LATTE", "", "", "2", "28", ""],
        ["A1", "pos", "SH01", "", "", "", "CAKE", "", "", "zero", "16", ""],
    ])
    order = build_order(rows)
    assert locate(order, "lines.1.quantity") == (3, "quantity")
    assert locate(order, "lines.0.discount") == (2, "line_discount")
    assert locate(order, "identifiers.phone") == (2, "phone")
    assert locate(order, "external_id") == (2, "order_id")
    assert locate(order, "store") == (2, "store")
    assert locate(order, "customer.birthday") == (2, "birthday")
    errors = outcome_errors(order, [
        {"field": "identifiers.phone", "reason": "phone_invalid", "params": {}},
        {"field": "lines.1.quantity", "reason": "decimal_parsing", "params": {}},
    ])
    # Personal data is not kept in the error, other cells are.
    assert [(e.row, e.column, e.reason, e.value) for e in errors] == [
        (2, "phone", "phone_invalid", None), (3, "quantity", "decimal_parsing", "zero")]


def test_mapping_renames_columns_applies_defaults_and_ignores_columns():
    mapping = ColumnMapping(
        name="meituan",
        columns={"order_id": "订单号", "purchased_at": "下单时间", "store": "门店编码",
                 "phone": "手机号", "total": "实付金额"},
        defaults={"channel": "meituan"},
        ignored=frozenset({"备注"}),
        datetime_format="%Y年%m月%d日 %H:%M",
    )
    layout, rows = rows_of(["订单号", "下单时间", "门店编码", "手机号", "实付金额", "备注"],
                           [["MT-9", "2026年03月02日 12:05", "SH01", "13812341234", "45.5",
                             "多放辣"]], mapping)
    assert layout.column_name("phone") == "手机号"
    order = build_order(list(group_orders(rows))[0], layout.datetime_format)
    assert order.payload == {
        "external_id": "MT-9", "channel": "meituan", "store": "SH01",
        "purchased_at": dt.datetime(2026, 3, 2, 12, 5), "total": "45.5",
        "identifiers": {"phone": "13812341234"}}


def test_a_column_in_the_file_wins_over_the_mapping_default():
    mapping = ColumnMapping(name="m", defaults={"channel": "meituan"})
    _, rows = rows_of(["order_id", "channel", "purchased_at", "total"],
                      [["E1", "eleme", "2026-03-02 10:00", "5"], ["E2", "", "2026-03-02 10:00",
                                                                  "5"]], mapping)
    assert [r.values["channel"] for r in rows] == ["eleme", "meituan"]


def test_header_problems_are_all_named():
    with pytest.raises(HeaderError) as caught:
        resolve_header(["order_id", "订单号", "purchased_at", "purchased_at"], None)
    assert {(e.field, e.reason) for e in caught.value.errors} == {
        ("订单号", "import_unknown_column"), ("purchased_at", "import_duplicate_column"),
        ("channel", "import_missing_column")}


def test_mapped_column_missing_from_the_file_is_named():
    mapping = ColumnMapping(name="m", columns={"order_id": "订单号"}, defaults={"channel": "jd"})
    with pytest.raises(HeaderError) as caught:
        resolve_header(["order_id", "purchased_at"], mapping)
    assert [(e.field, e.reason) for e in caught.value.errors] == [
        ("order_id", "import_unknown_column"), ("订单号", "import_missing_column")]


def test_mapping_checks():
    assert check_mapping(columns={"order_id": "订单号"}, defaults={"channel": "meituan"},
                         ignored=["备注"], datetime_format="%Y/%m/%d %H:%M") == []
    errors = check_mapping(columns={"order_no": "A", "order_id": "B", "store": "B"},
                           defaults={"shop": "x"}, ignored=["B"], datetime_format="yyyy-mm-dd")
    assert [(e.field, e.reason) for e in errors] == [
        ("columns.order_no", "import_unknown_canonical"),
        ("columns.store", "import_source_mapped_twice"),
        ("defaults.shop", "import_unknown_canonical"),
        ("ignored", "import_ignored_and_mapped"),
        ("datetime_format", "import_bad_datetime_format"),
    ]


def test_row_without_order_id_is_rejected_alone():
    _, rows = rows_of(HEADER, [
        ["", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "", "1", "28", ""],
        ["A1", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "", "1", "28", ""],
    ])
    orders = [build_order(g) for g in group_orders(rows)]
    assert [(e.row, e.column, e.reason) for e in orders[0].errors] == [(2, "order_id", "missing")]
    assert orders[1].payload is not None


def test_gender_in_chinese_and_birthday_with_slashes():
    _, rows = rows_of(["order_id", "channel", "purchased_at", "total", "customer_name",
                       "gender", "birthday", "member_code"],
                      [["A1", "app", "2026-03-02 10:30", "10", "王芳", "女", "1990/05/01",
                        "M001"]])
    order = OrderIn.model_validate(build_order(rows).payload)
    assert order.customer is not None
    assert (order.customer.name, order.customer.gender, order.customer.birthday) == (
        "王芳", "F", dt.date(1990, 5, 1))


def test_later_rows_of_an_order_may_leave_its_order_columns_blank():
    _, rows = rows_of(HEADER, [
        ["A1", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "", "1", "28", ""],
        ["A1", "", "", "", "", "", "CAKE", "", "", "1", "16", ""],
        ["A1", "pos", "BJ01", "2026-03-02 10:30", "", "", "LATTE", "", "", "1", "28", ""],
    ])
    assert [[r.number for r in g] for g in group_orders(rows)] == [[2, 3], [4]]


def test_a_language_column_as_exports_write_it_becomes_patrons_code():
    _, rows = rows_of(["order_id", "channel", "purchased_at", "total", "phone", "language"],
                      [["A1", "app", "2026-03-02 10:30", "10", "13800138000", "英文"],
                       ["A2", "app", "2026-03-02 10:30", "10", "13800138001", "zh-CN"],
                       ["A3", "app", "2026-03-02 10:30", "10", "13800138002", "klingon"]])
    orders = [build_order(group) for group in group_orders(rows)]
    languages = [OrderIn.model_validate(o.payload).customer.language for o in orders[:2]]
    assert languages == ["en", "zh"]
    bad = orders[2]
    assert locate(bad, "customer.language") == (4, "language")
    (error,) = outcome_errors(bad, [{"field": "customer.language", "reason": "literal_error",
                                     "params": {"expected": "zh, en"}}])
    # not personal data: the refused value is shown
    assert (error.column, error.value) == ("language", "klingon")


def test_repeated_line_amounts_give_the_same_payloads_as_the_first_time():
    # A line's cleaned amounts and paid amount are kept by their texts: a repeated line (the
    # cache answering) builds the same payload as its first reading, a bad amount included.
    data = [
        ["R1", "pos", "SH01", "2026-03-02 10:30", "", "cash", "LATTE", "", "", "3", "¥1,234.57",
         "0.5"],
        ["R1", "pos", "SH01", "", "", "", "BAD", "", "", "2", "12.3.4", ""],
        ["R2", "pos", "SH01", "2026-03-02 10:31", "", "cash", "LATTE", "", "", "3",
         "¥1,234.57", "0.5"],
        ["R3", "pos", "SH01", "2026-03-02 10:32", "", "cash", "LATTE", "", "", "3", "¥1,234.57",
         "0.5"],
    ]
    for _ in range(2):
        _, rows = rows_of(HEADER, data)
        first, second, third = [build_order(group) for group in group_orders(rows)]
        assert first.payload["lines"][0] == {"sku": "LATTE", "quantity": "3",
                                             "unit_price": "1234.57", "discount": "0.5"}
        assert first.payload["lines"][1]["unit_price"] == "12.3.4"
        assert "payments" not in first.payload  # not a number: the order is rejected for it
        assert second.payload["payments"] == [{"method": "cash", "amount": "3703.21"}]
        assert third.payload == {**second.payload, "external_id": "R3",
                                 "purchased_at": dt.datetime(2026, 3, 2, 10, 32)}
