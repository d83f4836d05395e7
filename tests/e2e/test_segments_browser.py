"""The segment builder and tag pages in a real headless Chromium (SQLite): build a nested
segment by clicking, see the live count follow every edit and an invalid condition flagged,
save it, export it, tag its members; apply a tag to a pasted list."""

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
    now = utcnow()
    orders_in = [
        order("W-1", at=now - dt.timedelta(days=2), identifiers={"phone": "13812341234"},
              customer={"name": "王小明"}),
        order("Z-1", store="BJ01", at=now - dt.timedelta(days=3),
              identifiers={"phone": "13955556666"}, customer={"name": "赵云"}),
        order("L-1", at=now - dt.timedelta(days=4), identifiers={"phone": "13700001111"},
              customer={"name": "李雷"}),
    ]
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    assert {o.status for o in outcomes} == {"created"}


def _count(browser, expected: str) -> None:
    WebDriverWait(browser, 15).until(
        lambda b: b.find_element(By.ID, "segment-page").get_attribute("data-state") == "ready"
        and b.find_element(By.ID, "segment-count").text == expected)


def _add(browser, group_css: str, kind: str) -> None:
    head = browser.find_element(By.CSS_SELECTOR, f'{group_css} > .seg-group-head')
    Select(head.find_element(By.CSS_SELECTOR, ".seg-add-condition")).select_by_value(kind)


def _row(browser, path: str):  # type: ignore[no-untyped-def]
    return wait_for(browser, f'[data-path="{path}"]')


def test_build_a_nested_segment_save_export_and_tag_it(live_server, browser, shop,
                                                       tmp_path) -> None:
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.find_element(By.LINK_TEXT, "分群").click()
    wait_for(browser, "#new-segment").click()
    wait_for(browser, '#segment-builder [data-path="root"]')
    _count(browser, "3")  # no condition: every customer

    # purchases: orders >= 1
    _add(browser, '[data-path="root"]', "purchases")
    Select(_row(browser, "conditions.0").find_element(By.NAME, "measure")
           ).select_by_value("orders")
    value = _row(browser, "conditions.0").find_element(By.NAME, "value")
    value.clear()
    value.send_keys("1")
    _count(browser, "3")

    # a nested "any" group: bought at BJ01, or the surname 王 (names are encrypted: the
    # builder offers only what their blind indexes answer)
    browser.find_element(By.CSS_SELECTOR, '[data-path="root"] > .seg-group-head .seg-add-group'
                         ).click()
    group = '[data-path="conditions.1"]'
    wait_for(browser, group)
    _add(browser, group, "store")
    Select(_row(browser, "conditions.1.conditions.0").find_element(By.NAME, "op")
           ).select_by_value("purchased")
    # no store ticked yet: the API refuses it and the builder flags that condition
    flagged = wait_for(browser, '[data-path="conditions.1.conditions.0"].invalid')
    assert flagged.find_element(By.CSS_SELECTOR, ".seg-error").text
    _row(browser, "conditions.1.conditions.0").find_element(
        By.CSS_SELECTOR, 'input[type=checkbox][value="BJ01"]').click()
    _count(browser, "1")
    _add(browser, group, "profile")
    Select(_row(browser, "conditions.1.conditions.1").find_element(By.NAME, "op")
           ).select_by_value("surname")
    _row(browser, "conditions.1.conditions.1").find_element(By.NAME, "value").send_keys("王")
    _count(browser, "2")
    names = {td.text for td in browser.find_elements(By.CSS_SELECTOR,
                                                     "#segment-sample tr td:first-child")}
    assert names == {"王**", "赵*"}, names
    screenshot(browser, tmp_path, "segment-builder")

    browser.find_element(By.ID, "segment-name").send_keys("BJ01 或姓王")
    browser.find_element(By.ID, "segment-save").click()
    wait_for(browser, "#saved")
    assert "BJ01 或姓王" in browser.find_element(By.CSS_SELECTOR, "h1").text
    _count(browser, "2")  # the saved definition loads back into the builder
    segment_id = browser.find_element(By.ID, "segment-page").get_attribute("data-segment-id")

    csv_text = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        f"fetch('/api/v1/segments/{segment_id}/export.csv').then(r => r.text()).then(done);")
    watermark, *lines = csv_text.strip().splitlines()
    assert watermark.startswith("Patron export") and "requested by owner" in watermark
    assert len(lines) == 3 and "138****1234" in csv_text

    # a manual tag, applied to the members from the segment page, then to a pasted list
    browser.get(f"{live_server}/tags")
    form = wait_for(browser, "#create-tag")
    form.find_element(By.NAME, "code").send_keys("vip")
    form.find_element(By.NAME, "name").send_keys("贵宾")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert wait_for(browser, "#tag-count").text == "0"
    browser.get(f"{live_server}/segments/{segment_id}")
    wait_for(browser, "#tag-members button[type=submit]").click()
    assert "2" in wait_for(browser, "#tagged").text
    browser.get(f"{live_server}/tags/vip")
    assert wait_for(browser, "#tag-count").text == "2"
    browser.find_element(By.NAME, "pasted").send_keys("13700001111\nNOBODY")
    browser.find_element(By.CSS_SELECTOR, "#paste-form button[type=submit]").click()
    assert "NOBODY" in wait_for(browser, "#applied").text
    assert browser.find_element(By.ID, "tag-count").text == "3"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tag-events tbody tr")) == 3
    screenshot(browser, tmp_path, "tag")


def test_the_builder_says_when_it_counts_on_the_audience_replica(live_server, browser, shop,
                                                                  db_url) -> None:
    from zoneinfo import ZoneInfo

    from patron.segments import replica

    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/segments/new")
    wait_for(browser, '#segment-builder [data-path="root"]')
    _count(browser, "3")
    assert not browser.find_element(By.ID, "segment-as-of").is_displayed()  # the database

    try:
        synced = replica.sync(get_engine(db_url))  # into the server's data dir
        browser.refresh()
        wait_for(browser, '#segment-builder [data-path="root"]')
        _count(browser, "3")
        note = WebDriverWait(browser, 15).until(
            lambda b: b.find_element(By.ID, "segment-as-of") if b.find_element(
                By.ID, "segment-as-of").is_displayed() else None)
        local = synced.as_of.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%H:%M")
        assert note.text == f"计数所用数据截至 {local}", note.text
    finally:
        replica.reset_readers()
