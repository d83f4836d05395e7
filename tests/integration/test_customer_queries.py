"""Customer 360 reads on both databases: search, scope, masking, reveal, profile, timeline."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from patron.customers import queries
from patron.customers.service import merge_customers, undo_merge
from patron.errors import Forbidden, NotFound, ValidationFailed
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org, order

CST = dt.timezone(dt.timedelta(hours=8))


def at(day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=CST)


def record(uow, *bodies):
    out = record_orders(uow=uow, orders_in=list(bodies), source="api", actor=SYSTEM,
                        now=dt.datetime(2026, 4, 1, tzinfo=dt.UTC))
    assert all(o.status in ("created", "duplicate") for o in out), out
    return [o.customer_id for o in out]


@pytest.fixture
def shop(uow):
    """SH01 regular 王小明 (member M001), BJ01-only 王大力, a mini-program buyer Li Wei, and a
    customer registered in BJ01 who later bought in SH01."""
    org = make_org(uow)
    (wang,) = record(uow, order("S1", at=at(2), identifiers={"phone": "13812341234",
                                                              "member_code": "m001"},
                                customer={"name": "王小明", "birthday": "1990-05-17"}))
    (bj,) = record(uow, order("B1", store="BJ01", at=at(3), identifiers={
        "phone": "13900001111", "wechat_openid": "oBJ1"}, customer={"name": "王大力"}))
    (li,) = record(uow, order("M1", channel="mini_program", store=None, at=at(4),
                              identifiers={"wechat_openid": "oLi9"},
                              customer={"name": "Li Wei"}))
    (both,) = record(uow, order("B2", store="BJ01", at=at(5),
                                identifiers={"phone": "13700002222"}))
    record(uow, order("S2", at=at(6), identifiers={"phone": "13700002222"}))
    return {"org": org, "wang": wang, "bj": bj, "li": li, "both": both,
            "owner": Actor(type="user", id=1, name="boss", role="owner"),
            "analyst": Actor(type="user", id=2, name="ana", role="analyst"),
            "manager": Actor(type="user", id=3, name="mgr", role="manager",
                             store_ids=frozenset({org["SH01"]})),
            "cashier": Actor(type="user", id=4, name="till", role="cashier",
                             store_ids=frozenset({org["SH01"]}))}


@pytest.mark.parametrize("typed", ["13812341234", "+86 138 1234 1234", "138-1234-1234",
                                   "+8613812341234"])
def test_search_finds_phone_in_any_format(uow, shop, typed):
    hits = queries.search_customers(uow.c, actor=shop["owner"], q=typed)
    assert [h["id"] for h in hits] == [shop["wang"]]
    assert hits[0]["phone"] == "138****1234"


def test_search_by_member_code_any_case_and_by_openid(uow, shop):
    assert [h["id"] for h in queries.search_customers(uow.c, actor=shop["analyst"], q="m001")
            ] == [shop["wang"]]
    assert [h["id"] for h in queries.search_customers(uow.c, actor=shop["analyst"], q="oBJ1")
            ] == [shop["bj"]]


def test_search_by_start_of_name_respects_store_scope(uow, shop):
    owner_hits = {h["id"] for h in queries.search_customers(uow.c, actor=shop["owner"], q="王")}
    assert owner_hits == {shop["wang"], shop["bj"]}
    manager_hits = [h["id"] for h in queries.search_customers(uow.c, actor=shop["manager"],
                                                              q="王")]
    assert manager_hits == [shop["wang"]]
    assert [h["id"] for h in queries.search_customers(uow.c, actor=shop["owner"], q="li")
            ] == [shop["li"]]
    assert queries.search_customers(uow.c, actor=shop["manager"], q="13900001111") == []


def test_manager_cannot_open_customer_who_only_bought_elsewhere(uow, shop):
    m = shop["manager"]
    for call in (lambda: queries.get_customer(uow.c, actor=m, customer_id=shop["bj"]),
                 lambda: queries.customer_timeline(uow.c, actor=m, customer_id=shop["bj"])):
        with pytest.raises(NotFound) as out_of_scope:
            call()
        with pytest.raises(NotFound) as missing:
            queries.get_customer(uow.c, actor=m, customer_id=999_999)
        assert out_of_scope.value.message == missing.value.message


def test_customer_registered_elsewhere_who_bought_here_is_visible_with_local_orders_only(
        uow, shop):
    m = shop["manager"]
    profile = queries.get_customer(uow.c, actor=m, customer_id=shop["both"])
    assert profile["registration_store"] == "BJ01"
    tl = queries.customer_timeline(uow.c, actor=m, customer_id=shop["both"])
    assert [o["external_id"] for o in tl["items"]] == ["S2"]
    owner_tl = queries.customer_timeline(uow.c, actor=shop["owner"], customer_id=shop["both"])
    assert [o["external_id"] for o in owner_tl["items"]] == ["S2", "B2"]


def test_profile_is_masked_for_every_role(uow, shop):
    for role in ("analyst", "manager", "owner"):
        p = queries.get_customer(uow.c, actor=shop[role], customer_id=shop["wang"])
        assert p["phone"] == "138****1234"
        assert p["name"] == "王**"
        assert p["birthday"] == "****-05-17"
        kinds = {i["kind"]: i["value"] for i in p["identities"]}
        assert kinds == {"phone": "138****1234", "member_code": "M001"}
    assert queries.get_customer(uow.c, actor=shop["owner"], customer_id=shop["wang"]
                                )["can_reveal"] is True
    assert queries.get_customer(uow.c, actor=shop["analyst"], customer_id=shop["wang"]
                                )["can_reveal"] is False


def test_owner_reveal_returns_number_and_audits_without_it(uow, shop):
    value = queries.reveal_personal_data(uow=uow, actor=shop["owner"],
                                         customer_id=shop["wang"], field="phone")
    assert value == "+8613812341234"
    row = uow.c.execute(select(audit_log).where(audit_log.c.action == "customer.revealed")
                        ).mappings().one()
    assert row["entity_id"] == str(shop["wang"]) and row["actor_name"] == "boss"
    assert row["details"] == {"field": "phone"}
    assert "13812341234" not in json.dumps(dict(row), default=str)
    assert queries.reveal_personal_data(uow=uow, actor=shop["owner"],
                                        customer_id=shop["wang"], field="birthday"
                                        ) == "1990-05-17"


def test_reveal_needs_permission_scope_and_a_known_field(uow, shop):
    with pytest.raises(Forbidden):
        queries.reveal_personal_data(uow=uow, actor=shop["analyst"], customer_id=shop["wang"],
                                     field="phone")
    with pytest.raises(ValidationFailed) as bad:
        queries.reveal_personal_data(uow=uow, actor=shop["owner"], customer_id=shop["wang"],
                                     field="password")
    assert bad.value.fields[0].field == "field"
    ident = queries.get_customer(uow.c, actor=shop["owner"], customer_id=shop["bj"]
                                 )["identities"]
    openid = next(i for i in ident if i["kind"] == "wechat_openid")
    assert openid["value"] != "oBJ1"
    assert queries.reveal_personal_data(uow=uow, actor=shop["owner"], customer_id=shop["bj"],
                                        field=f"identity:{openid['id']}") == "oBJ1"


def test_profile_has_figures_and_favourites(uow, shop):
    record(uow,
           order("S3", at=at(7, 15), identifiers={"phone": "13812341234"},
                 lines=[{"sku": "TEA", "category": "tea", "quantity": "1", "unit_price": "20"}]),
           order("S4", at=at(8, 10), identifiers={"phone": "13812341234"}))
    p = queries.get_customer(uow.c, actor=shop["owner"], customer_id=shop["wang"])
    assert p["figures"]["order_count"] == 3
    assert p["figures"]["net_spend"] == Decimal("162.00")
    fav = p["favourites"]
    assert fav["store"]["code"] == "SH01" and fav["channel"]["code"] == "pos"
    # two orders each; coffee outspends bakery
    assert [c["code"] for c in fav["categories"]] == ["coffee", "bakery", "tea"]
    assert fav["hour"] == 10


def test_timeline_filters_and_pages_newest_first(uow, shop):
    phone = {"phone": "13812341234"}
    record(uow,
           order("S5", at=at(9, 23, 30), identifiers=phone),
           order("S6", at=at(10, 0, 30), identifiers=phone,
                 lines=[{"sku": "TEA", "category": "tea", "quantity": "1", "unit_price": "20"}],
                 payments=[{"method": "wechat_pay", "amount": "20.00"}]),
           order("M2", channel="mini_program", store=None, at=at(11), identifiers=phone),
           order("B3", store="BJ01", at=at(12), identifiers=phone))
    owner, cid = shop["owner"], shop["wang"]
    full = queries.customer_timeline(uow.c, actor=owner, customer_id=cid)
    assert [o["external_id"] for o in full["items"]] == ["B3", "M2", "S6", "S5", "S1"]
    assert full["total"] == 5
    # 00:30 on the 10th in Shanghai is still the 9th in UTC: local dates decide
    day = queries.customer_timeline(uow.c, actor=owner, customer_id=cid,
                                    date_from=dt.date(2026, 3, 10),
                                    date_to=dt.date(2026, 3, 10))
    assert [o["external_id"] for o in day["items"]] == ["S6"]
    assert day["items"][0]["local_time"] == "2026-03-10T00:30:00+08:00"
    assert day["items"][0]["payments"] == [{"method": "wechat_pay", "amount": Decimal("20.00")}]
    assert [o["external_id"] for o in queries.customer_timeline(
        uow.c, actor=owner, customer_id=cid, store="BJ01")["items"]] == ["B3"]
    assert [o["external_id"] for o in queries.customer_timeline(
        uow.c, actor=owner, customer_id=cid, channel="mini_program")["items"]] == ["M2"]
    assert [o["external_id"] for o in queries.customer_timeline(
        uow.c, actor=owner, customer_id=cid, category="tea")["items"]] == ["S6"]
    page2 = queries.customer_timeline(uow.c, actor=owner, customer_id=cid, page=2, page_size=2)
    assert [o["external_id"] for o in page2["items"]] == ["S6", "S5"]
    assert page2["total"] == 5
    mgr = queries.customer_timeline(uow.c, actor=shop["manager"], customer_id=cid)
    assert {o["store"] for o in mgr["items"]} == {"SH01"}
    with pytest.raises(ValidationFailed) as bad:
        queries.customer_timeline(uow.c, actor=owner, customer_id=cid, store="NOPE")
    assert bad.value.fields[0].field == "store"


def test_timeline_shows_returns_with_their_lines(uow, shop):
    record_return(uow=uow, actor=SYSTEM, ret=ReturnIn(
        external_id="RT1", channel="pos", store="SH01", order_external_id="S1",
        returned_at=at(2, 12), lines=[{"line_no": 1, "quantity": "1"}], reason="spilt"))
    tl = queries.customer_timeline(uow.c, actor=shop["owner"], customer_id=shop["wang"])
    s1 = tl["items"][0]
    assert s1["refunded_amount"] == Decimal("28.00")
    (ret,) = s1["returns"]
    assert ret["external_id"] == "RT1" and ret["amount"] == Decimal("28.00")
    assert ret["lines"] == [{"line_no": 1, "sku": "LATTE", "quantity": Decimal("1"),
                             "amount": Decimal("28.00")}]


def test_merged_customer_page_says_where_it_went_and_survivor_offers_undo(uow, shop):
    owner = shop["owner"]
    survivor, merged = shop["wang"], shop["li"]
    merge_id = merge_customers(uow=uow, survivor_id=survivor, merged_id=merged,
                               reason="same person", actor=owner)
    gone = queries.get_customer(uow.c, actor=owner, customer_id=merged)
    assert gone["merged_into_id"] == survivor and gone["merged_by_merge_id"] == merge_id
    assert queries.search_customers(uow.c, actor=owner, q="oLi9")[0]["id"] == survivor
    kept = queries.get_customer(uow.c, actor=owner, customer_id=survivor)
    assert [(m["merge_id"], m["merged_id"], m["can_undo"]) for m in kept["merges"]] == [
        (merge_id, merged, True)]
    assert queries.get_customer(uow.c, actor=shop["analyst"], customer_id=survivor
                                )["merges"][0]["can_undo"] is False
    undo_merge(uow=uow, merge_id=merge_id, actor=owner)
    kept = queries.get_customer(uow.c, actor=owner, customer_id=survivor)
    assert kept["merges"][0]["can_undo"] is False and kept["merges"][0]["undone_at"]


def test_list_filters_sorts_and_pages(uow, shop):
    owner = shop["owner"]
    everyone = queries.list_customers(uow.c, actor=owner, sort="id")
    assert [c["id"] for c in everyone["items"]] == sorted(
        [shop["wang"], shop["bj"], shop["li"], shop["both"]])
    assert everyone["total"] == 4
    members = queries.list_customers(uow.c, actor=owner, filters={"member": True})
    assert [c["id"] for c in members["items"]] == [shop["wang"]]
    sh = queries.list_customers(uow.c, actor=owner, filters={"store": "SH01"}, sort="id")
    assert [c["id"] for c in sh["items"]] == [shop["wang"], shop["both"]]
    mp = queries.list_customers(uow.c, actor=owner, filters={"channel": "mini_program"})
    assert [c["id"] for c in mp["items"]] == [shop["li"]]
    two = queries.list_customers(uow.c, actor=owner, filters={"min_orders": 2})
    assert [c["id"] for c in two["items"]] == [shop["both"]]
    rich = queries.list_customers(uow.c, actor=owner, filters={"min_net_spend": "100"})
    assert [c["id"] for c in rich["items"]] == [shop["both"]]
    recent = queries.list_customers(uow.c, actor=owner, filters={
        "last_purchase_from": dt.date(2026, 3, 4), "last_purchase_to": dt.date(2026, 3, 4)})
    assert [c["id"] for c in recent["items"]] == [shop["li"]]
    by_spend = queries.list_customers(uow.c, actor=owner, sort="-net_spend", page_size=1,
                                      page=1)
    assert by_spend["items"][0]["id"] == shop["both"] and by_spend["total"] == 4
    assert by_spend["items"][0]["net_spend"] == Decimal("142.00")
    mine = queries.list_customers(uow.c, actor=shop["manager"], sort="id")
    assert [c["id"] for c in mine["items"]] == [shop["wang"], shop["both"]]
    assert all("****" in c["phone"] for c in mine["items"])
    with pytest.raises(ValidationFailed) as bad:
        queries.list_customers(uow.c, actor=owner, sort="password")
    assert bad.value.fields[0].field == "sort"


def test_cashier_looks_up_member_by_exact_identifier_only(uow, shop):
    summary = queries.lookup_member(uow.c, actor=shop["cashier"], kind="phone",
                                    value="138 1234 1234")
    assert summary == {"id": shop["wang"], "member_code": "M001", "is_member": True,
                       "name": "王**", "phone": "138****1234"}
    with pytest.raises(NotFound):
        queries.lookup_member(uow.c, actor=shop["cashier"], kind="phone", value="13800000000")
    with pytest.raises(Forbidden):
        queries.search_customers(uow.c, actor=shop["cashier"], q="王")
    with pytest.raises(ValidationFailed) as bad:
        queries.lookup_member(uow.c, actor=shop["cashier"], kind="phone", value="12")
    assert bad.value.fields[0].field == "value"
