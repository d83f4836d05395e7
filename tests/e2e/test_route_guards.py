"""Every route of the app, API and pages alike, declares who may call it, and keeps to it.

The route table is read from the application itself (``patron.security.routes.app_routes``),
so a route added by any area is checked without anyone editing this file: a route without a
declared guard fails the first test with the line to add.
"""

from __future__ import annotations

import re

import pytest

from patron.app import create_app
from patron.security.model import COARSE_OF, PERMISSIONS
from patron.security.routes import RouteInfo, app_routes
from tests.e2e.conftest import login
from tests.security_figures import count

# Routes that are not endpoints of Patron's own: FastAPI's documentation and the static files.
FRAMEWORK_ROUTES = {"/api/v1/openapi.json", "/api/docs", "/docs/oauth2-redirect", "/static"}
ROLES = ("owner", "analyst", "manager", "cashier")
KNOWN_PERMISSIONS = frozenset().union(*PERMISSIONS.values())

HOW_TO_GUARD = """
{method} {path} (defined in {endpoint}) declares no guard. Every route must say who may call it:
  - an API route: a parameter `actor: Annotated[Actor, Depends(require("<area>.<verb>"))]`
    (patron.deps.require), the permission added to the roles that need it in
    patron/security/model.py (PERMISSIONS) and mapped to one of the editable permissions in
    COARSE (view, create, edit, delete, export, reveal, adjust_points, manage_rules,
    manage_users);
  - a page: `actor: Annotated[Actor, Depends(need("<area>.<verb>"))]` (patron.web.render.need);
  - a member self-service page: the `MemberDep` parameter (patron.selfservice.pages);
  - deliberately open to any signed-in caller: `Depends(signed_in_only("why"))`;
  - deliberately public: `dependencies=[Depends(public("why"))]` (patron.deps.public), and the
    route protects itself (a signature, a token, a rate limit).
"""


def _routes() -> tuple[list[RouteInfo], list[str]]:
    return app_routes(create_app())


def test_every_route_declares_its_guard():
    routes, others = _routes()
    assert len(routes) > 200
    missing = [HOW_TO_GUARD.format(method=r.method, path=r.path, endpoint=r.endpoint)
               for r in routes if not r.guards]
    assert not missing, "\n".join(missing)
    unexpected = sorted(set(others) - FRAMEWORK_ROUTES)
    assert not unexpected, (
        f"routes outside FastAPI's route classes (mounts, plain Starlette routes): {unexpected}. "
        "Make them FastAPI routes with a declared guard, or add them to FRAMEWORK_ROUTES with "
        "the reason they carry no data.")


def test_every_declared_permission_exists_and_maps_to_an_editable_permission():
    routes, _ = _routes()
    problems = []
    for r in routes:
        for perm in r.permissions:
            if perm not in KNOWN_PERMISSIONS:
                problems.append(f"{r.method} {r.path} requires {perm!r}, which no role holds: "
                                "add it to PERMISSIONS in patron/security/model.py")
            if perm not in COARSE_OF:
                problems.append(f"{r.method} {r.path} requires {perm!r}, which is not mapped to "
                                "an editable permission: add it to COARSE in "
                                "patron/security/model.py")
    assert not problems, "\n".join(problems)


def test_public_routes_are_few_and_named():
    routes, _ = _routes()
    public = sorted({(r.method, r.path) for r in routes if ("public" in {k for k, _ in r.guards})
                     and not r.permissions})
    # Sign-in (staff and members), sign-out, unsubscribe links, the SMS gateway's signed
    # replies, the Plotly library and the liveness probe. A new one must be added here on
    # purpose.
    assert public == sorted([
        ("GET", "/healthz"), ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/messages/inbound/sms"), ("GET", "/messages/unsubscribe/{token}"),
        ("POST", "/messages/unsubscribe/{token}"), ("GET", "/login"), ("POST", "/login"),
        ("GET", "/logout"), ("POST", "/logout"), ("GET", "/static/vendor/plotly.min.js"),
        ("GET", "/m"), ("GET", "/m/"), ("GET", "/m/login"), ("POST", "/m/login"),
        ("POST", "/m/verify"), ("POST", "/m/logout"),
    ])


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _is_page(route: RouteInfo) -> bool:
    return not route.path.startswith("/api/")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_anonymous_callers_are_refused_by_every_guarded_route(client, users):
    routes, _ = _routes()
    checked = 0
    for r in routes:
        kinds = {k for k, _ in r.guards}
        if "public" in kinds and not r.permissions:
            continue
        resp = client.request(r.method, _concrete(r.path), json={}, follow_redirects=False,
                              headers={"Accept": "text/html"} if _is_page(r) else {})
        if _is_page(r):
            assert resp.status_code == 303 and "/login" in resp.headers["location"] or (
                "member" in kinds and resp.status_code in (303, 401)), (r, resp.status_code)
        else:
            assert resp.status_code == 401, (r.method, r.path, resp.status_code, resp.text[:200])
        checked += 1
    count("endpoint_role_checks", checked)
    assert checked > 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_refused_every_route_whose_permission_it_lacks(client, users, role):
    """The other half (a role that holds the permission gets past the guard) is what the
    feature tests and the fuzzing test show; here: never past it without the permission."""
    login(client, role)
    routes, _ = _routes()
    refused = allowed = 0
    for r in routes:
        if not r.permissions:
            continue
        lacks = [p for p in r.permissions if p not in PERMISSIONS[role]]
        if not lacks:
            allowed += 1
            continue
        resp = client.request(r.method, _concrete(r.path), json={}, follow_redirects=False,
                              headers={"Accept": "text/html"} if _is_page(r) else {})
        assert resp.status_code == 403, (role, r.method, r.path, lacks, resp.status_code,
                                         resp.text[:200])
        refused += 1
    count("endpoint_role_checks", refused)
    assert refused + allowed > 150
    if role == "owner":
        assert refused == 0
    else:
        assert refused > 10
