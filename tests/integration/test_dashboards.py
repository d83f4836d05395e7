"""Dashboards on both databases, against figures worked out by hand from a small shop.

Two stores in different time zones (Shanghai, and New York with its daylight saving change
on 8 March 2026), an empty third store, members and non-members, guest orders, a refund, a
promotion window and three monthly cohorts. Every expected number below is counted from the
order list in ``shop``; every drill-down list must have as many customers as its figure.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from itertools import combinations
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text, update

from patron.analytics import dashboards as rules
from patron.analytics import dashboards_service as ds
from patron.analytics.dashboards_tables import dashboard_refreshes
from patron.db import utcnow
from patron.errors import Forbidden, NotFound, ValidationFailed
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.orders.tables import orders
from patron.org import service as org
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
AS_OF = dt.datetime(2026, 3, 20, 12, 0, tzinfo=SH)  # "today" is 20 March 2026
Q1 = (dt.date(2026, 1, 1), dt.date(2026, 3, 31))
D = Decimal

# (external id, who, store, channel, local time, amount, category)
ORDERS = [
    ("1", "A", "SH01", "pos", (2026, 1, 5, 10), "100.00", "coffee"),
    ("2", "B", "SH01", "pos", (2026, 1, 20, 12), "50.00", "bakery"),
    ("3", None, "SH01", "pos", (2026, 1, 20, 13), "30.00", "coffee"),
    ("4", "A", "SH01", "mini_program", (2026, 2, 3, 9), "80.00", "coffee"),
    ("5", "A", "SH01", "pos", (2026, 2, 10, 9), "40.00", "tea"),
    # 20:00 in New York is 09:00 the next day in Shanghai: the local day is the 14th.
    ("6", "C", "NY01", "pos", (2026, 2, 14, 20), "200.00", "coffee"),
    # 23:30 on 28 February in New York is already March in UTC and in Shanghai.
    ("7", "B", "NY01", "pos", (2026, 2, 28, 23, 30), "60.00", "tea"),
    ("8", "D", "SH01", "pos", (2026, 3, 2, 10), "90.00", "coffee"),  # refunded in full
    ("9", "A", "SH01", "pos", (2026, 3, 10, 10), "100.00", "coffee"),
    ("10", "C", "NY01", "pos", (2026, 3, 12, 12), "150.00", "coffee"),
    ("11", None, "NY01", "pos", (2026, 3, 13, 10), "20.00", "bakery"),
    ("12", "B", "SH01", "pos", (2026, 3, 4, 10), "50.00", "bakery"),
    ("13", "A", "SH01", "pos", (2026, 3, 10, 18), "20.00", "bakery"),
    ("14", "A", "SH01", "pos", (2026, 3, 5, 10), "60.00", "tea"),
    ("15", "A", "SH01", "pos", (2026, 3, 21, 9), "70.00", "coffee"),  # dated after today
    ("16", "B", "SH01", "mini_program", (2026, 3, 4, 15), "30.00", "bakery"),
]
PEOPLE = {"A": {"member_code": "MA0001"}, "B": {"phone": "13800000002"},
          "C": {"member_code": "MC0003"}, "D": {"phone": "13800000004"}}


def body(ext: str, who: str | None, store: str, channel: str, at: tuple[int, ...], amount: str,
         category: str) -> dict:
    zone = NY if store == "NY01" else SH
    return {"external_id": ext, "channel": channel, "store": store,
            "purchased_at": dt.datetime(*at, tzinfo=zone).isoformat(),
            "identifiers": PEOPLE[who] if who else {},
            "lines": [{"sku": category.upper(), "category": category, "quantity": "1",
                       "unit_price": amount}]}


def record(uow, rows, now=AS_OF):
    out = record_orders(uow=uow, orders_in=[body(*r) for r in rows], source="api",
                        actor=SYSTEM, now=now, audit_each=False)
    assert [o.status for o in out] == ["created"] * len(rows), out
    return out


def refund_order_8(uow):
    record_return(uow=uow, actor=SYSTEM, ret=ReturnIn(
        external_id="R8", channel="pos", store="SH01", order_external_id="8",
        returned_at=dt.datetime(2026, 3, 3, 10, tzinfo=SH), full=True))


def make_stores(uow) -> dict[str, int]:
    b1 = org.create_brand(uow=uow, actor=SYSTEM, code="B1", name="Bean Brothers")
    b2 = org.create_brand(uow=uow, actor=SYSTEM, code="B2", name="Brooklyn Beans")
    east = org.create_region(uow=uow, actor=SYSTEM, code="EAST", name="华东")
    amer = org.create_region(uow=uow, actor=SYSTEM, code="AMER", name="Americas")
    return {
        "SH01": org.create_store(uow=uow, actor=SYSTEM, code="SH01", name="上海一店",
                                 brand_id=b1, region_id=east),
        "SH02": org.create_store(uow=uow, actor=SYSTEM, code="SH02", name="上海二店",
                                 brand_id=b1, region_id=east),
        "NY01": org.create_store(uow=uow, actor=SYSTEM, code="NY01", name="New York",
                                 timezone="America/New_York", brand_id=b2, region_id=amer),
    }


@pytest.fixture
def shop(uow):
    stores = make_stores(uow)
    out = record(uow, ORDERS)
    refund_order_8(uow)
    ids = {ORDERS[i][1]: o.customer_id for i, o in enumerate(out) if ORDERS[i][1]}
    ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF)
    return {"stores": stores, "customers": ids,
            "manager": Actor(type="user", id=9, name="mgr", role="manager",
                             store_ids=frozenset({stores["SH01"]}), language="en")}


def rows_by_key(result):
    return {r["key"]: r for r in result["rows"]}


def pick(figures, *names):
    return tuple(figures[n] for n in names)


FIELDS = ("orders", "sales", "refunds", "net_sales", "guest_orders", "customers",
          "new_customers", "repeat_customers", "repurchase_rate", "aov", "frequency")


def breakdown(uow, by, period=Q1, **kw):
    return ds.breakdown(uow.c, actor=kw.pop("actor", SYSTEM), by=by, date_from=period[0],
                        date_to=period[1], as_of=AS_OF, **kw)


def test_by_store_counts_each_store_in_its_own_time_zone_and_an_empty_store_as_zeros(uow, shop):
    got = breakdown(uow, "store")
    assert got["effective_to"] == dt.date(2026, 3, 20)
    rows = rows_by_key(got)
    assert list(rows) == ["NY01", "SH01", "SH02"]
    assert pick(rows["SH01"], *FIELDS) == (
        11, D("650.00"), D("90.00"), D("560.00"), 1, 3, 3, 2, 0.6667, D("50.91"), 3.33)
    assert pick(rows["NY01"], *FIELDS) == (
        4, D("430.00"), D("0.00"), D("430.00"), 1, 2, 2, 1, 0.5, D("107.50"), 1.5)
    # an empty store: zeros and "nothing to divide by", never NaN
    assert pick(rows["SH02"], *FIELDS) == (
        0, D("0.00"), D("0.00"), D("0.00"), 0, 0, 0, 0, None, None, None)
    # the total counts each customer once, and not the order dated after today
    assert pick(got["total"], *FIELDS) == (
        15, D("1080.00"), D("90.00"), D("990.00"), 2, 4, 4, 3, 0.75, D("66.00"), 3.25)
    assert got["total"]["returning_customers"] == 0


def test_by_month_puts_a_new_york_evening_in_its_local_month(uow, shop):
    rows = rows_by_key(breakdown(uow, "month"))
    assert list(rows) == ["2026-01", "2026-02", "2026-03"]
    want = {"2026-01": (3, D("180.00"), 2, 2, 0), "2026-02": (4, D("380.00"), 3, 1, 1),
            "2026-03": (8, D("430.00"), 4, 1, 1)}
    for key, expected in want.items():
        assert pick(rows[key], "orders", "net_sales", "customers", "new_customers",
                    "repeat_customers") == expected, key
    assert rows["2026-03"]["to"] == dt.date(2026, 3, 20)  # cut at today


def test_by_week_whole_and_partial_weeks(uow, shop):
    rows = rows_by_key(breakdown(uow, "week", (dt.date(2026, 2, 11), dt.date(2026, 2, 22))))
    assert list(rows) == ["2026-02-09", "2026-02-16"]
    # 11-15 February (a partial week): C on the 14th in New York, new; A's 10th is outside
    assert pick(rows["2026-02-09"], "orders", "customers", "new_customers") == (1, 1, 1)
    assert pick(rows["2026-02-16"], "orders", "customers", "repurchase_rate") == (0, 0, None)


def test_by_day_region_brand_channel_and_category(uow, shop):
    days = rows_by_key(breakdown(uow, "day", (dt.date(2026, 3, 4), dt.date(2026, 3, 5))))
    assert pick(days["2026-03-04"], "orders", "customers", "new_customers") == (2, 1, 0)
    assert pick(days["2026-03-05"], "orders", "customers") == (1, 1)
    regions = rows_by_key(breakdown(uow, "region"))
    assert pick(regions["EAST"], "orders", "customers", "repeat_customers") == (11, 3, 2)
    assert pick(regions["AMER"], "orders", "customers", "repeat_customers") == (4, 2, 1)
    brands = rows_by_key(breakdown(uow, "brand"))
    assert pick(brands["B2"], "net_sales", "customers") == (D("430.00"), 2)
    channels = rows_by_key(breakdown(uow, "channel"))
    assert pick(channels["pos"], "orders", "customers", "new_customers",
                "repeat_customers") == (13, 4, 4, 3)
    assert pick(channels["mini_program"], "orders", "customers", "new_customers",
                "repeat_customers") == (2, 2, 2, 0)
    assert pick(channels["meituan"], "orders", "customers") == (0, 0)
    cats = rows_by_key(breakdown(uow, "category"))
    assert pick(cats["coffee"], "orders", "sales", "refunds", "customers",
                "repeat_customers") == (7, D("750.00"), D("90.00"), 3, 2)
    assert pick(cats["bakery"], "orders", "sales", "customers", "repeat_customers") == (
        5, D("170.00"), 2, 1)
    assert pick(cats["tea"], "orders", "sales", "customers", "repeat_customers") == (
        3, D("160.00"), 2, 1)


def test_a_period_starting_mid_month_counts_earlier_buyers_as_returning(uow, shop):
    got = breakdown(uow, "store", (dt.date(2026, 1, 10), dt.date(2026, 3, 31)))
    # A bought on 5 January, before the period: returning; B, C and D are new
    assert pick(got["total"], "customers", "new_customers", "returning_customers",
                "repeat_customers") == (4, 3, 1, 3)
    assert pick(rows_by_key(got)["SH01"], "customers", "new_customers",
                "repeat_customers") == (3, 2, 2)


def test_members_non_members_and_guests(uow, shop):
    got = ds.members_report(uow.c, actor=SYSTEM, date_from=Q1[0], date_to=Q1[1], as_of=AS_OF)
    g = got["groups"]
    assert pick(g["member"], "orders", "net_sales", "aov", "customers", "frequency",
                "repurchase_rate") == (8, D("750.00"), D("93.75"), 2, 4.0, 1.0)
    assert pick(g["non_member"], "orders", "sales", "refunds", "net_sales", "aov",
                "customers", "frequency", "repurchase_rate") == (
        5, D("280.00"), D("90.00"), D("190.00"), D("38.00"), 2, 2.5, 0.5)
    # guests are orders without a customer: no customers, frequency or repurchase
    assert pick(g["guest"], "orders", "net_sales", "aov", "customers", "frequency",
                "repurchase_rate") == (2, D("50.00"), D("25.00"), None, None, None)
    members_only = rows_by_key(breakdown(uow, "store", member="member"))
    assert pick(members_only["SH01"], "orders", "customers") == (6, 1)
    assert pick(members_only["NY01"], "orders", "customers") == (2, 1)


def test_promotion_against_the_same_number_of_days_before(uow, shop):
    promo = ds.create_promotion(uow=uow, actor=SYSTEM, name="Spring coffee",
                                starts_on=dt.date(2026, 3, 9), ends_on=dt.date(2026, 3, 15))
    got = ds.promotion_comparison(uow.c, actor=SYSTEM, promotion_id=promo["id"], as_of=AS_OF)
    assert got["status"] == "ended"
    assert (got["before"]["from"], got["before"]["to"]) == (dt.date(2026, 3, 2),
                                                            dt.date(2026, 3, 8))
    before, during = got["before"]["groups"], got["during"]["groups"]
    assert pick(before["member"], "orders", "aov", "customers", "frequency") == (
        1, D("60.00"), 1, 1.0)
    assert pick(during["member"], "orders", "aov", "customers", "frequency",
                "repurchase_rate") == (3, D("90.00"), 2, 1.5, 0.0)
    assert pick(before["non_member"], "orders", "net_sales", "aov", "customers") == (
        3, D("80.00"), D("26.67"), 2)
    assert pick(during["non_member"], "orders", "aov", "customers", "frequency") == (
        0, None, 0, None)
    assert pick(during["guest"], "orders", "aov") == (1, D("20.00"))
    assert (before["all"]["aov"], during["all"]["aov"]) == (D("35.00"), D("72.50"))
    change = got["change"]["member"]
    assert change["aov"] == {"absolute": D("30.00"), "relative": 0.5}
    assert change["customers"] == {"absolute": 1, "relative": 1.0}
    assert change["frequency"] == {"absolute": 0.5, "relative": 0.5}
    assert change["repurchase_rate"] == {"absolute": 0.0, "relative": None}
    assert got["change"]["non_member"]["aov"] == {"absolute": None, "relative": None}
    # a store promotion counts only that store; an upcoming one has nothing to compare yet
    store_promo = ds.create_promotion(uow=uow, actor=SYSTEM, name="NY week", store="NY01",
                                      starts_on=dt.date(2026, 3, 9),
                                      ends_on=dt.date(2026, 3, 15))
    ny = ds.promotion_comparison(uow.c, actor=SYSTEM, promotion_id=store_promo["id"],
                                 as_of=AS_OF)
    assert pick(ny["during"]["groups"]["all"], "orders", "customers") == (2, 1)
    later = ds.create_promotion(uow=uow, actor=SYSTEM, name="Summer",
                                starts_on=dt.date(2026, 6, 1), ends_on=dt.date(2026, 6, 7))
    upcoming = ds.promotion_comparison(uow.c, actor=SYSTEM, promotion_id=later["id"],
                                       as_of=AS_OF)
    assert (upcoming["status"], upcoming["during"], upcoming["change"]) == ("upcoming", None,
                                                                            None)


def test_promotions_are_owner_only_audited_and_checked(uow, shop):
    created = ds.create_promotion(uow=uow, actor=SYSTEM, name=" Spring ", brand="B1",
                                  starts_on=dt.date(2026, 3, 9), ends_on=dt.date(2026, 3, 15))
    assert (created["name"], created["scope"]) == ("Spring", "brand:B1")
    changed = ds.update_promotion(uow=uow, actor=SYSTEM, promotion_id=created["id"],
                                  store="SH01")
    assert (changed["store"], changed["brand"], changed["scope"]) == ("SH01", None,
                                                                      "store:SH01")
    ds.delete_promotion(uow=uow, actor=SYSTEM, promotion_id=created["id"])
    actions = list(uow.c.execute(select(audit_log.c.action).where(
        audit_log.c.entity == "promotion").order_by(audit_log.c.id)).scalars())
    assert actions == ["promotion.created", "promotion.updated", "promotion.deleted"]
    with pytest.raises(Forbidden):
        ds.create_promotion(uow=uow, actor=shop["manager"], name="x",
                            starts_on=dt.date(2026, 3, 9), ends_on=dt.date(2026, 3, 15))
    for kw, field_name in (({"starts_on": dt.date(2026, 3, 9), "ends_on": dt.date(2026, 3, 1)},
                            "ends_on"),
                           ({"starts_on": dt.date(2026, 3, 9), "ends_on": dt.date(2026, 3, 9),
                             "store": "SH01", "brand": "B1"}, "brand"),
                           ({"starts_on": dt.date(2026, 3, 9), "ends_on": dt.date(2026, 3, 9),
                             "store": "NOPE"}, "store")):
        with pytest.raises(ValidationFailed) as exc:
            ds.create_promotion(uow=uow, actor=SYSTEM, name="x", **kw)
        assert exc.value.fields[0].field == field_name
    with pytest.raises(NotFound):
        ds.promotion_comparison(uow.c, actor=SYSTEM, promotion_id=999)


def test_cohorts_and_their_retention(uow, shop):
    got = ds.cohorts(uow.c, actor=SYSTEM, month_from="2026-01", month_to="2026-03",
                     as_of=AS_OF)
    by_month = {c["cohort"]: c for c in got["cohorts"]}
    jan, feb, mar = by_month["2026-01"], by_month["2026-02"], by_month["2026-03"]
    assert jan["customers"] == 2  # A and B
    assert [(p["k"], p["customers"], p["share"]) for p in jan["retention"]] == [
        (0, 2, 1.0), (1, 2, 1.0), (2, 2, 1.0)]
    assert [(p["k"], p["customers"]) for p in feb["retention"]] == [(0, 1), (1, 1)]  # C
    assert [(p["k"], p["customers"]) for p in mar["retention"]] == [(0, 1)]  # D; no April
    sh = {c["cohort"]: c for c in ds.cohorts(uow.c, actor=SYSTEM, scope="store:SH01",
                                             month_from="2026-01", month_to="2026-03",
                                             as_of=AS_OF)["cohorts"]}
    # at SH01, B's February purchase was in New York
    assert [p["share"] for p in sh["2026-01"]["retention"]] == [1.0, 0.5, 1.0]
    assert (sh["2026-02"]["customers"], sh["2026-02"]["retention"][0]["share"]) == (0, None)
    members = {c["cohort"]: c["customers"] for c in ds.cohorts(
        uow.c, actor=SYSTEM, member="member", month_from="2026-01", month_to="2026-03",
        as_of=AS_OF)["cohorts"]}
    assert members == {"2026-01": 1, "2026-02": 1, "2026-03": 0}


def test_every_figure_drills_down_to_as_many_customers(uow, shop):
    def drill(**params):
        return ds.drill_customers(uow.c, actor=params.pop("actor", SYSTEM), params=params,
                                  page_size=200, as_of=AS_OF)

    for by, period in (("store", Q1), ("channel", Q1), ("category", Q1), ("region", Q1),
                       ("month", Q1), ("week", (dt.date(2026, 2, 11), dt.date(2026, 3, 3))),
                       ("store", (dt.date(2026, 1, 10), dt.date(2026, 3, 20)))):
        got = breakdown(uow, by, period)
        cells = [(r["key"], r) for r in got["rows"]] + [(None, got["total"])]
        for key, figures in cells:
            for metric in ("customers", "new_customers", "returning_customers",
                           "repeat_customers"):
                params = {"by": by if key is not None else "total", "key": key,
                          "from": period[0].isoformat(), "to": period[1].isoformat(),
                          "metric": metric}
                listed = drill(**params)
                assert listed["total"] == figures[metric], (by, key, metric)
                assert len(listed["items"]) == figures[metric]
    a = shop["customers"]["A"]
    repeaters = drill(by="store", key="SH01", **{"from": "2026-01-01", "to": "2026-03-31"},
                      metric="repurchase_rate")
    assert {c["id"] for c in repeaters["items"]} == {a, shop["customers"]["B"]}
    top = repeaters["items"][0]
    assert (top["id"], top["purchase_days"], top["orders"], top["net_spend"]) == (
        a, 5, 6, D("400.00"))
    assert top["phone"] is None or "*" in top["phone"]
    b_row = next(c for c in repeaters["items"] if c["id"] == shop["customers"]["B"])
    assert b_row["phone"] == "138****0002"  # masked as in the customer list
    cohort = drill(view="cohort", cohort="2026-01", k="1")
    assert cohort["total"] == 2
    sh_cohort = drill(view="cohort", cohort="2026-01", k="1", scope="store:SH01")
    assert [c["id"] for c in sh_cohort["items"]] == [a]


def test_a_manager_sees_only_their_store(uow, shop):
    mgr = shop["manager"]
    got = breakdown(uow, "store", actor=mgr)
    assert [r["key"] for r in got["rows"]] == ["SH01"]
    assert pick(got["total"], "orders", "customers", "repeat_customers") == (11, 3, 2)
    channels = rows_by_key(breakdown(uow, "channel", actor=mgr))  # the exact per-customer path
    assert pick(channels["pos"], "orders", "customers", "repeat_customers") == (9, 3, 2)
    assert pick(channels["mini_program"], "orders", "customers") == (2, 2)
    with pytest.raises(Forbidden):
        breakdown(uow, "store", actor=mgr, scope="store:NY01")
    listed = ds.drill_customers(uow.c, actor=mgr, params={
        "by": "total", "from": "2026-01-01", "to": "2026-03-31"}, as_of=AS_OF)
    assert {c["id"] for c in listed["items"]} == {shop["customers"][k] for k in "ABD"}
    cashier = Actor(type="user", id=10, name="till", role="cashier",
                    store_ids=frozenset({shop["stores"]["SH01"]}))
    with pytest.raises(Forbidden):
        breakdown(uow, "store", actor=cashier)


def test_bad_input_is_refused_with_the_field(uow, shop):
    cases = [({"by": "city"}, "by"),
             ({"by": "store", "date_from": Q1[1], "date_to": Q1[0]}, "to"),
             ({"by": "store", "member": "vip"}, "member"),
             ({"by": "store", "channel": "fax"}, "channel"),
             ({"by": "store", "scope": "city:SH"}, "scope"),
             ({"by": "day", "date_from": dt.date(2025, 1, 1), "date_to": dt.date(2026, 3, 1)},
              "by"),
             ({"by": "store", "date_from": dt.date(2020, 1, 1), "date_to": dt.date(2026, 1, 1)},
              "to")]
    for kw, field_name in cases:
        args = {"date_from": Q1[0], "date_to": Q1[1], **kw}
        with pytest.raises(ValidationFailed) as exc:
            ds.breakdown(uow.c, actor=SYSTEM, as_of=AS_OF, **args)
        assert exc.value.fields[0].field == field_name, kw
    for params, field_name in (({"view": "nope"}, "view"), ({"metric": "nope"}, "metric"),
                               ({"by": "store", "from": "2026-01-01", "to": "2026-01-31"},
                                "key"),
                               ({"by": "month", "key": "2027-01", "from": "2026-01-01",
                                 "to": "2026-01-31"}, "key"),
                               ({"view": "cohort", "cohort": "2026-13"}, "cohort"),
                               ({"by": "store", "key": "XX", "from": "2026-01-01",
                                 "to": "2026-01-31"}, "key"),
                               ({"by": "total", "from": "01/02/2026", "to": "2026-01-31"},
                                "from")):
        with pytest.raises(ValidationFailed) as exc:
            ds.drill_customers(uow.c, actor=SYSTEM, params=params, as_of=AS_OF)
        assert exc.value.fields[0].field == field_name, params
    with pytest.raises(ValidationFailed):
        ds.cohorts(uow.c, actor=SYSTEM, month_from="2026-03", month_to="2026-01", as_of=AS_OF)


def test_a_period_entirely_in_the_future_is_all_zeros(uow, shop):
    got = breakdown(uow, "month", (dt.date(2026, 3, 21), dt.date(2026, 4, 30)))
    assert got["rows"] == [] and got["effective_to"] is None
    assert pick(got["total"], "orders", "customers", "aov", "repurchase_rate") == (0, 0, None,
                                                                                 None)


def test_a_refund_larger_than_its_order_counts_as_the_order(uow, shop):
    # Bad data from elsewhere (a legacy import): 80.00 refunded on a 50.00 order.
    uow.c.execute(update(orders).where(orders.c.external_id == "2")
                  .values(refunded_amount=D("80.00")))
    uow.commit()
    ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF, full=True)
    jan = rows_by_key(breakdown(uow, "month", (dt.date(2026, 1, 1), dt.date(2026, 1, 31))))
    assert pick(jan["2026-01"], "sales", "refunds", "net_sales", "aov") == (
        D("180.00"), D("50.00"), D("130.00"), D("43.33"))


def test_fast_cells_agree_with_the_per_customer_count_for_any_period(uow, shop):
    f = ds.resolve_filters(uow.c, SYSTEM)
    days = [rules.day_number(dt.date(2026, 1, 1)) + i for i in range(0, 80, 4)]
    days += [rules.day_number(dt.date(2026, 2, 1)), rules.day_number(dt.date(2026, 2, 28))]
    for lo, hi in combinations(sorted(set(days)), 2):
        for by, kind in (("store", "store"), ("channel", "channel"), ("category", "category"),
                         ("total", "all"), ("region", "region")):
            fast = ds._fast_reach(uow.c, kind, None, lo, hi, (0, 1))
            slow = ds._slow_reach(uow.c, by, lo, hi, f)
            fast = {k: v for k, v in fast.items() if v.customers}
            slow = {(k if by != "total" else ""): v for k, v in slow.items()}
            assert fast == slow, (by, rules.day_of(lo), rules.day_of(hi))


def _snapshot(uow) -> dict[str, list]:
    tables = ("dashboard_activity", "dashboard_category_activity", "dashboard_sales_daily",
              "dashboard_category_daily", "dashboard_reach_buckets", "dashboard_reach_months",
              "dashboard_reach_month_days", "dashboard_cohorts", "dashboard_structure")
    out = {}
    for name in tables:
        rows = uow.c.execute(text(f"SELECT * FROM {name}")).all()  # noqa: S608
        out[name] = sorted(tuple(r) for r in rows)
    return out


def test_an_incremental_refresh_equals_a_full_rebuild(uow):
    make_stores(uow)
    first_half = [o for o in ORDERS if o[4] < (2026, 2, 20)]
    record(uow, first_half, now=dt.datetime(2026, 2, 20, tzinfo=SH))
    result = ds.refresh_dashboards(uow=uow, actor=SYSTEM,
                                   as_of=dt.datetime(2026, 2, 21, tzinfo=SH))
    assert result["mode"] == "full"
    # later: the rest of the orders (one backdated into January), a refund, a new member
    rest = [o for o in ORDERS if o[4] >= (2026, 2, 20)]
    rest.append(("17", "D", "SH01", "pos", (2026, 1, 25, 10), "10.00", "tea"))
    record(uow, rest, now=AS_OF)
    refund_order_8(uow)
    from patron.customers.protect import identity_is
    from patron.customers.tables import customers, identities

    uow.c.execute(update(customers).where(customers.c.id.in_(select(
        identities.c.customer_id).where(identity_is("+8613800000002")))).values(
        is_member=True, updated_at=dt.datetime(2026, 3, 20, tzinfo=SH)))
    uow.commit()
    result = ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF)
    assert result["mode"] == "incremental"
    assert result["customers"] == 4 and result["guest_days"] == 1
    incremental = _snapshot(uow)
    ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF, full=True)
    assert _snapshot(uow) == incremental
    # within the hour's margin the same customers are candidates again, but their rows come
    # out as they are stored: none of them is taken away and added back (the guest day is
    # recomputed); after it, nobody is even a candidate
    # (the refund was recorded at the real time, after AS_OF)
    again = ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF + dt.timedelta(hours=2))
    assert (again["customers"], again["guest_days"]) == (0, 1)
    assert _snapshot(uow) == incremental
    later = utcnow() + dt.timedelta(hours=2)
    ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=later)
    again = ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=later + dt.timedelta(hours=2))
    assert (again["mode"], again["customers"], again["guest_days"]) == ("incremental", 0, 0)
    assert _snapshot(uow) == incremental
    runs = uow.c.execute(select(func.count()).select_from(dashboard_refreshes)).scalar_one()
    assert runs == 6


def test_an_order_committed_late_within_the_margin_is_counted(uow):
    # Candidates within the hour's margin are narrowed to the customers whose rows change:
    # an order that carries a time before the last refresh (a long transaction committing
    # late) still changes its customer's rows and is counted, the others are left alone.
    make_stores(uow)
    record(uow, ORDERS, now=AS_OF)
    first = ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF + dt.timedelta(hours=1))
    assert first["mode"] == "full"
    today = (dt.date(2026, 3, 20), dt.date(2026, 3, 20))
    before = breakdown(uow, "day", today)["total"]["orders"]
    record(uow, [("18", "B", "SH02", "pos", (2026, 3, 20, 11), "12.00", "tea")],
           now=AS_OF + dt.timedelta(minutes=30))
    late = ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF + dt.timedelta(hours=2))
    assert (late["mode"], late["customers"]) == ("incremental", 1)
    incremental = _snapshot(uow)
    ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF + dt.timedelta(hours=2), full=True)
    assert _snapshot(uow) == incremental
    assert breakdown(uow, "day", today)["total"]["orders"] == before + 1


def test_refresh_is_for_owners_and_analysts_and_audited(uow, shop):
    with pytest.raises(Forbidden):
        ds.refresh_dashboards(uow=uow, actor=shop["manager"])
    analyst = Actor(type="user", id=11, name="ana", role="analyst")
    ds.refresh_dashboards(uow=uow, actor=analyst, as_of=AS_OF)
    entries = uow.c.execute(select(audit_log.c.actor_name, audit_log.c.details).where(
        audit_log.c.action == "dashboards.refreshed").order_by(audit_log.c.id)).all()
    assert [e.actor_name for e in entries] == ["system", "ana"]
    assert entries[-1].details["mode"] == "incremental"
    status = ds.refresh_status(uow.c, actor=analyst)
    assert status["refreshed"] and status["mode"] == "incremental"


def test_structure_by_segment_and_stage(uow, shop):
    from patron.analytics import service as analytics

    analytics.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    analytics.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    ds.refresh_dashboards(uow=uow, actor=SYSTEM, as_of=AS_OF)
    got = ds.structure(uow.c, actor=SYSTEM)
    assert got["customers"] == 4
    expected = {(r.segment, r.stage): n for r, n in []}
    from patron.analytics import rfm_read
    from patron.analytics.tables import lifecycle_stages

    r = rfm_read.scored()
    rows = uow.c.execute(
        select(r.c.segment, lifecycle_stages.c.stage, func.count())
        .join(lifecycle_stages, lifecycle_stages.c.customer_id == r.c.customer_id)
        .where(r.c.scope == "overall").group_by(r.c.segment, lifecycle_stages.c.stage)).all()
    expected = {(seg, stage): int(n) for seg, stage, n in rows}
    found = {(s["segment"], st): n for s in got["segments"] for st, n in s["stages"].items()
             if n}
    assert found == expected
    for (segment, stage), n in expected.items():
        listed = ds.drill_customers(uow.c, actor=SYSTEM, params={
            "view": "structure", "segment": segment, "stage": stage}, as_of=AS_OF)
        assert listed["total"] == n
    mgr = ds.structure(uow.c, actor=shop["manager"])
    assert mgr["scope"] == "store:SH01" and mgr["customers"] == 3
    with pytest.raises(Forbidden):
        ds.structure(uow.c, actor=shop["manager"], scope="store:NY01")
