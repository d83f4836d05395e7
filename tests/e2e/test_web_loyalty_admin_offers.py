"""Loyalty administration pages over HTTP (SQLite and PostgreSQL), what a program offers: coupon
templates (create, edit into a new version, issue to a pasted list, counts and budget use),
stored value (settings, bonus-rule versions, accounts by store, masked) and the rewards catalog
(items, stock, redemptions); roles, store scope, field errors and audit entries."""

from __future__ import annotations

import datetime as dt
import html
import json
import re

import pytest
from sqlalchemy import func, select

from patron.coupons.tables import coupon_template_versions, coupon_templates, coupons
from patron.db import UnitOfWork, get_engine, utcnow
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn
from patron.rewards.tables import rewards_items
from patron.security.model import SYSTEM
from patron.storedvalue.tables import sv_bonus_rules, sv_programs
from tests.coupon_factories import make_template, redeem
from tests.e2e.conftest import login
from tests.e2e.test_web_loyalty_admin import audited
from tests.e2e.test_web_pages import errors_in, post_form
from tests.loyalty_factories import enrol, make_program
from tests.rewards_factories import add_item
from tests.rewards_factories import redeem as redeem_reward

PHONES = ("13812345678", "13912345678", "13712345678")


@pytest.fixture
def world(db_url, org):
    """Program BB (brand B1: SH01, BJ01) with three members, each with 1,000 points; only
the first registered at SH01."""
    start = utcnow() - dt.timedelta(days=1)
    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow, now=start)
    members = []
    for phone in PHONES:
        # The first enrols at SH01 (its manager sees that profile), the others elsewhere.
        where = {"store": "SH01"} if phone == PHONES[0] else {}
        with UnitOfWork(get_engine(db_url)) as uow:
            member = enrol(uow, phone, now=start + dt.timedelta(minutes=1), **where)
        with UnitOfWork(get_engine(db_url)) as uow:
            loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"],
                           body=AdjustIn(idempotency_key=f"seed-{phone}", points=1000,
                                         reason="opening balance"))
        members.append(member)
    return {"members": members, "start": start}


def count(db_url: str, table, *where) -> int:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return int(uow.c.execute(select(func.count()).select_from(table).where(*where))
                   .scalar_one())


OFFER_PAGES = ["/loyalty/programs/BB/coupons", "/loyalty/programs/BB/stored-value",
               "/loyalty/programs/BB/rewards"]


@pytest.mark.parametrize("role", ["owner", "analyst", "manager", "cashier"])
def test_each_role_opens_the_offer_pages_or_is_refused(client, users, world, db_url, role):
    with UnitOfWork(get_engine(db_url)) as uow:
        template = make_template(uow)
    with UnitOfWork(get_engine(db_url)) as uow:
        item = add_item(uow, now=world["start"])
    login(client, role)
    pages = [*OFFER_PAGES, f"/loyalty/programs/BB/coupons/{template['id']}",
             f"/loyalty/programs/BB/rewards/{item['id']}"]
    for path in pages:
        r = client.get(path)
        if role == "cashier":
            assert r.status_code == 403, path
            continue
        assert r.status_code == 200, (role, path, r.text[:300])
        assert client.get(path + "?lang=en").status_code == 200
        client.cookies.delete("patron_lang")
        assert ('id="read-only"' in r.text) == (role != "owner"), (role, path)
    new = client.get("/loyalty/programs/BB/coupons/new")
    assert new.status_code == (200 if role == "owner" else 403)
    if role in ("owner", "manager"):  # managers issue coupons at their stores
        assert 'id="issue-form"' in client.get(pages[3]).text
    elif role == "analyst":
        assert 'id="issue-form"' not in client.get(pages[3]).text


def template_data(**changes) -> dict:
    data = {"code": "TEN", "name": "满100减10", "kind": "threshold", "threshold": "100",
            "reduction": "10", "valid_days": "30", "min_spend": "", "restore_on_refund": "on",
            "with_tier_discount": "on", "with_points": "on", "total_limit": "3",
            "budget_value": "30", "per_member_limit": "1"}
    data.update(changes)
    return data


def test_owner_creates_a_coupon_template_and_bad_terms_come_back_beside_their_field(
        owner, world, db_url):
    r = post_form(owner, "/loyalty/programs/BB/coupons/new", template_data(
        code="bad code", threshold="", reduction="", valid_days="", stores=["NOPE"]))
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert "code" in errs
    r = post_form(owner, "/loyalty/programs/BB/coupons/new", template_data(
        threshold="", reduction=""))
    assert r.status_code == 422 and errors_in(r.text) == {
        "threshold": "请填写满减门槛和减免金额。"}
    r = post_form(owner, "/loyalty/programs/BB/coupons/new", template_data(
        valid_days="", valid_to=""))
    assert r.status_code == 422 and set(errors_in(r.text)) == {"valid_days"}
    r = post_form(owner, "/loyalty/programs/BB/coupons/new", template_data(
        kind="percent", percent_off="15", threshold="", reduction=""))
    assert r.status_code == 422 and set(errors_in(r.text)) == {"budget_value"}  # no face value
    r = post_form(owner, "/loyalty/programs/BB/coupons/new", template_data(
        stores=["SH01"], channels=["pos"], categories="coffee，bakery"))
    assert r.status_code == 303, errors_in(r.text)
    assert r.headers["location"] == "/loyalty/programs/BB/coupons?created=TEN"
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        tpl = uow.c.execute(select(coupon_templates)).mappings().one()
        (version,) = uow.c.execute(select(coupon_template_versions)).mappings().all()
    assert (tpl["kind"], tpl["total_limit"], str(tpl["budget_value"]),
            tpl["per_member_limit"]) == ("threshold", 3, "30.00", 1)
    terms = version["terms"]
    assert (terms["stores"], terms["channels"], terms["categories"], terms["valid_days"]) == (
        ["SH01"], ["pos"], ["coffee", "bakery"], 30)
    page = owner.get("/loyalty/programs/BB/coupons")
    assert 'id="template-TEN"' in page.text and "满减" in page.text
    (entry,) = audited(db_url, "coupons.template_created")
    assert entry["details"]["code"] == "TEN" and entry["actor_name"] == "owner"
    r = post_form(owner, "/loyalty/programs/BB/coupons/new", template_data())
    assert r.status_code == 422 and "code" in errors_in(r.text)  # the code is taken


def test_issue_to_a_pasted_list_counts_and_budget_use_on_the_pages(owner, world, db_url):
    with UnitOfWork(get_engine(db_url)) as uow:
        tpl = make_template(uow, limits={"total_limit": 3, "per_member_limit": 2})
    page_url = f"/loyalty/programs/BB/coupons/{tpl['id']}"
    first, second, third = world["members"]
    issue_url = page_url + "/issue"
    # Unknown entries are listed beside the field and nothing is issued.
    r = post_form(owner, issue_url, {"members": f"{first['member_code']}\n19900000000, nobody",
                                     "quantity": "1", "store": "SH01",
                                     "idempotency_key": "web-a"}, page=page_url)
    assert r.status_code == 422
    assert errors_in(r.text)["members"].startswith("2 项找不到本计划的会员")
    assert count(db_url, coupons) == 0
    # Member codes and phones (any spacing) resolve to members.
    form = {"members": f"{first['member_code']}\n 139 1234 5678 ", "quantity": "1",
            "store": "SH01", "idempotency_key": "web-b"}
    r = post_form(owner, issue_url, form, page=page_url)
    assert r.status_code == 303 and r.headers["location"].endswith("?issued=2&skipped=0")
    # The same form sent again issues nothing more.
    r = post_form(owner, issue_url, form, page=page_url)
    assert r.status_code == 303
    assert count(db_url, coupons) == 2
    # Two more would pass the budget of three: nothing issued, the reason beside the field.
    r = post_form(owner, issue_url, {"members": f"{third['member_code']}", "quantity": "2",
                                     "idempotency_key": "web-c"}, page=page_url)
    assert r.status_code == 422 and "预算已用完" in errors_in(r.text)["members"]
    assert count(db_url, coupons) == 2
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        code = uow.c.execute(select(coupons.c.code).where(
            coupons.c.member_id == first["id"])).scalar_one()
    with UnitOfWork(get_engine(db_url)) as uow:
        redeem(uow, first["id"], [code], "till-1")
    page = owner.get(page_url).text
    assert re.search(r'id="stat-issued">2<', page) and re.search(r'id="stat-redeemed">1<', page)
    assert re.search(r'id="stat-unused">1<', page) and "66.7%" in page  # 2 of 3
    listing = owner.get("/loyalty/programs/BB/coupons").text
    assert 'data-issued="2"' in listing and 'data-redeemed="1"' in listing
    # The chart's figures (also its no-JavaScript table): redeemed, unused, revoked.
    spec = re.search(r'id="coupons-chart"[^>]*data-chart="([^"]+)"', listing).group(1)
    data = json.loads(html.unescape(spec))["data"]
    assert [(trace["name"], trace["y"]) for trace in data] == [
        ("已核销", [1]), ("未使用", [1]), ("已作废", [0])]
    assert [a["details"]["issued"] for a in audited(db_url, "coupons.issued")] == [2]


def test_editing_terms_makes_a_new_version_and_limits_change_in_place(owner, world, db_url):
    with UnitOfWork(get_engine(db_url)) as uow:
        tpl = make_template(uow, limits={"total_limit": 10})
    url = f"/loyalty/programs/BB/coupons/{tpl['id']}"
    page = owner.get(url).text
    assert 'name="amount_off" value="10.00"' in page or 'name="amount_off" value="10"' in page
    base = {"name": "立减10元", "status": "active", "kind": "amount", "amount_off": "10",
            "valid_days": "30", "restore_on_refund": "on", "with_tier_discount": "on",
            "with_points": "on", "total_limit": "20", "min_spend": "0"}
    r = post_form(owner, url, base)
    assert r.status_code == 303, errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        row = uow.c.execute(select(coupon_templates)).mappings().one()
    assert (row["name"], row["total_limit"], row["version"]) == ("立减10元", 20, 1)
    r = post_form(owner, url, {**base, "kind": "percent", "percent_off": "10"})
    assert r.status_code == 422 and "kind" in errors_in(r.text)  # the kind cannot change
    r = post_form(owner, url, {**base, "amount_off": "12", "note": "涨到12元"})
    assert r.status_code == 303
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        row = uow.c.execute(select(coupon_templates)).mappings().one()
    assert row["version"] == 2 and count(db_url, coupon_template_versions) == 2
    assert "涨到12元" in owner.get(url).text
    updates = audited(db_url, "coupons.template_updated")
    assert [u["details"].get("version") for u in updates] == [None, 2]
    r = post_form(owner, url, {**base, "total_limit": "-1"})
    assert r.status_code == 422 and "total_limit" in errors_in(r.text)


def test_a_store_manager_issues_at_their_store_only(client, users, world, db_url):
    with UnitOfWork(get_engine(db_url)) as uow:
        tpl = make_template(uow)
    login(client, "manager")
    url = f"/loyalty/programs/BB/coupons/{tpl['id']}"
    page = client.get(url).text
    assert 'value="BJ01"' not in page.split('id="issue-form"')[1].split("</form>")[0]
    first, second, _third = world["members"]
    r = post_form(client, url + "/issue", {"members": first["member_code"], "quantity": "1",
                                           "store": "BJ01", "idempotency_key": "m-1"},
                  page=url)
    assert r.status_code == 422 and "store" in errors_in(r.text)
    # A member whose profile the manager does not see is not found for them.
    r = post_form(client, url + "/issue", {"members": second["member_code"], "quantity": "1",
                                           "store": "SH01", "idempotency_key": "m-2"},
                  page=url)
    assert r.status_code == 422 and "找不到" in errors_in(r.text)["members"]
    assert count(db_url, coupons) == 0
    r = post_form(client, url + "/issue", {"members": first["member_code"], "quantity": "1",
                                           "store": "SH01", "idempotency_key": "m-3"},
                  page=url)
    assert r.status_code == 303 and count(db_url, coupons) == 1
    # Changing the template is the owner's.
    r = post_form(client, url, {"name": "x", "kind": "amount", "amount_off": "1",
                                "valid_days": "1"}, page=url)
    assert r.status_code == 403


def test_stored_value_settings_bonus_versions_and_accounts_by_store(owner, client, users,
                                                                    world, db_url):
    from patron.storedvalue import service as sv
    from patron.storedvalue.schemas import TopUpIn

    page = owner.get("/loyalty/programs/BB/stored-value").text
    assert 'id="sv-enabled"' in page and "未开通" in page
    r = post_form(owner, "/loyalty/programs/BB/stored-value/settings", {
        "spend_order": "bonus_first", "hold_minutes": "9999", "bonus_expiry_months": ""},
        page="/loyalty/programs/BB/stored-value")
    assert r.status_code == 422 and "hold_minutes" in errors_in(r.text)
    r = post_form(owner, "/loyalty/programs/BB/stored-value/settings", {
        "spend_order": "bonus_first", "hold_minutes": "20", "bonus_expiry_months": "12"},
        page="/loyalty/programs/BB/stored-value")
    assert r.status_code == 303
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        row = uow.c.execute(select(sv_programs)).mappings().one()
    assert (row["spend_order"], row["hold_minutes"], row["bonus_expiry_months"]) == (
        "bonus_first", 20, 12)
    (entry,) = audited(db_url, "stored_value.configured")
    assert entry["actor_name"] == "owner"
    r = post_form(owner, "/loyalty/programs/BB/stored-value/bonus-rules", {
        "bonus_min": ["500", "abc", "500"], "bonus_amount": ["50", "10", ""]},
        page="/loyalty/programs/BB/stored-value")
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert "tiers.1" in errs and "tiers.2" in errs
    r = post_form(owner, "/loyalty/programs/BB/stored-value/bonus-rules", {
        "bonus_min": ["1000", "500", ""], "bonus_amount": ["120", "50", ""],
        "note": "开业充值"}, page="/loyalty/programs/BB/stored-value")
    assert r.status_code == 303, errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        (rule,) = uow.c.execute(select(sv_bonus_rules)).mappings().all()
    assert rule["tiers"] == [{"min": "500", "bonus": "50"}, {"min": "1000", "bonus": "120"}]
    assert [a["action"] for a in audited(db_url, "stored_value.bonus_rules_versioned")] == [
        "stored_value.bonus_rules_versioned"]
    # Top-ups at two stores; the list by store shows masked members and their balances.
    first, second, _third = world["members"]
    for member, store, key in ((first, "SH01", "t1"), (second, "BJ01", "t2")):
        with UnitOfWork(get_engine(db_url)) as uow:
            sv.topup(uow=uow, actor=SYSTEM, member_id=member["id"], body=TopUpIn(
                idempotency_key=key, amount="500", store=store))
    page = owner.get("/loyalty/programs/BB/stored-value").text
    assert "138****5678" in page and "139****5678" in page and "13812345678" not in page
    assert "¥1,000.00" in page and "¥100.00" in page  # totals: principal, bonus
    page = owner.get("/loyalty/programs/BB/stored-value?store=BJ01").text
    accounts = page.split('id="accounts"')[1]
    assert "139****5678" in accounts and "138****5678" not in accounts
    assert "¥500.00 + ¥50.00" in accounts
    # A manager of SH01 sees SH01's accounts, reads only, and cannot ask for BJ01's.
    login(client, "manager")
    page = client.get("/loyalty/programs/BB/stored-value").text
    accounts = page.split('id="accounts"')[1]
    assert "138****5678" in accounts and "139****5678" not in accounts
    assert 'id="read-only"' in page
    assert client.get("/loyalty/programs/BB/stored-value?store=BJ01").status_code == 403
    r = post_form(client, "/loyalty/programs/BB/stored-value/settings", {
        "spend_order": "principal_first"}, page="/loyalty/programs/BB/stored-value")
    assert r.status_code == 403


def test_rewards_catalog_items_stock_and_redemptions(owner, world, db_url):
    r = post_form(owner, "/loyalty/programs/BB/rewards", {
        "code": "MUG", "name": "", "points_price": "0", "limit_per_period": "2",
        "active": "on"})
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert {"name", "points_price"} <= set(errs)
    r = post_form(owner, "/loyalty/programs/BB/rewards", {
        "code": "MUG", "name": "豆子马克杯", "points_price": "300", "cash_price": "9.90",
        "stock": "5", "limit_per_member": "2", "limit_per_period": "1",
        "limit_period": "month", "active": "on"})
    assert r.status_code == 303, errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        item = dict(uow.c.execute(select(rewards_items)).mappings().one())
    assert (item["points_price"], str(item["cash_price"]), item["stock"],
            item["limit_period"]) == (300, "9.90", 5, "month")
    first, second, _ = world["members"]
    with UnitOfWork(get_engine(db_url)) as uow:
        redeem_reward(uow, item["id"], first["id"], "r-1", now=utcnow())
    with UnitOfWork(get_engine(db_url)) as uow:
        redeem_reward(uow, item["id"], second["id"], "r-2", now=utcnow())
    page = owner.get("/loyalty/programs/BB/rewards").text
    assert 'id="item-MUG"' in page and 'data-available="3"' in page
    detail_url = f"/loyalty/programs/BB/rewards/{item['id']}"
    detail = owner.get(detail_url).text
    assert re.search(r'id="stat-reserved">2<', detail)
    assert first["member_code"] in detail and "待领取" in detail
    # The stock cannot go below what is held and sold.
    form = {"name": "豆子马克杯", "points_price": "300", "cash_price": "9.90", "stock": "1",
            "limit_per_member": "2", "limit_per_period": "1", "limit_period": "month",
            "active": "on"}
    r = post_form(owner, detail_url, form)
    assert r.status_code == 422 and "stock" in errors_in(r.text)
    r = post_form(owner, detail_url, {**form, "stock": "10", "limit_per_period": "",
                                      "limit_period": ""})
    assert r.status_code == 303, errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        item = dict(uow.c.execute(select(rewards_items)).mappings().one())
    assert (item["stock"], item["limit_per_period"]) == (10, None)
    assert 'data-available="8"' in owner.get("/loyalty/programs/BB/rewards").text
    assert [a["details"]["code"] for a in audited(db_url, "rewards.item_created")] == ["MUG"]
    assert len(audited(db_url, "rewards.item_updated")) == 1


def test_odd_or_foreign_ids_in_the_page_urls_are_404_pages_never_500(owner, world, db_url):
    with UnitOfWork(get_engine(db_url)) as uow:
        tpl = make_template(uow)
    for url in ("/loyalty/programs/BB/coupons/abc", "/loyalty/programs/BB/coupons/0",
                "/loyalty/programs/BB/coupons/99999999999999999999",
                "/loyalty/programs/BB/rewards/-1", "/loyalty/programs/BB/rewards/12345",
                "/loyalty/programs/NOPE/rules", "/loyalty/programs/NOPE/coupons",
                f"/loyalty/programs/NOPE/coupons/{tpl['id']}"):
        r = owner.get(url)
        assert r.status_code == 404, url
        assert "<html" in r.text, url
    r = post_form(owner, "/loyalty/programs/BB/coupons/abc/issue", {"members": "x"},
                  page="/loyalty/programs/BB/coupons")
    assert r.status_code == 404
