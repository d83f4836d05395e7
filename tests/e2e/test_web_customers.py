"""Customer pages: list and search, masking by role, the audited reveal, timeline, undo merge."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select

from patron.customers.service import merge_customers
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.e2e.test_web_pages import csrf, errors_in, post_form
from tests.factories import T0, order


def customer_id(db_url: str, phone: str) -> int:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        from patron.customers.model import normalize_identity
        from patron.customers.protect import identity_is

        return int(uow.c.execute(select(identities.c.customer_id).where(
            identity_is(normalize_identity("phone", phone).value))).scalar_one())


@pytest.fixture
def shoppers(db_url: str, org: dict[str, int]) -> dict[str, int]:
    """Wang buys at SH01 (three orders, coffee and tea); Zhao only at BJ01."""
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, source="api", actor=SYSTEM, orders_in=[
            order("W-1", at=T0, identifiers={"phone": "13812341234", "member_code": "VIP7"},
                  customer={"name": "王小明"}),
            order("W-2", at=T0 + dt.timedelta(days=3), identifiers={"phone": "13812341234"},
                  lines=[{"sku": "TEA", "category": "tea", "quantity": "1",
                          "unit_price": "18.00"}]),
            order("W-3", channel="meituan", store=None, at=T0 + dt.timedelta(days=10),
                  identifiers={"phone": "13812341234"}),
            order("Z-1", store="BJ01", at=T0, identifiers={"phone": "13955556666"},
                  customer={"name": "赵云"}),
        ])
    assert {o.status for o in outcomes} == {"created"}
    return {"wang": customer_id(db_url, "+8613812341234"),
            "zhao": customer_id(db_url, "+8613955556666")}


def test_manager_sees_only_their_stores_customers_with_masked_phones(client, users,
                                                                     shoppers):
    login(client, "manager")
    page = client.get("/customers").text
    assert "138****1234" in page and "13812341234" not in page
    assert "139****6666" not in page  # Zhao never bought at the manager's store
    found = client.get("/customers?q=13812341234").text
    assert f'href="/customers/{shoppers["wang"]}"' in found
    assert "找到 1 位顾客" in found
    assert "找到 0 位顾客" in client.get("/customers?q=13955556666").text
    detail = client.get(f"/customers/{shoppers['wang']}")
    assert detail.status_code == 200
    assert "138****1234" in detail.text and "+8613812341234" not in detail.text
    assert 'class="small reveal"' not in detail.text  # no reveal button without permission
    assert client.get(f"/customers/{shoppers['zhao']}").status_code == 404
    r = client.post(f"/customers/{shoppers['wang']}/reveal",
                    data={"field": "phone", "csrf_token": csrf(detail.text)})
    assert r.status_code == 403


def test_owner_reveals_a_phone_and_the_reveal_is_audited(owner, shoppers, db_url):
    wang = shoppers["wang"]
    page = owner.get(f"/customers/{wang}").text
    assert "138****1234" in page and 'data-field="phone"' in page
    r = post_form(owner, f"/customers/{wang}/reveal", {"field": "phone"},
                  page=f"/customers/{wang}")
    assert r.status_code == 200
    assert re.search(r'class="revealed" data-field="phone">\+8613812341234<', r.text)
    assert "+8613812341234" not in owner.get(f"/customers/{wang}").text  # shown once only
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        entry = uow.c.execute(select(audit_log).where(
            audit_log.c.action == "customer.revealed")).mappings().one()
    assert (entry["actor_name"], entry["entity_id"], entry["details"]) == (
        "owner", str(wang), {"field": "phone"})
    r = post_form(owner, f"/customers/{wang}/reveal", {"field": "password"},
                  page=f"/customers/{wang}")
    assert r.status_code == 422 and "<html" in r.text


def test_timeline_filters_by_store_channel_category_and_dates(owner, shoppers):
    url = f"/customers/{shoppers['wang']}"
    all_orders = owner.get(url).text
    assert all_orders.count('class="order"') == 3 and "共 3 笔" in all_orders
    assert owner.get(url + "?store=SH01").text.count('class="order"') == 2
    assert owner.get(url + "?channel=meituan").text.count('class="order"') == 1
    tea = owner.get(url + "?category=tea").text
    assert tea.count('class="order"') == 1 and "W-2" in tea
    day = (T0 + dt.timedelta(days=3)).date().isoformat()
    assert owner.get(url + f"?date_from={day}&date_to={day}").text.count('class="order"') == 1
    bad = owner.get(url + "?date_from=03/05/2026")
    assert bad.status_code == 422 and errors_in(bad.text) == {"date_from": "不是有效的日期。"}
    reversed_range = owner.get(url + "?date_from=2026-03-10&date_to=2026-03-01")
    assert reversed_range.status_code == 422 and "date_to" in errors_in(reversed_range.text)
    unknown = owner.get(url + "?store=NOPE")
    assert unknown.status_code == 422 and "store" in errors_in(unknown.text)
    en = owner.get(url + "?lang=en").text
    assert "Purchase timeline" in en and "3 orders" in en


def test_timeline_is_paginated(owner, db_url, shoppers):
    with UnitOfWork(get_engine(db_url)) as uow:
        record_orders(uow=uow, source="api", actor=SYSTEM, orders_in=[
            order(f"P-{i}", at=T0 + dt.timedelta(hours=i), identifiers={"phone": "13812341234"})
            for i in range(1, 12)])
    url = f"/customers/{shoppers['wang']}"
    first = owner.get(url).text
    assert first.count('class="order"') == 10 and 'rel="next"' in first
    second = owner.get(url + "?page=2").text
    assert second.count('class="order"') == 4 and 'rel="next"' not in second


def test_owner_undoes_a_merge_from_the_customer_page(owner, users, shoppers, db_url):
    wang, zhao = shoppers["wang"], shoppers["zhao"]
    with UnitOfWork(get_engine(db_url)) as uow:
        merge_id = merge_customers(uow=uow, survivor_id=wang, merged_id=zhao,
                                   reason="same person", actor=SYSTEM)
    page = owner.get(f"/customers/{wang}").text
    assert "撤销合并" in page and "same person" in page
    r = post_form(owner, f"/customers/merges/{merge_id}/undo", {"customer_id": str(wang)},
                  page=f"/customers/{wang}")
    assert r.status_code == 303 and r.headers["location"] == f"/customers/{wang}?undone={merge_id}"
    after = owner.get(r.headers["location"]).text
    assert f"已撤销合并 #{merge_id}" in after and "undo-merge" not in after
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert uow.c.execute(select(customers.c.merged_into_id).where(
            customers.c.id == zhao)).scalar_one() is None
    # Doing it twice is a clear page, not a 500.
    again = post_form(owner, f"/customers/merges/{merge_id}/undo", {"customer_id": str(wang)},
                      page=f"/customers/{wang}")
    assert again.status_code == 409 and "<html" in again.text
    client_manager = owner
    client_manager.cookies.clear()
    login(client_manager, "manager")
    assert post_form(client_manager, f"/customers/merges/{merge_id}/undo",
                     {"customer_id": str(wang)}, page="/customers").status_code == 403


def test_list_sorts_and_filters_members(owner, shoppers):
    members = owner.get("/customers?member=1").text
    assert f'href="/customers/{shoppers["wang"]}"' in members
    assert f'href="/customers/{shoppers["zhao"]}"' not in members
    by_spend = owner.get("/customers?sort=-net_spend").text
    assert by_spend.index(f'/customers/{shoppers["wang"]}"') < by_spend.index(
        f'/customers/{shoppers["zhao"]}"')
    assert owner.get("/customers?store=NOPE").status_code == 422
    assert owner.get("/customers/abc").status_code == 404
