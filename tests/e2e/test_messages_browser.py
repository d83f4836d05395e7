"""The message template pages in a real headless Chromium (SQLite): from the navigation to a new
template, previewed with a sample value, refused beside its field, saved, then deleted after the
page asks to confirm (and kept when the answer is no)."""

from __future__ import annotations

import time

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from patron.db import UnitOfWork, get_engine
from patron.errors import NotFound
from patron.messaging import service
from patron.security.model import SYSTEM
from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def _saved(db_url: str, code: str) -> dict | None:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        try:
            return service.get_template(uow.c, actor=SYSTEM, code=code)
        except NotFound:
            return None


def _type(browser, name: str, text: str) -> None:
    """Type into the named field, finding it again if a preview's answer replaced the form
    while we typed (the element is then stale or no longer in the document)."""
    for attempt in range(5):
        try:
            box = browser.find_element(By.NAME, name)
            box.clear()
            box.send_keys(text)
            if box.get_attribute("value") == text:
                return
        except WebDriverException:
            if attempt == 4:
                raise
        time.sleep(0.2)
    assert browser.find_element(By.NAME, name).get_attribute("value") == text


def test_an_owner_creates_and_deletes_a_template_by_clicking(
        browser, live_server, users, db_url, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.find_element(By.CSS_SELECTOR, 'header nav a[href="/messages"]').click()
    wait_for(browser, "#state-counts")
    browser.find_element(By.CSS_SELECTOR, '#messages-tabs a[href="/messages/templates"]').click()
    wait_for(browser, "#new-template").click()
    wait_for(browser, "#template-form")
    _type(browser, "code", "birthday_wish")
    _type(browser, "description", "生日祝福")
    _type(browser, "variables", "name, gift")
    _type(browser, "body_zh", "{{ name }}，生日快乐！送您 {{ gift }}。")
    _type(browser, "body_en", "Happy birthday, {{ name }}! {{ gift }} {{ coupon }}")
    browser.find_element(By.ID, "save").click()
    error = wait_for(browser, 'small.error[data-field="body_en"]')
    assert "coupon" in error.text and "未知变量" in error.text
    assert _saved(db_url, "birthday_wish") is None
    _type(browser, "body_en", "Happy birthday, {{ name }}! Here is {{ gift }}.")
    browser.find_element(By.ID, "preview-button").click()
    wait_for(browser, "#samples")
    _type(browser, "sample_name", "小王")
    _type(browser, "sample_gift", "一杯咖啡")
    browser.find_element(By.ID, "preview-button").click()
    # The first preview's element may still be on the page when this click's answer replaces
    # it: read the text afresh until the new preview shows (a stale element is retried).
    selector = '#preview .preview[data-lang="zh"] pre'
    expected = "小王，生日快乐！送您 一杯咖啡。"
    WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: b.find_element(By.CSS_SELECTOR, selector).text == expected)
    assert browser.find_element(By.CSS_SELECTOR, selector).text == expected
    screenshot(browser, tmp_path, "messages-template-preview")
    assert _saved(db_url, "birthday_wish") is None
    browser.find_element(By.ID, "save").click()
    wait_for(browser, "#saved")
    assert browser.current_url.endswith("/messages/templates/birthday_wish?saved=1")
    assert _saved(db_url, "birthday_wish")["variables"] == ["name", "gift"]

    browser.find_element(By.ID, "delete").click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    browser.switch_to.alert.dismiss()  # "no": nothing is posted
    assert _saved(db_url, "birthday_wish") is not None
    browser.find_element(By.ID, "delete").click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    browser.switch_to.alert.accept()
    wait_for(browser, "#deleted")
    assert _saved(db_url, "birthday_wish") is None
