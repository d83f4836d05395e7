"""The experiments page (/experiments) on SQLite and PostgreSQL: every automation and campaign
with a control group or variants, the headline of its lift against control, its filters, and
the 403 for a role that reads neither automations nor campaigns.

Campaign "autumn" was sent 25 days ago with a 10% control group; every treated customer bought
once (71.00) two days later, nobody in the control group did. Campaign "spring" has no control
group and one arm: not an experiment. Automation "ab-hello" (A/B variants and a 20% control
group) is a draft nobody entered yet.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
from scipy import stats as sp
from sqlalchemy import select

from patron.automations import service as automations
from patron.automations.schemas import AutomationIn
from patron.campaigns import service as campaigns
from patron.campaigns.engine import run_due as send_campaigns
from patron.campaigns.schemas import CampaignIn
from patron.campaigns.tables import campaign_recipients
from patron.db import UnitOfWork, get_engine, utcnow
from patron.messaging import service as messaging
from patron.security.model import SYSTEM
from tests.e2e.conftest import login
from tests.loyalty_factories import buy, enrol, make_program

MEMBERS = 12


@pytest.fixture(name="experiments")
def experiments_fixture(db_url, org, users):
    """The arm of each customer of campaign "autumn"."""
    engine = get_engine(db_url)
    now = utcnow()
    past = now - dt.timedelta(days=25)
    with UnitOfWork(engine) as uow:
        make_program(uow, now=now - dt.timedelta(days=90))
    with UnitOfWork(engine) as uow:
        for n in range(1, MEMBERS + 1):
            enrol(uow, f"138000000{n:02d}", marketing={"sms": True}, name=f"会员{n}",
                  now=now - dt.timedelta(days=30))
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello", "variables": ["name"], "body_zh": "{{ name }}，您好。",
            "body_en": "Hello {{ name }}."})
    with UnitOfWork(engine) as uow:
        automations.create(uow=uow, actor=SYSTEM, now=past, body=AutomationIn.model_validate({
            "code": "ab-hello", "name": "问候 A/B", "program": "BB", "definition": {
                "trigger": {"type": "schedule", "cron": "0 10 * * *"},
                "control_share": "0.2",
                "variants": [
                    {"code": "A", "share": "0.5",
                     "steps": [{"action": "send_message", "channel": "sms",
                                "template": "hello"}]},
                    {"code": "B", "share": "0.5",
                     "steps": [{"action": "wait", "days": 1},
                               {"action": "send_message", "channel": "sms",
                                "template": "hello"}]}]}}))
    for code, name, extra in (("spring", "春季回馈", {}),
                              ("autumn", "秋季回馈", {"control_share": "0.3"})):
        with UnitOfWork(engine) as uow:
            campaigns.create(uow=uow, actor=SYSTEM, now=past, body=CampaignIn.model_validate({
                "code": code, "name": name, "program": "BB", "channel": "sms",
                "template": "hello", "message_cost": "0.05", **extra}))
        with UnitOfWork(engine) as uow:
            campaigns.launch(uow=uow, actor=SYSTEM, code=code, now=past)
        send_campaigns(engine=engine, now=past)
    with UnitOfWork(engine, readonly=True) as uow:
        arms = dict(uow.c.execute(select(campaign_recipients.c.customer_id,
                                         campaign_recipients.c.arm).where(
            campaign_recipients.c.campaign_id == campaigns.get_campaign(
                uow.c, actor=SYSTEM, code="autumn")["id"])).all())
    assert sorted(set(arms.values())) == ["control", "main"], arms
    phone_of = {cid: f"138000000{n:02d}" for n, cid in enumerate(sorted(arms), start=1)}
    for cid, arm in arms.items():
        if arm == "main":
            with UnitOfWork(engine) as uow:
                buy(uow, f"A{cid}", phone=phone_of[cid], at=past + dt.timedelta(days=2),
                    now=past + dt.timedelta(days=2, minutes=1))
    return arms


def rows(html: str) -> dict[str, str]:
    """Each row of the experiments table by its code, tags stripped."""
    out = {}
    for code, body in re.findall(r'<tr data-kind="\w+" data-code="([^"]+)">(.*?)</tr>', html,
                                 re.S):
        out[code] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()
    return out


def cell(html: str, code: str, css: str) -> str:
    row = re.search(rf'data-code="{code}">(.*?)</tr>', html, re.S)
    assert row, code
    found = re.search(rf'class="[^"]*\b{css}\b[^"]*">(.*?)</td>', row.group(1), re.S)
    assert found, (code, css)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def test_the_page_lists_each_experiment_with_its_lift_against_control(client, experiments):
    n_main = sum(1 for arm in experiments.values() if arm == "main")
    n_control = len(experiments) - n_main
    assert n_main >= 2 and n_control >= 2, experiments
    login(client, "analyst")
    r = client.get("/experiments?days=20&lang=en")
    assert r.status_code == 200, r.text
    found = rows(r.text)
    assert set(found) == {"autumn", "ab-hello"}  # "spring" has no control group, one arm
    assert '<a href="/campaigns/autumn?days=20">秋季回馈</a>' in r.text
    assert cell(r.text, "autumn", "arms") == f"Control {n_control} · main {n_main}"
    assert cell(r.text, "autumn", "window-over") == str(MEMBERS)
    assert cell(r.text, "autumn", "best-arm") == "main"
    assert cell(r.text, "autumn", "rates") == "100.0% / 0.0%"
    # Every treated customer converted, no one held out did: +100 points. The pooled z-test
    # and Newcombe's interval, recomputed here from the counts.
    difference = cell(r.text, "autumn", "difference")
    assert difference.startswith("+100.0 [")
    low, high = (float(x) for x in re.findall(r"[\d.]+", difference.split("[")[1]))
    assert 0 < low < 100 and high == 100.0
    pooled = n_main / MEMBERS
    z = 1 / math.sqrt(pooled * (1 - pooled) * (1 / n_main + 1 / n_control))
    p = 2 * sp.norm.sf(z)
    assert float(cell(r.text, "autumn", "p-value")) == pytest.approx(p, abs=1e-6)
    assert cell(r.text, "autumn", "significant") == ("yes" if p < 0.05 else "no")
    # 71.00 per treated customer against nothing; the cost is one 0.05 message each.
    assert cell(r.text, "autumn", "incremental").startswith(f"¥{71 * n_main:.2f} [")
    assert cell(r.text, "autumn", "roi") == f"{(71 - 0.05) / 0.05 * 100:.1f}%"
    # The draft automation: its planned arms, nobody assigned, nothing to compare yet.
    assert cell(r.text, "ab-hello", "arms") == "Control 0 · A 0 · B 0"
    assert "No comparison with a control group yet." in found["ab-hello"]

    campaigns_only = rows(client.get("/experiments?kind=campaign&days=20").text)
    assert set(campaigns_only) == {"autumn"}
    drafts = rows(client.get("/experiments?status=draft").text)
    assert set(drafts) == {"ab-hello"}
    sent = client.get("/experiments?status=sent&kind=automation").text
    assert rows(sent) == {} and "No automation or campaign holds out" in sent
    # A window longer than the time since the send: nobody's window is over yet.
    waiting = client.get("/experiments?days=30&kind=campaign&lang=en").text
    assert cell(waiting, "autumn", "window-over") == f"0 (+{MEMBERS})"
    # In Chinese too, and the navigation links the page.
    zh = client.get("/experiments?lang=zh").text
    assert "<h1>实验</h1>" in zh and 'href="/experiments"' in zh


@pytest.mark.parametrize("role", ["manager", "cashier"])
def test_a_role_that_reads_neither_automations_nor_campaigns_is_refused(
        client, experiments, role):
    login(client, role)
    r = client.get("/experiments", headers={"Accept": "text/html"})
    assert r.status_code == 403
    assert 'href="/experiments"' not in client.get("/", headers={"Accept": "text/html"}).text


def test_the_listing_checks_its_arguments(experiments, db_url):
    from patron.errors import Forbidden, ValidationFailed
    from patron.experiments.service import list_experiments
    from patron.security.model import Actor

    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        for bad in ({"days": 0}, {"days": 366}, {"kind": "survey"}, {"page": 0},
                    {"status": "nonsense"}):
            with pytest.raises(ValidationFailed):
                list_experiments(uow.c, actor=SYSTEM, **bad)
        campaign_reader = Actor(type="user", id=0, name="c", role="custom",
                                permissions=frozenset({"campaigns.read"}))
        listing = list_experiments(uow.c, actor=campaign_reader, days=20)
        assert [i["code"] for i in listing["experiments"]] == ["autumn"]
        with pytest.raises(Forbidden):
            list_experiments(uow.c, actor=campaign_reader, kind="automation")


def test_the_navigation_links_the_page_for_a_reader_of_campaigns_only():
    # The page lets in whoever reads automations or campaigns; its link follows the same rule
    # (a custom role may read campaigns without automations).
    from patron.security.model import Actor
    from patron.web.render import NAV, nav_allows

    link = next(perm for path, _key, perm in NAV if path == "/experiments")
    for permissions, shown in (({"campaigns.read"}, True), ({"automations.read"}, True),
                               ({"customers.read"}, False)):
        actor = Actor(type="user", id=9, name="custom", role="custom",
                      permissions=frozenset(permissions))
        assert nav_allows(actor, link) is shown, permissions
