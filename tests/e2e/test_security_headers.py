"""Security headers, cookie flags and caching on pages and API answers (issue 6, section 6)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from patron.app import create_app
from tests.e2e.conftest import PASSWORD, login

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _common(r) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1]\
        .split(";")[0]


def test_pages_and_api_answers_carry_the_security_headers_and_are_not_cached(client, users):
    login(client, "owner")
    for path in ("/", "/customers", "/admin/users", "/login"):
        r = client.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 200, path
        _common(r)
        assert r.headers["cache-control"] == "no-store", path
        assert "strict-transport-security" not in r.headers  # plain http in the test
    for path in ("/api/v1/customers", "/api/v1/auth/me", "/api/v1/nothing-here"):
        r = client.get(path)
        _common(r)
        assert r.headers["cache-control"] == "no-store", path


def test_the_published_chart_library_stays_cacheable(client):
    r = client.get("/static/vendor/plotly.min.js")
    assert r.status_code == 200
    assert "max-age" in r.headers["cache-control"]
    _common(r)


def test_no_page_has_an_inline_script_so_the_policy_holds(client, users):
    """The policy forbids inline scripts: every script tag on every page has a same-origin
    src, and no element carries an on* handler."""
    import re

    login(client, "owner")
    for path in ("/", "/customers", "/analytics", "/dashboards", "/imports", "/admin/users",
                 "/admin/audit", "/admin/stores"):
        html = client.get(path).text
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+\s*=", html), path


def test_over_https_cookies_are_secure_and_hsts_is_sent(db_url, users):
    with TestClient(create_app(), base_url="https://patron.example") as client:
        r = client.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD})
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
        client.cookies.clear()
        page = client.get("/login")
        assert "Secure" in page.headers["set-cookie"]  # the sign-in form's CSRF cookie


def test_session_cookie_is_httponly_and_samesite_over_http(client, users):
    r = client.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("patron_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_phone_numbers_and_emails_never_reach_the_access_log(db_url):
    import logging

    from patron.security.logfilter import PersonalDataFilter, scrub

    assert (scrub("GET /customers?q=13812341234 HTTP/1.1")
            == "GET /customers?q=138****1234 HTTP/1.1")
    assert scrub("/lookup?phone=%2B8613812341234&x=1") == "/lookup?phone=138****1234&x=1"
    assert scrub("/lookup?phone=%2b8613812341234") == "/lookup?phone=138****1234"
    assert scrub("/lookup?phone=138%201234%205678") == "/lookup?phone=138****5678"
    assert scrub("/lookup?phone=%2B4915112345678") == "/lookup?phone=491******5678"
    assert scrub("/x?email=wang%40example.com") == "/x?email=w***@example.com"
    assert scrub("/x?id=11010519491231002X") == "/x?id=110***********002X"
    assert scrub("/api/v1/customers/138123412345678") == "/api/v1/customers/138123412345678"
    assert scrub("/api/v1/orders?page=2&limit=50") == "/api/v1/orders?page=2&limit=50"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", "/customers?q=13812341234", "1.1", 200),
                               None)
    PersonalDataFilter().filter(record)
    assert "13812341234" not in record.getMessage()


def test_the_customer_search_form_posts_so_the_phone_stays_out_of_the_url(client, users,
                                                                          pos_key):
    import re

    from tests.factories import order

    client.post("/api/v1/orders", json=order("SR-1", identifiers={"phone": "13812341234"}),
                headers={"Authorization": f"Bearer {pos_key}"})
    login(client, "owner")
    page = client.get("/customers").text
    assert re.search(r'<form method="post" action="/customers"[^>]*id="customer-search"', page)
    token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page).group(1)
    r = client.post("/customers", data={"q": "13812341234", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 200 and "138****1234" in r.text
    assert client.post("/customers", data={"q": "13812341234"}).status_code == 403  # no token
    r = client.post("/customers", data={"q": "", "store": "SH01", "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/customers?store=SH01"
