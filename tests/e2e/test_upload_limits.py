"""Upload and request size limits, and upload types (docs/security.md#request-size-limits), on
SQLite and PostgreSQL: an order file over PATRON_IMPORT_MAX_UPLOAD_MB, a JSON body over
PATRON_MAX_JSON_BODY_MB (with its length declared or sent in chunks) and a file that is not a
CSV or .xlsx get a clear 4xx in the caller's language, and nothing is written: no job, no
order, no audit entry, no file left in the data directory."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from sqlalchemy import func, select

from patron.config import get_settings
from patron.db import get_engine
from patron.imports.tables import import_jobs
from patron.orders.tables import orders
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.factories import order

HEADER = b"order_id,channel,store,purchased_at,phone,sku,quantity,unit_price,total\n"


@pytest.fixture
def limits(monkeypatch, tmp_path):
    monkeypatch.setenv("PATRON_IMPORT_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("PATRON_MAX_JSON_BODY_MB", "1")
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def state(db_url, data_dir) -> tuple[int, int, int, list[str]]:
    with get_engine(db_url).connect() as conn:
        counts = [conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in (import_jobs, orders, audit_log)]
    folder = data_dir / "imports"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return (*counts, files)


def csv_of(size: int) -> bytes:
    row = b"X-%07d,pos,SH01,2026-03-02 10:30,,LATTE,1,28,\n"
    out = bytearray(HEADER)
    n = 0
    while len(out) < size:
        out += row % n
        n += 1
    return bytes(out)


def test_an_order_file_over_the_limit_is_refused_before_it_is_read(client, users, org, db_url,
                                                                    limits):
    login(client, "owner")
    before = state(db_url, limits)
    r = client.post("/api/v1/imports?lang=en",
                    files={"file": ("big.csv", csv_of(3 * 1024 * 1024), "text/csv")})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert "PATRON_IMPORT_MAX_UPLOAD_MB" in r.json()["error"]["message"]
    assert r.headers["x-content-type-options"] == "nosniff"  # the security headers still apply
    # Just over the limit, inside the form's allowance: refused while it is copied
    r = client.post("/api/v1/imports", headers={"Accept-Language": "en"},
                    files={"file": ("edge.csv", csv_of(1024 * 1024 + 4096), "text/csv")})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "import_file_too_large"
    assert r.json()["error"]["message"] == "The file is too large."
    assert state(db_url, limits) == before
    # under the limit, the same kind of file is taken
    r = client.post("/api/v1/imports", files={"file": ("ok.csv", csv_of(50_000), "text/csv")})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 2000, "import_unsupported_file"),
    ("orders.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 2000, "import_xls_not_supported"),
    ("orders.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 2000, "import_xls_not_supported"),
    ("tool.exe", b"MZ\x90\x00" + b"\0" * 2000, "import_unsupported_file"),
    ("empty.csv", b"", "import_empty_file"),
])
def test_a_file_that_is_not_an_order_file_is_refused(client, users, org, db_url, limits, name,
                                                      content, reason):
    login(client, "owner")
    before = state(db_url, limits)
    r = client.post("/api/v1/imports?lang=en", files={"file": (name, content,
                                                               "application/octet-stream")})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == reason and error["message"] and error["message"] != reason
    assert state(db_url, limits) == before


def test_a_zip_that_is_not_a_workbook_is_refused(client, users, org, db_url, limits):
    login(client, "owner")
    before = state(db_url, limits)
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:
        z.writestr("evil.txt", "=HYPERLINK(\"http://x\")")
    r = client.post("/api/v1/imports", files={"file": ("orders.xlsx", raw.getvalue(),
                                                       "application/octet-stream")})
    assert r.status_code == 422, r.text
    assert state(db_url, limits) == before


def test_a_json_body_over_the_limit_is_refused_whether_its_length_is_declared_or_not(
        client, users, org, db_url, pos_key, limits):
    headers = {"Authorization": f"Bearer {pos_key}", "Content-Type": "application/json",
               "Accept-Language": "en"}
    batch = [order(f"J-{i}", identifiers={"phone": f"1380000{i % 10000:04d}"},
                   note="x" * 2000) for i in range(600)]
    raw = json.dumps({"orders": batch}).encode()
    assert len(raw) > 1024 * 1024
    before = state(db_url, limits)
    r = client.post("/api/v1/orders/batch", content=raw, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():
        for i in range(0, len(raw), 64 * 1024):
            yield raw[i:i + 64 * 1024]

    r = client.post("/api/v1/orders/batch", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert state(db_url, limits) == before
    small = json.dumps({"orders": [order("J-ok")]}).encode()
    r = client.post("/api/v1/orders/batch", content=small, headers=headers)
    assert r.status_code < 300, r.text
