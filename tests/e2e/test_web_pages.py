"""The server-rendered pages over HTTP: sign-in, roles, both languages, forms and their errors."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from patron.db import UnitOfWork, get_engine, utcnow
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import api_keys, audit_log
from patron.security.tables import users as user_rows
from tests.e2e.conftest import PASSWORD, login
from tests.factories import order

PAGES = ["/", "/customers", "/dashboards", "/analytics", "/imports", "/automations",
         "/experiments", "/loyalty", "/segments", "/tags", "/messages", "/cashier",
         "/loyalty/reports",
         "/admin/stores", "/admin/products", "/admin/channels", "/admin/users", "/admin/audit",
         "/privacy", "/admin/roles", "/admin/alerts", "/admin/export-requests"]

# What each role may open; every other page answers 403.
ALLOWED = {
    "owner": set(PAGES),
    "analyst": {"/", "/customers", "/dashboards", "/analytics", "/automations", "/experiments",
                "/loyalty", "/segments", "/tags", "/messages", "/loyalty/reports"},
    "manager": {"/", "/customers", "/dashboards", "/analytics", "/imports", "/loyalty",
                "/segments", "/tags", "/cashier", "/loyalty/reports"},
    # A cashier has exactly one page, the till, where signing in leads.
    "cashier": {"/cashier"},
}


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def post_form(client, path: str, data: dict, *, page: str | None = None, **kw):
    token = csrf(client.get(page or path).text)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=False, **kw)


def errors_in(html: str) -> dict[str, str]:
    return dict(re.findall(r'<small class="error" data-field="([^"]+)">([^<]+)</small>', html))


def record(db_url: str, orders_in: list[dict]) -> None:
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    assert all(o.status == "created" for o in outcomes), outcomes


def test_anonymous_visitor_is_sent_to_sign_in_from_every_page(client, users):
    for path in [*PAGES, "/customers/1", "/imports/1", "/imports/mappings/new"]:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=" + path.split("?")[0]), path


@pytest.mark.parametrize("role", ["owner", "analyst", "manager", "cashier"])
def test_each_role_opens_its_pages_in_both_languages_and_is_refused_the_rest(client, users,
                                                                              role):
    login(client, role)
    for path in PAGES:
        zh = client.get(path)
        if path in ALLOWED[role]:
            assert zh.status_code == 200, (role, path, zh.text[:300])
            assert '<html lang="zh-CN">' in zh.text
            en = client.get(path + "?lang=en")
            assert en.status_code == 200
            assert '<html lang="en">' in en.text and "Sign out" in en.text
            client.cookies.delete("patron_lang")
        else:
            assert zh.status_code == 403, (role, path)
            assert "没有权限" in zh.text and "<form" in zh.text  # a page, not JSON
    # The navigation offers exactly the allowed pages.
    nav = re.search(r"<nav>(.*?)</nav>", client.get("/admin/audit").text, re.S).group(1)
    assert set(re.findall(r'href="([^"]+)"', nav)) == ALLOWED[role]


def test_sign_in_form_shows_translated_errors_and_signs_in(client, users, db_url):
    page = client.get("/login?next=/customers")
    assert page.status_code == 200 and "登录" in page.text
    token = csrf(page.text)
    r = client.post("/login", data={"username": "", "password": "", "csrf_token": token})
    assert r.status_code == 422
    assert errors_in(r.text) == {"username": "此字段必填。", "password": "此字段必填。"}
    r = client.post("/login?lang=en", data={"username": "owner", "password": "wrong-one-1",
                                            "csrf_token": token})
    assert r.status_code == 401 and "Wrong username or password." in r.text
    until = utcnow().replace(second=0, microsecond=0) + dt.timedelta(minutes=10)
    with UnitOfWork(get_engine(db_url)) as uow:
        uow.c.execute(update(user_rows).where(user_rows.c.username == "manager")
                      .values(locked_until=until))
        uow.commit()
    client.cookies.delete("patron_lang")
    r = client.post("/login", data={"username": "manager", "password": PASSWORD,
                                    "csrf_token": token})
    assert r.status_code == 429 and "锁定" in r.text
    assert until.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M") in r.text
    r = client.post("/login", data={"username": "owner", "password": PASSWORD,
                                    "next": "/customers", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/customers"
    assert client.get("/customers").status_code == 200
    # Never to another site after signing in.
    r = client.post("/login", data={"username": "owner", "password": PASSWORD,
                                    "next": "//evil.example/x", "csrf_token": csrf(
                                        client.get("/logout").text)}, follow_redirects=False)
    assert r.headers["location"] == "/"


def test_sign_out_ends_the_session(owner):
    r = post_form(owner, "/logout", {}, page="/")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    owner.cookies.delete("patron_session")
    assert owner.get("/", follow_redirects=False).status_code == 303


def test_a_form_without_its_token_or_from_another_site_is_refused(owner, db_url):
    r = owner.post("/admin/stores", data={"code": "X1", "name": "x"}, follow_redirects=False)
    assert r.status_code == 403 and "表单已过期" in r.text
    token = csrf(owner.get("/admin/stores").text)
    r = owner.post("/admin/stores", data={"code": "X1", "name": "x", "csrf_token": "0" * 64})
    assert r.status_code == 403
    r = owner.post("/admin/stores", data={"code": "X1", "name": "x", "csrf_token": token},
                   headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    with UnitOfWork(get_engine(db_url)) as uow:
        assert uow.c.execute(select(audit_log.c.id).where(
            audit_log.c.action == "store.created", audit_log.c.details["code"].as_string()
            == "X1")).first() is None


def test_language_switch_is_remembered_in_a_cookie(owner):
    r = owner.get("/customers?lang=en")
    assert r.cookies.get("patron_lang") == "en" or owner.cookies.get("patron_lang") == "en"
    assert "Customers" in owner.get("/customers").text
    assert "顾客" in owner.get("/customers?lang=zh").text
    assert '<html lang="zh-CN">' in owner.get("/customers").text


def test_owner_creates_a_store_and_bad_input_comes_back_with_the_field_error(owner):
    r = post_form(owner, "/admin/stores", {"code": "has space", "name": "", "timezone": "Mars"})
    assert r.status_code == 422
    errs = errors_in(r.text)
    assert set(errs) == {"code", "name", "timezone"}
    assert 'value="has space"' in r.text  # what was typed stays in the form
    r = post_form(owner, "/admin/stores", {"code": "GZ01", "name": "广州天河店", "city": "广州",
                                           "timezone": "Asia/Shanghai"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/stores?created=GZ01"
    page = owner.get(r.headers["location"]).text
    assert "广州天河店" in page and "GZ01" in page
    r = post_form(owner, "/admin/stores", {"code": "GZ01", "name": "again"})
    assert r.status_code == 422 and errors_in(r.text) == {"code": "已存在。"}


def test_owner_adds_products_and_channels(owner):
    r = post_form(owner, "/admin/products", {"sku": "MOCHA", "name": "摩卡",
                                             "list_price": "31.50"})
    assert r.status_code == 303
    assert "¥31.50" in owner.get("/admin/products").text
    r = post_form(owner, "/admin/products", {"sku": "BAD", "name": "x", "list_price": "-1"})
    assert r.status_code == 422 and "list_price" in errors_in(r.text)
    r = post_form(owner, "/admin/channels", {"code": "xiaohongshu", "name": "小红书",
                                             "kind": "platform"})
    assert r.status_code == 303
    assert "小红书" in owner.get("/admin/channels").text
    r = post_form(owner, "/admin/channels", {"code": "c2", "name": "x", "kind": "fax"})
    assert r.status_code == 422 and "kind" in errors_in(r.text)


def test_owner_creates_a_manager_and_an_api_key_shown_once_then_revokes_it(owner, org,
                                                                          db_url):
    r = post_form(owner, "/admin/users", {"username": "li.lei", "password": "short",
                                          "role": "manager"})
    assert r.status_code == 422
    assert set(errors_in(r.text)) == {"password"}
    r = post_form(owner, "/admin/users", {"username": "li.lei", "password": "long-enough-1",
                                          "role": "manager"})
    assert r.status_code == 422 and set(errors_in(r.text)) == {"store_ids"}
    r = post_form(owner, "/admin/users", {"username": "li.lei", "password": "long-enough-1",
                                          "role": "manager", "store_ids": [str(org["BJ01"])]})
    assert r.status_code == 303
    assert "li.lei" in owner.get(r.headers["location"]).text
    r = post_form(owner, "/admin/users", {"username": "li.lei", "password": "long-enough-1",
                                          "role": "owner"})
    assert r.status_code == 422 and errors_in(r.text) == {"username": "已存在。"}

    r = post_form(owner, "/admin/api-keys", {"name": "till 7", "role": "cashier",
                                             "store_ids": [str(org["SH01"])],
                                             "channel_codes": ["pos"]}, page="/admin/users")
    assert r.status_code == 201
    key = re.search(r'id="new-key">(ptn_[^<]+)<', r.text).group(1)
    assert key not in owner.get("/admin/users").text  # shown once
    assert owner.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"}
                     ).status_code == 200
    with UnitOfWork(get_engine(db_url)) as uow:
        key_id = uow.c.execute(select(api_keys.c.id).where(api_keys.c.name == "till 7")
                               ).scalar_one()
    r = post_form(owner, f"/admin/api-keys/{key_id}/revoke", {}, page="/admin/users")
    assert r.status_code == 303
    from patron.security.service import forget_cached_keys

    forget_cached_keys()
    assert owner.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"}
                     ).status_code == 401


def test_audit_log_lists_newest_first_and_filters(owner):
    post_form(owner, "/admin/stores", {"code": "A1", "name": "一号店"})
    post_form(owner, "/admin/stores", {"code": "A2", "name": "二号店"})
    page = owner.get("/admin/audit?action=store.").text
    actions = re.findall(r"<code>([a-z_.]+)</code>", page)
    assert actions[:2] == ["store.created", "store.created"]
    assert page.index("A2") < page.index("A1")
    assert "auth.login" not in actions
    assert "auth.login" in owner.get("/admin/audit?actor=owner").text
    assert "store.created" not in owner.get("/admin/audit?actor=nobody").text
    today = utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date().isoformat()
    assert "store.created" in owner.get(f"/admin/audit?date_from={today}&date_to={today}").text
    r = owner.get("/admin/audit?date_from=yesterday")
    assert r.status_code == 422 and errors_in(r.text) == {"date_from": "不是有效的日期。"}


def test_dashboard_shows_store_scoped_figures(client, users, db_url):
    # Just after local midnight: "today" whenever the test runs (up to a day ahead is accepted).
    sh = ZoneInfo("Asia/Shanghai")
    midnight = dt.datetime.combine(utcnow().astimezone(sh).date(), dt.time(0, 0, 1), sh)
    record(db_url, [
        order("D-1", at=midnight, identifiers={"phone": "13800001111"}),
        order("D-2", store="BJ01", at=midnight),
    ])
    login(client, "owner")
    page = client.get("/").text
    today = re.search(r'<div id="today">(.*?)</section>', page, re.S).group(1)
    assert "¥142.00" in today  # 2 x 28 + 16.50 - 1.50 = 71.00 per order, two orders
    assert re.search(r'class="orders">2<', today)
    # The trend chart's figures travel in a data attribute; scripts only from Patron itself.
    assert 'id="trend-chart"' in page and "data-chart=" in page
    assert re.findall(r"<script[^>]*>", page) == [
        f'<script src="{src}" defer>' for src in re.findall(r'<script src="(/static/[^"]+)"',
                                                            page)] != []
    client.cookies.clear()
    login(client, "manager")
    today = re.search(r'<div id="today">(.*?)</section>', client.get("/").text, re.S).group(1)
    assert "¥71.00" in today and re.search(r'class="orders">1<', today)


def test_ids_that_are_not_numbers_are_a_not_found_page(owner):
    for path in ["/customers/abc", "/imports/abc", "/imports/mappings/abc", "/imports/999"]:
        r = owner.get(path)
        assert r.status_code == 404, path
        assert "<html" in r.text and "未找到" in r.text, path
    r = post_form(owner, "/admin/api-keys/abc/revoke", {}, page="/admin/users")
    assert r.status_code == 404 and "<html" in r.text
