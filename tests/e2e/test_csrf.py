"""CSRF protection on every form (issue 6 §6), generated from the route table: every page
route that accepts a POST refuses one without the form's token, with a token of another
session, and from another site's Origin, and writes nothing."""

from __future__ import annotations

import re

import pytest

from patron.app import create_app
from patron.db import UnitOfWork, get_engine, metadata
from patron.security.routes import app_routes
from tests.e2e.conftest import login
from tests.security_figures import count

# Public POSTs whose authority is elsewhere: the signed token in an unsubscribe link.
NOT_FORMS = {"/messages/unsubscribe/{token}"}
# What a refused form still leaves: the trail, and the rate limits' request counters.
TRAIL = {"audit_log", "security_alerts", "sessions", "rate_limit_windows"}


def _snapshot(db_url):
    from sqlalchemy import select

    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return {t.name: uow.c.execute(select(t)).all() for t in metadata.sorted_tables
                if t.name not in TRAIL}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_form_refuses_a_missing_wrong_or_foreign_token(client, users, db_url):
    routes, _ = app_routes(create_app())
    forms = [r for r in routes if r.method == "POST" and not r.path.startswith("/api/")
             and r.path not in NOT_FORMS and not r.path.startswith("/m/")]
    assert len(forms) >= 25
    login(client, "owner")
    page = client.get("/admin/users").text
    good = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page).group(1)
    before = _snapshot(db_url)
    attempts = 0
    for r in forms:
        url = re.sub(r"\{[^}]+\}", "1", r.path)
        for data, headers in (({}, {}), ({"csrf_token": "0" * 64}, {}),
                              ({"csrf_token": good}, {"Origin": "https://evil.example"})):
            resp = client.post(url, data={**data, "name": "x", "username": "x"},
                               headers=headers, follow_redirects=False)
            attempts += 1
            assert resp.status_code in (403, 404), (url, data, headers, resp.status_code)
            if resp.status_code == 404:  # an unknown id answers before the form is read
                assert "{" in r.path, url
    assert _snapshot(db_url) == before
    count("injection_attempts", attempts)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sign_in_form_is_protected_against_login_csrf(client, users):
    r = client.post("/login", data={"username": "owner", "password": "correct-horse-9"},
                    follow_redirects=False)
    assert r.status_code == 403
    assert "patron_session" not in r.cookies
