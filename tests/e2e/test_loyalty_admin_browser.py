"""Loyalty administration in a real headless Chromium against a live server (SQLite only): an
owner sets a program up through the pages alone (program, an earning rule with a category
multiplier, a tier, a coupon template issued to a member, a reward), then sees the effect of a
purchase and a redemption on the same pages."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from patron.coupons.tables import coupons
from patron.db import UnitOfWork, get_engine, utcnow
from patron.loyalty.tables import loyalty_members
from patron.orders.service import record_orders
from patron.rewards.tables import rewards_items
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
from tests.loyalty_factories import enrol
from tests.rewards_factories import redeem as redeem_reward

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

PHONE = "13812345678"


def fill(driver, css: str, value: str) -> None:
    box = driver.find_element(By.CSS_SELECTOR, css)
    box.clear()
    box.send_keys(value)


def submit(driver, form: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]").click()


def notice(driver) -> str:
    return wait_for(driver, "#notice").text


def test_owner_sets_up_a_program_through_the_pages_and_sees_the_effect(
        live_server, browser, db_url, org, users, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.find_element(By.LINK_TEXT, "会员计划").click()
    wait_for(browser, "#programs")
    assert "还没有会员计划" in browser.find_element(By.ID, "programs").text

    # The program.
    browser.find_element(By.ID, "new-program").click()
    wait_for(browser, "#program-form")
    fill(browser, "#program-form input[name=code]", "BB")
    Select(browser.find_element(By.CSS_SELECTOR, "#program-form select[name=brand]")
           ).select_by_value("B1")
    fill(browser, "#program-form input[name=name]", "豆子会员")
    fill(browser, "#program-form input[name=privacy_version]", "2026-01")
    fill(browser, "#program-form input[name=pending_days]", "0")
    submit(browser, "#program-form")
    assert "已创建会员计划“BB”" in notice(browser)
    assert browser.find_element(By.ID, "program-title").text.startswith("豆子会员")

    # An earning rule: coffee earns double. A bad factor first comes back beside its row.
    browser.find_element(By.ID, "tab-rules").click()
    wait_for(browser, "#rules-form")
    browser.find_elements(By.NAME, "category_key")[0].send_keys("coffee")
    browser.find_elements(By.NAME, "category_factor")[0].send_keys("abc")
    submit(browser, "#rules-form")
    error = wait_for(browser, "small.error[data-field='category.0']")
    assert error.text == "必须是数字。"
    box = browser.find_elements(By.NAME, "category_factor")[0]
    assert box.get_attribute("value") == "abc"
    box.clear()
    box.send_keys("2")
    browser.find_element(By.ID, "tier_multiplier").click()  # off: only the category counts
    submit(browser, "#rules-form")
    assert "已发布规则第 2 版" in notice(browser)
    versions = browser.find_element(By.ID, "rule-versions")
    assert versions.find_element(By.ID, "version-2").get_attribute("data-state") == "in_force"
    assert versions.find_element(By.ID, "version-1").get_attribute("data-state") == "past"
    assert "coffee ×2" in versions.find_element(By.ID, "version-2").text

    # A tier.
    browser.find_element(By.ID, "tab-tiers").click()
    wait_for(browser, "#tier-form")
    fill(browser, "#tier-form input[name=code]", "SILVER")
    fill(browser, "#tier-form input[name=rank]", "0")
    fill(browser, "#tier-form input[name=name]", "银卡")
    fill(browser, "#tier-form input[name=member_discount_percent]", "5")
    fill(browser, "#tier-form input[name=gift_description]", "生日咖啡")
    submit(browser, "#tier-form")
    assert "已保存等级“SILVER”" in notice(browser)
    assert "银卡" in browser.find_element(By.ID, "tier-SILVER").text

    # A member enrols at the till meanwhile.
    with UnitOfWork(get_engine(db_url)) as uow:
        member = enrol(uow, PHONE, now=utcnow())

    # A coupon template (满减), issued to the member by phone.
    browser.find_element(By.ID, "tab-coupons").click()
    browser.find_element(By.ID, "new-template").click()
    wait_for(browser, "#template-form")
    fill(browser, "#template-form input[name=code]", "TEN")
    fill(browser, "#template-form input[name=name]", "满100减10")
    Select(browser.find_element(By.CSS_SELECTOR, "#template-form select[name=kind]")
           ).select_by_value("threshold")
    fill(browser, "#template-form input[name=threshold]", "100")
    fill(browser, "#template-form input[name=reduction]", "10")
    fill(browser, "#template-form input[name=total_limit]", "100")
    submit(browser, "#template-form")
    assert "已创建“TEN”" in notice(browser)
    browser.find_element(By.CSS_SELECTOR, "#template-TEN a").click()
    wait_for(browser, "#issue-form")
    fill(browser, "#issue-form textarea[name=members]", "138 1234 5678")
    submit(browser, "#issue-form")
    assert "已发放 1 张" in notice(browser)
    assert browser.find_element(By.ID, "stat-issued").text == "1"
    browser.find_element(By.ID, "tab-coupons").click()
    assert wait_for(browser, "#coupons-chart[data-drawn] svg.main-svg").is_displayed()
    browser.back()
    wait_for(browser, "#stat-issued")
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert uow.c.execute(select(coupons.c.member_id)).scalar_one() == member["id"]
    screenshot(browser, tmp_path, "loyalty-coupon")

    # A reward.
    browser.find_element(By.ID, "tab-rewards").click()
    wait_for(browser, "#item-form")
    fill(browser, "#item-form input[name=code]", "MUG")
    fill(browser, "#item-form input[name=name]", "豆子马克杯")
    fill(browser, "#item-form input[name=points_price]", "100")
    fill(browser, "#item-form input[name=stock]", "5")
    submit(browser, "#item-form")
    assert "已创建“MUG”" in notice(browser)
    assert browser.find_element(By.CSS_SELECTOR, "#item-MUG").get_attribute("id") == "item-MUG"

    # The member buys 2 lattes (coffee, 56.00) and a croissant (15.00): 56 × 2 + 15 points.
    with UnitOfWork(get_engine(db_url)) as uow:
        (out,) = record_orders(uow=uow, orders_in=[order(
            "B-1", at=utcnow(), identifiers={"phone": PHONE})], source="api", actor=SYSTEM)
    assert out.status == "created"
    browser.find_element(By.ID, "tab-settings").click()
    wait_for(browser, "#settings-form")
    cards = browser.find_element(By.CSS_SELECTOR, ".cards").text
    assert "127" in cards and browser.find_element(By.ID, "fact-members").text == "1"
    browser.find_element(By.ID, "tab-tiers").click()
    tier_row = wait_for(browser, "#tier-SILVER").text
    assert tier_row.split()[-1] == "1"  # one member in the tier

    # The member takes a mug: the catalog shows the unit held.
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert uow.c.execute(select(loyalty_members.c.points_available)).scalar_one() == 127
        item_id = int(uow.c.execute(select(rewards_items.c.id)).scalar_one())
    with UnitOfWork(get_engine(db_url)) as uow:
        redeem_reward(uow, item_id, member["id"], "mall-1", now=utcnow())
    browser.find_element(By.ID, "tab-rewards").click()
    row = wait_for(browser, "#item-MUG")
    assert row.find_element(By.CSS_SELECTOR, "[data-available]").get_attribute(
        "data-available") == "4"
    # The stock chart is drawn by the Plotly.js Patron serves.
    assert wait_for(browser, "#rewards-chart[data-drawn] svg.main-svg").is_displayed()
    row.find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "stat-reserved"))
    assert browser.find_element(By.ID, "stat-reserved").text == "1"
    assert member["member_code"] in browser.find_element(By.ID, "redemptions").text

    # The same pages in English.
    browser.find_element(By.ID, "lang-en").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "en")
    assert browser.find_element(By.ID, "tab-rules").text == "Earning rules"
    screenshot(browser, tmp_path, "loyalty-reward")


def test_an_analyst_reads_the_loyalty_pages_without_any_form_to_change_them(
        live_server, browser, db_url, org, users):
    from tests.loyalty_factories import make_program

    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow, now=utcnow())
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.find_element(By.LINK_TEXT, "会员计划").click()
    wait_for(browser, "#programs")
    assert not browser.find_elements(By.ID, "new-program")
    browser.find_element(By.LINK_TEXT, "BB").click()
    wait_for(browser, "#read-only")
    assert not browser.find_elements(By.ID, "settings-submit")
    browser.find_element(By.ID, "tab-rules").click()
    wait_for(browser, "#rule-versions")
    assert not browser.find_elements(By.ID, "rules-form")
