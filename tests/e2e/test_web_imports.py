"""The import pages: upload, progress and bad rows, column mappings edited in a form."""

from __future__ import annotations

import re

import pytest

from patron.config import get_settings
from tests.e2e.conftest import login
from tests.e2e.test_web_pages import csrf, errors_in, post_form

HEADER = "order_id,channel,store,purchased_at,phone,sku,quantity,unit_price\n"
ROWS = ("W-1,pos,SH01,2026-03-02 10:30,13812341234,LATTE,2,28\n"
        "W-1,pos,SH01,,,CAKE,1,16\n"
        "W-2,pos,SH01,2026-03-02 11:30,,LATTE,many,28\n")


@pytest.fixture
def data_dir(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def upload(client, name: str, content: bytes, mapping: str = ""):
    token = csrf(client.get("/imports").text)
    return client.post("/imports", data={"csrf_token": token, "mapping": mapping},
                       files={"file": (name, content, "text/csv")}, follow_redirects=False)


def test_upload_runs_the_import_and_lists_bad_rows(owner, data_dir):
    r = upload(owner, "订单.csv", (HEADER + ROWS).encode("utf-8-sig"))
    assert r.status_code == 303
    job_url = r.headers["location"]
    assert re.fullmatch(r"/imports/\d+", job_url)
    page = owner.get(job_url).text  # the background task has run by now
    assert 'data-status="done"' in page and "http-equiv=\"refresh\"" not in page
    assert re.search(r'id="orders-created">1<', page)
    assert re.search(r'id="rows-rejected">1<', page)
    bad = re.search(r'<table id="bad-rows">(.*?)</table>', page, re.S).group(1)
    assert re.search(r'<td class="num">4</td><td>quantity</td><td>many</td><td>必须是数字。</td>',
                     bad)
    en = owner.get(job_url + "?lang=en").text
    assert "Must be a number." in en and "Bad rows" in en
    listing = owner.get("/imports?lang=zh").text  # ?lang=en was remembered until now
    assert "订单.csv" in listing and "已完成" in listing


def test_unusable_files_come_back_with_the_reason(owner, data_dir):
    r = upload(owner, "x.csv", b"")
    assert r.status_code == 422 and "file" in errors_in(r.text)
    r = upload(owner, "x.csv", "订单号,金额\nA,1\n".encode())
    assert r.status_code == 422
    assert "订单号" in r.text  # the unknown column is named
    token = csrf(owner.get("/imports").text)
    r = owner.post("/imports", data={"csrf_token": token})
    assert r.status_code == 422 and errors_in(r.text) == {"file": "此字段必填。"}
    r = upload(owner, "x.csv", (HEADER + ROWS).encode(), mapping="nope")
    assert r.status_code == 422 and "mapping" in errors_in(r.text)
    assert not list((data_dir / "imports").iterdir())  # refused uploads are not kept


def test_a_mapping_made_in_the_form_imports_a_platform_file(owner, data_dir):
    r = post_form(owner, "/imports/mappings", {
        "name": "美团导出", "columns.order_id": "订单号", "columns.purchased_at": "下单时间",
        "columns.total": "实付金额", "columns.phone": "手机", "defaults.channel": "meituan",
        "ignored": "备注，门店地址", "datetime_format": ""}, page="/imports/mappings/new")
    assert r.status_code == 303, r.text
    listing = owner.get("/imports").text
    assert "美团导出" in listing
    edit_url = re.search(r'href="(/imports/mappings/\d+)"', listing).group(1)
    form = owner.get(edit_url).text
    assert 'name="columns.order_id" value="订单号"' in form
    assert 'value="备注, 门店地址"' in form

    content = ("订单号,下单时间,实付金额,手机,备注,门店地址\n"
               "MT-1,2026-03-02 12:00,35.5,13812341234,少冰,人民广场\n").encode()
    r = upload(owner, "meituan.csv", content, mapping="美团导出")
    assert r.status_code == 303
    page = owner.get(r.headers["location"]).text
    assert re.search(r'id="orders-created">1<', page) and "美团导出" in page

    # Bad input stays in the form with the reason beside the field.
    r = post_form(owner, edit_url, {"name": "美团导出", "columns.order_id": "订单号",
                                    "columns.total": "订单号", "defaults.channel": "meituan"},
                  page=edit_url)
    assert r.status_code == 422
    assert "columns.total" in errors_in(r.text) or "columns.order_id" in errors_in(r.text)
    assert 'name="columns.total" value="订单号"' in r.text
    r = post_form(owner, "/imports/mappings", {"name": "美团导出",
                                               "defaults.channel": "meituan"},
                  page="/imports/mappings/new")
    assert r.status_code == 409 and errors_in(r.text) == {"name": "已存在。"}
    r = post_form(owner, edit_url, {"name": "美团 v2", "columns.order_id": "订单号",
                                    "defaults.channel": "meituan"}, page=edit_url)
    assert r.status_code == 303 and "美团 v2" in owner.get("/imports").text


def test_a_store_manager_sees_only_their_own_imports(client, users, data_dir):
    login(client, "owner")
    upload(client, "owner.csv", (HEADER + ROWS).encode())
    client.cookies.clear()
    login(client, "manager")
    page = client.get("/imports").text
    assert "owner.csv" not in page
    r = upload(client, "mine.csv", (HEADER + ROWS).encode())
    assert r.status_code == 303
    assert "mine.csv" in client.get("/imports").text
