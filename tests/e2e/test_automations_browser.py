"""The automation and campaign pages in a real headless Chromium (SQLite): the list, an
automation's flow read top to bottom in Chinese and English, its entries, today's dry run with
the rendered message, and a campaign with its budget, preview and lift table."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.by import By

from patron.automations import service as automations
from patron.automations.engine import run_due
from patron.automations.schemas import AutomationIn
from patron.campaigns import service as campaigns
from patron.campaigns.engine import run_due as send_campaigns
from patron.campaigns.schemas import CampaignIn
from patron.db import UnitOfWork, get_engine, utcnow
from patron.messaging import service as messaging
from patron.security.model import SYSTEM
from tests.coupon_factories import make_template
from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD
from tests.loyalty_factories import enrol, make_program

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def club(db_url, org, users):
    engine = get_engine(db_url)
    now = utcnow()
    with UnitOfWork(engine) as uow:
        make_program(uow, now=now - dt.timedelta(days=90))
    with UnitOfWork(engine) as uow:
        for n in range(1, 6):
            enrol(uow, f"1380000000{n}", marketing={"sms": True}, name=f"会员{n}",
                  now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        coupon = make_template(uow, now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello", "variables": ["name", "points"],
            "body_zh": "{{ name }}，您有 {{ points }} 积分。",
            "body_en": "{{ name }}, you have {{ points }} points."})
    with UnitOfWork(engine) as uow:
        automations.create(uow=uow, actor=SYSTEM, body=AutomationIn.model_validate({
            "code": "daily-hello", "name": "每日问候", "program": "BB", "definition": {
                "trigger": {"type": "schedule", "cron": "0 10 * * *"},
                "steps": [{"action": "issue_coupon", "coupon_template_id": coupon["id"]},
                          {"action": "wait", "days": 1},
                          {"action": "send_message", "channel": "sms", "template": "hello"}],
                "reentry_days": 7}}), now=now - dt.timedelta(days=3))
    with UnitOfWork(engine) as uow:
        automations.set_status(uow=uow, actor=SYSTEM, code="daily-hello", status="active",
                               now=now - dt.timedelta(days=3))
    run_due(engine=engine, now=now)
    with UnitOfWork(engine) as uow:
        campaigns.create(uow=uow, actor=SYSTEM, body=CampaignIn.model_validate({
            "code": "spring", "name": "春季回馈", "program": "BB", "channel": "sms",
            "template": "hello", "message_cost": "0.05", "budget_messages": 3}))
    with UnitOfWork(engine) as uow:
        campaigns.launch(uow=uow, actor=SYSTEM, code="spring")
    send_campaigns(engine=engine)
    return db_url


def test_the_automation_flow_entries_and_dry_run(live_server, browser, club, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/automations")
    row = wait_for(browser, "#automations tbody tr")
    assert "daily-hello" in row.text and "按计划“0 10 * * *”" in row.text
    browser.find_element(By.LINK_TEXT, "daily-hello").click()
    flow = wait_for(browser, "#flow")
    steps = [li.text for li in flow.find_elements(By.CSS_SELECTOR, "ol.steps li")]
    assert steps[0].startswith("发放券模板 ") and steps[0].endswith(" 的一张券")
    assert steps[1:] == ["等待 1 天", "通过 sms 发送“hello”"]
    assert "每位顾客每 7 天最多进入一次" in flow.text
    assert "进行中 5" in browser.find_element(By.ID, "entry-counts").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#entries tbody tr")) == 5
    browser.find_element(By.ID, "run-dry-run").click()
    section = wait_for(browser, "#dry-run p")
    assert "未写入任何数据" in section.text
    browser.get(f"{live_server}/automations/daily-hello?lang=en")
    flow = wait_for(browser, "#flow")
    assert "On the schedule '0 10 * * *'" in flow.text and "Wait 1 days" in flow.text
    screenshot(browser, tmp_path, "automation-flow")


def test_the_campaign_page_shows_budget_preview_and_lift(live_server, browser, club):
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.get(f"{live_server}/automations")
    browser.find_element(By.LINK_TEXT, "spring").click()
    budget = wait_for(browser, "#budget")
    assert budget.text.startswith("3 / 3") and "budget_spent" in budget.text
    assert "已发送 3" in browser.find_element(By.ID, "recipient-counts").text
    sample = browser.find_element(By.CSS_SELECTOR, "#preview q.message")
    assert sample.text.startswith("会员") and "积分" in sample.text
    assert "观察期" in browser.find_element(By.ID, "lift").text


def test_a_cashier_cannot_open_the_automation_pages(live_server, browser, club):
    sign_in(browser, live_server, "cashier", PASSWORD)
    browser.get(f"{live_server}/automations")
    assert "automations" not in [a.get_attribute("href").rsplit("/", 1)[-1] for a in
                                 browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert "403" in browser.page_source or "权限" in browser.page_source
