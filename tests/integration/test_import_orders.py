"""Importing order files end to end through the service, on SQLite and PostgreSQL."""

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select

from patron.customers.tables import customers
from patron.errors import Conflict, ValidationFailed
from patron.imports import service
from patron.imports.schemas import ColumnMappingCreate, ColumnMappingUpdate
from patron.imports.tables import import_errors, import_jobs
from patron.orders.tables import order_lines, order_payments, orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org

HEADER = ["order_id", "channel", "store", "purchased_at", "phone", "payment_method", "sku",
          "category", "quantity", "unit_price", "line_discount", "total"]
GOOD = [
    ["P-1", "pos", "SH01", "2026-03-02 10:30:00", "13812341234", "wechat_pay", "LATTE", "coffee",
     "2", "28.00", "", ""],
    ["P-1", "pos", "SH01", "", "", "", "CROISSANT", "bakery", "1", "16.50", "1.50", ""],
    ["P-2", "pos", "BJ01", "2026/03/02 11:00", "", "cash", "LATTE", "coffee", "1", "28", "", ""],
    ["M-1", "meituan", "", "2026-03-02T12:00:00+08:00", "13900001111", "", "", "", "", "", "",
     "45.50"],
]


def write_csv(path: Path, header, rows, encoding="utf-8-sig") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_xlsx(path: Path, header, rows, *, blank_rows_above=0) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for _ in range(blank_rows_above):
        ws.append([])
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def count(uow, table, *where):
    q = select(func.count()).select_from(table)
    for w in where:
        q = q.where(w)
    return uow.c.execute(q).scalar_one()


def import_file(uow, path, *, actor=SYSTEM, mapping=None, **kw):
    job_id = service.start_import(uow=uow, actor=actor, path=path, filename=path.name,
                                  mapping=mapping)
    service.run_import(uow=uow, actor=actor, job_id=job_id, path=path, **kw)
    return service.get_job(uow=uow, actor=actor, job_id=job_id, lang="en",
                           errors_limit=1000)


def test_csv_in_the_canonical_layout_is_imported(uow, tmp_path):
    make_org(uow)
    job = import_file(uow, write_csv(tmp_path / "orders.csv", HEADER, GOOD))
    assert (job.status, job.rows_read, job.rows_total) == ("done", 4, 4)
    assert (job.orders_created, job.orders_duplicate, job.rows_rejected) == (3, 0, 0)
    assert job.errors == []
    assert count(uow, orders, orders.c.source == "import") == 3
    assert count(uow, order_lines) == 3
    p1 = uow.c.execute(select(orders).where(orders.c.external_id == "P-1")).mappings().one()
    assert p1["total_amount"] == Decimal("71.00")
    assert p1["purchased_at"] == dt.datetime(2026, 3, 2, 2, 30, tzinfo=dt.UTC)
    paid = uow.c.execute(select(order_payments.c.method, order_payments.c.amount).where(
        order_payments.c.order_id == p1["id"])).all()
    assert paid == [("wechat_pay", Decimal("71.00"))]
    assert count(uow, customers) == 2
    # One audit entry for the whole job, none per order.
    actions = uow.c.execute(select(audit_log.c.action)).scalars().all()
    assert actions.count("import.finished") == 1
    assert "orders.recorded" not in actions


def test_running_the_same_file_again_imports_nothing_twice(uow, tmp_path):
    make_org(uow)
    path = write_csv(tmp_path / "orders.csv", HEADER, GOOD)
    import_file(uow, path)
    again = import_file(uow, path)
    assert (again.status, again.orders_created, again.orders_duplicate) == ("done", 0, 3)
    assert count(uow, orders) == 3
    assert count(uow, customers) == 2


@pytest.mark.parametrize("reader", ["calamine", "openpyxl streaming"])
def test_xlsx_with_excel_numbers_and_dates_is_imported(uow, tmp_path, monkeypatch, reader):
    if reader == "openpyxl streaming":
        monkeypatch.setattr(service, "CALAMINE_MAX_BYTES", 0)
    make_org(uow)
    rows = [
        ["X-1", "pos", "SH01", dt.datetime(2026, 3, 2, 10, 30), 13812341234, "alipay", "LATTE",
         "coffee", 2, 28, None, None],
        ["X-1", "pos", "SH01", None, None, None, "CAKE", "bakery", 1, 16.5, 0.1 + 0.2, None],
        [],
        ["X-2", "jd", None, "2026-03-03 09:00:00", None, None, None, None, None, None, None,
         99.9],
        ["X-3", "jd", None, "2026-03-03 09:00:00", None, None, None, None, None, None, None,
         "lots"],
    ]
    job = import_file(uow, write_xlsx(tmp_path / "orders.xlsx", HEADER, rows,
                                      blank_rows_above=1))
    assert (job.status, job.orders_created, job.rows_rejected) == ("done", 2, 1), job.errors
    # Row numbers as in the sheet, counting the blank row.
    assert [(e.row, e.column, e.reason) for e in job.errors] == [(7, "total", "decimal_parsing")]
    x1 = uow.c.execute(select(orders).where(orders.c.external_id == "X-1")).mappings().one()
    assert x1["total_amount"] == Decimal("72.20")
    assert x1["identifiers"] == [["phone", "", "+8613812341234"]]
    again = import_file(uow, tmp_path / "orders.xlsx")
    assert (again.orders_created, again.orders_duplicate) == (0, 2)


def test_bad_rows_are_reported_by_row_column_and_reason_while_good_rows_land(uow, tmp_path):
    make_org(uow)
    rows = GOOD + [
        ["B-1", "pos", "SH01", "2026-03-02 10:30", "12345", "", "LATTE", "", "1", "28", "", ""],
        ["B-2", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "1", "28", "", ""],
        ["B-2", "pos", "SH01", "", "", "", "CAKE", "", "lots", "16", "", ""],
        ["B-3", "pos", "XX99", "2026-03-02 10:30", "", "", "LATTE", "", "1", "28", "", ""],
        ["B-4", "pos", "SH01", "someday", "", "", "LATTE", "", "1", "28", "", ""],
        ["B-5", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "1", "28", "", "99"],
    ]
    job = import_file(uow, write_csv(tmp_path / "mixed.csv", HEADER, rows))
    assert (job.status, job.orders_created, job.rows_rejected) == ("done", 3, 6)
    assert [(e.row, e.column, e.reason) for e in job.errors] == [
        (6, "phone", "phone_invalid"),
        (8, "quantity", "decimal_parsing"),
        (9, "store", "unknown_store"),
        (10, "purchased_at", "datetime_parsing"),
        (11, "total", "total_mismatch"),
    ]
    by_row = {e.row: e for e in job.errors}
    assert by_row[9].message == 'Unknown store "XX99".'
    assert by_row[11].message == "Does not equal the lines less the discount (28.00)."
    assert by_row[10].value == "someday"
    assert by_row[6].value is None  # personal data is not copied into the error list
    assert count(uow, orders) == 3
    zh = service.get_job(uow=uow, actor=SYSTEM, job_id=job.id, lang="zh")
    assert {e.row: e.message for e in zh.errors}[9] == "未知门店“XX99”。"


def test_changed_order_in_a_later_file_is_reported_as_a_conflict(uow, tmp_path):
    make_org(uow)
    import_file(uow, write_csv(tmp_path / "a.csv", HEADER, GOOD))
    changed = [r[:] for r in GOOD]
    changed[3][-1] = "46.00"
    job = import_file(uow, write_csv(tmp_path / "b.csv", HEADER, changed))
    assert (job.orders_duplicate, job.rows_rejected) == (2, 1)
    assert [(e.row, e.column, e.reason) for e in job.errors] == [
        (5, "order_id", "import_order_conflict")]
    assert "total" in job.errors[0].message


def test_mapping_with_chinese_headers_imports_a_platform_export(uow, tmp_path):
    make_org(uow)
    mapping = service.create_mapping(uow=uow, actor=SYSTEM, mapping=ColumnMappingCreate(
        name="美团外卖导出",
        columns={"order_id": "订单号", "purchased_at": "下单时间", "store": "门店编码",
                 "phone": "手机号", "total": "实付金额"},
        defaults={"channel": "meituan"},
        ignored=["备注"],
        datetime_format="%Y年%m月%d日 %H:%M",
    ))
    header = ["订单号", "下单时间", "门店编码", "手机号", "实付金额", "备注"]
    rows = [["MT-1", "2026年03月02日 12:05", "SH01", "13812341234", "45.50", "多放辣"],
            ["MT-2", "2026年03月02日 12:20", "", "13900001111", "30", ""],
            ["MT-3", "2026-03-02 12:30", "SH01", "", "30", ""]]
    job = import_file(uow, write_csv(tmp_path / "美团.csv", header, rows), mapping=mapping.name)
    assert (job.mapping, job.orders_created, job.rows_rejected) == ("美团外卖导出", 2, 1)
    assert [(e.row, e.column, e.reason) for e in job.errors] == [
        (4, "下单时间", "datetime_parsing")]
    mt1 = uow.c.execute(select(orders.c.total_amount, orders.c.purchased_at).where(
        orders.c.external_id == "MT-1")).one()
    assert mt1 == (Decimal("45.50"), dt.datetime(2026, 3, 2, 4, 5, tzinfo=dt.UTC))


def test_thousands_of_rows_are_imported_chunk_by_chunk(uow, tmp_path):
    make_org(uow)
    rows = []
    for i in range(1500):
        at = f"2026-03-{1 + i % 28:02d} 10:{i % 60:02d}:00"
        phone = f"138{i % 700:08d}"
        rows.append([f"C-{i}", "pos", "SH01", at, phone, "", "LATTE", "coffee", "1", "28", "",
                     ""])
        rows.append([f"C-{i}", "pos", "SH01", "", "", "", "CAKE", "bakery", "2", "10", "", ""])
    path = write_csv(tmp_path / "big.csv", HEADER, rows)
    seen = []
    job = import_file(uow, path, chunk_orders=400, progress=seen.append)
    assert (job.status, job.rows_read, job.orders_created) == ("done", 3000, 1500)
    assert [p.rows_read for p in seen] == [800, 1600, 2400, 3000, 3000]
    assert count(uow, orders) == 1500
    assert count(uow, order_lines) == 3000
    assert count(uow, customers) == 700
    again = import_file(uow, path, chunk_orders=400)
    assert (again.orders_created, again.orders_duplicate) == (0, 1500)


def test_stored_errors_are_capped_but_rejected_rows_still_counted(uow, tmp_path, monkeypatch):
    make_org(uow)
    monkeypatch.setattr(service, "MAX_STORED_ERRORS", 5)
    rows = [[f"E-{i}", "pos", "NOPE", "2026-03-02 10:30", "", "", "X", "", "1", "1", "", ""]
            for i in range(12)]
    job = import_file(uow, write_csv(tmp_path / "bad.csv", HEADER, rows), chunk_orders=4)
    assert (job.rows_rejected, job.errors_stored) == (12, 5)
    assert count(uow, import_errors) == 5


def test_store_scoped_manager_imports_only_their_stores(uow, tmp_path):
    ids = make_org(uow)
    manager = Actor(type="user", id=7, name="mgr", role="manager",
                    store_ids=frozenset({ids["SH01"]}))
    job = import_file(uow, write_csv(tmp_path / "orders.csv", HEADER, GOOD), actor=manager)
    assert job.orders_created == 1
    assert [(e.row, e.column, e.reason) for e in job.errors] == [
        (4, "store", "store_out_of_scope"), (5, "store", "store_out_of_scope")]
    # Another store-scoped user does not see the manager's job; the owner does.
    other = Actor(type="user", id=8, name="mgr2", role="manager",
                  store_ids=frozenset({ids["BJ01"]}))
    assert service.list_jobs(uow=uow, actor=other) == []
    assert [j.id for j in service.list_jobs(uow=uow, actor=SYSTEM)] == [job.id]


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("empty.csv", b"", "import_empty_file"),
    ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "import_xls_not_supported"),
    ("notes.pdf", b"%PDF-1.4 hello", "import_unsupported_file"),
    ("header_only.csv", ",".join(HEADER).encode() + b"\n", "import_no_rows"),
    ("broken.xlsx", b"PK\x03\x04 not really a zip", "import_unreadable_file"),
    ("latin.csv", b"order_id,channel\nA,pos\n" + b"\xff\xfe\xfa" * 4,
     "import_bad_encoding"),
])
def test_files_that_cannot_be_imported_are_refused_before_a_job(uow, tmp_path, name, content,
                                                                reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationFailed) as caught:
        service.start_import(uow=uow, actor=SYSTEM, path=path, filename=name)
    assert caught.value.message == reason
    assert count(uow, import_jobs) == 0


def test_unknown_columns_and_missing_required_ones_are_named(uow, tmp_path):
    path = write_csv(tmp_path / "odd.csv", ["订单号", "purchased_at", "total"],
                     [["A", "2026-03-02 10:00", "5"]])
    with pytest.raises(ValidationFailed) as caught:
        service.start_import(uow=uow, actor=SYSTEM, path=path, filename=path.name)
    assert caught.value.message == "import_bad_columns"
    assert {(f.field, f.reason) for f in caught.value.fields} == {
        ("订单号", "import_unknown_column"), ("order_id", "import_missing_column"),
        ("channel", "import_missing_column")}
    with pytest.raises(ValidationFailed) as caught:
        service.start_import(uow=uow, actor=SYSTEM, path=path, filename=path.name,
                             mapping="nope")
    assert caught.value.message == "import_unknown_mapping"


def test_gb18030_csv_from_excel_is_accepted(uow, tmp_path):
    make_org(uow)
    mapping = service.create_mapping(uow=uow, actor=SYSTEM, mapping=ColumnMappingCreate(
        name="gbk", columns={"order_id": "订单号", "purchased_at": "下单时间", "total": "金额"},
        defaults={"channel": "eleme"}))
    path = write_csv(tmp_path / "gbk.csv", ["订单号", "下单时间", "金额"],
                     [["E-1", "2026-03-02 10:00", "12"]], encoding="gb18030")
    job = import_file(uow, path, mapping=mapping.name)
    assert (job.status, job.orders_created) == ("done", 1)


def test_mapping_crud_keeps_names_unique_and_checks_content(uow, tmp_path):
    first = service.create_mapping(uow=uow, actor=SYSTEM, mapping=ColumnMappingCreate(
        name="jd", columns={"order_id": "订单编号"}, defaults={"channel": "jd"}))
    with pytest.raises(Conflict):
        service.create_mapping(uow=uow, actor=SYSTEM,
                               mapping=ColumnMappingCreate(name="jd", columns={}))
    with pytest.raises(ValidationFailed) as caught:
        service.create_mapping(uow=uow, actor=SYSTEM, mapping=ColumnMappingCreate(
            name="bad", columns={"orderid": "x"}))
    assert caught.value.fields[0].reason == "import_unknown_canonical"
    changed = service.update_mapping(uow=uow, actor=SYSTEM, mapping_id=first.id,
                                     changes=ColumnMappingUpdate(ignored=["备注"]))
    assert (changed.columns, changed.ignored, changed.updated_at is not None) == (
        {"order_id": "订单编号"}, ["备注"], True)
    make_org(uow)
    path = write_csv(tmp_path / "jd.csv", ["订单编号", "purchased_at", "total", "备注"],
                     [["J1", "2026-03-02 10:00", "9", ""]])
    job = import_file(uow, path, mapping="jd")
    service.delete_mapping(uow=uow, actor=SYSTEM, mapping_id=first.id)
    assert service.list_mappings(uow=uow) == []
    assert service.get_job(uow=uow, actor=SYSTEM, job_id=job.id).mapping is None
    writes = uow.c.execute(select(audit_log.c.action).where(
        audit_log.c.action.like("import_mapping.%"))).scalars().all()
    assert writes == ["import_mapping.created", "import_mapping.updated",
                      "import_mapping.deleted"]


def test_file_that_turns_unreadable_midway_fails_the_job_and_keeps_what_was_recorded(uow,
                                                                                      tmp_path):
    make_org(uow)
    rows = [[f"U-{i}", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "1", "28", "", ""]
            for i in range(3000)]
    path = write_csv(tmp_path / "cut.csv", HEADER, rows)
    assert path.stat().st_size > 2 * 64 * 1024  # past what is sniffed for the encoding
    with open(path, "ab") as f:
        f.write("U-x,pos,SH01,2026-03-02 10:30,,,LATTE,,1,28,,\n".encode("gb18030")
                + "门店".encode("gb18030") + b"\n")
    job = import_file(uow, path, chunk_orders=1000)
    # The chunks recorded before the bad bytes stay; the one being read is not half-recorded.
    assert (job.status, job.error, job.orders_created) == ("failed", "import_bad_encoding", 2000)
    assert job.error_message == "The file is not UTF-8 text: save it as CSV UTF-8."
    assert count(uow, orders) == 2000
    finished = uow.c.execute(select(audit_log.c.outcome).where(
        audit_log.c.action == "import.finished")).scalars().all()
    assert finished == ["failed"]
