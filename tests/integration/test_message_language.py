"""Each customer's messages in their own language, on SQLite and PostgreSQL: a campaign to
customers of different languages sends each in theirs, the default language when the template
lacks theirs (and when they chose none), automation steps, expiry reminders and login codes
alike; a caller may still force a language; the message row records the language used."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from patron.campaigns import service as campaigns
from patron.campaigns.engine import run_due as run_campaigns
from patron.campaigns.schemas import CampaignIn
from patron.customers.service import merge_customers
from patron.customers.tables import customers
from patron.db import UnitOfWork
from patron.loyalty.jobs import run_due as run_loyalty_jobs
from patron.messaging.tables import messages
from patron.security.model import SYSTEM, Actor
from tests.automation_factories import NOW, PHONES, create, outbox, setup_program
from tests.factories import T0
from tests.loyalty_factories import buy, enrol
from tests.messaging_factories import queue

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
ALICE = Actor(type="user", id=1, name="alice", role="owner")


def speak(engine, customer_id: int, language: str | None) -> None:
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(customers).where(customers.c.id == customer_id)
                      .values(language=language))
        uow.commit()


@pytest.fixture
def default_language(monkeypatch):
    from patron.config import get_settings

    def use(lang: str) -> None:
        monkeypatch.setenv("PATRON_DEFAULT_LANGUAGE", lang)
        get_settings.cache_clear()

    yield use
    monkeypatch.delenv("PATRON_DEFAULT_LANGUAGE", raising=False)
    get_settings.cache_clear()


def send_campaign(engine, club, template: str, code: str = "spring") -> dict[int, dict]:
    coupon = {"coupon_template_id": club["coupon"]["id"]} if template == "welcome" else {}
    body = CampaignIn.model_validate({"code": code, "name": "春季回馈", "program": "BB",
                                      "channel": "sms", "template": template, **coupon})
    with UnitOfWork(engine) as uow:
        campaigns.create(uow=uow, actor=ALICE, body=body, now=NOW)
    with UnitOfWork(engine) as uow:
        campaigns.launch(uow=uow, actor=ALICE, code=code, now=NOW)
    run_campaigns(engine=engine, now=NOW + HOUR)
    return {int(m["customer_id"]): m for m in outbox(engine)
            if m["dedupe_key"].startswith("campaign:")}


def test_a_campaign_sends_each_customer_the_message_in_their_language(engine):
    club = setup_program(engine, members=3)
    english, chinese, unset = (int(m["customer_id"]) for m in club["members"])
    speak(engine, english, "en")
    speak(engine, chinese, "zh")
    sent = send_campaign(engine, club, "welcome")
    assert sent[english]["lang"] == "en" and sent[english]["body"].startswith("会员01: ")
    assert "until" in sent[english]["body"] and "Reply STOP" in sent[english]["body"]
    assert sent[chinese]["lang"] == "zh" and "前有效" in sent[chinese]["body"]
    assert "回复TD退订" in sent[chinese]["body"]
    # no language on the profile: PATRON_DEFAULT_LANGUAGE (zh)
    assert sent[unset]["lang"] == "zh" and "前有效" in sent[unset]["body"]


def test_a_template_without_the_customers_language_falls_back_to_the_default(
        engine, default_language):
    club = setup_program(engine, members=2)
    english, unset = (int(m["customer_id"]) for m in club["members"])
    speak(engine, english, "en")
    # 'hello' is written in Chinese only: the English reader gets Chinese, and the row says so
    sent = send_campaign(engine, club, "hello")
    assert [sent[c]["lang"] for c in (english, unset)] == ["zh", "zh"]
    assert sent[english]["body"].startswith("会员01，您有")
    # with English as the default, the customer without a language reads English where the
    # template has it, a Chinese reader still Chinese
    default_language("en")
    speak(engine, english, "zh")
    sent = send_campaign(engine, club, "welcome", code="summer")
    assert sent[unset]["lang"] == "en" and "until" in sent[unset]["body"]
    assert sent[english]["lang"] == "zh" and "前有效" in sent[english]["body"]


def test_the_campaign_preview_shows_each_recipient_in_their_language(engine):
    club = setup_program(engine, members=2)
    english = int(club["members"][0]["customer_id"])
    speak(engine, english, "en")
    body = CampaignIn.model_validate({"code": "spring", "name": "春季回馈", "program": "BB",
                                      "channel": "sms", "template": "welcome",
                                      "coupon_template_id": club["coupon"]["id"]})
    with UnitOfWork(engine) as uow:
        campaigns.create(uow=uow, actor=ALICE, body=body, now=NOW)
    with UnitOfWork(engine, readonly=True) as uow:
        samples = campaigns.preview(uow.c, actor=ALICE, code="spring")["sample"]
        forced = campaigns.preview(uow.c, actor=ALICE, code="spring", lang="zh")["sample"]
    assert {s["customer_id"]: s["lang"] for s in samples} == {
        english: "en", int(club["members"][1]["customer_id"]): "zh"}
    assert {s["lang"] for s in forced} == {"zh"}


def test_an_automation_step_writes_in_the_customers_language(engine):
    club = setup_program(engine, members=2)
    create(engine, "each-order", {"type": "every_order"},
           steps=[{"action": "issue_coupon", "coupon_template_id": club["coupon"]["id"]},
                  {"action": "send_message", "channel": "sms", "template": "welcome"}],
           reentry_days=0)
    with UnitOfWork(engine) as uow:
        first = buy(uow, "O1", phone=PHONES[0], at=T0, now=T0 + dt.timedelta(minutes=1))
        buy(uow, "O2", phone=PHONES[1], at=T0, now=T0 + dt.timedelta(minutes=1))
    speak(engine, int(first.customer_id), "en")
    from tests.automation_factories import run

    run(engine, NOW + HOUR)
    by_customer = {int(m["customer_id"]): m for m in outbox(engine)}
    assert by_customer[int(first.customer_id)]["lang"] == "en"
    assert "until" in by_customer[int(first.customer_id)]["body"]
    assert [m["lang"] for c, m in by_customer.items() if c != first.customer_id] == ["zh"]


def test_an_expiry_reminder_is_written_in_the_members_language(uow):
    from tests.factories import make_org
    from tests.loyalty_factories import make_program

    make_org(uow)
    make_program(uow)
    m = enrol(uow, marketing={"sms": True})
    buy(uow, "O1")
    uow.c.execute(update(customers).where(customers.c.id == m["customer_id"])
                  .values(language="en"))
    uow.commit()
    run_loyalty_jobs(uow=uow, actor=SYSTEM, now=T0 + 340 * DAY)
    msg = uow.c.execute(select(messages)).mappings().one()
    assert msg["template"] == "points_expiring" and msg["lang"] == "en"
    assert msg["body"].startswith("71 of your points expire on 2027-03-02")


def test_a_forced_language_wins_and_a_replay_after_a_change_is_the_same_message(engine):
    club = setup_program(engine, members=1)
    cid = int(club["members"][0]["customer_id"])
    speak(engine, cid, "en")
    forced = queue(engine, customer_id=cid, key="forced", lang="zh")
    own = queue(engine, customer_id=cid, key="own")
    with UnitOfWork(engine, readonly=True) as uow:
        rows = {r.id: r for r in uow.c.execute(select(messages.c.id, messages.c.lang))}
    assert (rows[forced].lang, rows[own].lang) == ("zh", "en")
    # the customer changes language; the caller retries the same message: the first one, no 409
    speak(engine, cid, "zh")
    assert queue(engine, customer_id=cid, key="own") == own


def test_a_merged_profiles_messages_follow_the_survivors_language(engine):
    club = setup_program(engine, members=2)
    survivor, merged = sorted(int(m["customer_id"]) for m in club["members"])
    speak(engine, survivor, "en")
    speak(engine, merged, "zh")
    with UnitOfWork(engine) as uow:
        merge_customers(uow=uow, survivor_id=survivor, merged_id=merged, reason="same person",
                        actor=ALICE)
    mid = queue(engine, customer_id=merged, key="after-merge")
    with UnitOfWork(engine, readonly=True) as uow:
        assert uow.c.execute(select(messages.c.lang).where(messages.c.id == mid)
                             ).scalar() == "en"


def test_a_login_code_is_in_the_profiles_language_else_the_pages(engine):
    from patron.selfservice.service import request_code

    club = setup_program(engine, members=1)
    speak(engine, int(club["members"][0]["customer_id"]), "en")
    with UnitOfWork(engine) as uow:
        request_code(uow=uow, phone=PHONES[0], ip="10.0.0.1", now=NOW, lang="zh")
    with UnitOfWork(engine) as uow:
        request_code(uow=uow, phone="13700001111", ip="10.0.0.2", now=NOW, lang="en")
    with UnitOfWork(engine) as uow:
        request_code(uow=uow, phone="13700002222", ip="10.0.0.3", now=NOW)
    codes = [m for m in outbox(engine) if m["template"] == "otp_login"]
    assert [m["lang"] for m in codes] == ["en", "en", "zh"]
    assert codes[0]["body"].startswith("Your sign-in code is")


def test_a_merge_fills_a_missing_language_and_its_undo_gives_it_back(engine):
    from patron.customers.service import undo_merge

    club = setup_program(engine, members=2)
    survivor, merged = sorted(int(m["customer_id"]) for m in club["members"])
    speak(engine, merged, "en")
    with UnitOfWork(engine) as uow:
        merge_id = merge_customers(uow=uow, survivor_id=survivor, merged_id=merged,
                                   reason="same person", actor=ALICE)

    def languages() -> tuple:
        with UnitOfWork(engine, readonly=True) as uow:
            rows = dict(uow.c.execute(select(customers.c.id, customers.c.language).where(
                customers.c.id.in_([survivor, merged]))).all())
        return rows[survivor], rows[merged]

    assert languages()[0] == "en"
    with UnitOfWork(engine) as uow:
        undo_merge(uow=uow, merge_id=merge_id, actor=ALICE)
    assert languages() == (None, "en")
