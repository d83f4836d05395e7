"""The member self-service pages over HTTP: code login, the member's pages in Chinese and
English, enrolment, consents, the card, and that a member reaches nothing but its own data."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.loyalty.tables import loyalty_consents
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.factories import T0
from tests.loyalty_factories import PHONE, buy, enrol, make_program
from tests.selfservice_helpers import last_code, sent_codes

OTHER_PHONE = "13987654321"
STRANGER = "13700001111"


@pytest.fixture
def shop(db_url, org):
    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow)
        me = enrol(uow)
        other = enrol(uow, OTHER_PHONE)
        for i in range(12):
            buy(uow, f"ME-{i}", at=T0 - dt.timedelta(days=i, hours=1))
        buy(uow, "OT-1", phone=OTHER_PHONE, at=T0 - dt.timedelta(hours=2))
    return {"me": me, "other": other}


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client, phone: str = PHONE, masked: str = "138****5678"):
    page = client.get("/m/login")
    assert page.status_code == 200
    sent = client.post("/m/login", data={"csrf_token": csrf(page.text), "phone": phone})
    assert sent.status_code == 200, sent.text
    done = client.post("/m/verify", data={"csrf_token": csrf(sent.text), "phone": phone,
                                          "code": last_code(masked)},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/m/home"
    return done


def test_a_member_signs_in_with_a_code_and_sees_points_tier_and_purchases(client, shop):
    assert client.get("/m/", follow_redirects=False).headers["location"] == "/m/login"
    done = sign_in(client)
    cookie = done.headers["set-cookie"]
    assert "patron_member=" in cookie and "HttpOnly" in cookie and "Path=/m" in cookie
    assert "Max-Age=1800" in cookie and "SameSite=lax" in cookie
    home = client.get("/m/home")
    assert home.status_code == 200
    html = home.text
    assert "<html lang=\"zh-CN\">" in html
    assert shop["me"]["member_code"] in html and "银卡" in html and "金卡" in html
    assert 'id="points-spendable">852<' in html
    assert html.count('class="lot available"') == 12 and "积分明细与有效期" in html
    assert 'value="85"' in html  # the progress bar towards GOLD
    assert "再获得 148 成长值即可升级为 金卡" in html
    assert "138****5678" in html and "13812345678" not in html
    orders = client.get(f"/m/orders?member={shop['me']['id']}")
    assert orders.status_code == 200 and orders.text.count('class="m-order"') == 10
    assert 'rel="next"' in orders.text and "+71 积分" in orders.text
    page2 = client.get(f"/m/orders?member={shop['me']['id']}&page=2")
    assert page2.text.count('class="m-order"') == 2 and 'rel="next"' not in page2.text


def test_the_pages_switch_to_english(client, shop):
    sign_in(client)
    home = client.get("/m/home?lang=en")
    assert '<html lang="en">' in home.text and "Points and their expiry dates" in home.text
    assert "148 more growth value to reach 金卡" in home.text
    assert "Available" in client.get("/m/home").text  # remembered by the language cookie


def test_the_same_answer_whether_or_not_the_phone_is_known(client, shop):
    page = client.get("/m/login")
    token = csrf(page.text)
    known = client.post("/m/login", data={"csrf_token": token, "phone": PHONE})
    unknown = client.post("/m/login", data={"csrf_token": token, "phone": STRANGER})
    assert known.status_code == unknown.status_code == 200

    def shape(text: str) -> str:
        return re.sub(r"1\d\d\*\*\*\*\d{4}|1\d{10}", "PHONE", text)

    assert shape(known.text) == shape(unknown.text)
    assert [p for p, _ in sent_codes()] == ["138****5678", "137****1111"]


def test_a_wrong_code_says_how_many_tries_are_left_and_limits_answer_429(client, shop):
    page = client.get("/m/login")
    sent = client.post("/m/login", data={"csrf_token": csrf(page.text), "phone": PHONE})
    code = last_code("138****5678")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    bad = client.post("/m/verify", data={"csrf_token": csrf(sent.text), "phone": PHONE,
                                         "code": wrong})
    assert bad.status_code == 401 and "验证码不正确，还可以再试 4 次。" in bad.text
    again = client.post("/m/login", data={"csrf_token": csrf(sent.text), "phone": PHONE})
    assert again.status_code == 429 and "验证码刚刚发送过" in again.text
    short = client.post("/m/verify", data={"csrf_token": csrf(sent.text), "phone": PHONE,
                                           "code": "12"})
    assert short.status_code == 422 and 'data-field="code"' in short.text
    phone = client.post("/m/login", data={"csrf_token": csrf(sent.text), "phone": "12345"})
    assert phone.status_code == 422 and 'data-field="phone"' in phone.text


def test_forms_without_the_csrf_token_or_from_another_site_are_refused(client, shop):
    client.get("/m/login")
    assert client.post("/m/login", data={"phone": PHONE}).status_code == 403
    sign_in(client)
    home = client.get("/m/home").text
    form = {"csrf_token": csrf(home), "member": str(shop["me"]["id"]), "kind": "sms",
            "granted": "no"}
    assert client.post("/m/consents", data={**form, "csrf_token": "x"}).status_code == 403
    assert client.post("/m/consents", data=form,
                       headers={"origin": "https://evil.example"}).status_code == 403
    assert client.post("/m/consents", data=form, follow_redirects=False).status_code == 303


def test_a_member_reaches_no_other_members_pages_by_changing_the_id(client, shop,
                                                                    db_url):
    sign_in(client)
    other = shop["other"]["id"]
    for url in (f"/m/home?member={other}", f"/m/orders?member={other}",
                f"/m/card?member={other}", "/m/home?member=999999999999",
                "/m/home?member=abc", f"/m/home?member={10**30}"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert shop["other"]["member_code"] not in r.text and "未找到该会员" in r.text
    token = csrf(client.get("/m/home").text)
    r = client.post("/m/consents", data={"csrf_token": token, "member": str(other),
                                         "kind": "sms", "granted": "no"})
    assert r.status_code == 404
    with UnitOfWork(get_engine(db_url)) as uow:
        withdrawn = uow.c.execute(select(loyalty_consents.c.id).where(
            loyalty_consents.c.member_id == other, loyalty_consents.c.source == "self_service"
        )).all()
    assert withdrawn == []


def test_member_and_staff_sessions_do_not_open_each_others_doors(client, shop, users):
    login(client, "owner")  # a staff session is no member session
    assert client.get("/m/home", follow_redirects=False).headers["location"] == "/m/login"
    client.cookies.clear()
    sign_in(client)
    assert client.get("/api/v1/auth/me").status_code == 401
    assert client.get("/customers", follow_redirects=False).status_code == 303
    assert client.get(f"/api/v1/loyalty/members/{shop['me']['id']}").status_code == 401


def test_logout_ends_the_member_session(client, shop):
    sign_in(client)
    token = client.cookies.get("patron_member")
    home = client.get("/m/home")
    out = client.post("/m/logout", data={"csrf_token": csrf(home.text)},
                      follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/m/login"
    client.cookies.set("patron_member", token, path="/m")  # a stolen copy of the cookie
    assert client.get("/m/home", follow_redirects=False).headers["location"] == "/m/login"


def test_the_qr_card_is_inline_svg_with_a_signed_short_lived_payload(client, shop):
    sign_in(client)
    r = client.get(f"/m/card?member={shop['me']['id']}")
    assert r.status_code == 200
    assert '<svg viewBox="0 0' in r.text and 'class="member-qr"' in r.text
    payload = re.search(r'data-payload="([^"]+)"', r.text).group(1)
    assert payload.startswith(f"PM1.{shop['me']['member_code']}.")
    assert 'http-equiv="refresh" content="270"' in r.text
    # Nothing on the member pages comes from another origin.
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert not re.search(r'(src|href)="(https?:)?//', r.text)


def test_the_card_page_reads_only_and_does_not_queue_behind_a_writer(client, shop, db_url):
    # Members keep the card open and it refreshes itself: on SQLite, a page that took the
    # write lock would wait for every import and checkout in progress.
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer")
    import sqlite3

    sign_in(client)
    assert client.get(f"/m/card?member={shop['me']['id']}").status_code == 200  # key made
    writer = sqlite3.connect(db_url.split("///", 1)[1], timeout=1)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        r = client.get(f"/m/card?member={shop['me']['id']}")
        assert r.status_code == 200 and 'class="member-qr"' in r.text
    finally:
        writer.rollback()
        writer.close()


def test_a_new_phone_enrols_on_the_page_with_privacy_and_marketing_consent(client, shop, db_url):
    sign_in(client, STRANGER, "137****1111")
    form_page = client.get("/m/home", follow_redirects=True)
    assert form_page.url.path == "/m/enrol" and "隐私政策（版本 2026-01）" in form_page.text
    token = csrf(form_page.text)
    missing = client.post("/m/enrol", data={"csrf_token": token, "program": "BB",
                                            "privacy_version": "2026-01"})
    assert missing.status_code == 422 and "入会须同意隐私政策" in missing.text
    done = client.post("/m/enrol", data={"csrf_token": token, "program": "BB",
                                         "privacy_version": "2026-01", "privacy": "yes",
                                         "marketing_sms": "yes", "name": "李雷"},
                       follow_redirects=False)
    assert done.status_code == 303
    home = client.get(done.headers["location"])
    assert "入会成功" in home.text and 'id="points-spendable">0<' in home.text
    with UnitOfWork(get_engine(db_url)) as uow:
        rows = uow.c.execute(select(audit_log.c.action, audit_log.c.actor_name).where(
            audit_log.c.action == "loyalty.member_enrolled",
            audit_log.c.actor_name == "member:137****1111")).all()
    assert len(rows) == 1


def test_the_member_withdraws_a_marketing_consent_on_the_page(client, shop):
    sign_in(client)
    home = client.get("/m/home").text
    assert re.search(r'data-kind="sms">.*?未同意', home, re.S)
    r = client.post("/m/consents", data={"csrf_token": csrf(home),
                                         "member": str(shop["me"]["id"]), "kind": "sms",
                                         "granted": "yes"})
    assert r.status_code == 200 and "已记录您的同意" in r.text
    assert re.search(r'data-kind="sms">.*?已同意', r.text, re.S)
    r = client.post("/m/consents", data={"csrf_token": csrf(r.text),
                                         "member": str(shop["me"]["id"]), "kind": "sms",
                                         "granted": "no"})
    assert "已撤回授权" in r.text and re.search(r'data-kind="sms">.*?未同意', r.text, re.S)


def test_the_member_opts_out_of_personalised_offers_on_the_page(client, shop, db_url):
    from patron.privacy.service import personalisation_opted_out

    sign_in(client)
    home = client.get("/m/home").text
    assert re.search(r'data-kind="personalisation">.*?已同意', home, re.S)
    r = client.post("/m/consents", data={"csrf_token": csrf(home),
                                         "member": str(shop["me"]["id"]),
                                         "kind": "personalisation", "granted": "no"})
    assert re.search(r'data-kind="personalisation">.*?未同意', r.text, re.S)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert list(uow.c.execute(personalisation_opted_out()).scalars()) == [
            shop["me"]["customer_id"]]


def test_the_home_page_lists_the_members_coupons_and_not_anyone_elses(client, shop,
                                                                      db_url):
    from tests.coupon_factories import give, make_template

    with UnitOfWork(get_engine(db_url)) as uow:
        ten = make_template(uow, "TEN", min_spend="30")
        mine = give(uow, ten["id"], [shop["me"]["id"]], "i-1")["coupons"][0]
        theirs = give(uow, ten["id"], [shop["other"]["id"]], "i-2")["coupons"][0]
    sign_in(client)
    html = client.get("/m/home").text
    section = html.split('id="coupons"')[1].split("</section>")[0]
    assert "1 张可用" in section and "¥10.00" in section and "满 ¥30.00 可用" in section
    assert mine["display_code"] in section and 'data-state="usable"' in section
    assert theirs["display_code"] not in html
    english = client.get("/m/home?lang=en").text
    assert "¥10.00 off" in english and "on a spend of ¥30.00 or more" in english


def test_the_home_page_shows_the_stored_value_balance(client, shop, db_url):
    from patron.security.model import SYSTEM
    from patron.storedvalue import service as storedvalue
    from patron.storedvalue.schemas import BonusRulesIn, SettingsIn
    from tests.storedvalue_factories import TIERS, topup

    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(get_engine(db_url)) as uow:
        storedvalue.configure(uow=uow, actor=SYSTEM, code="BB",
                              body=SettingsIn(spend_order="proportional", hold_minutes=15),
                              now=now - dt.timedelta(minutes=5))
        storedvalue.add_bonus_rules(uow=uow, actor=SYSTEM, code="BB",
                                    body=BonusRulesIn.model_validate({"tiers": TIERS}),
                                    now=now - dt.timedelta(minutes=5))
        topup(uow, shop["me"]["id"], "1000", "t-1", at=now - dt.timedelta(minutes=1))
        topup(uow, shop["other"]["id"], "500", "t-2", at=now - dt.timedelta(minutes=1))
    sign_in(client)
    section = client.get("/m/home").text.split('id="stored-value"')[1].split("</section>")[0]
    assert 'id="sv-spendable">¥1,120.00<' in section and "赠送 ¥120.00" in section
    assert section.count('class="sv-lot"') == 1 and "¥550.00" not in section
