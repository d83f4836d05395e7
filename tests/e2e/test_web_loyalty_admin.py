"""Loyalty administration pages over HTTP (SQLite and PostgreSQL): programs, earning-rule
versions and tiers; who may open and change them; field errors; audit; and that a rule version
published on the page changes what an order earns."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine, utcnow
from patron.i18n import catalog
from patron.loyalty.tables import (
    loyalty_order_earnings,
    loyalty_programs,
    loyalty_rule_versions,
    loyalty_tiers,
)
from patron.org import service as org_service
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.e2e.test_web_pages import csrf, errors_in, post_form
from tests.factories import order
from tests.loyalty_factories import enrol, make_program

TEMPLATES = Path(__file__).resolve().parents[2] / "src/patron/templates/loyalty_admin"


@pytest.fixture
def program(db_url, org):
    with UnitOfWork(get_engine(db_url)) as uow:
        return make_program(uow, now=utcnow() - dt.timedelta(days=1))


@pytest.fixture
def other_brand_program(db_url, org):
    """A second brand with its own store and program: out of the SH01 manager's scope."""
    with UnitOfWork(get_engine(db_url)) as uow:
        brand = org_service.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Tea Time")
    with UnitOfWork(get_engine(db_url)) as uow:
        org_service.create_store(uow=uow, actor=SYSTEM, code="HZ01", name="杭州店", brand_id=brand)
    with UnitOfWork(get_engine(db_url)) as uow:
        return make_program(uow, code="TT", brand="B2", tiers=[],
                            now=utcnow() - dt.timedelta(days=1))


def audited(db_url: str, action: str) -> list[dict]:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(select(audit_log).where(
            audit_log.c.action == action).order_by(audit_log.c.id)).mappings()]


def program_row(db_url: str, code: str) -> dict:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return dict(uow.c.execute(select(loyalty_programs).where(
            loyalty_programs.c.code == code)).mappings().one())


PROGRAM_PAGES = ["/loyalty", "/loyalty/programs/BB", "/loyalty/programs/BB/rules",
                 "/loyalty/programs/BB/tiers", "/loyalty/programs/BB/tiers/GOLD"]


@pytest.mark.parametrize("role", ["owner", "analyst", "manager", "cashier"])
def test_each_role_opens_the_loyalty_pages_or_is_refused(client, users, program, role):
    login(client, role)
    for path in PROGRAM_PAGES:
        zh = client.get(path)
        if role == "cashier":
            assert zh.status_code == 403, path
            continue
        assert zh.status_code == 200, (role, path, zh.text[:300])
        en = client.get(path + "?lang=en")
        assert en.status_code == 200 and '<html lang="en">' in en.text
        client.cookies.delete("patron_lang")
        # Only owners get the forms that change anything; the others read.
        if path != "/loyalty":
            assert ('id="read-only"' in zh.text) == (role != "owner"), (role, path)
    new = client.get("/loyalty/programs/new")
    assert new.status_code == (200 if role == "owner" else 403)
    if role in ("analyst", "manager"):
        page = client.get("/loyalty/programs/BB/rules").text
        assert 'id="rules-form"' not in page and 'id="version-1"' in page
        assert 'id="tier-form"' not in client.get("/loyalty/programs/BB/tiers").text


def test_writes_are_refused_to_everyone_but_owners(client, users, program, db_url):
    for role in ("analyst", "manager", "cashier"):
        client.cookies.clear()
        login(client, role)
        token = csrf(client.get("/login").text)
        for path, data in (("/loyalty/programs/BB", {"name": "x", "privacy_version": "v2"}),
                           ("/loyalty/programs/BB/rules", {"points_per_yuan": "5",
                                                           "growth_per_yuan": "1"}),
                           ("/loyalty/programs/BB/tiers", {"code": "X", "name": "x",
                                                           "rank": "9"}),
                           ("/loyalty/programs/new", {"code": "N", "brand": "B1"})):
            r = client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)
            assert r.status_code == 403, (role, path)
    assert audited(db_url, "loyalty.program_updated") == []
    assert audited(db_url, "loyalty.rules_versioned") == []


def test_a_store_manager_sees_only_the_programs_of_their_stores_brands(
        client, users, program, other_brand_program):
    login(client, "manager")
    listing = client.get("/loyalty")
    assert "/loyalty/programs/BB" in listing.text and "/loyalty/programs/TT" not in listing.text
    for path in ("/loyalty/programs/TT", "/loyalty/programs/TT/rules",
                 "/loyalty/programs/TT/tiers"):
        assert client.get(path).status_code == 403, path
    client.cookies.clear()
    login(client, "owner")
    assert "/loyalty/programs/TT" in client.get("/loyalty").text


def test_owner_creates_a_program_and_bad_input_comes_back_beside_each_field(
        owner, db_url, org):
    r = post_form(owner, "/loyalty/programs/new", {
        "code": "has space", "brand": "B1", "name": "", "privacy_version": "v1",
        "expiry_mode": "rolling_months", "expiry_months": "500", "pending_days": "x",
        "timezone": "Mars/Base", "tier_basis": "growth", "clawback_policy": "owe"})
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert {"code", "name", "expiry_months", "pending_days", "timezone"} <= set(errs), errs
    assert errs["expiry_months"] == "必须不大于 120。"
    assert 'value="has space"' in r.text
    r = post_form(owner, "/loyalty/programs/new?lang=en", {
        "code": "BB", "brand": "B1", "name": "Bean Club", "privacy_version": "v1",
        "expiry_mode": "rolling_months", "expiry_months": "12", "pending_days": "400"},
        page="/loyalty/programs/new")
    assert r.status_code == 422 and "pending_days" in errors_in(r.text)
    owner.cookies.delete("patron_lang")
    r = post_form(owner, "/loyalty/programs/new", {
        "code": "BB", "brand": "B1", "name": "豆子会员", "privacy_version": "v1",
        "timezone": "Asia/Shanghai", "expiry_mode": "end_of_next_year", "pending_days": "14",
        "reminder_days": "30", "hold_minutes": "15", "redeem_points_per_yuan": "100",
        "clawback_policy": "write_off", "tier_basis": "spend_12m", "tier_grace_days": "180",
        "tier_max_downgrade": "2", "storeless_channels": ["mini_program"]})
    assert r.status_code == 303, r.text[:500]
    assert r.headers["location"] == "/loyalty/programs/BB?created=1"
    row = program_row(db_url, "BB")
    assert (row["expiry_mode"], row["expiry_months"], row["pending_days"],
            row["clawback_policy"], row["tier_basis"], row["storeless_channels"]) == (
        "end_of_next_year", None, 14, "write_off", "spend_12m", ["mini_program"])
    assert [a["details"]["code"] for a in audited(db_url, "loyalty.program_created")] == ["BB"]
    page = owner.get(r.headers["location"])
    assert "豆子会员" in page.text and 'role="status"' in page.text
    # A brand has one program: the second is refused beside the field, nothing written.
    r = post_form(owner, "/loyalty/programs/new", {
        "code": "BB2", "brand": "B1", "name": "x", "privacy_version": "v1"})
    assert r.status_code == 422 and "已有会员计划" in r.text


def test_owner_chooses_to_deduct_spent_points_from_refunds_in_both_languages(
        owner, program, db_url):
    page = owner.get("/loyalty/programs/BB")
    assert 'value="deduct_from_refund"' in page.text
    assert catalog("zh")["web.loyalty_admin.clawback.deduct_from_refund"] in page.text
    english = owner.get("/loyalty/programs/BB?lang=en")
    assert html.escape(catalog("en")["web.loyalty_admin.clawback.deduct_from_refund"]) in (
        english.text)
    owner.cookies.delete("patron_lang")
    fields = {"name": "Bean Club", "status": "active", "privacy_version": "2026-01",
              "timezone": "Asia/Shanghai", "expiry_mode": "rolling_months",
              "expiry_months": "12", "pending_days": "0", "reminder_days": "15",
              "hold_minutes": "20", "redeem_points_per_yuan": "100", "tier_basis": "growth",
              "tier_grace_days": "365", "tier_max_downgrade": "1"}
    r = post_form(owner, "/loyalty/programs/BB", {**fields, "clawback_policy": "refund_it"})
    assert r.status_code == 422 and "clawback_policy" in errors_in(r.text)
    assert program_row(db_url, "BB")["clawback_policy"] == "owe"
    r = post_form(owner, "/loyalty/programs/BB",
                  {**fields, "clawback_policy": "deduct_from_refund"})
    assert r.status_code == 303, r.text[:500]
    assert program_row(db_url, "BB")["clawback_policy"] == "deduct_from_refund"
    (entry,) = audited(db_url, "loyalty.program_updated")
    assert entry["details"]["changes"]["clawback_policy"] == "deduct_from_refund"


def test_owner_edits_the_settings_and_the_change_is_audited(owner, program, db_url):
    page = owner.get("/loyalty/programs/BB")
    assert 'name="pending_days" value="0"' in page.text
    r = post_form(owner, "/loyalty/programs/BB", {
        "name": "Bean Club", "status": "active", "privacy_version": "2026-01",
        "timezone": "Asia/Shanghai", "expiry_mode": "rolling_months", "expiry_months": "0",
        "pending_days": "7"})
    assert r.status_code == 422 and "expiry_months" in errors_in(r.text)
    assert program_row(db_url, "BB")["pending_days"] == 0  # nothing half-written
    r = post_form(owner, "/loyalty/programs/BB", {
        "name": "Bean Club", "status": "active", "privacy_version": "2026-01",
        "timezone": "Asia/Shanghai", "expiry_mode": "rolling_months", "expiry_months": "18",
        "pending_days": "7", "reminder_days": "15", "hold_minutes": "20",
        "redeem_points_per_yuan": "50", "clawback_policy": "owe", "tier_basis": "growth",
        "tier_grace_days": "365", "tier_max_downgrade": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/loyalty/programs/BB?saved=1"
    row = program_row(db_url, "BB")
    assert (row["expiry_months"], row["pending_days"], row["redeem_points_per_yuan"]) == (
        18, 7, 50)
    (entry,) = audited(db_url, "loyalty.program_updated")
    assert entry["actor_name"] == "owner" and entry["details"]["changes"]["pending_days"] == 7


def rules_data(**changes) -> dict:
    data = {"points_per_yuan": "1", "growth_per_yuan": "1", "min_spend": "0",
            "tier_multiplier": "on", "exclude_payments": ["points", "stored_value"],
            "category_key": ["", ""], "category_factor": ["", ""]}
    data.update(changes)
    return data


def test_rule_versions_are_shown_and_a_new_one_never_edits_history(owner, program, db_url):
    page = owner.get("/loyalty/programs/BB/rules")
    assert 'id="version-1" data-state="in_force"' in page.text
    # Bad rows come back beside their own row, with what was typed.
    r = post_form(owner, "/loyalty/programs/BB/rules", rules_data(
        points_per_yuan="-1", category_key=["coffee", "", "tea"],
        category_factor=["abc", "2", "0"], store_key=["NOPE"], store_factor=["2"],
        weekday_wed="1000", date_from=["2026-12-10"], date_to=["2026-12-01"],
        date_factor=["2"], cap_per_order="-5",
        effective_from="2020-01-01T00:00"))
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert errs["category.0"] == "必须是数字。"
    assert errs["category.1"] == "此字段必填。"  # a factor without its category
    assert errs["category.2"] == "必须大于 0。"
    assert errs["store.0"] == "未知门店“NOPE”。"
    assert errs["weekday_wed"] == "必须不大于 100。"
    assert "dates.0" in errs and "points_per_yuan" in errs and "cap_per_order" in errs
    assert 'value="abc"' in r.text
    # The effective time in the past is refused by the service, beside its field.
    r = post_form(owner, "/loyalty/programs/BB/rules", rules_data(
        effective_from="2020-01-01T00:00"))
    assert r.status_code == 422 and errors_in(r.text) == {
        "effective_from": catalog("zh")["effective_in_past"]}
    later = (utcnow() + dt.timedelta(days=3)).astimezone(dt.timezone(dt.timedelta(hours=8)))
    r = post_form(owner, "/loyalty/programs/BB/rules", rules_data(
        points_per_yuan="2", category_key=["coffee"], category_factor=["3"],
        sku_key=["LATTE"], sku_factor=["4"], channel_key=["pos"], channel_factor=["1.5"],
        weekday_sat="2", date_from=["2026-11-11"], date_to=["2026-11-11"], date_factor=["5"],
        cap_per_order="500", cap_per_day="900", min_spend="10",
        exclude_categories="tobacco，gift_card", exclude_skus="BAG",
        exclude_payments=["points"], effective_from=later.strftime("%Y-%m-%dT%H:%M"),
        note="双十一"))
    assert r.status_code == 303 and r.headers["location"].endswith("/rules?version=2")
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        versions = {r.version: dict(r._mapping) for r in uow.c.execute(
            select(loyalty_rule_versions).order_by(loyalty_rule_versions.c.version))}
    assert set(versions) == {1, 2}
    rules = versions[2]["rules"]
    assert rules["points_per_yuan"] == "2" and rules["min_spend"] == "10"
    assert rules["multipliers"]["category"] == {"coffee": "3"}
    assert rules["multipliers"]["sku"] == {"LATTE": "4"}
    assert rules["multipliers"]["channel"] == {"pos": "1.5"}
    assert rules["multipliers"]["weekday"] == {"sat": "2"}
    assert rules["multipliers"]["dates"] == [{"from": "2026-11-11", "to": "2026-11-11",
                                              "factor": "5"}]
    assert rules["caps"] == {"per_order": 500, "per_day": 900}
    assert rules["exclude"] == {"categories": ["tobacco", "gift_card"], "skus": ["BAG"],
                                "payment_methods": ["points"]}
    assert versions[2]["effective_from"] == later.replace(second=0, microsecond=0)
    assert versions[1]["rules"]["points_per_yuan"] != "2"  # history untouched
    page = owner.get(r.headers["location"])
    assert 'id="version-2" data-state="scheduled"' in page.text
    assert 'id="version-1" data-state="in_force"' in page.text
    assert "双十一" in page.text
    # The form starts from the latest version.
    assert 'name="category_key" value="coffee"' in page.text
    (entry,) = audited(db_url, "loyalty.rules_versioned")
    assert entry["details"]["version"] == 2 and entry["actor_name"] == "owner"


def test_a_rule_version_published_on_the_page_changes_what_an_order_earns(
        owner, program, db_url):
    from patron.orders.service import record_orders

    with UnitOfWork(get_engine(db_url)) as uow:
        member = enrol(uow, now=utcnow() - dt.timedelta(hours=2))

    def earn(external_id: str) -> int:
        # Bought now: after the version published just before (an order earns by the rules
        # in force at its purchase time).
        with UnitOfWork(get_engine(db_url)) as uow:
            (out,) = record_orders(uow=uow, orders_in=[order(
                external_id, at=utcnow(),
                identifiers={"phone": "13812345678"})], source="api", actor=SYSTEM)
        with UnitOfWork(get_engine(db_url), readonly=True) as uow:
            return int(uow.c.execute(select(loyalty_order_earnings.c.points).where(
                loyalty_order_earnings.c.order_id == out.order_id)).scalar_one())

    # The factory order: 2 lattes (coffee) 56.00 + a croissant (bakery) 15.00 = 71.00.
    assert earn("before") == 71
    r = post_form(owner, "/loyalty/programs/BB/rules", rules_data(
        category_key=["coffee"], category_factor=["2"], tier_multiplier=""))
    assert r.status_code == 303, errors_in(r.text)
    assert earn("after") == 56 * 2 + 15
    assert member["id"]


def test_tiers_are_listed_created_and_edited_with_their_benefits(owner, program, db_url):
    page = owner.get("/loyalty/programs/BB/tiers")
    for code in ("SILVER", "GOLD", "PLATINUM"):
        assert f'id="tier-{code}"' in page.text
    # A threshold below the tier under it is refused beside the field.
    r = post_form(owner, "/loyalty/programs/BB/tiers", {
        "code": "DIAMOND", "name": "钻石卡", "rank": "3", "min_growth": "10",
        "min_spend": "0", "points_multiplier": "3"})
    assert r.status_code == 422 and "rank" in errors_in(r.text)
    r = post_form(owner, "/loyalty/programs/BB/tiers", {
        "code": "DIAMOND", "name": "", "rank": "x", "points_multiplier": "0",
        "member_discount_percent": "120", "item_sku": ["", "CAKE"], "item_name": ["x", ""],
        "item_quantity": ["1", "0"]})
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert {"name", "rank", "points_multiplier", "member_discount_percent", "free_items.0",
            "free_items.1"} <= set(errs), errs
    r = post_form(owner, "/loyalty/programs/BB/tiers", {
        "code": "DIAMOND", "name": "钻石卡", "rank": "3", "min_growth": "20000",
        "min_spend": "20000", "points_multiplier": "3", "member_discount_percent": "12",
        "gift_description": "生日蛋糕", "item_sku": ["CAKE", ""], "item_name": ["蛋糕", ""],
        "item_quantity": ["1", ""]})
    assert r.status_code == 303 and r.headers["location"].endswith("/tiers?saved=DIAMOND")
    r = post_form(owner, "/loyalty/programs/BB/tiers/GOLD", {
        "name": "金卡会员", "min_growth": "800", "min_spend": "800",
        "points_multiplier": "1.8", "member_discount_percent": "5",
        "item_sku": ["COFFEE_CUP"], "item_name": ["咖啡杯"], "item_quantity": ["2"]})
    assert r.status_code == 303, errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        tiers = {r.code: dict(r._mapping) for r in uow.c.execute(select(loyalty_tiers))}
    # Benefits are stored without their defaults (quantity 1, no coupon).
    assert tiers["DIAMOND"]["benefits"] == {
        "member_discount_percent": "12", "birthday_gift": {"description": "生日蛋糕"},
        "free_items": [{"sku": "CAKE", "name": "蛋糕"}]}
    assert tiers["GOLD"]["name"] == "金卡会员" and tiers["GOLD"]["min_growth"] == 800
    assert str(tiers["GOLD"]["points_multiplier"]) in ("1.8", "1.800")
    assert tiers["GOLD"]["benefits"]["free_items"] == [
        {"sku": "COFFEE_CUP", "name": "咖啡杯", "quantity": 2}]
    # Editing GOLD above PLATINUM's threshold is refused, nothing written.
    r = post_form(owner, "/loyalty/programs/BB/tiers/GOLD", {
        "name": "金卡会员", "min_growth": "9000", "min_spend": "800"})
    assert r.status_code == 422 and "min_growth" in errors_in(r.text)
    assert [a["details"]["tier"] for a in audited(db_url, "loyalty.tier_created")] == [
        "DIAMOND"]
    assert [a["details"]["tier"] for a in audited(db_url, "loyalty.tier_updated")] == ["GOLD"]
    # Qualification basis and downgrade rules beside the tiers.
    r = post_form(owner, "/loyalty/programs/BB/tiers/qualification", {
        "tier_basis": "spend_12m", "tier_grace_days": "-1", "tier_max_downgrade": "2"},
        page="/loyalty/programs/BB/tiers")
    assert r.status_code == 422 and "tier_grace_days" in errors_in(r.text)
    r = post_form(owner, "/loyalty/programs/BB/tiers/qualification", {
        "tier_basis": "spend_12m", "tier_grace_days": "90", "tier_max_downgrade": "2"},
        page="/loyalty/programs/BB/tiers")
    assert r.status_code == 303
    row = program_row(db_url, "BB")
    assert (row["tier_basis"], row["tier_grace_days"], row["tier_max_downgrade"]) == (
        "spend_12m", 90, 2)
    assert owner.get("/loyalty/programs/BB/tiers/NOPE").status_code == 404


def test_every_message_key_of_the_pages_exists_in_both_languages():
    used = set()
    for path in [*TEMPLATES.glob("*.html"),
                 *Path(TEMPLATES.parents[1], "web").glob("loyalty_admin*.py")]:
        # Keys written whole; prefixes joined to a value ('…status.' ~ status) are left out.
        used |= {k for k in re.findall(r"web\.loyalty_admin\.[a-z_.]+", path.read_text())
                 if not k.endswith(".")}
    prefixes: set[str] = set()
    for lang in ("zh", "en"):
        keys = set(json.loads((TEMPLATES.parents[1] / f"i18n/web_loyalty_admin.{lang}.json")
                              .read_text()))
        missing = {k for k in used - prefixes if k not in keys}
        assert not missing, (lang, missing)
