"""Segments over HTTP: bad definitions refused with 422 naming the bad part, live preview, saved
segments (create, read, update, delete) with audit entries, export of members, store scope."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from sqlalchemy import select

from patron.db import UnitOfWork, get_engine
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.factories import order

ANY_ORDER = {"type": "purchases", "measure": "orders", "op": "gte", "value": 1}


def _buy(client, n: int, store: str, phone: str, days_ago: int = 1) -> None:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    r = client.post("/api/v1/orders", json=order(f"S-{store}-{n}", store=store, at=at,
                                                 identifiers={"phone": phone}))
    assert r.status_code == 201, r.text


@pytest.fixture
def shoppers(owner):  # type: ignore[no-untyped-def]
    for i in range(3):
        _buy(owner, i, "SH01", f"1381000000{i}")
    for i in range(2):
        _buy(owner, i, "BJ01", f"1391000000{i}", days_ago=200)
    return owner


def _fields(r) -> dict[str, str]:  # type: ignore[no-untyped-def]
    assert r.status_code == 422, r.text
    return {f["field"]: f["reason"] for f in r.json()["error"]["fields"]}


BAD = [
    ({"conditions": [{"type": "shoe_size", "op": "gt", "value": 3}]},
     "definition.conditions.0", "segment.union_tag_invalid"),
    ({"conditions": [{"type": "profile", "field": "shoe", "op": "eq", "value": "x"}]},
     "definition.conditions.0.field", "literal_error"),
    ({"conditions": [{"type": "group", "match": "any", "conditions": [
        ANY_ORDER, {"type": "profile", "field": "gender", "op": "gt", "value": 3}]}]},
     "definition.conditions.0.conditions.1.op", "segment.op_not_for_type"),
    ({"conditions": [{"type": "tag", "op": "gte", "tags": ["vip"]}]},
     "definition.conditions.0.op", "literal_error"),
    ({"conditions": [{"type": "purchases", "measure": "spend", "op": "gte", "value": 10,
                      "window": {"last_days": 0}}]},
     "definition.conditions.0.window.last_days", "greater_than_equal"),
    ({"conditions": [{"type": "purchases", "measure": "spend", "op": "gte", "value": 10,
                      "window": {"from": "2026-03-01", "to": "2026-01-01"}}]},
     "definition.conditions.0.window", "segment.window_reversed"),
    ({"conditions": [{"type": "tag", "op": "has_any", "tags": ["no-such-tag"]}]},
     "definition.conditions.0.tags", "segment.unknown_tag"),
    ({"conditions": [{"type": "store", "op": "purchased", "stores": ["XX99"]}]},
     "definition.conditions.0.stores", "segment.unknown_store"),
    ({"conditions": [{"type": "bought", "op": "bought", "categories": ["caviar"]}]},
     "definition.conditions.0.categories", "segment.unknown_category"),
    ({"conditions": [{"type": "rfm_score", "score": "r", "op": "gte", "value": 9}]},
     "definition.conditions.0.value", "segment.number_out_of_range"),
    ({"conditions": [{"type": "purchases", "measure": "spend", "op": "gte",
                      "value": "10.005"}]},
     "definition.conditions.0.value", "segment.money_precision"),
    ({"conditions": [{"type": "custom_field", "key": "nickname", "op": "eq", "value": "x"}]},
     "definition.conditions.0.key", "segment.unknown_custom_field"),
]


@pytest.mark.parametrize("body, field, reason", BAD)
def test_a_bad_definition_is_refused_with_its_path(owner, org, body, field, reason) -> None:
    for url, payload in (("/api/v1/segments/preview", {"definition": body}),
                         ("/api/v1/segments", {"name": "bad", "definition": body})):
        r = owner.post(url + "?lang=en", json=payload)
        fields = _fields(r)
        assert fields.get(field) == reason, fields
        assert r.json()["error"]["code"] == "segment_invalid"
        message = next(f["message"] for f in r.json()["error"]["fields"] if f["field"] == field)
        assert message and message != reason  # a sentence, not the key
    assert owner.get("/api/v1/segments").json()["items"] == []  # nothing saved


def test_the_message_is_in_the_callers_language(owner, org) -> None:
    body = {"definition": {"conditions": [{"type": "store", "op": "purchased",
                                           "stores": ["XX99"]}]}}
    zh = owner.post("/api/v1/segments/preview?lang=zh", json=body).json()
    en = owner.post("/api/v1/segments/preview?lang=en", json=body).json()
    assert "未知门店" in zh["error"]["fields"][0]["message"]
    assert "Unknown store: XX99" in en["error"]["fields"][0]["message"]


def test_preview_counts_and_samples(shoppers) -> None:
    recent = {"conditions": [ANY_ORDER, {"type": "recency", "op": "lte", "value": 30}]}
    r = shoppers.post("/api/v1/segments/preview", json={"definition": recent, "limit": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3
    assert len(body["sample"]) == 2
    assert all("****" in s["phone"] for s in body["sample"])


def test_saved_segment_crud_is_audited(shoppers, db_url) -> None:
    definition = {"match": "any", "conditions": [
        {"type": "store", "op": "purchased", "stores": ["BJ01"]},
        {"type": "group", "match": "all", "conditions": [
            ANY_ORDER, {"type": "recency", "op": "lte", "value": 30}]}]}
    r = shoppers.post("/api/v1/segments", json={"name": "Everyone who bought",
                                                "definition": definition})
    assert r.status_code == 201, r.text
    seg = r.json()
    assert seg["definition"]["conditions"][0]["stores"] == ["BJ01"]
    got = shoppers.get(f"/api/v1/segments/{seg['id']}").json()
    assert got["count"] == 5
    dup = shoppers.post("/api/v1/segments", json={"name": "Everyone who bought",
                                                  "definition": definition})
    assert dup.status_code == 409
    r = shoppers.patch(f"/api/v1/segments/{seg['id']}", json={
        "definition": {"conditions": [{"type": "store", "op": "purchased",
                                       "stores": ["SH01"]}]}})
    assert r.status_code == 200, r.text
    assert shoppers.get(f"/api/v1/segments/{seg['id']}").json()["count"] == 3
    bad = shoppers.patch(f"/api/v1/segments/{seg['id']}", json={
        "definition": {"conditions": [{"type": "store", "op": "purchased", "stores": []}]}})
    assert bad.status_code == 422
    assert shoppers.get(f"/api/v1/segments/{seg['id']}").json()["count"] == 3  # unchanged
    assert shoppers.delete(f"/api/v1/segments/{seg['id']}").status_code == 204
    assert shoppers.get(f"/api/v1/segments/{seg['id']}").status_code == 404
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        actions = [r.action for r in uow.c.execute(
            select(audit_log.c.action, audit_log.c.actor_name)
            .where(audit_log.c.entity == "segment").order_by(audit_log.c.id))]
    assert actions == ["segment.created", "segment.updated", "segment.deleted"]


def test_export_of_members_is_masked_and_audited(shoppers, db_url) -> None:
    seg = shoppers.post("/api/v1/segments", json={"name": "SH01 buyers", "definition": {
        "conditions": [{"type": "store", "op": "purchased", "stores": ["SH01"]}]}}).json()
    r = shoppers.get(f"/api/v1/segments/{seg['id']}/export.csv")
    assert r.status_code == 200, r.text
    # The first row is the export's watermark (requester and time), then the header.
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig").split("\n", 1)[1])))
    assert len(rows) == 3
    assert all(row["phone"].startswith("138****") for row in rows)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        entry = uow.c.execute(select(audit_log.c.details).where(
            audit_log.c.action == "customers.exported")).scalar_one()
    assert entry["filters"]["segment"] == "SH01 buyers"
    assert entry["rows"] == 3 and entry["unmasked"] is False


def test_store_scope_applies_to_counts_samples_and_exports(shoppers, client, users) -> None:
    seg = shoppers.post("/api/v1/segments", json={"name": "All buyers", "definition": {
        "conditions": [ANY_ORDER]}}).json()
    assert shoppers.get(f"/api/v1/segments/{seg['id']}").json()["count"] == 5
    login(client, "manager")  # SH01 only
    assert client.get(f"/api/v1/segments/{seg['id']}").json()["count"] == 3
    preview = client.post("/api/v1/segments/preview", json={"definition": {
        "conditions": [{"type": "store", "op": "purchased", "stores": ["BJ01"]}]}}).json()
    assert preview["count"] == 0 and preview["sample"] == []
    rows = client.get(f"/api/v1/segments/{seg['id']}/export.csv").content.decode("utf-8-sig")
    assert len(rows.strip().splitlines()) == 2 + 3  # watermark, header, rows
    # managers read segments but do not change them
    assert client.post("/api/v1/segments", json={"name": "x", "definition": {}}
                       ).status_code == 403


def test_cashiers_do_not_read_segments(client, users) -> None:
    login(client, "cashier")
    assert client.post("/api/v1/segments/preview", json={"definition": {}}).status_code == 403
    assert client.get("/api/v1/segments").status_code == 403


def test_preview_counts_on_a_fresh_audience_replica_and_says_so(shoppers, db_url, tmp_path,
                                                                  monkeypatch) -> None:
    from patron.config import get_settings
    from patron.segments import replica

    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    recent = {"definition": {"conditions": [ANY_ORDER,
                                            {"type": "recency", "op": "lte", "value": 30}]},
              "limit": 2}
    try:
        before = shoppers.post("/api/v1/segments/preview", json=recent).json()
        assert before["counted_on"] == "database" and before["as_of"] is None
        synced = replica.sync(get_engine(db_url))
        body = shoppers.post("/api/v1/segments/preview", json=recent).json()
        assert body["counted_on"] == "replica"
        assert dt.datetime.fromisoformat(body["as_of"]) == synced.as_of
        assert body["count"] == before["count"] == 3
        assert [s["id"] for s in body["sample"]] == [s["id"] for s in before["sample"]]
        assert all("****" in s["phone"] for s in body["sample"])
        # a new order: the replica's count is the copy's until the next sync
        _buy(shoppers, 9, "SH01", "13810000009")
        assert shoppers.post("/api/v1/segments/preview", json=recent).json()["count"] == 3
        replica.sync(get_engine(db_url))
        assert shoppers.post("/api/v1/segments/preview", json=recent).json()["count"] == 4
    finally:
        get_settings.cache_clear()
        replica.reset_readers()
