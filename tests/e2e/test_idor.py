"""Nothing outside an actor's data scope can be read or changed, ids guessed in URLs included
(issue 6 §2). Generated from the route table: every route with an id of store-scoped data in
its path is called by every store-scoped actor (built-in store manager and cashier, and custom
roles scoped to their own stores, a region and a brand) with the id of a victim who only ever
bought at a store none of them may see. Reads must answer 403 or 404, writes too, and the
database must be exactly as before. The attempts are counted in the suite's security figures.

A new route with a path parameter this file does not know fails the first test, saying where
to classify it: VICTIM (store-scoped data: add how to find the victim's id) or GLOBAL
(configuration every store shares).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from sqlalchemy import select

from patron.app import create_app
from patron.db import UnitOfWork, get_engine, metadata
from patron.org import service as org_service
from patron.security import roles as roles_service
from patron.security import service as security
from patron.security.model import COARSE, SYSTEM
from patron.security.routes import RouteInfo, app_routes
from tests.e2e.conftest import PASSWORD
from tests.factories import order
from tests.security_figures import count

VICTIM_PHONE = "13899990001"
# (path fragment, parameter) -> key of the victim's ids; a plain parameter name applies to
# every path. Store-scoped data: customers, their orders, merges, members and everything a
# member holds.
VICTIM: dict[tuple[str, str] | str, str] = {
    "customer_id": "customer", "merge_id": "merge", "member_id": "member",
    ("/loyalty/holds/", "hold_id"): "loyalty_hold",
    ("/stored-value/holds/", "hold_id"): "sv_hold",
    ("/checkout/holds/", "hold_id"): "checkout_hold",
    "spend_id": "spend", "topup_id": "topup", "redemption_id": "redemption",
    "coupon_id": "coupon", "operation_id": "coupon_operation", "checkout_id": "checkout",
    ("/coupons/codes/", "code"): "coupon_code", "message_id": "message", "job_id": "job",
}
# Configuration every store shares (programs, templates, catalog items, settings) and the
# owners' own objects (users, keys, roles, webhooks, alerts): not store-scoped.
GLOBAL: dict[str, str] = {
    "code": "BB", "segment_id": "1", "tier_code": "GOLD", "template_id": "template",
    "item_id": "item", "tier": "GOLD",
    "field_id": "1", "mapping_id": "1", "endpoint_id": "1", "delivery_id": "1",
    "promotion_id": "1", "key_id": "1", "user_id": "1", "role_id": "1", "request_id": "1",
    "alert_id": "1", "segment": "champions", "fmt": "csv", "token": "x", "decision": "x",
    # A simulation run is read by the user who asked for it only (404 to anyone else).
    "run_id": "1",
    # The segment builder's pages name a saved segment's id raw_id (a definition, not data).
    "raw_id": "1",
}
# Till lookups a cashier needs for members of any store of the brand (a member enrolled at
# one store buys at another): they answer, but only what the till needs.
TILL_LOOKUPS = {
    ("GET", "/api/v1/loyalty/members/{member_id}/balance"),
    ("GET", "/api/v1/coupons/members/{member_id}"),
    ("GET", "/api/v1/coupons/codes/{code}"),
    ("GET", "/api/v1/stored-value/members/{member_id}"),
}
# Writes a till makes for a member of any store of the brand: the member tells whichever till
# they stand at to stop (or allow) messages. The consent's history names the till's actor.
TILL_WRITES = {("POST", "/api/v1/loyalty/members/{member_id}/consents")}
TILL_WRITE_TABLES = {"loyalty_consents"}
# Tables a refused request may still write to: the trail of the refusal itself.
TRAIL = {"audit_log", "audit_chain_head", "security_alerts", "sessions"}
SCOPED_ACTORS = ("manager", "cashier", "own_stores_role", "region_role", "brand_role")


def _victim_key(route: RouteInfo, param: str) -> str | None:
    for key, name in VICTIM.items():
        if isinstance(key, tuple) and key[0] in route.path and key[1] == param:
            return name
    return VICTIM.get(param) if isinstance(VICTIM.get(param), str) else None


def test_every_path_parameter_is_classified():
    routes, _ = app_routes(create_app())
    params = {(r.path, p) for r in routes for p in r.path_params}
    assert len(params) > 40
    unknown = sorted(f"{path}: {p}" for path, p in params
                     if p not in GLOBAL and _victim_key(
                         RouteInfo("GET", path, (), True, ""), p) is None)
    assert not unknown, ("path parameters neither VICTIM (store-scoped data) nor GLOBAL in "
                         "tests/e2e/test_idor.py:\n" + "\n".join(unknown))


# --- the world: a victim at GZ01, attackers elsewhere ---------------------------------------

@pytest.fixture
def world(db_url, users, org) -> dict[str, Any]:
    from patron.coupons import service as coupons
    from patron.coupons.schemas import IssueIn
    from patron.coupons.schemas import RedeemIn as CouponRedeemIn
    from patron.customers.service import merge_customers
    from patron.customers.tables import customers
    from patron.loyalty import service as loyalty
    from patron.loyalty.schemas import AdjustIn, HoldIn
    from patron.orders.service import record_orders
    from patron.rewards import service as rewards
    from patron.storedvalue import service as storedvalue
    from patron.storedvalue.schemas import HoldIn as SvHoldIn
    from patron.storedvalue.schemas import SettingsIn, SpendIn, TopUpIn
    from tests.coupon_factories import make_template
    from tests.loyalty_factories import START, enrol, make_program
    from tests.rewards_factories import add_item

    ids: dict[str, Any] = {}
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(get_engine(db_url)) as uow:
        south = org_service.create_region(uow=uow, actor=SYSTEM, code="SOUTH", name="华南")
        org_service.create_store(uow=uow, actor=SYSTEM, code="GZ01", name="广州店", city="广州",
                         brand_id=_brand(uow), region_id=south)
        b2 = org_service.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Tea Time")
        org_service.create_store(uow=uow, actor=SYSTEM, code="SZ01", name="深圳店", city="深圳",
                              brand_id=b2, region_id=south)
        everything = [c for c in COARSE if c != "manage_users"]
        for name, scope, extra in (("own_stores_role", "own_stores", {}),
                                   ("region_role", "region", {"region_id": _region(uow)}),
                                   ("brand_role", "brand", {"brand_id": b2})):
            role_id = roles_service.create_role(uow=uow, actor=SYSTEM, name=name,
                                                permissions=everything, scope=scope, **extra)
            uid = security.create_user(uow=uow, actor=SYSTEM, username=name, password=PASSWORD,
                                       role="analyst",
                                       store_ids=[_sh01(uow)] if scope == "own_stores" else [])
            security.update_user(uow=uow, actor=SYSTEM, user_id=uid, role_id=role_id)
        # The victim: bought only at GZ01, member of BB enrolled there, holding everything.
        make_program(uow, now=START)
        record_orders(uow=uow, orders_in=[order("V-1", store="GZ01", at=now - dt.timedelta(
            days=2), identifiers={"phone": VICTIM_PHONE})], source="api", actor=SYSTEM)
        record_orders(uow=uow, orders_in=[order("V-2", store="GZ01", at=now - dt.timedelta(
            days=1), identifiers={"phone": "13899990002"})], source="api", actor=SYSTEM)
        cust = {r.phone: int(r.id) for r in uow.c.execute(select(customers.c.id,
                                                                 customers.c.phone))}
        victim_customer = next(v for k, v in cust.items() if k and k.endswith("99990001"))
        other = next(v for k, v in cust.items() if k and k.endswith("99990002"))
        ids["merge"] = merge_customers(uow=uow, survivor_id=victim_customer, merged_id=other,
                                       reason="same person", actor=SYSTEM)
        ids["customer"] = min(victim_customer, other)
        member = enrol(uow, VICTIM_PHONE, store="GZ01", now=START)
        ids["member"] = member["id"]
        loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], now=now,
                       body=AdjustIn(idempotency_key="v-seed", points=5000, reason="seed",
                                     store="GZ01"))
        ids["loyalty_hold"] = loyalty.hold(uow=uow, actor=SYSTEM, member_id=member["id"],
                                           body=HoldIn(idempotency_key="v-hold", points=100,
                                                       store="GZ01"), now=now)["id"]
        storedvalue.configure(uow=uow, actor=SYSTEM, code="BB",
                              body=SettingsIn(spend_order="proportional", hold_minutes=60),
                              now=now)
        ids["topup"] = storedvalue.topup(uow=uow, actor=SYSTEM, member_id=member["id"], now=now,
                                         body=TopUpIn.model_validate({
                                             "idempotency_key": "v-top", "amount": "500",
                                             "store": "GZ01"}))["id"]
        ids["spend"] = storedvalue.spend(uow=uow, actor=SYSTEM, member_id=member["id"], now=now,
                                         body=SpendIn.model_validate({
                                             "idempotency_key": "v-spend", "amount": "10",
                                             "store": "GZ01"}))["id"]
        ids["sv_hold"] = storedvalue.hold(uow=uow, actor=SYSTEM, member_id=member["id"],
                                          now=now, body=SvHoldIn.model_validate({
                                              "idempotency_key": "v-svh", "amount": "10",
                                              "store": "GZ01"}))["id"]
        template = make_template(uow, "V10")
        ids["template"] = template["id"]
        issued = coupons.issue(uow=uow, actor=SYSTEM, template_id=template["id"],
                               body=IssueIn(idempotency_key="v-issue", member_ids=[member["id"]],
                                            quantity=2, store="GZ01"))
        codes = [c["code"] for c in issued["coupons"]]
        ids["coupon"] = issued["coupons"][0]["id"]
        ids["coupon_code"] = codes[1]
        ids["coupon_operation"] = coupons.redeem(uow=uow, actor=SYSTEM, body=CouponRedeemIn
                                                 .model_validate({
                                                     "idempotency_key": "v-red",
                                                     "member_id": member["id"],
                                                     "codes": [codes[0]], "basket": {
                                                         "lines": [{"sku": "LATTE",
                                                                    "quantity": "2",
                                                                    "unit_price": "28.00"}],
                                                         "store": "GZ01", "channel": "pos"}}),
                                                 )["id"]
        item = add_item(uow, "VMUG")
        ids["item"] = item["id"]
        from patron.rewards.schemas import RedemptionIn

        ids["redemption"] = rewards.redeem(uow=uow, actor=SYSTEM, item_id=item["id"], now=now,
                                           body=RedemptionIn.model_validate({
                                               "idempotency_key": "v-rw",
                                               "member_id": member["id"],
                                               "store": "GZ01"}))["id"]
    return ids


def _brand(uow: UnitOfWork) -> int:
    from patron.org.tables import brands

    return int(uow.c.execute(select(brands.c.id).where(brands.c.code == "B1")).scalar_one())


def _region(uow: UnitOfWork) -> int:
    from patron.org.tables import regions

    return int(uow.c.execute(select(regions.c.id).where(regions.c.code == "EAST")).scalar_one())


def _sh01(uow: UnitOfWork) -> int:
    from patron.org.tables import stores

    return int(uow.c.execute(select(stores.c.id).where(stores.c.code == "SH01")).scalar_one())


def _snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return {t.name: sorted(tuple(str(v) for v in r) for r in uow.c.execute(select(t)))
                for t in metadata.sorted_tables if t.name not in TRAIL}


def _sessions(app: Any) -> dict[str, str]:
    from fastapi.testclient import TestClient

    out = {}
    with TestClient(app) as client:
        for name in SCOPED_ACTORS:
            client.cookies.clear()
            r = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
            out[name] = r.cookies["patron_session"]
    return out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_scoped_actor_reads_or_changes_anything_outside_its_scope(db_url, world):
    app = create_app()
    routes, _ = app_routes(app)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    tokens = _sessions(app)
    before = _snapshot(db_url)
    leaks: list[str] = []
    attempts = 0
    attacked = set()
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        for route in routes:
            victims = {p: _victim_key(route, p) for p in route.path_params}
            scoped = {p: k for p, k in victims.items() if k is not None}
            if not scoped or "permission" not in {k for k, _ in route.guards}:
                continue
            values = {p: str(world.get(k, "999999")) for p, k in scoped.items()}
            for p in route.path_params:
                if p not in values:
                    values[p] = str(world.get(GLOBAL[p], GLOBAL[p]))
            url = route.path
            for p, v in values.items():
                url = url.replace("{" + p + "}", v)
            bodies = _bodies(schema, route, values)
            for actor in SCOPED_ACTORS:
                client.cookies.clear()
                client.cookies.set("patron_session", tokens[actor])
                for body in bodies:
                    r = client.request(route.method, url, json=body, follow_redirects=False,
                                       headers={"Accept": "text/html"}
                                       if not route.path.startswith("/api/") else {})
                    attempts += 1
                    attacked.add((route.method, route.path))
                    allowed = TILL_LOOKUPS | (TILL_WRITES if actor == "cashier" else set())
                    if r.status_code < 300 and (route.method, route.path) not in allowed:
                        leaks.append(f"{actor} {route.method} {url} -> {r.status_code} "
                                     f"{r.text[:200]}")
                    if r.status_code >= 500:
                        leaks.append(f"{actor} {route.method} {url} -> {r.status_code}")
    count("idor_attempts", attempts)
    assert not leaks, f"{len(leaks)} of {attempts} attempts got through:\n" + "\n".join(leaks)
    after = _snapshot(db_url)
    changed = sorted(t for t in before if before[t] != after[t] and t not in TILL_WRITE_TABLES)
    assert not changed, f"refused requests changed tables: {changed}"
    assert len(attacked) >= 40 and attempts >= 200, (len(attacked), attempts)


def _bodies(schema: Any, route: RouteInfo, path_values: dict[str, str]) -> list[Any]:
    """For writes: an empty body and a few bodies that follow the OpenAPI document (so that
    the request reaches the service's scope check rather than stopping at validation)."""
    if route.method in ("GET", "DELETE") or not route.path.startswith("/api/"):
        return [None] if route.method in ("GET", "DELETE") else [{}]
    try:
        operation = schema[route.path][route.method]
    except (KeyError, LookupError):
        return [{}]
    found: list[Any] = [{}]

    @settings(max_examples=3, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(path_parameters=path_values))
    def collect(case: Any) -> None:
        if isinstance(case.body, dict):
            found.append(case.body)

    try:
        collect()
    except Unsatisfiable:
        pass
    return found[:4]
