"""Access control an owner manages (issue 6 §2): custom roles from the permission matrix and
their data scope, sessions ended on logout, password change and by an owner, re-authentication
before sensitive actions, the optional TOTP second factor, exports waiting for approval, rate
limits on sign-in and public routes."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
import time_machine

from patron.app import create_app
from patron.security.model import COARSE
from patron.security.routes import app_routes
from tests.e2e.conftest import PASSWORD, login
from tests.factories import order
from tests.security_figures import count

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _stale(minutes: int = 11):
    """The clock moved on past PATRON_REAUTH_MINUTES (10) since the sign-in."""
    return time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes),
                               tick=True)


# --- which routes need the password again ------------------------------------------------------

SENSITIVE_PERMISSIONS = {"personal_data.reveal", "export", "loyalty.adjust",
                         "stored_value.adjust"}
SENSITIVE_ROUTES = {
    ("POST", "/api/v1/api-keys"), ("POST", "/admin/api-keys"), ("POST", "/api/v1/users"),
    ("PATCH", "/api/v1/users/{user_id}"), ("POST", "/admin/users"), ("POST", "/api/v1/roles"),
    ("PATCH", "/api/v1/roles/{role_id}"), ("DELETE", "/api/v1/roles/{role_id}"),
    ("POST", "/admin/roles"), ("POST", "/admin/roles/{role_id}"), ("POST", "/api/v1/auth/totp"),
    ("POST", "/api/v1/export-requests/{request_id}/approve"),
    ("POST", "/admin/export-requests/{request_id}/approve"),
}


def test_every_sensitive_route_asks_for_the_password_again(db_url):
    """Reveal, export, role and user changes, key creation and points adjustments: every such
    route of the app, however many areas add, declares the re-authentication guard."""
    routes, _ = app_routes(create_app())
    sensitive = [r for r in routes if set(r.permissions) & SENSITIVE_PERMISSIONS
                 or (r.method, r.path) in SENSITIVE_ROUTES]
    assert len(sensitive) >= 20
    missing = [f"{r.method} {r.path} ({r.endpoint}): add dependencies=[RecentAuth] "
               "(patron.deps.RecentAuth)" for r in sensitive
               if "reauth" not in {k for k, _ in r.guards}]
    assert not missing, "\n".join(missing)
    known = {(r.method, r.path) for r in routes}
    assert SENSITIVE_ROUTES <= known, SENSITIVE_ROUTES - known


def test_sensitive_actions_need_a_recent_password_then_work(client, users, pos_key):
    headers = {"Authorization": f"Bearer {pos_key}"}
    r = client.post("/api/v1/orders", json=order("RA-1", identifiers={"phone": "13812340001"}),
                    headers=headers)
    customer_id = r.json()["customer_id"]
    login(client, "owner")
    attempts = {
        "reveal": lambda: client.post(f"/api/v1/customers/{customer_id}/reveal",
                                      json={"field": "phone"}),
        "export": lambda: client.get("/api/v1/exports/customers.csv"),
        "key": lambda: client.post("/api/v1/api-keys", json={"name": "k"}),
        "user": lambda: client.post("/api/v1/users", json={
            "username": "newbie", "password": "longenough1", "role": "cashier"}),
    }
    with _stale():
        for name, call in attempts.items():
            r = call()
            assert r.status_code == 403, (name, r.text)
            assert r.json()["error"]["code"] == "reauth_required", r.text
        assert client.post("/api/v1/auth/reauth",
                           json={"password": "wrong-one"}).status_code == 401
        assert client.post("/api/v1/auth/reauth", json={"password": PASSWORD}).status_code == 204
        for name, call in attempts.items():
            assert call().status_code in (200, 201), name
    # The till's key has no password to type: its adjustments are bound by its role instead.
    count("endpoint_role_checks", 2 * len(attempts))


def test_reauth_page_brings_the_user_back(client, users):
    from tests.e2e.test_web_pages import csrf as csrf_of  # the page's hidden token

    login(client, "owner")
    with _stale():
        page = client.get("/admin/users")
        r = client.post("/admin/api-keys", data={"name": "till", "role": "cashier",
                                                 "csrf_token": csrf_of(page.text)},
                        headers={"Referer": "http://testserver/admin/users"})
        assert r.status_code == 403 and 'action="/reauth"' in r.text
        r = client.post("/reauth", data={"password": PASSWORD, "next": "/admin/users",
                                         "csrf_token": csrf_of(r.text)},
                        follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/admin/users"
        page = client.get("/admin/users")
        r = client.post("/admin/api-keys", data={"name": "till", "role": "cashier",
                                                 "csrf_token": csrf_of(page.text)})
        assert r.status_code == 201 and "ptn_" in r.text


# --- sessions ---------------------------------------------------------------------------------

def test_password_change_ends_every_other_session(db_url, users):
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as a, TestClient(create_app()) as b:
        login(a, "analyst")
        login(b, "analyst")
        r = a.post("/api/v1/auth/password", json={"current_password": PASSWORD,
                                                   "new_password": "another-horse-7"})
        assert r.status_code == 204, r.text
        assert a.get("/api/v1/auth/me").status_code == 200  # the caller got a new session
        assert b.get("/api/v1/auth/me").status_code == 401  # the other one ended
        assert a.post("/api/v1/auth/password", json={
            "current_password": "wrong-wrong", "new_password": "x" * 10}).status_code == 401
        r = b.post("/api/v1/auth/login", json={"username": "analyst",
                                               "password": "another-horse-7"})
        assert r.status_code == 200


def test_an_owner_ends_a_users_sessions_and_disables_users(db_url, users):
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as owner, TestClient(create_app()) as staff:
        login(owner, "owner")
        login(staff, "manager")
        r = owner.post(f"/api/v1/users/{users['manager']}/sessions/end")
        assert r.status_code == 200 and r.json()["ended"] == 1
        assert staff.get("/api/v1/auth/me").status_code == 401
        login(staff, "manager")
        r = owner.patch(f"/api/v1/users/{users['manager']}", json={"active": False})
        assert r.status_code == 204
        assert staff.get("/api/v1/auth/me").status_code == 401
        r = staff.post("/api/v1/auth/login", json={"username": "manager", "password": PASSWORD})
        assert r.status_code == 401
        assert owner.patch(f"/api/v1/users/{users['owner']}",
                           json={"active": False}).status_code == 409  # not oneself


# --- custom roles and their scope -------------------------------------------------------------

def test_custom_roles_are_built_from_the_matrix_and_scoped(client, users, org, pos_key):
    h = {"Authorization": f"Bearer {pos_key}"}
    assert client.post("/api/v1/orders", json=order("CR-1", identifiers={
        "phone": "13812340011"}), headers=h).status_code == 201
    login(client, "owner")
    # A BJ01 order through the owner (the till's key is for SH01 only).
    assert client.post("/api/v1/orders", json=order("CR-2", store="BJ01", identifiers={
        "phone": "13812340012"})).status_code == 201
    r = client.post("/api/v1/roles", json={"name": "regional viewer",
                                           "permissions": ["view", "export"],
                                           "scope": "region", "region_id": org["north"]})
    assert r.status_code == 201, r.text
    role_id = r.json()["id"]
    assert client.post("/api/v1/roles", json={"name": "owner", "permissions": []}
                       ).status_code == 422  # a built-in name
    assert client.post("/api/v1/roles", json={"name": "x", "permissions": ["fly"]}
                       ).status_code == 422
    r = client.post("/api/v1/roles", json={"name": "scoped admin", "scope": "region",
                                           "region_id": org["north"],
                                           "permissions": ["manage_users"]})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["reason"] == \
        "manage_users_needs_all_stores"
    r = client.post("/api/v1/users", json={"username": "north", "password": "longenough1",
                                           "role": "analyst"})
    user_id = r.json()["id"]
    assert client.patch(f"/api/v1/users/{user_id}", json={"role_id": role_id}).status_code == 204
    matrix = {r["name"]: r for r in client.get("/api/v1/roles").json()}
    assert matrix["regional viewer"]["users"] == 1 and matrix["owner"]["builtin"]
    assert set(matrix["cashier"]["partial"]) >= {"view"}  # lookup only, not lists

    client.cookies.clear()
    r = client.post("/api/v1/auth/login", json={"username": "north", "password": "longenough1"})
    assert r.status_code == 200 and r.json()["role"] == "regional viewer"
    assert r.json()["store_ids"] == [org["BJ01"]]
    listed = client.get("/api/v1/customers").json()
    phones = {c["phone"] for c in listed["items"]}
    assert phones == {"139****0012"} or phones == {"138****0012"}, listed
    assert client.get("/api/v1/audit").status_code == 403  # not manage_users
    assert client.post("/api/v1/orders", json=order("CR-3", store="BJ01")).status_code == 403

    # The owner widens the role: it applies at the user's next request.
    login(client, "owner")
    assert client.patch(f"/api/v1/roles/{role_id}", json={"scope": "all"}).status_code == 204
    assert client.delete(f"/api/v1/roles/{role_id}").status_code == 409  # still in use
    client.cookies.clear()
    client.post("/api/v1/auth/login", json={"username": "north", "password": "longenough1"})
    assert client.get("/api/v1/auth/me").json()["store_ids"] is None
    assert client.get("/api/v1/customers").json()["total"] == 2


def test_the_matrix_page_creates_and_edits_roles(client, users, org):
    from tests.e2e.test_web_pages import csrf as csrf_of

    login(client, "owner")
    page = client.get("/admin/roles")
    assert page.status_code == 200 and 'id="role-matrix"' in page.text
    for coarse in COARSE:
        assert f'value="{coarse}"' in page.text
    r = client.post("/admin/roles", data={"name": "brand lead", "permissions": ["view",
                                                                                "adjust_points"],
                                          "scope": "brand", "brand_id": str(org["brand"]),
                                          "csrf_token": csrf_of(page.text)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/admin/roles")
    assert 'data-role="brand lead"' in page.text
    r = client.post("/admin/roles", data={"name": "no brand", "scope": "brand",
                                          "csrf_token": csrf_of(page.text)})
    assert r.status_code == 422 and 'data-field="brand_id"' in r.text
    login(client, "analyst")
    assert client.get("/admin/roles").status_code == 403


# --- second factor -----------------------------------------------------------------------------

def test_owners_can_add_a_totp_second_factor(client, users):
    login(client, "owner")
    r = client.post("/api/v1/auth/totp")
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    assert r.json()["uri"].startswith("otpauth://totp/")
    assert client.post("/api/v1/auth/totp/confirm", json={"code": "000000"}).status_code == 422
    code = pyotp.TOTP(secret).now()
    assert client.post("/api/v1/auth/totp/confirm", json={"code": code}).status_code == 204
    client.cookies.clear()
    r = client.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["error"]["code"] == "totp_required"
    r = client.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD,
                                                "totp": "123456"})
    assert r.status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "owner", "password": PASSWORD,
                                                "totp": pyotp.TOTP(secret).now()})
    assert r.status_code == 200
    login(client, "analyst")
    assert client.post("/api/v1/auth/totp").status_code == 403  # owners only


# --- exports over the limit --------------------------------------------------------------------

def test_large_exports_wait_for_an_owner(client, users, pos_key, monkeypatch, tmp_path):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_EXPORT_APPROVAL_ROWS", "2")
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    h = {"Authorization": f"Bearer {pos_key}"}
    for i in range(3):
        client.post("/api/v1/orders", json=order(f"EX-{i}", identifiers={
            "phone": f"1381234010{i}"}), headers=h)
    login(client, "analyst")
    r = client.get("/api/v1/exports/customers.csv")
    assert r.status_code == 403 and r.json()["error"]["code"] == "export_needs_approval", r.text
    assert r.json()["error"]["request_id"] >= 1
    assert client.get("/api/v1/exports/customers.csv").status_code == 403  # same request
    login(client, "owner")
    pending = client.get("/api/v1/export-requests", params={"status": "pending"}).json()
    assert [p["requester"] for p in pending] == ["analyst"] and pending[0]["rows"] == 3
    request_id = pending[0]["id"]
    assert client.get("/api/v1/exports/customers.csv").status_code == 200  # owners need none
    assert client.post(f"/api/v1/export-requests/{request_id}/approve").status_code == 204
    login(client, "analyst")
    r = client.get("/api/v1/exports/customers.csv")
    assert r.status_code == 200 and "requested by analyst" in r.text
    assert client.get("/api/v1/exports/customers.csv").status_code == 403  # used up
    get_settings.cache_clear()


# --- rate limits -------------------------------------------------------------------------------

def test_sign_in_and_public_routes_are_rate_limited(client, users, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_RATE_LIMIT_PER_MINUTE", "5")
    get_settings.cache_clear()
    statuses = [client.post("/api/v1/auth/login", json={"username": "nobody",
                                                         "password": "x"}).status_code
                for _ in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    # Another route group has its own budget: the unsubscribe links.
    codes = [client.get("/messages/unsubscribe/not-a-token").status_code for _ in range(7)]
    assert codes[:5] == [404] * 5 and codes[5:] == [429, 429]
    get_settings.cache_clear()
