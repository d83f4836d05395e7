"""The experiments page in a real headless Chromium: the campaign whose treated arm converts
and its headline against control, then its link to the campaign's own lift report."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD
from tests.e2e.test_experiments_page import experiments_fixture  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def test_the_experiments_page_leads_to_the_campaign(live_server, browser, experiments,
                                                   tmp_path):
    n_main = sum(1 for arm in experiments.values() if arm == "main")
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.get(f"{live_server}/")
    browser.find_element(By.CSS_SELECTOR, 'nav a[href="/experiments"]').click()
    wait_for(browser, "#experiments tbody tr")
    select = browser.find_element(By.CSS_SELECTOR, '#experiments-filter input[name="days"]')
    select.clear()
    select.send_keys("20")
    browser.find_element(By.CSS_SELECTOR, '#experiments-filter button[type="submit"]').click()
    row = wait_for(browser, '#experiments tr[data-code="autumn"] .difference')
    assert row.text.startswith("+100.0 [")
    autumn = browser.find_element(By.CSS_SELECTOR, '#experiments tr[data-code="autumn"]')
    assert autumn.find_element(By.CSS_SELECTOR, ".incremental").text.startswith(
        f"¥{71 * n_main:.2f}")
    assert autumn.find_element(By.CSS_SELECTOR, ".significant").text in ("是", "否")
    screenshot(browser, tmp_path, "experiments")
    autumn.find_element(By.LINK_TEXT, "秋季回馈").click()
    versus = wait_for(browser, '#lift-versus tr[data-arm="main"] .conversion')
    assert browser.current_url.endswith("/campaigns/autumn?days=20")
    assert versus.text.startswith("+100.0 [")
