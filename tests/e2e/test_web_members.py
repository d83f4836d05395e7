"""The member pages over HTTP (SQLite and PostgreSQL): the figures on the page are the
services' figures; roles and store scope; the manual adjustment form (permission, reason,
field errors, a double submit adjusts once); consent withdrawal; enrolment from the customer
360 page."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from patron.coupons import service as coupons
from patron.db import UnitOfWork, get_engine
from patron.loyalty import queries
from patron.loyalty.tables import loyalty_consents, loyalty_members, loyalty_operations
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.storedvalue import service as storedvalue
from tests.e2e.conftest import login
from tests.e2e.test_web_pages import csrf, errors_in
from tests.web_loyalty_helpers import PHONE_A, make_shop


@pytest.fixture
def shop(db_url, org, users):
    return make_shop(db_url)


def read(db_url, fn, **kw):
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return fn(uow.c, actor=SYSTEM, **kw)


def text_of(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert found, element_id
    return found.group(1).strip()


def test_the_member_page_shows_the_services_figures(client, shop, db_url):
    login(client, "owner")
    mid = shop["a"]["id"]
    r = client.get(f"/members/{mid}?lang=en")
    assert r.status_code == 200, r.text
    html = r.text
    bal = read(db_url, queries.balance, member_id=mid)
    assert text_of(html, "points-available") == f"{bal['available']:,}" == "800"
    assert text_of(html, "points-pending") == str(bal["pending"])
    assert text_of(html, "points-held") == str(bal["held"])
    assert text_of(html, "growth-value") == f"{bal['growth_value']:,}"
    # Every entry with its cause and reason; lots with expiry dates.
    ledger = read(db_url, queries.ledger, member_id=mid)
    assert html.count('class="entry"') == ledger["total"] == 2
    assert "opening balance" in html and 'data-cause="operation"' in html
    for lot in bal["lots"]:
        assert f'<td class="expires">{lot["expires_on"]}</td>' in html
    # Tier, progress to the next tier, history.
    assert 'data-tier="GOLD"' in html and "Highest tier reached" in html
    assert html.count('class="tier-change"') == len(read(db_url, queries.tier_history,
                                                        member_id=mid)) == 2
    # Coupons, stored value.
    mine = read(db_url, coupons.member_coupons, member_id=mid)
    assert text_of(html, "coupons-issued") == str(len(mine)) == "1"
    assert text_of(html, "coupons-usable") == "1" and text_of(html, "coupons-redeemed") == "0"
    assert f'data-code="{shop["coupon"]}"' in html
    sv = read(db_url, storedvalue.balance, member_id=mid)
    assert text_of(html, "sv-spendable") == f"¥{sv['spendable']:,.2f}" == "¥550.00"
    assert text_of(html, "sv-principal") == "¥500.00" and text_of(html, "sv-bonus") == "¥50.00"
    assert 'class="sv-op" data-kind="topup"' in html
    zh = client.get(f"/members/{mid}?lang=zh").text
    assert "积分流水" in zh and "人工调整" in zh and "金卡" in zh


def test_the_customer_360_links_to_the_memberships(client, shop):
    login(client, "owner")
    cid = shop["a"]["customer_id"]
    html = client.get(f"/customers/{cid}?lang=en").text
    assert f'href="/members/{shop["a"]["id"]}"' in html and 'id="memberships"' in html
    assert 'id="enrol-link"' not in html  # already a member of the only program
    login(client, "cashier")
    assert client.get(f"/customers/{cid}").status_code == 403


def test_roles_and_store_scope(client, shop, users):
    a, b = shop["a"]["id"], shop["b"]["id"]
    r = client.get(f"/members/{a}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/members/")
    login(client, "analyst")
    html = client.get(f"/members/{a}").text
    assert 'id="adjust-form"' not in html and 'id="points-available"' in html
    assert "revoke" not in html
    login(client, "manager")  # SH01 only: member B registered there, A did not
    assert client.get(f"/members/{a}").status_code == 404
    page = client.get(f"/members/{b}")
    assert page.status_code == 200 and 'id="adjust-form"' in page.text
    login(client, "cashier")
    assert client.get(f"/members/{b}").status_code == 403
    login(client, "owner")
    assert client.get("/members/abc").status_code == 404
    assert client.get("/members/999999").status_code == 404


def adjust_form(client, mid, **data):
    page = client.get(f"/members/{mid}").text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    body = {"csrf_token": csrf(page), "idempotency_key": key, "bucket": "available",
            "store": "", **data}
    return body


def test_a_manual_adjustment_is_recorded_once_with_its_reason(client, shop, db_url):
    login(client, "owner")
    mid = shop["a"]["id"]
    body = adjust_form(client, mid, points="-300", reason="wrong scan yesterday")
    first = client.post(f"/members/{mid}/adjustments", data=body, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith(f"/members/{mid}")
    again = client.post(f"/members/{mid}/adjustments", data=body, follow_redirects=False)
    assert again.status_code == 303  # the same form submitted twice
    assert read(db_url, queries.balance, member_id=mid)["available"] == 500
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        n = uow.c.execute(select(func.count()).select_from(loyalty_operations).where(
            loyalty_operations.c.member_id == mid,
            loyalty_operations.c.reason == "wrong scan yesterday")).scalar_one()
        audited = uow.c.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "loyalty.adjust")).scalar_one()
    assert n == 1 and audited >= 1
    html = client.get(f"/members/{mid}?lang=en").text
    assert "wrong scan yesterday" in html and 'data-points="-300"' in html


def test_bad_adjustments_name_the_field(client, shop, db_url):
    login(client, "owner")
    mid = shop["a"]["id"]
    r = client.post(f"/members/{mid}/adjustments?lang=en",
                    data=adjust_form(client, mid, points="0", reason="ab"))
    assert r.status_code == 422
    errors = errors_in(r.text)
    assert errors["points"] == "Points must not be zero." and "reason" in errors
    r = client.post(f"/members/{mid}/adjustments?lang=en",
                    data=adjust_form(client, mid, points="many", reason="because"))
    assert r.status_code == 422 and errors_in(r.text)["points"] == "Must be a whole number."
    r = client.post(f"/members/{mid}/adjustments?lang=zh",
                    data=adjust_form(client, mid, points="-5000", reason="too much"))
    assert r.status_code == 409 and "800" in errors_in(r.text)["points"]
    r = client.post(f"/members/{mid}/adjustments", data={
        **adjust_form(client, mid, points="5", reason="valid"), "csrf_token": "0" * 64})
    assert r.status_code == 403
    assert read(db_url, queries.balance, member_id=mid)["available"] == 800
    login(client, "analyst")
    r = client.post(f"/members/{mid}/adjustments", data={
        "csrf_token": csrf(client.get(f"/members/{mid}").text), "points": "5",
        "reason": "analyst try", "idempotency_key": "k1"})
    assert r.status_code == 403


def test_withdrawing_a_consent(client, shop, db_url):
    login(client, "owner")
    mid = shop["a"]["id"]
    page = client.get(f"/members/{mid}").text
    r = client.post(f"/members/{mid}/consents", data={"csrf_token": csrf(page),
                                                      "kind": "privacy", "granted": "0"},
                    follow_redirects=False)
    assert r.status_code == 303
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        last = uow.c.execute(select(loyalty_consents.c.granted).where(
            loyalty_consents.c.member_id == mid, loyalty_consents.c.kind == "privacy")
            .order_by(loyalty_consents.c.id.desc())).first()
    assert last.granted is False or last.granted == 0
    html = client.get(f"/members/{mid}?lang=en").text
    assert 'data-kind="privacy" data-granted="0"' in html
    r = client.post(f"/members/{mid}/consents?lang=en", data={
        "csrf_token": csrf(html), "kind": "privacy", "granted": "1"})
    assert r.status_code == 422


def test_enrolling_a_customer_from_the_customer_page(client, shop, db_url):
    from patron.customers.service import find_or_create_by_phone
    from patron.db import utcnow

    with UnitOfWork(get_engine(db_url)) as uow:
        cid, _ = find_or_create_by_phone(uow.c, phone="13700000077", name="王五",
                                         store_id=None, channel_id=None, now=utcnow())
        uow.commit()
    login(client, "owner")
    html = client.get(f"/customers/{cid}?lang=en").text
    assert 'id="enrol-link"' in html
    page = client.get(f"/members/enrol?customer={cid}&lang=en")
    assert page.status_code == 200
    r = client.post(f"/members/enrol?customer={cid}&lang=en",
                    data={"csrf_token": csrf(page.text), "program": "BB", "sms": "on"})
    assert r.status_code == 422 and "privacy" in errors_in(r.text)
    r = client.post(f"/members/enrol?customer={cid}",
                    data={"csrf_token": csrf(page.text), "program": "BB", "privacy": "on",
                          "sms": "on"}, follow_redirects=False)
    assert r.status_code == 303
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        member = uow.c.execute(select(loyalty_members).where(
            loyalty_members.c.customer_id == cid)).mappings().one()
    assert r.headers["location"] == f"/members/{member['id']}?done=enrolled"
    html = client.get(r.headers["location"] + "&lang=en").text
    assert 'data-kind="sms" data-granted="1"' in html
    assert 'data-kind="email" data-granted="0"' in html
    login(client, "analyst")
    assert client.get(f"/members/enrol?customer={cid}").status_code == 403
    assert PHONE_A  # the shop's first member stays untouched


def test_rewards_redeemed_show_on_the_member_page(client, shop, db_url):
    from patron.db import utcnow
    from patron.rewards import service as rewards
    from tests.rewards_factories import add_item
    from tests.rewards_factories import redeem as redeem_reward

    mid = shop["a"]["id"]
    with UnitOfWork(get_engine(db_url)) as uow:
        item = add_item(uow, "MUG", points_price=100)
        redeem_reward(uow, item["id"], mid, "mug-1", now=utcnow())
    login(client, "owner")
    html = client.get(f"/members/{mid}?lang=en").text
    (mine,) = read(db_url, rewards.member_redemptions, member_id=mid)
    assert f'class="reward" data-status="{mine["status"]}"' in html and "MUG" in html
    assert text_of(html, "points-held") == str(mine["points"]) == "100"
    assert text_of(html, "points-available") == "700"


def test_the_ledger_is_paged_newest_first(client, shop, db_url):
    from patron.loyalty import service
    from patron.loyalty.schemas import AdjustIn

    mid = shop["a"]["id"]
    with UnitOfWork(get_engine(db_url)) as uow:
        for i in range(20):
            service.adjust(uow=uow, actor=SYSTEM, member_id=mid, body=AdjustIn(
                idempotency_key=f"page-{i}", points=i + 1, reason=f"goodwill {i}"))
    login(client, "owner")
    first = client.get(f"/members/{mid}?lang=en").text
    ledger = read(db_url, queries.ledger, member_id=mid, page=1, page_size=20)
    assert ledger["total"] == 22 and first.count('class="entry"') == 20
    assert "goodwill 19" in first and "opening balance" not in first
    assert 'rel="next"' in first
    second = client.get(f"/members/{mid}?page=2&lang=en").text
    assert second.count('class="entry"') == 2 and "opening balance" in second
    assert 'rel="next"' not in second
