"""The demo data generator: deterministic, valid, and shaped like real retail data."""

from __future__ import annotations

import datetime as dt
import itertools
import types
from collections import Counter
from decimal import Decimal
from typing import Any

import phonenumbers
import pytest

from patron.customers.model import normalize_phone
from patron.demo import people
from patron.demo.catalogue import PRODUCTS, STORES
from patron.demo.generator import (
    CSV_COLUMNS,
    generate,
    generate_csv_rows,
    generate_orders,
    plan,
    window,
)
from patron.orders.model import normalize_order
from patron.orders.schemas import OrderIn, ReturnIn

START, END = window(dt.date(2024, 1, 1), dt.date(2024, 12, 31))


@pytest.fixture(scope="module")
def events() -> list[tuple[str, dict[str, Any]]]:
    return list(generate(plan(start=START, end=END, customers=3000, seed=7)))


@pytest.fixture(scope="module")
def orders(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [p for kind, p in events if kind == "order"]


def local(order: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(order["purchased_at"])


def brand(order: dict[str, Any]) -> str:
    return str(order["lines"][0]["sku"].split("-")[0])


def test_same_seed_gives_the_same_orders_and_another_seed_others() -> None:
    config = plan(start=START, end=END, customers=200, seed=3)
    first = list(itertools.islice(generate(config), 300))
    again = list(itertools.islice(generate(config), 300))
    other = list(itertools.islice(generate(plan(start=START, end=END, customers=200, seed=4)),
                                  300))
    assert first == again
    assert first != other


def test_orders_come_lazily_so_a_huge_run_can_start_at_once() -> None:
    config = plan(start=START, end=END, customers=300_000, seed=1)
    stream = generate_orders(config)
    assert isinstance(stream, types.GeneratorType)
    # People are met when they first buy: the first orders arrive after one day's worth,
    # not after all 300,000 people have been simulated.
    assert len(list(itertools.islice(stream, 5))) == 5


def test_every_order_is_valid_in_the_window_and_in_time_order(
        orders: list[dict[str, Any]]) -> None:
    now = dt.datetime.now(dt.UTC)
    stores = {s.code for s in STORES}
    skus = {p.sku: p for p in PRODUCTS}
    previous = START
    for payload in orders:
        order_in = OrderIn.model_validate(payload)
        normalized, errors = normalize_order(order_in, now=now)
        assert errors == [], (payload, errors)
        assert normalized is not None
        assert normalized.total == Decimal(payload["total"])
        assert START <= order_in.purchased_at < END
        assert order_in.purchased_at >= previous
        previous = order_in.purchased_at
        assert order_in.store is None or order_in.store in stores
        if order_in.channel == "pos":
            assert order_in.store
        for line in order_in.lines:
            assert line.unit_price == skus[line.sku].list_price
            assert line.category == skus[line.sku].category
    assert len({o["external_id"] for o in orders}) == len(orders)


def test_generated_phones_are_valid_distinct_chinese_mobiles(
        orders: list[dict[str, Any]]) -> None:
    phones = {people.mobile_number(11, k) for k in range(5000)}
    phones |= {o["identifiers"]["phone"] for o in orders if "phone" in o["identifiers"]}
    assert len({people.mobile_number(11, k) for k in range(5000)}) == 5000
    for phone in phones:
        assert len(phone) == 11 and phone[:3] in people.MOBILE_PREFIXES
        number = phonenumbers.parse(phone, "CN")
        assert phonenumbers.is_valid_number(number), phone
        assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE, phone
        assert normalize_phone(phone) == "+86" + phone


def test_orders_mix_members_guests_and_platform_buyers(orders: list[dict[str, Any]]) -> None:
    n = len(orders)
    guests = [o for o in orders if not o["identifiers"]]
    members = [o for o in orders if "member_code" in o["identifiers"]]
    phone_or_card = [o for o in orders if {"member_code", "phone"} & set(o["identifiers"])]
    platform_only = [o for o in orders if set(o["identifiers"]) == {"platform_buyer_id"}]
    assert 0.12 < len(guests) / n < 0.45
    assert 0.30 < len(phone_or_card) / n < 0.75
    assert len(members) / n > 0.10
    assert len(platform_only) / n > 0.03
    assert {o["channel"] for o in guests} == {"pos"}
    # Members tell their name, gender and often their birthday; guests tell nothing.
    assert all(o["customer"]["name"] for o in members)
    assert sum("birthday" in o["customer"] for o in members) / len(members) > 0.6
    assert not any("customer" in o for o in guests)
    genders = Counter(o["customer"]["gender"] for o in members if brand(o) == "GLOW")
    assert genders["F"] > 3 * genders["M"]


def test_some_customers_link_identifiers_across_channels(orders: list[dict[str, Any]]) -> None:
    # An openid or a platform buyer id seen alone first and later with the member's phone is
    # what makes two profiles merge.
    first_seen: dict[tuple[str, str], set[str]] = {}
    linked_later = 0
    for o in orders:
        ids = o["identifiers"]
        for kind in ("wechat_openid", "platform_buyer_id"):
            if kind in ids:
                key = (kind, ids[kind])
                if key not in first_seen:
                    first_seen[key] = set(ids)
                elif "phone" in ids and "phone" not in first_seen[key]:
                    first_seen[key].add("phone")
                    linked_later += 1
    assert linked_later >= 5


def test_about_two_percent_of_orders_are_refunded_fully_or_partly(
        events: list[tuple[str, dict[str, Any]]], orders: list[dict[str, Any]]) -> None:
    seen: dict[str, dict[str, Any]] = {}
    refunds = []
    for kind, payload in events:
        if kind == "order":
            seen[payload["external_id"]] = payload
        else:
            assert payload["order_external_id"] in seen  # a refund follows its order
            refunds.append(payload)
    assert 0.012 < len(refunds) / len(orders) < 0.03
    assert {r["full"] for r in refunds} == {True, False}
    for payload in refunds:
        ret = ReturnIn.model_validate(payload)
        order = seen[ret.order_external_id]
        assert ret.returned_at > local(order)
        assert ret.channel == order["channel"] and ret.store == order.get("store")
        refunded = sum((ln.amount or Decimal(0) for ln in ret.lines), Decimal(0))
        assert refunded <= Decimal(order["total"])
        for line in ret.lines:
            assert line.line_no is not None
            assert line.quantity <= Decimal(order["lines"][line.line_no - 1]["quantity"])


def test_double_11_is_a_peak_against_an_ordinary_november_week(
        orders: list[dict[str, Any]]) -> None:
    per_day = Counter(local(o).date() for o in orders)
    double_11 = per_day[dt.date(2024, 11, 11)]
    ordinary = [per_day[dt.date(2024, 11, 18) + dt.timedelta(days=i)] for i in range(7)]
    assert double_11 > 1.5 * sum(ordinary) / 7
    # and the beauty brand sells it online
    beauty = [o for o in orders if brand(o) == "GLOW"]
    online = {"tmall", "jd", "douyin", "online_mall"}

    def online_share(days: set[dt.date]) -> float:
        sold = [o for o in beauty if local(o).date() in days]
        return sum(o["channel"] in online for o in sold) / len(sold)

    week = {dt.date(2024, 11, 18) + dt.timedelta(days=i) for i in range(7)}
    assert online_share({dt.date(2024, 11, 11)}) > online_share(week) + 0.15


def test_cafes_are_quiet_over_the_spring_festival(orders: list[dict[str, Any]]) -> None:
    cafe = Counter(local(o).date() for o in orders if brand(o) == "BEAN")
    holiday = sum(cafe[dt.date(2024, 2, 10) + dt.timedelta(days=i)] for i in range(7))
    march = sum(cafe[dt.date(2024, 3, 4) + dt.timedelta(days=i)] for i in range(7))
    assert holiday < 0.7 * march


def test_weekday_shapes_differ_by_vertical(orders: list[dict[str, Any]]) -> None:
    def weekend_ratio(code: str) -> float:
        days = Counter(local(o).weekday() for o in orders if brand(o) == code)
        return (days[5] + days[6]) / 2 / (sum(days[d] for d in range(5)) / 5)

    assert weekend_ratio("BEAN") < 0.9  # office cafes
    assert weekend_ratio("FRESH") > 1.1  # the weekly shop


def test_hours_peak_when_people_shop(orders: list[dict[str, Any]]) -> None:
    def hours(keep: Any) -> Counter[int]:
        return Counter(local(o).hour for o in orders if keep(o))

    till = hours(lambda o: o["channel"] == "pos")
    assert sum(till[h] for h in range(0, 6)) == 0  # shops are shut at night
    cafe = hours(lambda o: brand(o) == "BEAN" and o["channel"] == "pos")
    assert cafe[8] > 1.3 * cafe[16] and cafe[13] > cafe[16]  # morning and lunch peaks
    delivery = hours(lambda o: o["channel"] in ("meituan", "eleme"))
    assert delivery[12] > 2 * delivery[15] and delivery[18] > delivery[15]  # lunch, dinner
    online = hours(lambda o: o["channel"] in ("tmall", "jd", "douyin"))
    assert online[21] > 1.5 * online[9]  # the evening scroll
    grocery = hours(lambda o: brand(o) == "FRESH" and o["channel"] == "pos")
    assert grocery[18] > grocery[13]  # after work


def test_baskets_have_real_category_affinities(orders: list[dict[str, Any]]) -> None:
    def lift(code: str, a: str, b: str) -> float:
        baskets = [{ln["category"] for ln in o["lines"]} for o in orders if brand(o) == code]
        n = len(baskets)
        pa = sum(a in x for x in baskets) / n
        pb = sum(b in x for x in baskets) / n
        return sum(a in x and b in x for x in baskets) / n / (pa * pb)

    assert lift("BEAN", "coffee", "bakery") > 1.05
    assert lift("BEAN", "tea", "bakery") < 0.8
    assert lift("GLOW", "skincare", "makeup") > 1.1
    assert lift("FRESH", "snacks", "beverages") > 1.5
    assert lift("FRESH", "fresh", "snacks") < 0.5


def test_customers_differ_in_how_much_they_buy(orders: list[dict[str, Any]]) -> None:
    per_member = Counter(o["identifiers"]["member_code"] for o in orders
                         if "member_code" in o["identifiers"])
    counts = sorted(per_member.values())
    # Heterogeneous rates and dropout: many one-off buyers and a long tail of regulars.
    assert counts[len(counts) // 2] <= 4
    assert counts[-1] >= 25
    assert sum(1 for c in counts if c == 1) / len(counts) > 0.15


def test_asking_for_orders_gives_about_that_many() -> None:
    config = plan(start=START, end=END, orders=3000, seed=9)
    assert 2600 < sum(1 for _ in generate_orders(config)) < 3400
    both = plan(start=START, end=END, customers=300, orders=4000, seed=9)
    assert both.customers == 300
    assert 3400 < sum(1 for _ in generate_orders(both)) < 4600


def test_csv_rows_are_the_canonical_columns_one_row_per_line() -> None:
    config = plan(start=START, end=END, customers=100, seed=5)
    rows = list(generate_csv_rows(config))
    assert all(tuple(r) == CSV_COLUMNS for r in rows)
    by_order: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_order.setdefault(row["order_id"], []).append(row)
    orders = list(generate_orders(config))
    assert len(by_order) == len(orders)
    for order in orders:
        group = by_order[order["external_id"]]
        assert [r["sku"] for r in group] == [ln["sku"] for ln in order["lines"]]
        lines = sum((Decimal(r["quantity"]) * Decimal(r["unit_price"])
                     - Decimal(r["line_discount"] or 0) for r in group), Decimal(0))
        total = lines.quantize(Decimal("0.01")) - Decimal(group[0]["discount"] or 0)
        assert abs(total - Decimal(group[0]["total"])) <= Decimal("0.01") * len(group)


def test_window_reaching_today_ends_now() -> None:
    now = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)
    start, end = window(dt.date(2026, 1, 1), dt.date(2026, 3, 2), now=now)
    assert start.isoformat() == "2026-01-01T00:00:00+08:00"
    assert end == now
