"""The web UI in a real headless Chromium against a live server (SQLite only)."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from patron.db import UnitOfWork, get_engine, utcnow
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD
from tests.factories import order

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def shop(db_url, org, users):
    """A month of purchases: Wang (member, SH01, coffee and tea), Zhao (BJ01), guests."""
    now = utcnow()
    orders_in = []
    for day in range(0, 30, 2):
        at = now - dt.timedelta(days=day, hours=1)
        orders_in.append(order(f"W-{day}", at=at, identifiers={
            "phone": "13812341234", "member_code": "VIP7"}, customer={"name": "王小明"},
            lines=[{"sku": "LATTE", "name": "拿铁", "category": "coffee", "quantity": "2",
                    "unit_price": "28.00"}, {"sku": "TEA", "name": "乌龙茶", "category": "tea",
                                             "quantity": "1", "unit_price": str(12 + day)}]))
        orders_in.append(order(f"G-{day}", store="BJ01", at=at - dt.timedelta(hours=2)))
    orders_in.append(order("Z-1", store="BJ01", at=now - dt.timedelta(days=3),
                           identifiers={"phone": "13955556666"}, customer={"name": "赵云"}))
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    assert {o.status for o in outcomes} == {"created"}


def test_owner_signs_in_searches_a_customer_and_opens_the_timeline(live_server, browser,
                                                                    shop, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    assert browser.find_element(By.CSS_SELECTOR, "h1").text.startswith("经营概览")
    assert wait_for(browser, "#trend-chart[data-drawn] svg.main-svg").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#month .orders").text == "31"
    screenshot(browser, tmp_path, "dashboard")

    browser.find_element(By.LINK_TEXT, "顾客").click()
    box = wait_for(browser, "#customer-search input[name=q]")
    box.send_keys("138 1234 1234")
    box.submit()
    wait_for(browser, "#customer-list .customer-name")
    rows = browser.find_elements(By.CSS_SELECTOR, "#customer-list tbody tr")
    assert len(rows) == 1 and "138****1234" in rows[0].text
    browser.find_element(By.CSS_SELECTOR, "#customer-list .customer-name").click()
    wait_for(browser, "#timeline")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#orders tr.order")) == 10
    assert "共 15 笔" in browser.find_element(By.CSS_SELECTOR, "#timeline h2").text
    screenshot(browser, tmp_path, "customer")

    Select(browser.find_element(By.CSS_SELECTOR, "#timeline-filters select[name=category]")
           ).select_by_value("tea")
    browser.find_element(By.CSS_SELECTOR, "#timeline-filters button").click()
    WebDriverWait(browser, 10).until(lambda d: "category=tea" in d.current_url)
    assert "乌龙茶" in browser.find_element(By.ID, "orders").text
    browser.find_element(By.CSS_SELECTOR, "#timeline .pager a[rel=next]").click()
    WebDriverWait(browser, 10).until(lambda d: "page=2" in d.current_url)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#orders tr.order")) == 5

    browser.find_element(By.CSS_SELECTOR, "button.reveal[data-field=phone]").click()
    revealed = wait_for(browser, ".revealed[data-field=phone]")
    assert revealed.text == "+8613812341234"


def test_owner_imports_a_file_through_the_import_page(live_server, browser, shop, tmp_path):
    csv_file = tmp_path / "门店订单.csv"
    csv_file.write_text(
        "order_id,channel,store,purchased_at,phone,sku,quantity,unit_price\n"
        "F-1,pos,SH01,2026-03-02 10:30,13700001111,LATTE,1,28\n"
        "F-2,pos,SH01,2026-03-02 10:40,,LATTE,two,28\n", encoding="utf-8")
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/imports")
    browser.find_element(By.CSS_SELECTOR, "#upload-form input[type=file]").send_keys(
        str(csv_file))
    browser.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.ID, "job").get_attribute("data-status") in ("done",
                                                                                "failed"))
    assert browser.find_element(By.ID, "job").get_attribute("data-status") == "done"
    assert browser.find_element(By.ID, "orders-created").text == "1"
    bad = browser.find_element(By.ID, "bad-rows").text
    assert "3" in bad and "quantity" in bad and "two" in bad


def test_store_manager_sees_masked_phones_and_cannot_reveal(live_server, browser, shop):
    sign_in(browser, live_server, "manager", PASSWORD)
    month_orders = browser.find_element(By.CSS_SELECTOR, "#month .orders").text
    assert month_orders == "15"  # only the manager's store
    browser.get(f"{live_server}/customers")
    table = wait_for(browser, "#customer-list").text
    assert "138****1234" in table and "13812341234" not in table
    assert "赵" not in table
    browser.find_element(By.CSS_SELECTOR, "#customer-list .customer-name").click()
    profile = wait_for(browser, "#profile").text
    assert "138****1234" in profile
    assert not browser.find_elements(By.CSS_SELECTOR, "button.reveal")
    browser.get(f"{live_server}/admin/users")
    assert "没有权限" in browser.find_element(By.TAG_NAME, "h1").text


def test_language_switch_changes_every_page(live_server, browser, shop):
    sign_in(browser, live_server, "analyst", PASSWORD)
    assert browser.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "zh-CN"
    browser.find_element(By.ID, "lang-en").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "en")
    assert browser.find_element(By.CSS_SELECTOR, "h1").text.startswith("Dashboard")
    browser.find_element(By.LINK_TEXT, "Customers").click()
    wait_for(browser, "#customer-list")
    assert "Customers" in browser.find_element(By.CSS_SELECTOR, "h1").text
    browser.find_element(By.ID, "lang-zh").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "h1").text.startswith("顾客"))
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "#login-form")
    assert "登录" in browser.find_element(By.CSS_SELECTOR, "h1").text
