"""Custom field definitions, profile edits and exports on both databases."""

from __future__ import annotations

import csv
import datetime as dt

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from patron.config import get_settings
from patron.customers import custom_fields as cf
from patron.customers import export, queries
from patron.customers.tables import customers
from patron.errors import Conflict, Forbidden, ValidationFailed
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org, order

OWNER = Actor(type="user", id=1, name="boss", role="owner")
ANALYST = Actor(type="user", id=2, name="ana", role="analyst")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def two(uow):
    org = make_org(uow)
    out = record_orders(uow=uow, orders_in=[
        order("S1", identifiers={"phone": "13812341234"}, customer={"name": "王小明"}),
        order("B1", store="BJ01", identifiers={"phone": "13900001111"},
              customer={"name": "李四"})], source="api", actor=SYSTEM)
    return {"org": org, "sh": out[0].customer_id, "bj": out[1].customer_id,
            "manager": Actor(type="user", id=3, name="mgr", role="manager",
                             store_ids=frozenset({org["SH01"]}))}


def define_fields(uow):
    cf.create_custom_field(uow=uow, actor=OWNER, key="skin", label_zh="肤质", label_en="Skin",
                           type="choice", options=["dry", "oily"])
    cf.create_custom_field(uow=uow, actor=OWNER, key="likes", label_zh="喜好",
                           label_en="Likes", type="multi_choice", options=["tea", "cake"])
    cf.create_custom_field(uow=uow, actor=OWNER, key="shoe_size", label_zh="鞋码",
                           label_en="Shoe size", type="number")
    cf.create_custom_field(uow=uow, actor=OWNER, key="since", label_zh="入会", label_en="Since",
                           type="date")


def test_defining_a_field_is_audited_and_keys_are_unique(uow):
    out = cf.create_custom_field(uow=uow, actor=OWNER, key="skin", label_zh="肤质",
                                 label_en="Skin", type="choice", options=["dry", "oily"],
                                 required=True)
    assert out["options"] == ["dry", "oily"] and out["required"] is True
    with pytest.raises(Conflict):
        cf.create_custom_field(uow=uow, actor=OWNER, key="skin", label_zh="x", label_en="x",
                               type="text")
    with pytest.raises(Forbidden):
        cf.create_custom_field(uow=uow, actor=ANALYST, key="age", label_zh="x", label_en="x",
                               type="number")
    cf.update_custom_field(uow=uow, actor=OWNER, field_id=out["id"],
                           changes={"options": ["dry", "oily", "mixed"], "label_en": "Skin type"})
    with pytest.raises(ValidationFailed) as bad:
        cf.update_custom_field(uow=uow, actor=OWNER, field_id=out["id"], changes={"type": "text"})
    assert bad.value.fields[0].field == "type"
    cf.deactivate_custom_field(uow=uow, actor=OWNER, field_id=out["id"])
    assert cf.list_custom_fields(uow.c, actor=OWNER) == []
    actions = list(uow.c.execute(select(audit_log.c.action).where(
        audit_log.c.entity == "custom_field").order_by(audit_log.c.id)).scalars())
    assert actions == ["custom_field.created", "custom_field.updated",
                       "custom_field.deactivated"]


def test_editing_a_customer_validates_each_field_by_name(uow, two):
    define_fields(uow)
    with pytest.raises(ValidationFailed) as bad:
        cf.update_customer(uow=uow, actor=OWNER, customer_id=two["sh"], changes={
            "gender": "X", "custom_fields": {"skin": "normal", "shoe_size": "big",
                                             "nope": 1}})
    assert {(f.field, f.reason) for f in bad.value.fields} == {
        ("gender", "literal_error"), ("custom_fields.skin", "custom_field_option_unknown"),
        ("custom_fields.shoe_size", "decimal_parsing"),
        ("custom_fields.nope", "custom_field_unknown")}
    out = cf.update_customer(uow=uow, actor=OWNER, customer_id=two["sh"], changes={
        "gender": "F", "email": "Wang@Example.com",
        "custom_fields": {"skin": "dry", "likes": ["cake", "tea"], "shoe_size": "37.5"}})
    assert out["changed"] == ["email", "gender"]
    row = uow.c.execute(select(customers).where(customers.c.id == two["sh"])).mappings().one()
    assert row["email"] == "wang@example.com"
    assert row["custom_fields"] == {"skin": "dry", "likes": ["tea", "cake"], "shoe_size": 37.5}
    entry = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "customer.updated")).scalar_one()
    assert entry == {"fields": ["email", "gender"],
                     "custom_fields": ["likes", "shoe_size", "skin"]}
    assert "wang@example.com" not in str(entry)


def test_required_field_must_be_filled_when_editing(uow, two):
    cf.create_custom_field(uow=uow, actor=OWNER, key="skin", label_zh="肤质", label_en="Skin",
                           type="choice", options=["dry", "oily"], required=True)
    with pytest.raises(ValidationFailed) as bad:
        cf.update_customer(uow=uow, actor=OWNER, customer_id=two["sh"],
                           changes={"name": "王晓明"})
    assert [(f.field, f.reason) for f in bad.value.fields] == [("custom_fields.skin", "missing")]
    assert uow.c.execute(select(customers.c.name).where(customers.c.id == two["sh"])
                         ).scalar_one() == "王小明"


def test_manager_cannot_edit_a_customer_outside_their_stores(uow, two):
    from patron.errors import NotFound

    with pytest.raises(NotFound):
        cf.update_customer(uow=uow, actor=two["manager"], customer_id=two["bj"],
                           changes={"name": "x"})


def test_list_filters_on_custom_fields(uow, two):
    define_fields(uow)
    cf.update_customer(uow=uow, actor=OWNER, customer_id=two["sh"], changes={"custom_fields": {
        "skin": "dry", "likes": ["tea", "cake"], "shoe_size": 37, "since": "2024-02-01"}})
    cf.update_customer(uow=uow, actor=OWNER, customer_id=two["bj"], changes={"custom_fields": {
        "skin": "oily", "likes": ["cake"], "shoe_size": 42.5, "since": "2025-06-30"}})

    def ids(custom):
        return [c["id"] for c in queries.list_customers(
            uow.c, actor=OWNER, filters={"custom": custom}, sort="id")["items"]]

    assert ids({"skin": "dry"}) == [two["sh"]]
    assert ids({"likes": "tea"}) == [two["sh"]]
    assert ids({"likes": "cake"}) == [two["sh"], two["bj"]]
    assert ids({"shoe_size": {"min": "40"}}) == [two["bj"]]
    assert ids({"shoe_size": {"min": 30, "max": 40}}) == [two["sh"]]
    assert ids({"since": {"max": "2024-12-31"}}) == [two["sh"]]
    with pytest.raises(ValidationFailed) as bad:
        ids({"colour": "red"})
    assert bad.value.fields[0].field == "custom.colour"


def test_customer_export_is_masked_scoped_and_audited(uow, two, data_dir):
    path = export.export_customers(uow=uow, actor=two["manager"], filters={}, fmt="csv")
    assert path.parent == data_dir / "exports"
    with path.open(encoding="utf-8-sig") as fh:
        assert next(fh).startswith(f"Patron export {path.name} · requested by mgr")
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == [two["sh"]]
    assert rows[0]["phone"] == "138****1234" and rows[0]["name"] == "王**"
    entry = uow.c.execute(select(audit_log).where(audit_log.c.action == "customers.exported")
                          ).mappings().one()
    assert entry["details"]["rows"] == 1 and entry["details"]["unmasked"] is False
    assert entry["actor_name"] == "mgr"


def test_unmasked_export_needs_reveal_and_is_audited_as_a_reveal(uow, two, data_dir):
    with pytest.raises(Forbidden):
        export.export_customers(uow=uow, actor=ANALYST, filters=None, fmt="csv", unmasked=True)
    path = export.export_customers(uow=uow, actor=OWNER, filters={"store": "BJ01"},
                                   fmt="xlsx", unmasked=True)
    sheet = load_workbook(path, read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))[1:]  # after the watermark
    assert rows[0][:4] == ("id", "member_code", "is_member", "name")
    assert [(r[0], r[3], r[6]) for r in rows[1:]] == [(str(two["bj"]), "李四",
                                                       "+8613900001111")]
    actions = {r.action: r.details for r in uow.c.execute(select(audit_log).where(
        audit_log.c.entity == "export"))}
    assert actions["customers.exported"]["filters"] == {"store": "BJ01"}
    assert actions["personal_data.revealed"]["rows"] == 1


def test_order_export_follows_date_store_and_scope(uow, two, data_dir):
    record_orders(uow=uow, orders_in=[order("S2", at=dt.datetime(
        2026, 3, 5, 9, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        identifiers={"phone": "13812341234"})], source="api", actor=SYSTEM)
    path = export.export_orders(uow=uow, actor=OWNER, fmt="csv",
                                filters={"date_from": "2026-03-05", "store": "SH01"})
    with path.open(encoding="utf-8-sig") as fh:
        next(fh)  # the watermark
        rows = list(csv.DictReader(fh))
    assert [r["external_id"] for r in rows] == ["S2"]
    assert rows[0]["purchased_at_local"] == "2026-03-05T09:00:00+08:00"
    assert rows[0]["customer_phone"] == "138****1234" and rows[0]["total_amount"] == "71.00"
    mine = export.export_orders(uow=uow, actor=two["manager"], fmt="csv", filters={})
    with mine.open(encoding="utf-8-sig") as fh:
        next(fh)
        assert [r["store"] for r in csv.DictReader(fh)] == ["SH01", "SH01"]
    details = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "orders.exported").order_by(audit_log.c.id)).scalars().all()
    assert [d["rows"] for d in details] == [1, 2]
    with pytest.raises(ValidationFailed) as bad:
        export.export_orders(uow=uow, actor=OWNER, fmt="csv", filters={"date_from": "soon"})
    assert bad.value.fields[0].field == "date_from"
