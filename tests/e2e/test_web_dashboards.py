"""The dashboard pages over HTTP (SQLite and PostgreSQL): the figures are the service's, every
number links to a list with as many customers, the list exports (audited), managers see their
store, cashiers nothing, bad filters are shown on the form; and in a real headless Chromium
the charts draw and a number's link opens its customers."""

from __future__ import annotations

import csv
import datetime as dt
import html
import re

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

from patron.analytics import dashboards_service as ds
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD, login
from tests.e2e.test_web_pages import errors_in, post_form
from tests.factories import order

SH = dt.timezone(dt.timedelta(hours=8))
Q = "from=2026-01-01&to=2026-03-31"


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 11, tzinfo=SH)


@pytest.fixture
def shop(db_url, org, users):
    """Twelve customers over three months at both stores, some members, some guests."""
    orders_in = []
    for i in range(12):
        who = {"member_code": f"M{i:04d}"} if i % 3 == 0 else {"phone": f"1380000{i:04d}"}
        for k in range(1 + i % 3):
            orders_in.append(order(f"O-{i}-{k}", store="SH01" if i % 4 else "BJ01",
                                   at=at(1 + (i + k) % 3, 1 + i + 2 * k), identifiers=who))
    orders_in += [order(f"G-{i}", at=at(2, 10 + i)) for i in range(3)]
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM,
                                 now=at(4, 1), audit_each=False)
    assert {o.status for o in outcomes} == {"created"}
    with UnitOfWork(get_engine(db_url)) as uow:
        ds.refresh_dashboards(uow=uow, actor=SYSTEM)
    return db_url


def links(page: str, metric: str) -> list[tuple[str, str]]:
    """(href, shown number) of every link of one metric."""
    found = re.findall(r'<a href="(/dashboards/customers\?[^"]+)">([^<]+)</a>', page)
    return [(html.unescape(h), n) for h, n in found if f"metric={metric}" in html.unescape(h)]


def test_breakdown_page_numbers_link_to_as_many_customers(client, shop):
    login(client, "owner")
    for by in ("store", "month", "channel"):
        r = client.get(f"/dashboards?by={by}&{Q}&lang=en")
        assert r.status_code == 200, r.text
        found = links(r.text, "customers")
        assert found, by
        for href, shown in found:
            listed = client.get(href)
            assert listed.status_code == 200
            total = re.search(r'<span id="drill-total">(\d+)</span>', listed.text).group(1)
            assert total == shown.strip(), (href, shown)
    page = client.get(f"/dashboards?by=store&{Q}").text
    with UnitOfWork(get_engine(shop), readonly=True) as uow:
        result = ds.breakdown(uow.c, actor=SYSTEM, by="store", date_from=dt.date(2026, 1, 1),
                              date_to=dt.date(2026, 3, 31))
    sh = next(r for r in result["rows"] if r["key"] == "SH01")
    row = re.search(r'<tr data-key="SH01">(.*?)</tr>', page, re.S).group(1)
    assert f">{sh['customers']}</a>" in row and f"¥{sh['net_sales']:,.2f}" in row
    assert 'id="breakdown-chart"' in page and "<noscript>" in page


def test_members_cohorts_structure_pages_and_promotions(client, shop):
    login(client, "owner")
    r = client.get(f"/dashboards/members?{Q}&lang=en")
    assert r.status_code == 200 and 'data-group="guest"' in r.text
    created = post_form(client, "/dashboards/promotions", {
        "name": "Feb", "starts_on": "2026-02-10", "ends_on": "2026-02-20"},
        page="/dashboards/members")
    assert created.status_code == 303 and "done=promotion_created" in created.headers["location"]
    page = client.get(f"/dashboards/members?{Q}&lang=en").text
    assert "Feb" in page and 'data-window="during"' in page
    bad = post_form(client, "/dashboards/promotions", {
        "name": "x", "starts_on": "2026-02-10", "ends_on": "2026-02-01"},
        page="/dashboards/members")
    assert "error=" in bad.headers["location"]
    r = client.get("/dashboards/cohorts?from=2026-01&to=2026-03&lang=en")
    assert r.status_code == 200 and 'data-cohort="2026-01"' in r.text
    assert 'id="cohort-chart"' in r.text
    r = client.get("/dashboards/structure?lang=en")
    assert r.status_code == 200 and 'id="structure-empty"' in r.text  # no RFM refresh yet


def test_export_from_the_list_is_audited(client, shop, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    from patron.config import get_settings

    get_settings.cache_clear()
    login(client, "analyst")
    href, shown = links(client.get(f"/dashboards?by=store&{Q}").text, "customers")[0]
    listed = client.get(href).text
    csv_href = html.unescape(re.search(r'href="([^"]+)" id="export-csv"', listed).group(1))
    r = client.get(csv_href)
    assert r.status_code == 200
    rows = list(csv.reader(r.content.decode("utf-8-sig").splitlines()))
    assert rows[0][0].startswith("Patron export")  # the watermark, then the header
    assert len(rows) - 2 == int(shown)
    with UnitOfWork(get_engine(shop)) as uow:
        details = uow.c.execute(select(audit_log.c.details).where(
            audit_log.c.action == "customers.exported")).scalar_one()
    assert details["rows"] == int(shown) and "drill_down" in details["filters"]


def test_roles_scope_and_bad_filters(client, shop):
    login(client, "manager")  # SH01 only
    page = client.get(f"/dashboards?by=store&{Q}").text
    assert re.findall(r'<tr data-key="([^"]+)">', page) == ["SH01"]
    assert 'id="dashboard-refresh-button"' not in page
    assert client.get(f"/dashboards?by=store&scope=store:BJ01&{Q}").status_code == 403
    r = client.get("/dashboards?by=store&from=2026-03-01&to=2026-01-01&lang=en")
    assert r.status_code == 200
    assert errors_in(r.text) == {"to": "The end date lies before the start date."}
    r = client.get("/dashboards?by=planet&from=2026-01-01&to=2026-01-31&lang=en")
    assert "by" in errors_in(r.text)
    login(client, "cashier")
    assert client.get("/dashboards").status_code == 403
    assert client.get("/dashboards/customers?by=total&" + Q).status_code == 403


def test_refresh_button(client, db_url, org, users):
    login(client, "owner")
    page = client.get("/dashboards").text
    assert 'id="never-refreshed"' in page
    r = post_form(client, "/dashboards/refresh", {"back": "/dashboards/cohorts"},
                  page="/dashboards")
    assert r.status_code == 303 and r.headers["location"] == "/dashboards/cohorts"
    assert 'id="never-refreshed"' not in client.get("/dashboards").text


@pytest.mark.browser
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_charts_draw_and_a_number_opens_its_customers(live_server, browser, shop):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/dashboards?by=month&{Q}")
    wait_for(browser, "#breakdown-chart[data-drawn] svg.main-svg", timeout=20)
    bars = browser.execute_script("return document.getElementById('breakdown-chart').data[0].x")
    assert bars == ["2026-01", "2026-02", "2026-03"]
    cell = browser.find_element(By.CSS_SELECTOR, 'tr[data-key="2026-02"] td.customers a')
    shown = cell.text
    cell.click()
    total = wait_for(browser, "#drill-total", timeout=10)
    assert total.text == shown
    assert len(browser.find_elements(By.CSS_SELECTOR, "#drill-list tbody tr")) == int(shown)
