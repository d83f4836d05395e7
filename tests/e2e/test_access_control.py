"""Every endpoint requires authentication and checks the role; store scope holds for writes."""

import re

import pytest

from patron.app import create_app
from tests.e2e.conftest import login
from tests.factories import order

PUBLIC = {("POST", "/api/v1/auth/login")}


def api_routes():
    out = []
    for path, ops in create_app().openapi()["paths"].items():
        for method in ops:
            if path.startswith("/api/v1/"):
                out.append((method.upper(), path))
    return out


def concrete(path):
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_api_endpoint_refuses_anonymous_callers(client):
    routes = api_routes()
    assert len(routes) > 10
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        r = client.request(method, concrete(path), json={})
        assert r.status_code == 401, (method, path, r.status_code, r.text[:200])


# (method, path, body, {role: expected status})
TABLE = [
    ("GET", "/api/v1/audit", None, {"owner": 200, "analyst": 403, "manager": 403,
                                    "cashier": 403}),
    ("POST", "/api/v1/users", {"username": "x1", "password": "longenough1", "role": "cashier"},
     {"owner": 201, "analyst": 403, "manager": 403, "cashier": 403}),
    ("POST", "/api/v1/api-keys", {"name": "k"},
     {"owner": 201, "analyst": 403, "manager": 403, "cashier": 403}),
    ("POST", "/api/v1/stores", {"code": "N1", "name": "n"},
     {"owner": 201, "analyst": 403, "manager": 403, "cashier": 403}),
    ("POST", "/api/v1/orders", "order",
     {"owner": 201, "analyst": 403, "manager": 201, "cashier": 201}),
    ("GET", "/api/v1/auth/me", None, {"owner": 200, "analyst": 200, "manager": 200,
                                      "cashier": 200}),
]


@pytest.mark.parametrize("role", ["owner", "analyst", "manager", "cashier"])
def test_role_table(client, users, role):
    login(client, role)
    for i, (method, path, body, expected) in enumerate(TABLE):
        if body == "order":
            body = order(f"RT-{role}-{i}")
        if isinstance(body, dict) and "username" in body:
            body = {**body, "username": f"u{role}{i}"}
        if isinstance(body, dict) and "code" in body:
            body = {**body, "code": f"N{role}{i}"[:32]}
        r = client.request(method, path, json=body)
        assert r.status_code == expected[role], (role, method, path, r.text[:300])


def test_store_manager_cannot_record_orders_for_another_store(client, users):
    login(client, "manager")
    r = client.post("/api/v1/orders", json=order("M-1", store="BJ01"))
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["reason"] == "store_out_of_scope"


def test_logout_ends_the_session(client, users):
    login(client, "owner")
    assert client.get("/api/v1/auth/me").status_code == 200
    assert client.post("/api/v1/auth/logout").status_code == 204
    client.cookies.clear()
    assert client.get("/api/v1/auth/me").status_code == 401


def test_stolen_cookie_stops_working_after_logout(client, users):
    login(client, "owner")
    token = client.cookies.get("patron_session")
    client.post("/api/v1/auth/logout")
    client.cookies.set("patron_session", token)
    assert client.get("/api/v1/auth/me").status_code == 401


def test_repeated_failed_logins_lock_the_account(client, users, monkeypatch):
    from patron.security import service

    monkeypatch.setattr(service.time, "sleep", lambda s: None)
    statuses = [client.post("/api/v1/auth/login", json={"username": "analyst",
                                                         "password": "wrong-pass"}).status_code
                for _ in range(8)]
    assert statuses[:7] == [401] * 7
    assert statuses[7] == 429
    r = client.post("/api/v1/auth/login", json={"username": "analyst",
                                                "password": "correct-horse-9"})
    assert r.status_code == 429  # locked even with the right password


def test_revoked_api_key_is_refused(client, pos_key, users):
    h = {"Authorization": f"Bearer {pos_key}"}
    assert client.post("/api/v1/orders", json=order("K-1"), headers=h).status_code == 201
    login(client, "owner")
    keys = client.get("/api/v1/audit", params={"action": "api_key.created"}).json()["items"]
    key_id = int(keys[0]["entity_id"])
    assert client.delete(f"/api/v1/api-keys/{key_id}").status_code == 204
    client.cookies.clear()
    assert client.post("/api/v1/orders", json=order("K-2"), headers=h).status_code == 401


def test_passwords_are_stored_as_argon2_hashes(db_url, users):
    from sqlalchemy import select

    from patron.db import UnitOfWork, get_engine
    from patron.security.tables import users as users_table

    with UnitOfWork(get_engine(db_url)) as uow:
        hashes = uow.c.execute(select(users_table.c.password_hash)).scalars().all()
    assert all(h.startswith("$argon2id$") for h in hashes)
