"""The cashier's screen over HTTP (SQLite and PostgreSQL): a cashier's only page; lookup by
phone, member code and QR card; the quote's figures are the checkout service's; a commit with
a coupon and points; the same form submitted twice records one sale; a basket changed after
its quote is not committed unseen; bad input names the field; store scope."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from patron.checkout import service as checkout
from patron.checkout.schemas import QuoteIn
from patron.checkout.tables import checkout_commits
from patron.db import UnitOfWork, get_engine, utcnow
from patron.loyalty import queries
from patron.orders.tables import orders
from patron.security.model import SYSTEM
from patron.selfservice.model import sign_card
from patron.selfservice.service import ensure_card_key
from tests.e2e.conftest import PASSWORD, login
from tests.e2e.test_web_pages import csrf, errors_in
from tests.web_loyalty_helpers import PHONE_A, make_shop

BASKET = {"sku": ["LATTE", "CROISSANT", "", ""], "category": ["coffee", "bakery", "", ""],
          "qty": ["2", "1", "", ""], "price": ["28.00", "15", "", ""]}


@pytest.fixture
def shop(db_url, org, users):
    return make_shop(db_url)


def form(client, **data):
    page = client.get("/cashier").text
    return {"csrf_token": csrf(page), "store": "SH01", "id_kind": "phone",
            "id_value": PHONE_A, **data}


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, name
    return found.group(1)


def text_of(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(?:<strong>)?([^<]*)<', html)
    assert found, element_id
    return found.group(1).strip()


def yuan(fen: int) -> str:
    return f"¥{fen / 100:,.2f}"


def test_a_cashier_has_exactly_the_till(client, shop, users):
    r = client.get("/cashier", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/cashier")
    page = client.get("/login")
    signed = client.post("/login", data={"username": "cashier", "password": PASSWORD,
                                         "next": "/", "csrf_token": csrf(page.text)},
                         follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/cashier"
    page = client.get("/cashier?lang=en")
    assert page.status_code == 200 and "Find member" in page.text
    nav = re.search(r"<nav>(.*?)</nav>", page.text, re.S).group(1)
    assert re.findall(r'href="([^"]+)"', nav) == ["/cashier"]
    # Only the cashier's own store is offered.
    assert re.findall(r'<option value="(\w+)"[^>]*>\w+ · ', page.text) == ["SH01"]
    assert "收银台" in client.get("/cashier?lang=zh").text
    login(client, "analyst")
    assert client.get("/cashier").status_code == 403


def test_lookup_by_phone_member_code_and_qr(client, shop, db_url):
    login(client, "cashier")
    a = shop["a"]
    r = client.post("/cashier?lang=en", data=form(client, action="lookup"))
    assert r.status_code == 200, errors_in(r.text)
    html = r.text
    assert text_of(html, "found-code") == a["member_code"]
    assert 'data-tier="GOLD"' in html and text_of(html, "found-points") == "800"
    assert text_of(html, "found-sv") == "¥550.00"
    assert "member discount 10%" in html and "free: 矿泉水 × 1" in html
    assert f'data-code="{shop["coupon"]}"' in html  # the member's usable coupon is offered
    r = client.post("/cashier", data=form(client, action="lookup", id_kind="member_code",
                                          id_value=a["member_code"]))
    assert text_of(r.text, "found-code") == a["member_code"]
    with UnitOfWork(get_engine(db_url)) as uow:
        key_id, key = ensure_card_key(uow=uow)
        uow.commit()
    payload = sign_card(member_code=a["member_code"], expires_at=utcnow() + dt.timedelta(
        minutes=2), key_id=key_id, key=key)
    r = client.post("/cashier", data=form(client, action="lookup", id_kind="qr",
                                          id_value=payload))
    assert text_of(r.text, "found-code") == a["member_code"]
    stale = sign_card(member_code=a["member_code"], expires_at=utcnow() - dt.timedelta(
        minutes=2), key_id=key_id, key=key)
    r = client.post("/cashier?lang=en", data=form(client, action="lookup", id_kind="qr",
                                                  id_value=stale))
    assert r.status_code == 422 and "id_value" in errors_in(r.text)
    r = client.post("/cashier?lang=en", data=form(client, action="lookup", id_value="12345"))
    assert r.status_code == 422 and errors_in(r.text)["id_value"] == "Not a valid phone number."
    r = client.post("/cashier?lang=en", data=form(client, action="lookup",
                                                  id_value="13711112222"))
    assert r.status_code == 422 and "Member not found." in r.text


def test_the_quote_on_the_page_is_the_services_quote(client, shop, db_url):
    login(client, "cashier")
    code = shop["coupon"]
    r = client.post("/cashier?lang=en", data=form(client, action="quote", **BASKET,
                                                  coupon=[code], redeem_points="500"))
    assert r.status_code == 200, errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        q = checkout.quote(uow.c, actor=SYSTEM, body=QuoteIn.model_validate({
            "store": "SH01", "member": {"phone": PHONE_A}, "coupons": [code],
            "redeem_points": 500, "lines": [
                {"sku": "LATTE", "category": "coffee", "quantity": "2", "unit_price_fen": 2800},
                {"sku": "CROISSANT", "category": "bakery", "quantity": "1",
                 "unit_price_fen": 1500}]}))
    a = q["amounts"]
    html = r.text
    assert text_of(html, "q-gross") == yuan(a["gross_fen"]) == "¥71.00"
    assert text_of(html, "q-tier-discount") == "−" + yuan(a["tier_discount_fen"])
    assert text_of(html, "q-coupon-discount") == "−" + yuan(a["coupon_discount_fen"]) != "−¥0.00"
    assert text_of(html, "q-total") == yuan(a["total_fen"])
    assert text_of(html, "q-points-value") == "−" + yuan(a["points_value_fen"]) == "−¥5.00"
    assert text_of(html, "q-payable") == yuan(a["payable_fen"])
    assert hidden(html, "payable_fen") == str(a["payable_fen"])
    assert f'data-points="{q["points"]["will_earn"]}"' in html
    assert f"Up to {q['points']['max_redeemable']} points" in html
    assert f'data-code="{code}" data-applies="1"' in html
    assert q["coupons"]["accepted"][0]["code"] == code


def commit_form(client, **extra):
    quoted = client.post("/cashier", data=form(client, action="quote", **BASKET, **extra))
    assert quoted.status_code == 200, errors_in(quoted.text)
    html = quoted.text
    data = form(client, **BASKET, **extra)
    for name in ("idempotency_key", "order_number", "quoted", "payable_fen"):
        data[name] = hidden(html, name)
    data["csrf_token"] = csrf(html)
    return data


def count(db_url, table) -> int:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return int(uow.c.execute(select(func.count()).select_from(table)).scalar_one())


def test_committing_twice_records_one_sale(client, shop, db_url):
    login(client, "cashier")
    code = shop["coupon"]
    data = commit_form(client, coupon=[code], redeem_points="500", tender="wechat_pay")
    first = client.post("/cashier/commit", data=data, follow_redirects=False)
    assert first.status_code == 303, errors_in(first.text) or first.text[:500]
    second = client.post("/cashier/commit", data=data, follow_redirects=False)
    assert second.status_code == 303
    assert second.headers["location"] == first.headers["location"] + "?replayed=1"
    assert count(db_url, checkout_commits) == 1 and count(db_url, orders) == 1
    mid = shop["a"]["id"]
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        bal = queries.balance(uow.c, actor=SYSTEM, member_id=mid)
    result = client.get(first.headers["location"] + "?lang=en")
    assert result.status_code == 200
    html = result.text
    assert text_of(html, "r-redeemed") == "500"
    earned = int(text_of(html, "r-earned"))
    assert earned > 0 and bal["available"] == 800 - 500 + earned
    assert f'class="redeemed-coupon" data-code="{code}"' in html
    assert 'data-method="wechat_pay"' in html and 'data-method="points"' in html
    assert "nothing was recorded twice" in client.get(second.headers["location"]
                                                      + "&lang=en").text
    # The member page shows the sale's ledger entries and the coupon redeemed.
    login(client, "owner")
    page = client.get(f"/members/{mid}?lang=en").text
    assert 'data-kind="redeem" data-bucket="available" data-points="-500"' in page
    assert f'data-kind="earn" data-bucket="available" data-points="{earned}"' in page
    assert f'data-code="{code}" data-state="redeemed"' in page


def test_a_basket_changed_after_its_quote_is_quoted_again(client, shop, db_url):
    login(client, "cashier")
    data = commit_form(client, tender="cash")
    data["qty"] = ["3", "1", "", ""]
    r = client.post("/cashier/commit?lang=en", data=data)
    assert r.status_code == 422 and "changed since the quote" in r.text
    assert count(db_url, checkout_commits) == 0
    data["payable_fen"] = "1"  # a tampered amount is refused by the checkout itself
    data["qty"] = ["2", "1", "", ""]
    r = client.post("/cashier/commit?lang=en", data=data)
    assert r.status_code == 422 and "add up" in errors_in(r.text)["tender"]
    assert count(db_url, checkout_commits) == 0


def test_bad_input_names_the_field(client, shop):
    login(client, "cashier")
    bad = {**BASKET, "price": ["abc", "15", "", ""], "qty": ["2", "0", "", ""]}
    r = client.post("/cashier?lang=en", data=form(client, action="quote", **bad))
    assert r.status_code == 422
    errors = errors_in(r.text)
    assert errors["lines.0.price"] == "Must be a number."
    r = client.post("/cashier?lang=en", data=form(client, action="quote", **{
        **BASKET, "qty": ["2", "0", "", ""]}))
    assert r.status_code == 422 and errors_in(r.text)["lines.1.qty"] == "Must be greater than 0."
    r = client.post("/cashier?lang=en", data=form(client, action="quote", **BASKET,
                                                  redeem_points="99999"))
    assert r.status_code == 422 and "redeem_points" in errors_in(r.text)
    r = client.post("/cashier?lang=en", data=form(client, action="quote", **BASKET,
                                                  stored_value="600"))
    assert r.status_code in (409, 422) and "stored_value" in errors_in(r.text)
    r = client.post("/cashier?lang=en", data=form(client, action="quote"))
    assert r.status_code == 422 and "Enter at least one line." in r.text
    r = client.post("/cashier?lang=en", data=form(client, action="quote", store="BJ01",
                                                  **BASKET))
    assert r.status_code == 422 and errors_in(r.text)["store"] == \
        "You may not record orders for this store."
    r = client.post("/cashier", data={**form(client, action="quote", **BASKET),
                                      "csrf_token": "0" * 64})
    assert r.status_code == 403


def test_a_guest_sale_and_more_lines(client, shop, db_url):
    login(client, "manager")
    r = client.post("/cashier", data=form(client, action="more", id_value="", **BASKET))
    assert r.status_code == 200 and r.text.count('class="line"') == 7
    data = commit_form(client, id_value="", tender="cash")
    done = client.post("/cashier/commit", data=data, follow_redirects=False)
    assert done.status_code == 303
    assert "Guest" in client.get(done.headers["location"] + "?lang=en").text
    assert count(db_url, orders) == 1
