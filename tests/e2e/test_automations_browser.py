"""The automation and campaign pages in a real headless Chromium (SQLite): the list, an
automation's flow read top to bottom in Chinese and English, its entries, today's dry run with
the rendered message, and a campaign with its budget, preview and lift: each arm's rates, the
comparison with control and the charts of the daily series, drawn."""

from __future__ import annotations

import datetime as dt

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

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
from tests.loyalty_factories import buy, enrol, make_program

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


@pytest.fixture
def measured(club):
    """Campaign 'autumn' sent 25 days ago with a 10% control group (customers 1 and 3 by the
    hash of campaign 2): each treated customer bought once two days later, nobody else."""
    from patron.campaigns.tables import campaign_recipients
    from patron.messaging.service import withdraw_consent_in

    engine = get_engine(club)
    past = utcnow() - dt.timedelta(days=25)
    with UnitOfWork(engine) as uow:
        campaigns.create(uow=uow, actor=SYSTEM, now=past, body=CampaignIn.model_validate({
            "code": "autumn", "name": "秋季回馈", "program": "BB", "channel": "sms",
            "template": "hello", "message_cost": "0.05", "control_share": "0.1"}))
    with UnitOfWork(engine) as uow:
        campaigns.launch(uow=uow, actor=SYSTEM, code="autumn", now=past)
    send_campaigns(engine=engine, now=past)
    with UnitOfWork(engine, readonly=True) as uow:
        arms = dict(uow.c.execute(select(campaign_recipients.c.customer_id,
                                         campaign_recipients.c.arm).where(
            campaign_recipients.c.campaign_id == campaigns.get_campaign(
                uow.c, actor=SYSTEM, code="autumn")["id"])).all())
    assert sorted(set(arms.values())) == ["control", "main"], arms
    # customers were enrolled in the order of their phones
    phone_of = {cid: f"1380000000{n}" for n, cid in enumerate(sorted(arms), start=1)}
    for cid, arm in arms.items():
        if arm == "main":
            with UnitOfWork(engine) as uow:
                buy(uow, f"A{cid}", phone=phone_of[cid], at=past + dt.timedelta(days=2),
                    now=past + dt.timedelta(days=2, minutes=1))
    with UnitOfWork(engine) as uow:
        unsubscribed = min(c for c, arm in arms.items() if arm == "control")
        withdraw_consent_in(uow.c, actor=SYSTEM, customer_id=unsubscribed, kind="sms",
                            source="unsubscribe", now=past + dt.timedelta(days=1))
        uow.commit()
    return arms


def test_the_campaign_page_shows_each_arms_rates_the_comparison_and_charts(
        live_server, browser, measured, tmp_path):
    n_main = sum(1 for arm in measured.values() if arm == "main")
    n_control = len(measured) - n_main
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.get(f"{live_server}/campaigns/autumn?days=20")
    table = wait_for(browser, "#lift-arms")
    main = table.find_element(By.CSS_SELECTOR, 'tr[data-arm="main"]')
    control = table.find_element(By.CSS_SELECTOR, 'tr[data-arm="control"]')
    assert main.find_element(By.CSS_SELECTOR, ".conversion").text == "100.0%"
    assert control.find_element(By.CSS_SELECTOR, ".conversion").text == "0.0%"
    assert control.text.startswith(f"对照组 {n_control}")
    assert control.find_element(By.CSS_SELECTOR, ".unsubscribe").text == (
        f"{100 / n_control:.1f}%")
    assert main.find_element(By.CSS_SELECTOR, ".unsubscribe").text == "0.0%"
    assert main.find_element(By.CSS_SELECTOR, ".cost").text == f"¥{0.05 * n_main:.2f}"
    versus = browser.find_element(By.CSS_SELECTOR, '#lift-versus tr[data-arm="main"]')
    assert versus.find_element(By.CSS_SELECTOR, ".conversion").text.startswith("+100.0 [")
    assert versus.find_element(By.CSS_SELECTOR, ".incremental").text.startswith(
        f"¥{71 * n_main:.2f}")
    for chart in ("lift-conversion-chart", "lift-revenue-chart"):
        wait_for(browser, f"#{chart}[data-drawn] svg.main-svg", timeout=20)
    ys = browser.execute_script(
        "return document.getElementById('lift-conversion-chart').data.map(t => t.y)")
    assert len(ys) == 2 and len(ys[0]) == 20
    # day 1: nobody yet; from day 2 on, every treated customer (the control group: nobody)
    assert {(trace[0], trace[1], trace[-1]) for trace in ys} == {(0, 1, 1), (0, 0, 0)}
    browser.get(f"{live_server}/campaigns/autumn?days=20&lang=en")
    assert "Against control" in wait_for(browser, "#lift").text
    screenshot(browser, tmp_path, "campaign-lift")


def test_the_automation_page_shows_its_lift(live_server, browser, club):
    sign_in(browser, live_server, "analyst", PASSWORD)
    browser.get(f"{live_server}/automations/daily-hello")
    assert "观察期" in wait_for(browser, "#lift").text


def test_a_cashier_cannot_open_the_automation_pages(live_server, browser, club):
    sign_in(browser, live_server, "cashier", PASSWORD)
    browser.get(f"{live_server}/automations")
    assert "automations" not in [a.get_attribute("href").rsplit("/", 1)[-1] for a in
                                 browser.find_elements(By.CSS_SELECTOR, "header nav a")]
    assert "403" in browser.page_source or "权限" in browser.page_source
