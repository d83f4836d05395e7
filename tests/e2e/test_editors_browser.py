"""The editors in a real headless Chromium (SQLite): an automation built by clicking (a
trigger, a wait and two actions), refused beside its cron field, dry-run, saved and activated;
a campaign created, previewed and launched, which needs approval and is approved by another
user; three customers tagged from the customer list."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from patron.automations.tables import automation_versions, automations
from patron.campaigns.tables import campaigns
from patron.db import UnitOfWork, get_engine, utcnow
from patron.messaging import service as messaging
from patron.security import service as security
from patron.security.model import SYSTEM
from patron.segments import service as segments
from patron.tags import service as tags
from tests.coupon_factories import make_template
from tests.e2e.browser import (  # noqa: F401 - fixtures
    browser_fixture,
    live_server_fixture,
    screenshot,
    sign_in,
    wait_for,
)
from tests.e2e.conftest import PASSWORD
from tests.factories import order
from tests.loyalty_factories import enrol, make_program

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def club(db_url, org, users, monkeypatch):
    from patron.config import get_settings

    # five members: above this the campaign waits for a second person's approval
    monkeypatch.setenv("PATRON_CAMPAIGN_APPROVAL_ABOVE", "3")
    get_settings.cache_clear()
    engine = get_engine(db_url)
    now = utcnow()
    with UnitOfWork(engine) as uow:
        make_program(uow, now=now - dt.timedelta(days=90))
    with UnitOfWork(engine) as uow:
        for n in range(1, 6):
            enrol(uow, f"1380000000{n}", marketing={"sms": True}, name=f"会员{n}",
                  now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        make_template(uow, now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello", "variables": ["name", "points"],
            "body_zh": "{{ name }}，您有 {{ points }} 积分。",
            "body_en": "{{ name }}, you have {{ points }} points."})
    with UnitOfWork(engine) as uow:
        security.create_user(uow=uow, actor=SYSTEM, username="owner2", password=PASSWORD,
                             role="owner")
    with UnitOfWork(engine) as uow:
        segments.create_segment(uow=uow, actor=SYSTEM, name="有手机号", definition={
            "match": "all", "conditions": [{"type": "identity", "kind": "phone"}]})
    return engine


def _ready(browser, form_id: str) -> None:
    WebDriverWait(browser, 15, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: b.find_element(By.ID, form_id).get_attribute("data-state") == "ready")


def _submit(browser, button_id: str) -> None:
    """Click a submit button and wait until its page is gone (the next one is loading)."""
    browser.execute_script("window.__leaving = true;")
    browser.find_element(By.ID, button_id).click()
    WebDriverWait(browser, 15, ignored_exceptions=[WebDriverException]).until(
        lambda b: b.execute_script("return window.__leaving === undefined && "
                                   "document.readyState === 'complete';"))


def _add_step(browser, action: str) -> None:
    Select(browser.find_element(By.CSS_SELECTOR, "#steps-editor .ae-add-step")
           ).select_by_value(action)


def _step(browser, n: int):  # type: ignore[no-untyped-def]
    return wait_for(browser, f'#steps-editor li.ae-step[data-step="{n}"]')


def _cron(browser):  # type: ignore[no-untyped-def]
    return wait_for(browser, '#trigger-params [data-param="cron"] input')


def test_build_dry_run_save_and_activate_an_automation(live_server, browser, club, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/automations")
    wait_for(browser, "#new-automation").click()
    _ready(browser, "automation-form")
    browser.find_element(By.ID, "automation-code").send_keys("daily-hello")
    browser.find_element(By.ID, "automation-name").send_keys("每日问候")

    # "joined a segment" builds its segment in the same embedded builder
    Select(browser.find_element(By.ID, "trigger-type")).select_by_value("joined_segment")
    wait_for(browser, '#trigger-params [data-param="segment"] [data-path="root"]')
    # the trigger: a schedule, first with a cron expression that never fires
    Select(browser.find_element(By.ID, "trigger-type")).select_by_value("schedule")
    cron = _cron(browser)
    cron.clear()
    cron.send_keys("0 0 30 2 *")
    # the conditions: the segment builder, embedded, counts as it is edited
    browser.find_element(By.ID, "conditions-on").click()
    wait_for(browser, '#conditions-builder [data-path="root"]')
    WebDriverWait(browser, 15).until(
        lambda b: b.find_element(By.ID, "conditions-count").text.isdigit())
    browser.find_element(By.ID, "conditions-on").click()  # everyone after all
    # the steps: issue a coupon, wait a day, send the message
    _add_step(browser, "issue_coupon")
    _add_step(browser, "send_message")
    Select(_step(browser, 1).find_element(By.CSS_SELECTOR, '[data-param="template"] select')
           ).select_by_value("hello")
    _add_step(browser, "wait")
    wait = _step(browser, 2)
    assert wait.get_attribute("data-action") == "wait"
    wait.find_element(By.CSS_SELECTOR, ".ae-up").click()  # between the two actions
    assert [li.get_attribute("data-action") for li in browser.find_elements(
        By.CSS_SELECTOR, "#steps-editor li.ae-step")] == ["issue_coupon", "wait",
                                                         "send_message"]
    browser.find_element(By.ID, "reentry-every").click()
    days = browser.find_element(By.ID, "reentry-days")
    days.clear()
    days.send_keys("7")
    _submit(browser, "save-automation")

    # refused beside the cron field, everything else kept
    _ready(browser, "automation-form")
    error = wait_for(browser, '.ae-error[data-error-for="definition.trigger.cron"]')
    assert "永远不会触发" in error.text
    with UnitOfWork(club, readonly=True) as uow:
        assert uow.c.execute(select(automations)).first() is None
    assert len(browser.find_elements(By.CSS_SELECTOR, "#steps-editor li.ae-step")) == 3
    cron = _cron(browser)
    cron.clear()
    cron.send_keys("0 10 * * *")

    # today's dry run: who would enter and the message they would get
    _submit(browser, "dry-run")
    result = wait_for(browser, "#dry-run-result")
    summary = result.find_element(By.ID, "dry-summary").text
    assert summary.startswith("5 位会进入") and "未写入任何数据" in summary
    flow = [li.text for li in result.find_elements(By.CSS_SELECTOR, "#dry-flow ol li")]
    assert flow[1:] == ["等待 1 天", "通过 sms 发送“hello”"]
    message = result.find_element(By.CSS_SELECTOR, "q.message").text
    assert message.startswith("会员") and "积分" in message
    screenshot(browser, tmp_path, "automation-editor")

    _ready(browser, "automation-form")
    _submit(browser, "save-automation")
    wait_for(browser, "#saved")
    flow_box = browser.find_element(By.ID, "flow")
    steps = [li.text for li in flow_box.find_elements(By.CSS_SELECTOR, "ol.steps li")]
    assert steps[0].startswith("发放券模板 ") and steps[1:] == ["等待 1 天",
                                                                "通过 sms 发送“hello”"]
    assert "按计划“0 10 * * *”" in flow_box.text and "每 7 天最多进入一次" in flow_box.text
    _submit(browser, "activate")
    assert "运行中" in wait_for(browser, "#status-changed").text
    with UnitOfWork(club, readonly=True) as uow:
        row = uow.c.execute(select(automations)).mappings().one()
    assert (row["code"], row["status"], row["trigger_type"]) == ("daily-hello", "active",
                                                                 "schedule")
    assert browser.find_element(By.ID, "pause")

    # archiving asks first (patron.js): "no" leaves it running, "yes" archives it
    browser.find_element(By.ID, "archive").click()
    question = WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    assert "归档" in question.text and "不能再启用" in question.text
    question.dismiss()
    assert browser.find_element(By.ID, "pause")
    with UnitOfWork(club, readonly=True) as uow:
        assert uow.c.execute(select(automations.c.status)).scalar_one() == "active"
    browser.execute_script("window.__leaving = true;")
    browser.find_element(By.ID, "archive").click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present()).accept()
    assert "已归档" in wait_for(browser, "#status-changed").text
    with UnitOfWork(club, readonly=True) as uow:
        assert uow.c.execute(select(automations.c.status)).scalar_one() == "archived"


def test_a_webhook_step_carries_the_data_typed_as_json(live_server, browser, club, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/automations/new")
    _ready(browser, "automation-form")
    browser.find_element(By.ID, "automation-code").send_keys("hook")
    browser.find_element(By.ID, "automation-name").send_keys("通知 CRM")
    Select(browser.find_element(By.ID, "trigger-type")).select_by_value("schedule")
    cron = _cron(browser)
    cron.clear()
    cron.send_keys("0 10 * * *")
    _add_step(browser, "call_webhook")
    data = _step(browser, 0).find_element(By.CSS_SELECTOR, '[data-param="data"] textarea')
    data.send_keys('{"offer": "spring", "tags": [1, 2')  # not JSON yet
    _submit(browser, "save-automation")
    _ready(browser, "automation-form")
    assert wait_for(browser, '.ae-error[data-error-for="definition.steps.0.data"]').text
    with UnitOfWork(club, readonly=True) as uow:
        assert uow.c.execute(select(automations)).first() is None
    data = _step(browser, 0).find_element(By.CSS_SELECTOR, '[data-param="data"] textarea')
    data.clear()
    data.send_keys('{"offer": "spring", "tags": [1, 2]}')
    _submit(browser, "save-automation")
    wait_for(browser, "#saved")
    assert _definition_steps(club) == [{"action": "call_webhook", "endpoint_id": None,
                                        "data": {"offer": "spring", "tags": [1, 2]}}]
    # the edit form shows the data again and keeps it when something else changes
    browser.get(f"{live_server}/automations/hook/edit")
    _ready(browser, "automation-form")
    shown = _step(browser, 0).find_element(By.CSS_SELECTOR, '[data-param="data"] textarea')
    assert json.loads(shown.get_attribute("value")) == {"offer": "spring", "tags": [1, 2]}
    name = browser.find_element(By.ID, "automation-name")
    name.clear()
    name.send_keys("通知 CRM（改）")
    _submit(browser, "save-automation")
    wait_for(browser, "#saved")
    with UnitOfWork(club, readonly=True) as uow:
        assert uow.c.execute(select(automations.c.name)).scalar_one() == "通知 CRM（改）"
    assert _definition_steps(club)[0]["data"] == {"offer": "spring", "tags": [1, 2]}


def _definition_steps(engine) -> list:  # type: ignore[no-untyped-def]
    """The steps of the automation's newest version."""
    with UnitOfWork(engine, readonly=True) as uow:
        return uow.c.execute(select(automation_versions.c.definition).order_by(
            automation_versions.c.version.desc()).limit(1)).scalar_one()["steps"]


def test_create_preview_launch_and_approve_a_campaign(live_server, browser, club, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/automations")
    wait_for(browser, "#new-campaign").click()
    _ready(browser, "campaign-form")
    wait_for(browser, '#campaign-segment-builder [data-path="root"]')
    # the audience starts from a saved segment, loaded into the builder
    Select(browser.find_element(By.ID, "load-segment")).select_by_visible_text("有手机号")
    wait_for(browser, '#campaign-segment-builder [data-path="conditions.0"][data-type="identity"]')
    WebDriverWait(browser, 15).until(
        lambda b: b.find_element(By.ID, "segment-count").text == "5")
    form = browser.find_element(By.ID, "campaign-form")
    browser.find_element(By.ID, "campaign-code").send_keys("spring")
    browser.find_element(By.ID, "campaign-name").send_keys("春季回馈")
    Select(form.find_element(By.NAME, "template")).select_by_value("hello")
    control = form.find_element(By.NAME, "control_share")
    control.clear()
    control.send_keys("0")
    form.find_element(By.NAME, "budget_messages").send_keys("10")
    screenshot(browser, tmp_path, "campaign-editor")
    _submit(browser, "save-campaign")

    # its page: the preview, then the launch, which waits for someone else
    wait_for(browser, "#saved")
    summary = browser.find_element(By.ID, "launch-summary").text
    assert "5 位顾客" in summary and "¥0.25" in summary
    assert browser.find_element(By.ID, "needs-approval")
    sample = browser.find_element(By.CSS_SELECTOR, "#preview q.message").text
    assert sample.startswith("会员") and "积分" in sample
    _submit(browser, "launch")
    assert "批准" in wait_for(browser, "#launched").text
    assert "owner" in browser.find_element(By.ID, "awaiting").text
    assert not browser.find_elements(By.ID, "approve")  # not by the launcher
    browser.find_element(By.ID, "logout").click()

    sign_in(browser, live_server, "owner2", PASSWORD)
    browser.get(f"{live_server}/automations")
    wait_for(browser, "#campaign-approvals").click()
    row = wait_for(browser, '#pending-campaigns tr[data-code="spring"]')
    assert "owner" in row.text and "积分" in row.text
    row.find_element(By.CSS_SELECTOR, "button.approve").click()
    assert "spring" in wait_for(browser, "#approved").text
    screenshot(browser, tmp_path, "campaign-approvals")
    with UnitOfWork(club, readonly=True) as uow:
        c = uow.c.execute(select(campaigns)).mappings().one()
    assert (c["status"], c["launched_by"], c["approved_by"], c["audience_size"]) == (
        "scheduled", "owner", "owner2", 5)
    assert c["segment"]["conditions"] == [{"type": "identity", "kind": "phone",
                                           "op": "present"}]


@pytest.fixture
def shop(db_url, org, users):
    from patron.orders.service import record_orders

    now = utcnow()
    orders_in = [order(f"S-{n}", at=now - dt.timedelta(days=n),
                       identifiers={"phone": f"1391234000{n}"}, customer={"name": f"顾客{n}"})
                 for n in range(1, 5)]
    with UnitOfWork(get_engine(db_url)) as uow:
        record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    with UnitOfWork(get_engine(db_url)) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="vip", name="贵宾")


def test_tag_three_customers_from_the_list(live_server, browser, shop, tmp_path):
    sign_in(browser, live_server, "owner", PASSWORD)
    browser.get(f"{live_server}/customers")
    boxes = wait_for(browser, "#customer-list").find_elements(By.CSS_SELECTOR, "input.pick")
    assert len(boxes) == 4
    # the header's box ticks every row of the page, and clears them again
    pick_all = browser.find_element(By.ID, "pick-all")
    pick_all.click()
    assert all(b.is_selected() for b in boxes)
    pick_all.click()
    assert not any(b.is_selected() for b in boxes)
    for box in boxes[:3]:
        box.click()
    picked = {b.get_attribute("value") for b in boxes[:3]}
    assert not pick_all.is_selected()
    assert browser.execute_script("return document.getElementById('pick-all').indeterminate")
    Select(browser.find_element(By.CSS_SELECTOR, "#bulk-tag select[name=tag]")
           ).select_by_value("vip")
    screenshot(browser, tmp_path, "customer-list-bulk-tag")
    _submit(browser, "bulk-tag-apply")
    assert "3 位顾客" in wait_for(browser, "#bulk-tagged").text
    browser.get(f"{live_server}/tags/vip")
    assert wait_for(browser, "#tag-count").text == "3"
    events = browser.find_elements(By.CSS_SELECTOR, "#tag-events tbody tr")
    assert {e.find_element(By.CSS_SELECTOR, "a").get_attribute("href").rsplit("/", 1)[-1]
            for e in events} == picked
    assert all("批量" in e.text or "in bulk" in e.text for e in events)
    screenshot(browser, tmp_path, "bulk-tag")
