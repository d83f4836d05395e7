"""The staff loyalty pages in a real headless Chromium (SQLite only): a cashier finds a member,
quotes a basket, applies a coupon and points and commits; the member page then shows the new
ledger entries and the coupon redeemed. An owner opens the liability report and runs a
simulation, and sees the charts drawn."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD
from tests.web_loyalty_helpers import PHONE_A, make_shop

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def shop(db_url, org, users):
    return make_shop(db_url)


def fill(browser, css: str, value: str) -> None:
    box = browser.find_element(By.CSS_SELECTOR, css)
    box.clear()
    box.send_keys(value)


def test_a_cashier_sells_to_a_member_and_the_member_page_shows_it(live_server, browser, shop,
                                                                   tmp_path):
    sign_in(browser, live_server, "cashier", PASSWORD)
    assert browser.current_url.endswith("/cashier")  # the cashier's one page
    fill(browser, "input[name=id_value]", PHONE_A)
    browser.find_element(By.ID, "lookup-button").click()
    wait_for(browser, "#member-found")
    assert browser.find_element(By.ID, "found-code").text == shop["a"]["member_code"]
    assert browser.find_element(By.ID, "found-points").text == "800"
    assert "矿泉水" in browser.find_element(By.ID, "tier-benefits").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#basket-lines tr.line")
    for row, (sku, cat, qty, price) in zip(rows, [("LATTE", "coffee", "2", "28"),
                                                 ("CROISSANT", "bakery", "1", "15")],
                                           strict=False):
        for name, value in (("sku", sku), ("category", cat), ("qty", qty), ("price", price)):
            row.find_element(By.NAME, name).send_keys(value)
    # "More lines" adds a row in the page itself (the local script).
    browser.find_element(By.ID, "more-lines").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#basket-lines tr.line")) == len(rows) + 1
    code = shop["coupon"]
    browser.find_element(By.CSS_SELECTOR, f'input[name=coupon][value="{code}"]').click()
    fill(browser, "input[name=redeem_points]", "500")
    browser.find_element(By.ID, "quote-button").click()
    wait_for(browser, "#quote")
    assert browser.find_element(By.ID, "q-points-value").text.startswith("−¥5.00")
    assert browser.find_element(By.ID, "q-coupon-discount").text != "−¥0.00"
    applies = browser.find_element(By.CSS_SELECTOR, f'.coupon-choice[data-code="{code}"]')
    assert applies.get_attribute("data-applies") == "1"
    will_earn = browser.find_element(By.ID, "q-will-earn").get_attribute("data-points")
    screenshot(browser, tmp_path, "cashier-quote")
    browser.find_element(By.ID, "commit-button").click()
    wait_for(browser, "#committed")
    assert browser.find_element(By.ID, "r-redeemed").text == "500"
    assert browser.find_element(By.ID, "r-earned").text == will_earn
    assert browser.find_elements(By.CSS_SELECTOR, f'.redeemed-coupon[data-code="{code}"]')
    balance = int(browser.find_element(By.ID, "r-balance").text.split()[0])
    assert balance == 800 - 500 + int(will_earn)
    screenshot(browser, tmp_path, "cashier-result")

    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "#login-form")
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/customers/{shop['a']['customer_id']}")
    browser.find_element(By.CSS_SELECTOR, "#memberships a.member-link").click()
    wait_for(browser, "#ledger-table")
    entries = browser.find_elements(By.CSS_SELECTOR, "#ledger-table tr.entry")
    kinds = [(e.get_attribute("data-kind"), e.get_attribute("data-points")) for e in entries]
    assert ("redeem", "-500") in kinds and ("earn", will_earn) in kinds
    redeem = next(e for e in entries if e.get_attribute("data-kind") == "redeem")
    assert "积分抵扣" in redeem.text  # its cause: the checkout's redemption
    assert browser.find_element(By.ID, "points-available").text == f"{balance:,}"
    coupon = browser.find_element(By.CSS_SELECTOR, f'#coupons-table tr[data-code="{code}"]')
    assert coupon.get_attribute("data-state") == "redeemed"
    assert browser.find_element(By.ID, "coupons-redeemed").text == "1"
    screenshot(browser, tmp_path, "member")


def test_an_owner_sees_the_liability_and_simulation_charts(live_server, browser, shop,
                                                           tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.find_element(By.LINK_TEXT, "会员报表").click()
    for chart in ("expiry-chart", "store-chart", "sv-chart", "coupon-chart"):
        wait_for(browser, f"#{chart}[data-drawn] svg.main-svg", timeout=20)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(r.startswith(live_server + "/") for r in resources), resources
    bars = browser.execute_script(
        "return document.getElementById('expiry-chart').data[0].y")
    assert sum(bars) == 800  # the available points, by month of expiry
    screenshot(browser, tmp_path, "liability")

    browser.find_element(By.ID, "tab-simulation").click()
    fill(browser, "input[name=points_per_yuan]", "2")
    browser.find_element(By.ID, "simulate-button").click()
    WebDriverWait(browser, 60).until(
        lambda b: b.find_element(By.ID, "run").get_attribute("data-status") in ("done",
                                                                                "failed"))
    assert browser.find_element(By.ID, "run").get_attribute("data-status") == "done"
    for chart in ("sim-totals-chart", "sim-month-chart", "sim-tier-chart"):
        wait_for(browser, f"#{chart}[data-drawn] svg.main-svg", timeout=20)
    screenshot(browser, tmp_path, "simulation")
