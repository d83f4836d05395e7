"""Tags over HTTP: manual tags on one customer and in bulk (ids, a segment, a pasted list),
counts and history, audit entries, store scope; rule tags kept current by orders, returns and
the analytics refresh."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.security.tables import audit_log
from patron.tags.tables import tag_events
from tests.e2e.conftest import login
from tests.factories import order


def _buy(client, ext: str, phone: str, *, store: str = "SH01", price: str = "28.00",
         days_ago: int = 1) -> dict:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    r = client.post("/api/v1/orders", json=order(
        ext, store=store, at=at, identifiers={"phone": phone},
        lines=[{"sku": "LATTE", "category": "coffee", "quantity": "1", "unit_price": price}]))
    assert r.status_code == 201, r.text
    return r.json()


def _customer_id(client, phone: str) -> int:
    r = client.get("/api/v1/customers", params={"q": phone})
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    return int(item["id"])


def _audit(db_url: str, prefix: str) -> list[tuple[str, dict]]:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return [(r.action, r.details) for r in uow.c.execute(
            select(audit_log.c.action, audit_log.c.details)
            .where(audit_log.c.action.like(f"{prefix}%")).order_by(audit_log.c.id))]


def test_manual_tags_one_customer_and_in_bulk(owner, org, db_url) -> None:
    for i in range(4):
        _buy(owner, f"T{i}", f"1380000000{i}")
    ids = [_customer_id(owner, f"1380000000{i}") for i in range(4)]
    r = owner.post("/api/v1/tags", json={"code": "student", "name": "学生"})
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "manual" and r.json()["customers"] == 0
    # one customer
    r = owner.post("/api/v1/tags/student/apply", json={"customer_ids": [ids[0]],
                                                       "note": "showed a card"})
    assert r.json()["changed"] == 1
    assert owner.get(f"/api/v1/customers/{ids[0]}/tags").json()["items"] == ["student"]
    # a pasted list: a phone in another format, a member code that matches nobody
    r = owner.post("/api/v1/tags/student/apply",
                   json={"pasted": "138 0000 0001\n+8613800000002\nNOPE-1\n13800000000"})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == 2  # the first was tagged already
    assert r.json()["unmatched"] == ["NOPE-1"]
    # a saved segment's members
    seg = owner.post("/api/v1/segments", json={"name": "all", "definition": {
        "conditions": [{"type": "purchases", "measure": "orders", "op": "gte",
                        "value": 1}]}}).json()
    assert owner.post("/api/v1/tags/student/apply",
                      json={"segment_id": seg["id"]}).json()["changed"] == 1
    listed = {t["code"]: t["customers"] for t in owner.get("/api/v1/tags").json()["items"]}
    assert listed == {"student": 4}
    # remove in bulk
    r = owner.post("/api/v1/tags/student/apply", json={"action": "remove",
                                                       "customer_ids": ids[:2]})
    assert r.json()["changed"] == 2
    tag = owner.get("/api/v1/tags/student").json()
    assert tag["customers"] == 2
    events = tag["events"]
    assert [(e["action"], e["source"]) for e in events][:2] == [("removed", "bulk")] * 2
    first = [e for e in events if e["customer_id"] == ids[0]]
    assert [(e["action"], e["note"], e["actor"]) for e in reversed(first)] == [
        ("added", "showed a card", "owner"), ("removed", None, "owner")]
    assert [a for a, _ in _audit(db_url, "tag.")] == [
        "tag.created", "tag.applied", "tag.applied", "tag.applied", "tag.removed"]


def test_an_unknown_or_invisible_customer_changes_nothing(owner, client, users, org,
                                                          db_url) -> None:
    _buy(owner, "A1", "13800000011", store="SH01")
    _buy(owner, "B1", "13900000011", store="BJ01")
    sh, bj = _customer_id(owner, "13800000011"), _customer_id(owner, "13900000011")
    owner.post("/api/v1/tags", json={"code": "vip", "name": "VIP"})
    login(client, "manager")  # SH01 only
    r = client.post("/api/v1/tags/vip/apply", json={"customer_ids": [sh, bj]})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "customer_ids"
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert uow.c.execute(select(tag_events)).first() is None
    assert client.post("/api/v1/tags/vip/apply", json={"customer_ids": [sh]}).json()[
        "changed"] == 1
    # the manager's count is of their customers; managers do not create tags
    login(client, "owner")
    client.post("/api/v1/tags/vip/apply", json={"customer_ids": [bj]})
    login(client, "manager")
    assert client.get("/api/v1/tags").json()["items"][0]["customers"] == 1
    assert client.post("/api/v1/tags", json={"code": "x", "name": "x"}).status_code == 403
    pasted = client.post("/api/v1/tags/vip/apply", json={"action": "remove",
                                                         "pasted": "13900000011"}).json()
    assert pasted["unmatched"] == ["13900000011"] and pasted["changed"] == 0


def test_rule_tags_follow_orders_and_returns(owner, org, db_url) -> None:
    rule = {"conditions": [{"type": "purchases", "measure": "spend", "op": "gte",
                            "value": 100}]}
    _buy(owner, "R0", "13700000000", price="150.00")
    r = owner.post("/api/v1/tags", json={"code": "big", "name": "Big spender",
                                         "definition": rule})
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "rule" and r.json()["customers"] == 1 and r.json()["added"] == 1
    # an order makes another customer qualify: the hook tags them in the same transaction
    _buy(owner, "R1", "13700000001", price="40.00")
    assert owner.get("/api/v1/tags/big").json()["customers"] == 1
    _buy(owner, "R2", "13700000001", price="70.00")
    assert owner.get("/api/v1/tags/big").json()["customers"] == 2
    # a return takes them below the rule again
    r = owner.post("/api/v1/returns", json={
        "external_id": "RET-1", "channel": "pos", "store": "SH01", "order_external_id": "R2",
        "returned_at": dt.datetime.now(dt.UTC).isoformat(), "full": True})
    assert r.status_code in (200, 201), r.text
    tag = owner.get("/api/v1/tags/big").json()
    assert tag["customers"] == 1
    sources = [(e["action"], e["source"], e["note"]) for e in reversed(tag["events"])]
    assert sources == [("added", "rule", "rule created"), ("added", "rule", "order"),
                       ("removed", "rule", "return")]
    # nobody adds or removes a rule tag by hand
    r = owner.post("/api/v1/tags/big/apply", json={"customer_ids": [
        _customer_id(owner, "13700000000")]})
    assert r.status_code == 409


def test_rule_tags_follow_the_analytics_refresh(owner, org, db_url) -> None:
    from patron.analytics import jobs
    from patron.security.model import SYSTEM

    _buy(owner, "L0", "13600000000", days_ago=3)
    rule = {"conditions": [{"type": "lifecycle", "op": "in", "stages": ["new"]}]}
    assert owner.post("/api/v1/tags", json={"code": "newbie", "name": "New",
                                            "definition": rule}).json()["customers"] == 0
    seg = owner.post("/api/v1/segments", json={"name": "buyers", "definition": {
        "conditions": [{"type": "recency", "op": "lte", "value": 30}]}}).json()
    engine = get_engine(db_url)
    with UnitOfWork(engine) as uow:
        job, _created = jobs.request_refresh(uow=uow, actor=SYSTEM)
    done = jobs.run_job(engine, job["id"], SYSTEM)
    assert done["status"] == "done", done
    assert owner.get("/api/v1/tags/newbie").json()["customers"] == 1
    seg = owner.get(f"/api/v1/segments/{seg['id']}").json()
    assert [h["customers"] for h in seg["history"]] == [1]
    assert owner.get("/api/v1/tags/newbie").json()["history"][0]["customers"] == 1
