"""File import over HTTP: upload, follow the job, column mappings, permissions."""

import io

import openpyxl
import pytest

from patron.config import get_settings
from tests.e2e.conftest import login

HEADER = "order_id,channel,store,purchased_at,phone,sku,quantity,unit_price,total\n"
GOOD = ("H-1,pos,SH01,2026-03-02 10:30,13812341234,LATTE,2,28,\n"
        "H-1,pos,SH01,,,CAKE,1,16,\n"
        "H-2,pos,BJ01,2026-03-02 11:30,,LATTE,1,28,\n")
BAD = "H-3,pos,SH01,2026-03-02 10:30,,LATTE,many,28,\n"


@pytest.fixture
def data_dir(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def upload(client, name, content, mapping=None, lang="en"):
    data = {"mapping": mapping} if mapping else {}
    return client.post("/api/v1/imports", files={"file": (name, content, "text/csv")},
                       data=data, headers={"Accept-Language": lang})


def test_upload_is_accepted_then_imported_with_bad_rows_listed(owner, data_dir):
    r = upload(owner, "orders.csv", (HEADER + GOOD + BAD).encode("utf-8-sig"))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/api/v1/imports/{job_id}"
    # The background task has run by the time the test client returns.
    job = owner.get(f"/api/v1/imports/{job_id}", headers={"Accept-Language": "en"}).json()
    assert (job["status"], job["rows_read"], job["orders_created"], job["rows_rejected"]) == (
        "done", 4, 2, 1)
    assert job["errors"] == [{"row": 5, "column": "quantity", "reason": "decimal_parsing",
                              "message": "Must be a number.", "params": {}, "value": "many"}]
    zh = owner.get(f"/api/v1/imports/{job_id}", headers={"Accept-Language": "zh"}).json()
    assert zh["errors"][0]["message"] != "Must be a number."
    # The uploaded file is removed once imported; the job list shows the job.
    assert list((data_dir / "imports").iterdir()) == []
    listed = owner.get("/api/v1/imports").json()
    assert [j["id"] for j in listed] == [job_id]
    again = upload(owner, "orders.csv", (HEADER + GOOD).encode())
    job2 = owner.get(f"/api/v1/imports/{again.json()['id']}").json()
    assert (job2["orders_created"], job2["orders_duplicate"]) == (0, 2)


def test_xlsx_upload(owner, data_dir):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["order_id", "channel", "purchased_at", "total"])
    ws.append(["XL-1", "douyin", "2026-03-02 10:30", 19.9])
    buf = io.BytesIO()
    wb.save(buf)
    r = upload(owner, "orders.xlsx", buf.getvalue())
    assert r.status_code == 202, r.text
    job = owner.get(f"/api/v1/imports/{r.json()['id']}").json()
    assert (job["status"], job["orders_created"]) == ("done", 1)


@pytest.mark.parametrize(("name", "content", "code", "message"), [
    ("empty.csv", b"", "import_empty_file", "The file is empty."),
    ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64, "import_xls_not_supported",
     "Old Excel files (.xls) are not supported: save the sheet as .xlsx or CSV."),
    ("orders.csv", b"order_id,channel,shop\nA,pos,x\n", "import_bad_columns",
     "The file's columns do not match the canonical columns or the mapping."),
])
def test_malformed_files_get_a_clear_422(owner, data_dir, name, content, code, message):
    r = upload(owner, name, content)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert (err["code"], err["message"]) == (code, message)
    assert list((data_dir / "imports").iterdir()) == []
    assert owner.get("/api/v1/imports").json() == []


def test_unknown_column_is_named_in_chinese(owner, data_dir):
    r = upload(owner, "orders.csv", b"order_id,channel,shop\nA,pos,x\n", lang="zh")
    fields = r.json()["error"]["fields"]
    assert fields == [{"field": "shop", "reason": "import_unknown_column",
                       "message": "未知的列 \"shop\"：请在列映射中把它对应到标准列，或设为忽略。"}]


def test_mapping_crud_and_upload_with_a_mapping(owner, data_dir):
    body = {"name": "美团", "columns": {"order_id": "订单号", "purchased_at": "下单时间",
                                        "total": "实付金额", "phone": "手机号"},
            "defaults": {"channel": "meituan"}, "ignored": ["备注"]}
    r = owner.post("/api/v1/import-mappings", json=body)
    assert r.status_code == 201, r.text
    mapping_id = r.json()["id"]
    assert owner.post("/api/v1/import-mappings", json=body).status_code == 409
    bad = owner.post("/api/v1/import-mappings", json={**body, "name": "x",
                                                      "columns": {"orderid": "a"}},
                     headers={"Accept-Language": "en"})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0] == {
        "field": "columns.orderid", "reason": "import_unknown_canonical",
        "message": '"orderid" is not a canonical column.'}
    r = owner.patch(f"/api/v1/import-mappings/{mapping_id}",
                    json={"datetime_format": "%Y年%m月%d日 %H:%M"})
    assert r.json()["datetime_format"] == "%Y年%m月%d日 %H:%M"
    content = ("订单号,下单时间,实付金额,手机号,备注\n"
               "MT-1,2026年03月02日 12:05,45.5,13812341234,辣\n")
    r = upload(owner, "mt.csv", content.encode(), mapping="美团")
    assert r.status_code == 202, r.text
    job = owner.get(f"/api/v1/imports/{r.json()['id']}").json()
    assert (job["mapping"], job["orders_created"]) == ("美团", 1)
    r = upload(owner, "mt.csv", content.encode(), mapping="饿了么")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "import_unknown_mapping")
    assert [m["name"] for m in owner.get("/api/v1/import-mappings").json()] == ["美团"]
    assert owner.delete(f"/api/v1/import-mappings/{mapping_id}").status_code == 204
    assert owner.get(f"/api/v1/import-mappings/{mapping_id}").status_code == 404


def test_import_needs_the_import_permission(client, users, data_dir):
    login(client, "analyst")
    assert upload(client, "orders.csv", (HEADER + GOOD).encode()).status_code == 403
    assert client.get("/api/v1/import-mappings").status_code == 403


def test_manager_imports_only_their_stores_orders(client, users, data_dir):
    login(client, "manager")
    r = upload(client, "orders.csv", (HEADER + GOOD).encode())
    assert r.status_code == 202, r.text
    job = client.get(f"/api/v1/imports/{r.json()['id']}").json()
    assert (job["orders_created"], job["rows_rejected"]) == (1, 1)
    assert [(e["row"], e["column"], e["reason"]) for e in job["errors"]] == [
        (4, "store", "store_out_of_scope")]


def test_a_job_whose_process_died_is_reported_interrupted_and_the_file_can_run_again(
        owner, data_dir, db_url):
    import datetime as dt

    from sqlalchemy import select, update

    from patron.db import UnitOfWork, get_engine, utcnow
    from patron.imports.tables import import_jobs
    from patron.security.tables import audit_log

    first = upload(owner, "orders.csv", (HEADER + GOOD).encode()).json()["id"]
    second = upload(owner, "more.csv", (HEADER + BAD).encode()).json()["id"]
    # The first job's process died mid-file: 'running' with a heartbeat from 11 minutes ago;
    # the second is running right now.
    with UnitOfWork(get_engine(db_url)) as uow:
        uow.c.execute(update(import_jobs).where(import_jobs.c.id == first).values(
            status="running", finished_at=None, heartbeat_at=utcnow() - dt.timedelta(minutes=11)))
        uow.c.execute(update(import_jobs).where(import_jobs.c.id == second).values(
            status="running", finished_at=None, heartbeat_at=utcnow()))
        uow.commit()
    listed = {j["id"]: j for j in owner.get("/api/v1/imports",
                                            headers={"Accept-Language": "en"}).json()}
    assert listed[first]["status"] == "failed"
    assert listed[first]["error"] == "import_interrupted"
    assert "Import the file again" in listed[first]["error_message"]
    assert listed[second]["status"] == "running"
    zh = owner.get(f"/api/v1/imports/{first}", headers={"Accept-Language": "zh"}).json()
    assert "中断" in zh["error_message"]
    with UnitOfWork(get_engine(db_url)) as uow:
        actions = list(uow.c.execute(select(audit_log.c.action, audit_log.c.entity_id).where(
            audit_log.c.action == "import.interrupted")))
    assert [(a, int(e)) for a, e in actions] == [("import.interrupted", first)]
    # Importing the same file again records nothing twice.
    again = upload(owner, "orders.csv", (HEADER + GOOD).encode()).json()["id"]
    job = owner.get(f"/api/v1/imports/{again}").json()
    assert (job["status"], job["orders_created"], job["orders_duplicate"]) == ("done", 0, 2)
