"""The member self-service pages in a real headless Chromium on a phone-sized screen: sign in
with the code the server sent, see points and their expiry, show the QR member card."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from patron.db import UnitOfWork, get_engine
from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    wait_for,
)
from tests.factories import T0, make_org
from tests.loyalty_factories import buy, enrol, make_program
from tests.selfservice_helpers import last_code

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

PHONE_SCREEN = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


@pytest.fixture
def member(db_url):
    with UnitOfWork(get_engine(db_url)) as uow:
        make_org(uow)
        make_program(uow)
        me = enrol(uow)
        for i in range(3):
            buy(uow, f"ME-{i}", at=T0 - dt.timedelta(days=i, hours=1))
    return me


def test_a_member_signs_in_with_the_texted_code_and_shows_points_and_qr_card(
        live_server, browser, member, tmp_path):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE_SCREEN)
    browser.get(f"{live_server}/m/")
    wait_for(browser, "#phone-form")
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == "手机号登录"
    browser.find_element(By.NAME, "phone").send_keys("138 1234 5678")
    browser.find_element(By.CSS_SELECTOR, "#phone-form button[type=submit]").click()
    wait_for(browser, "#code-form")
    assert "138****5678" in browser.find_element(By.ID, "code-sent").text
    code = last_code("138****5678")  # the SMS queued in the message outbox
    browser.find_element(By.NAME, "code").send_keys(code)
    browser.find_element(By.CSS_SELECTOR, "#code-form button[type=submit]").click()

    wait_for(browser, "#points")
    assert browser.find_element(By.ID, "points-spendable").text == "213"
    assert browser.find_element(By.ID, "member-code").text == member["member_code"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lots tr.lot.available")) == 3
    assert "到期" in browser.find_element(By.ID, "next-expiry").text
    assert browser.find_element(By.ID, "tier-name").text == "银卡"
    progress = browser.find_element(By.ID, "tier-progress")
    assert progress.get_attribute("value") == "21"  # 213 of GOLD's 1000 growth value
    # The layout fits the phone's width: nothing scrolls sideways.
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    screenshot_phone(browser, tmp_path, "member-home")

    browser.find_element(By.ID, "show-card").click()
    qr = wait_for(browser, "#qr svg.member-qr")
    size = qr.size
    assert size["width"] >= 200 and abs(size["width"] - size["height"]) <= 1
    payload = browser.find_element(By.ID, "qr").get_attribute("data-payload")
    assert payload.startswith(f"PM1.{member['member_code']}.")
    assert browser.find_element(By.ID, "card-member-code").text == member["member_code"]
    screenshot_phone(browser, tmp_path, "member-card")

    browser.find_element(By.ID, "lang-en").click()
    WebDriverWait(browser, 10).until(lambda d: "Member card" in d.page_source)
    browser.find_element(By.ID, "member-logout").click()
    wait_for(browser, "#phone-form")
    browser.get(f"{live_server}/m/home")
    wait_for(browser, "#phone-form")


def screenshot_phone(browser, tmp_path, name):
    """Screenshots at the phone's size (kept where PATRON_SCREENSHOT_DIR points)."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("PATRON_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / f"{name}.png"))
