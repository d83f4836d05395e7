"""The analytics pages in a real headless Chromium (SQLite only): Plotly.js comes from Patron,
charts draw, hover labels show, a drag zooms, a legend click hides a trace, the toolbar speaks
Chinese, and "Refresh now" shows a job's progress to the end."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from patron.analytics import service
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
    """Customers with different rhythms over the last two months, at both stores."""
    now = utcnow()
    orders_in = []
    for i in range(24):
        for k in range(1 + i % 5):
            orders_in.append(order(
                f"O-{i}-{k}", store="SH01" if i % 3 else "BJ01",
                at=now - dt.timedelta(days=2 + 9 * k + 2 * i),
                identifiers={"phone": f"1380000{i:04d}"},
                lines=[{"sku": "LATTE", "category": "coffee", "quantity": "1",
                        "unit_price": str(20 + 7 * i)},
                       {"sku": "BUN", "category": "bakery" if i % 2 else "tea",
                        "quantity": "1", "unit_price": "9.00"}]))
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    assert {o.status for o in outcomes} == {"created"}
    return db_url


@pytest.fixture
def refreshed(shop):
    with UnitOfWork(get_engine(shop)) as uow:
        service.refresh_all(uow=uow, actor=SYSTEM)
    return shop


def drawn(browser, chart_id: str) -> object:
    return wait_for(browser, f"#{chart_id}[data-drawn] svg.main-svg", timeout=20)


def test_charts_load_from_patron_and_draw(live_server, browser, refreshed, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/analytics")
    drawn(browser, "segments-chart")
    drawn(browser, "share-chart")
    assert browser.execute_script("return typeof window.Plotly.newPlot") == "function"
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert any("/static/vendor/plotly.min.js?v=" in r for r in resources)
    assert resources and all(r.startswith(live_server + "/") for r in resources), resources
    # What was drawn is what the server computed.
    bars = browser.execute_script(
        "return document.getElementById('segments-chart').data[0].y")
    counts = [int(td.text) for td in browser.find_elements(
        By.CSS_SELECTOR, "#segments tbody td.customers")]
    assert bars == counts and sum(counts) == 24
    # A Chinese page gets a Chinese toolbar.
    titles = browser.execute_script(
        "return [...document.querySelectorAll('#segments-chart .modebar-btn')]"
        ".map(b => b.getAttribute('data-title'))")
    assert "重置坐标轴" in titles and "平移" in titles, titles
    screenshot(browser, tmp_path, "analytics-rfm")

    browser.get(f"{live_server}/analytics/lifecycle")
    drawn(browser, "stages-chart")
    drawn(browser, "flows-chart")
    nodes = browser.find_elements(By.CSS_SELECTOR, "#flows-chart .sankey-node")
    assert len(nodes) >= 2
    screenshot(browser, tmp_path, "analytics-lifecycle")

    browser.get(f"{live_server}/")
    drawn(browser, "trend-chart")


def test_hover_zoom_and_legend_toggle(live_server, browser, refreshed):
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.get(f"{live_server}/analytics?lang=en")
    chart = drawn(browser, "segments-chart")
    chart = browser.find_element(By.ID, "segments-chart")

    # Hover: the mouse over the tallest bar shows its label with the count.
    tallest = browser.execute_script("""
        const el = document.getElementById('segments-chart');
        const ys = el.data[0].y; return ys.indexOf(Math.max(...ys));""")
    bar = browser.find_elements(By.CSS_SELECTOR, "#segments-chart .trace.bars .point path")[
        tallest]
    ActionChains(browser).move_to_element(bar).perform()
    label = WebDriverWait(browser, 10).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, "#segments-chart .hoverlayer .hovertext"))
    top = max(int(td.text) for td in browser.find_elements(
        By.CSS_SELECTOR, "#segments tbody td.customers"))
    assert str(top) in label[0].text

    # Zoom: dragging across part of the plot narrows the x axis.
    before = browser.execute_script(
        "return document.getElementById('segments-chart')._fullLayout.xaxis.range.slice()")
    area = chart.find_element(By.CSS_SELECTOR, ".nsewdrag")
    width = area.size["width"]
    ActionChains(browser).move_to_element_with_offset(area, -width // 4, 0).click_and_hold() \
        .move_by_offset(width // 5, 0).move_by_offset(width // 5, 0).release().perform()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return document.getElementById('segments-chart')._fullLayout.xaxis.range.slice()")
        != before)
    after = browser.execute_script(
        "return document.getElementById('segments-chart')._fullLayout.xaxis.range.slice()")
    assert after[1] - after[0] < (before[1] - before[0]) / 2
    assert browser.execute_script(
        "return document.getElementById('segments-chart').layout.xaxis.autorange") is False
    # Double-click resets it.
    ActionChains(browser).double_click(area).perform()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return document.getElementById('segments-chart')._fullLayout.xaxis.range.slice()")
        == before)

    # Legend: clicking "Avg. spend" hides that trace and leaves the bars.
    items = browser.find_elements(By.CSS_SELECTOR, "#segments-chart .legend .traces")
    names = [i.text for i in items]
    assert names == ["Customers", "Avg. spend"], names
    items[1].find_element(By.CSS_SELECTOR, ".legendtoggle").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return document.getElementById('segments-chart').data[1].visible") == "legendonly")
    assert browser.execute_script(
        "return document.getElementById('segments-chart').data[0].visible") in (None, True)


def test_refresh_now_shows_progress_to_completion(live_server, browser, shop, tmp_path):
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.get(f"{live_server}/analytics")
    wait_for(browser, "#rfm-empty")
    assert "尚未刷新" in browser.find_element(By.ID, "refresh-last").text
    browser.find_element(By.ID, "refresh-button").click()
    # The progress shows while the job runs (the JSON API, no page load) ...
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "refresh-progress").is_displayed())
    assert browser.find_element(By.ID, "refresh-button").get_attribute("disabled")
    seen = set()

    def finished(d):
        seen.add(d.find_element(By.ID, "refresh-step").text)
        return d.find_element(By.ID, "refresh").get_attribute("data-status") in ("done",
                                                                                 "failed")

    WebDriverWait(browser, 90, poll_frequency=0.1).until(finished)
    panel = browser.find_element(By.ID, "refresh")
    assert panel.get_attribute("data-status") == "done", browser.find_element(
        By.ID, "refresh-error").text
    assert browser.current_url == f"{live_server}/analytics"  # no reload happened
    assert browser.execute_script("return document.getElementById('refresh-bar').value") == 1
    count = browser.find_element(By.ID, "refresh-count").text
    done, total = (int(x) for x in count.split("/"))
    assert done == total > 5
    last = browser.find_element(By.ID, "refresh-last").text
    assert last.startswith("上次刷新：") and last.endswith("已完成")
    labels = {"RFM", "生命周期阶段", "终身价值", "流失评分", "关联规则", "推荐商品", "经营看板",
              "规则标签", "分群规模"}
    assert {s.split(" · ")[0] for s in seen if s} <= labels and seen - {""}
    assert not browser.find_element(By.ID, "refresh-button").get_attribute("disabled")
    screenshot(browser, tmp_path, "analytics-refreshed")
    # ... and the new figures are one click away.
    browser.find_element(By.ID, "refresh-reload").click()
    drawn(browser, "segments-chart")
    assert browser.find_elements(By.CSS_SELECTOR, "#segments tbody tr")
