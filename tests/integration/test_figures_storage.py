"""The per-customer figures and counters kept by ingestion (one row per customer, counters read,
added to and written back per chunk; purchase days told from the orders) always equal a
recomputation from the orders: across chunks, re-imports, returns, merges and their undoing,
concurrent writers, stores in other time zones, and profiles made before their first purchase.
"""

import datetime as dt
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from patron.analytics.preferences import preferences_for
from patron.customers import figures
from patron.customers.queries import favourites
from patron.customers.service import (
    find_or_create_by_phone,
    merge_customers,
    rebuild_figures,
    undo_merge,
)
from patron.customers.tables import customer_figures, customer_merges
from patron.db import UnitOfWork
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.org import service as org
from patron.security.model import SYSTEM
from tests.factories import make_org, order

SH = dt.timezone(dt.timedelta(hours=8))
NY = ZoneInfo("America/New_York")
A = {"phone": "13812341234"}
B = {"member_code": "M00000042"}
C = {"phone": "13900005555"}


def _org(uow) -> None:
    make_org(uow)
    org.create_store(uow=uow, actor=SYSTEM, code="NY01", name="New York", city="New York",
                     timezone="America/New_York")


def _record(uow, bodies):
    return record_orders(uow=uow, orders_in=bodies, source="import", actor=SYSTEM,
                         audit_each=False)


def _figures(uow, cid):
    return uow.c.execute(select(customer_figures).where(
        customer_figures.c.customer_id == cid)).mappings().one()


def _day(year, month, day, hour, tz=SH) -> dt.datetime:
    return dt.datetime(year, month, day, hour, 15, tzinfo=tz)


def _history():
    """Two chunks: the second repeats days of the first, brings an earlier day late, and a
    store in New York whose local date differs from Shanghai's at the same instant."""
    first = [
        order("A1", identifiers=A, at=_day(2026, 3, 2, 9)),
        order("A2", identifiers=A, at=_day(2026, 3, 2, 18), channel="mini_program", store=None),
        order("A3", identifiers=A, at=_day(2026, 3, 5, 8), store="BJ01"),
        order("B1", identifiers=B, at=_day(2026, 3, 3, 12)),
        order("G1", at=_day(2026, 3, 3, 13)),  # a guest sale
        order("C1", identifiers=C, at=_day(2026, 3, 9, 23)),
    ]
    second = [
        order("A4", identifiers=A, at=_day(2026, 3, 2, 21)),  # a day already counted
        order("A5", identifiers=A, at=_day(2026, 2, 27, 10)),  # an earlier day, late
        # 2026-03-05 10:00 in New York is 23:00 in Shanghai: the same Shanghai date as A3,
        # but the order's own local date (its store's) is what counts, and it is the same
        # date here: no new day.
        order("A6", identifiers=A, at=dt.datetime(2026, 3, 5, 10, 0, tzinfo=NY), store="NY01"),
        # 2026-03-06 08:00 in Shanghai is still 2026-03-05 in New York: a new day for A
        # (Shanghai's 2026-03-06), though an order dated 03-05 in New York exists.
        order("A7", identifiers=A, at=_day(2026, 3, 6, 8)),
        order("B2", identifiers=B, at=_day(2026, 3, 3, 20), channel="meituan", store=None),
        order("B3", identifiers=B, at=_day(2026, 3, 10, 7)),
        order("C2", identifiers=C, at=_day(2026, 3, 10, 1)),
    ]
    return first, second


def test_figures_equal_the_orders_after_chunks_reimports_returns_merges_and_undo(uow):
    _org(uow)
    first, second = _history()
    out = _record(uow, first)
    a = out[0].customer_id
    assert figures.compare(uow.c) == []
    _record(uow, second)
    assert figures.compare(uow.c) == []
    fa = _figures(uow, a)
    assert fa["order_count"] == 7
    # 02-27, 03-02, 03-05 (A3 in Shanghai, A6 in New York), 03-06
    assert fa["purchase_days"] == 4

    before = figures.stored(uow.c)
    again = _record(uow, first + second)
    assert {o.status for o in again} == {"duplicate"}
    assert figures.stored(uow.c) == before

    record_return(uow=uow, ret=ReturnIn.model_validate({
        "external_id": "RT1", "channel": "pos", "store": "SH01", "order_external_id": "A1",
        "returned_at": _day(2026, 3, 2, 15).isoformat(),
        "lines": [{"sku": "LATTE", "quantity": "1"}]}), actor=SYSTEM)
    assert figures.compare(uow.c) == []

    # One order carrying both A's phone and B's member code merges the two profiles.
    merged = _record(uow, [order("AB1", identifiers={**A, "member_code": B["member_code"]},
                                 at=_day(2026, 3, 3, 12))])
    assert figures.compare(uow.c) == []
    survivor = merged[0].customer_id
    fs = _figures(uow, survivor)
    assert fs["order_count"] == 7 + 3 + 1
    assert (fs["first_purchase_day"], fs["last_purchase_day"]) == (dt.date(2026, 2, 27),
                                                                   dt.date(2026, 3, 10))
    # A's four days and B's 03-03 and 03-10 (03-03 also AB1's day).
    assert fs["purchase_days"] == 6
    _record(uow, [order("AB2", identifiers=A, at=_day(2026, 3, 10, 9))])  # B's day, now his
    assert figures.compare(uow.c) == []
    assert _figures(uow, survivor)["purchase_days"] == 6
    # Late orders between the first and the last purchase day: 03-04 is new, 03-03 is not.
    _record(uow, [order("AB3", identifiers=A, at=_day(2026, 3, 4, 9)),
                  order("AB4", identifiers=A, at=_day(2026, 3, 3, 22))])
    assert figures.compare(uow.c) == []
    assert _figures(uow, survivor)["purchase_days"] == 7

    merge_id = uow.c.execute(select(customer_merges.c.id)).scalar_one()
    undo_merge(uow=uow, merge_id=int(merge_id), actor=SYSTEM)
    assert figures.compare(uow.c) == []

    c = out[5].customer_id
    other = merge_customers(uow=uow, survivor_id=survivor, merged_id=c, reason="same person",
                            actor=SYSTEM)
    assert other
    assert figures.compare(uow.c) == []


def test_a_profile_made_before_its_first_purchase_gets_its_figures(uow):
    make_org(uow)
    cid, created = find_or_create_by_phone(uow.c, phone=A["phone"])
    uow.commit()
    assert created
    out = _record(uow, [order("E1", identifiers=A), order("E2", identifiers=A)])
    assert {o.customer_id for o in out} == {cid}
    assert _figures(uow, cid)["order_count"] == 2
    assert figures.compare(uow.c) == []


def test_concurrent_chunks_for_the_same_customers_keep_their_figures_exact(engine):
    with UnitOfWork(engine) as uow:
        _org(uow)
        _record(uow, [order(f"SEED-{i}", identifiers=who, at=_day(2026, 3, 1, 9))
                      for i, who in enumerate((A, B, C))])

    def send(i):
        bodies = [order(f"T{i}-{k}", identifiers=(A, B, C)[k % 3],
                        at=_day(2026, 3, 1 + (i + k) % 4, 8 + k),
                        store=("SH01", "BJ01", "NY01")[(i + k) % 3])
                  for k in range(6)]
        with UnitOfWork(engine) as uow:
            return _record(uow, bodies)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(send, range(8)))
    assert all(o.status == "created" for out in results for o in out)
    with UnitOfWork(engine) as uow:
        assert figures.compare(uow.c) == []


def test_favourites_and_preferences_read_the_same_answers_as_the_orders_give(uow):
    _org(uow)
    first, second = _history()
    a = _record(uow, first)[0].customer_id
    _record(uow, second)
    assert figures.stored(uow.c, [a]) == figures.compute_from_orders(uow.c, [a])

    # Weekdays and hours as the orders say: each order at its store's local time.
    bodies = [b for b in first + second if b["identifiers"] == A]
    local = []
    for b in bodies:
        at = dt.datetime.fromisoformat(b["purchased_at"])
        tz = ZoneInfo("America/New_York") if b.get("store") == "NY01" else ZoneInfo(
            "Asia/Shanghai")
        local.append(at.astimezone(tz))
    weekdays = Counter(t.isoweekday() for t in local)
    prefs = preferences_for(uow.c, [a])[a]
    assert prefs["orders"] == len(bodies)
    assert {d["weekday"]: d["orders"] for d in prefs["weekdays"]} == {
        d: weekdays.get(d, 0) for d in range(1, 8)}
    hours = Counter(t.hour for t in local)
    fav = favourites(uow.c, a)
    best_hour = sorted(hours.items(), key=lambda kv: (-kv[1], f"{kv[0]:02d}"))[0][0]
    assert fav["hour"] == best_hour
    assert fav["store"]["code"] == "SH01"
    assert fav["channel"] == {"code": "pos", "name": fav["channel"]["name"], "orders": 6}
    # Every order has both categories: more spend breaks the tie.
    assert [c["code"] for c in fav["categories"]] == ["coffee", "bakery"]
    assert prefs["favourite_store"]["code"] == "SH01"
    assert [c["category"] for c in prefs["favourite_categories"]] == ["coffee", "bakery"]


def test_rebuild_command_reports_and_repairs_damaged_counters(uow):
    _org(uow)
    first, second = _history()
    a = _record(uow, first + second)[0].customer_id
    uow.c.execute(update(customer_figures).where(customer_figures.c.customer_id == a)
                  .values(counters={}, purchase_days=1))
    uow.commit()
    diffs = rebuild_figures(uow=uow, fix=True, actor=SYSTEM)
    assert {d["field"] for d in diffs} >= {"purchase_days", "store:SH01", "weekday:1"}
    assert figures.compare(uow.c) == []
