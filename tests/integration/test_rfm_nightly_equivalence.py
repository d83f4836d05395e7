"""The nightly RFM refresh continues from the last one (only changed customers and those whose
quantile moved are read and written): after imports, late imports, purchases dated after the
as-of moment, returns, merges and their undo, quiet nights, days skipped and owner thresholds,
every scope must hold exactly what a full recomputation finds, and the scores must follow the
rank rule computed here in Python from the stored values."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select

from patron.analytics import rfm_read, service
from patron.analytics.model import (
    SEGMENTS,
    quantile_scores,
    recency_score_by_thresholds,
    segment_for,
    value_score_by_thresholds,
)
from patron.analytics.tables import rfm_changed_customers, rfm_refreshes, rfm_scores
from patron.customers.service import merge_customers, undo_merge
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order

# rfm_scores with the scores and segment computed from each scope's cut points
SCORED = rfm_read.scored()

CST = dt.timezone(dt.timedelta(hours=8))
DAY0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=CST)
STORES = ("SH01", "BJ01", None)


def midday(days: int) -> dt.datetime:
    return DAY0 + dt.timedelta(days=days)


class Shop:
    def __init__(self, uow, seed: int) -> None:
        self.uow = uow
        self.rng = random.Random(seed)
        self.serial = 0
        self.orders: list[tuple[str, str | None]] = []  # (external id, store)
        self.ids: dict[int, int] = {}  # customer number -> customer id

    def phone(self, k: int) -> str:
        return f"1380000{k:04d}"

    def moment(self, day: int) -> dt.datetime:
        """A time on a local day: often exactly midnight or the last microsecond of it."""
        start = dt.datetime.combine((DAY0 + dt.timedelta(days=day)).date(), dt.time(),
                                    CST)
        pick = self.rng.random()
        if pick < 0.15:
            return start
        if pick < 0.25:
            return start + dt.timedelta(days=1, microseconds=-1)
        return start + dt.timedelta(seconds=self.rng.randrange(86400))

    def buy(self, customer: int, day: int, *, now_day: int, store: str | None = "random",
            amount: str | None = None) -> None:
        self.serial += 1
        store = self.rng.choice(STORES) if store == "random" else store
        price = amount or self.rng.choice(["10", "20", "20", "35", "50", "80", "120.50"])
        body = order(f"E{self.serial}", store=store,
                     channel="pos" if store else "mini_program", at=self.moment(day),
                     identifiers={"phone": self.phone(customer)},
                     lines=[{"sku": "X", "category": "coffee", "quantity": "1",
                             "unit_price": price}])
        out = record_orders(uow=self.uow, orders_in=[body], source="api", actor=SYSTEM,
                            now=midday(now_day), audit_each=False)
        assert out[0].status == "created", out
        self.ids.setdefault(customer, out[0].customer_id)
        self.orders.append((f"E{self.serial}", store))

    def refund(self, *, full: bool) -> None:
        external_id, store = self.rng.choice(self.orders)
        self.serial += 1
        body = {"external_id": f"R{self.serial}", "order_external_id": external_id,
                "channel": "pos" if store else "mini_program", "store": store,
                "returned_at": DAY0.isoformat(), "full": full}
        if not full:
            body["lines"] = [{"sku": "X", "quantity": "0.5"}]
        try:
            record_return(uow=self.uow, ret=ReturnIn(**body), actor=SYSTEM)
        except Exception:  # already refunded in full: another order next time
            self.uow.rollback()

    def customer_id(self, k: int) -> int:
        return self.ids[k]


def snapshot(conn):
    rows = {(r.scope, r.customer_id): (r.last_order_at, r.frequency, r.monetary, r.r_score,
                                       r.f_score, r.m_score, r.segment)
            for r in conn.execute(select(SCORED))}
    refreshes = {r.scope: (r.as_of, r.customers, r.segments, r.state,
                           tuple(getattr(r, c) for d in rfm_read.DIMS
                                 for c in rfm_read.CUT_COLUMNS[d]))
                 for r in conn.execute(select(rfm_refreshes))}
    return rows, refreshes


def check(uow, as_of: dt.datetime, *, mode: str = "changes") -> dict:
    """Refresh every scope, then hold the result to a full recomputation and the rank rule."""
    out = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=as_of, scope="all")
    assert out["mode"] == mode
    rows, refreshes = snapshot(uow.c)
    for key in out["scopes"]:
        again = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=as_of, scope=key)
        assert again["mode"] == "full"
        assert again["written"][key] == 0, key  # a full recomputation finds nothing to change
    rows_after, refreshes_after = snapshot(uow.c)
    assert rows_after == rows
    assert refreshes_after == refreshes  # customers, stored summary, cut points and sums
    th = service.rfm_thresholds(uow.c)
    for key in out["scopes"]:
        got = [v for (scope, _cid), v in sorted(rows.items()) if scope == key]
        assert len(got) == out["scopes"][key]
        recency = [service.recency_days(v[0], as_of) for v in got]
        if th.recency_days:
            assert [v[3] for v in got] == [recency_score_by_thresholds(d, th.recency_days)
                                           for d in recency]
        else:
            assert [v[3] for v in got] == quantile_scores(recency, higher_is_better=False)
        if th.frequency:
            assert [v[4] for v in got] == [value_score_by_thresholds(v[1], th.frequency)
                                           for v in got]
        else:
            assert [v[4] for v in got] == quantile_scores([v[1] for v in got])
        assert [v[5] for v in got] == quantile_scores([float(v[2]) for v in got])
        assert all(v[6] == segment_for(v[3], v[4], v[5]) for v in got)
        # A segment as value ranges between the cut points (the segment page, the drill-down,
        # the export) and as the segment compiler writes it (cut points read in SQL) holds the
        # rows the computed segment names; so does a score's level.
        cuts = rfm_read.cuts_of(service._scope_refresh(uow.c, key))
        ids = [cid for (scope, cid) in sorted(rows) if scope == key]
        for seg in SEGMENTS:
            expected = {cid for cid, v in zip(ids, got, strict=True) if v[6] == seg}
            for c in (cuts, rfm_read.scalar_cuts(key)):
                assert set(uow.c.execute(select(rfm_scores.c.customer_id).where(
                    rfm_scores.c.scope == key, rfm_read.segment_condition([seg], c)))
                    .scalars()) == expected, (key, seg)
        for i, dim in enumerate(rfm_read.DIMS):
            for level in range(1, 6):
                expected = {cid for cid, v in zip(ids, got, strict=True) if v[3 + i] == level}
                assert set(uow.c.execute(select(rfm_scores.c.customer_id).where(
                    rfm_scores.c.scope == key,
                    rfm_read.levels_condition(dim, [level], cuts[dim]))).scalars()) == expected
        live = service._segment_stats(uow.c, key, service._scope_refresh(uow.c, key), None)
        stored = refreshes[key][2] or {}
        assert stored.keys() == live.keys()
        for seg, values in live.items():
            assert stored[seg][0] == values[0]
            assert all(abs(a - b) < 1e-9 for a, b in zip(stored[seg][1:], values[1:],
                                                          strict=True)), (key, seg)
    return out


def test_the_nightly_refresh_equals_a_full_recomputation_after_every_kind_of_change(uow):
    make_org(uow)
    shop = Shop(uow, seed=3)
    for k in range(60):
        for _ in range(shop.rng.choice([1, 1, 1, 2, 3, 5])):
            shop.buy(k, -shop.rng.randrange(1, 120), now_day=0)
    first = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=midday(0), scope="all")
    assert first["mode"] == "full"
    assert uow.c.execute(select(rfm_changed_customers)).first() is None  # taken

    # A day of trading: regulars and newcomers, a purchase at midnight, and one dated after
    # the end of the as-of day (a till clock ahead): overall counts it, stores not yet.
    for k in (1, 2, 3, 5, 8, 13, 60, 61):
        shop.buy(k, 1, now_day=1)
    shop.buy(21, 2, now_day=2)
    check(uow, midday(1))

    # Returns, a late import of an old order; the order dated ahead now falls in.
    shop.refund(full=True)
    shop.refund(full=False)
    shop.buy(30, -90, now_day=2)
    check(uow, midday(2))

    # A merge, refreshed the same day; then its undo and five quiet days.
    merge_id = merge_customers(uow=uow, survivor_id=shop.customer_id(4),
                               merged_id=shop.customer_id(9), reason="same person",
                               actor=SYSTEM)
    check(uow, midday(2) + dt.timedelta(hours=3))
    undo_merge(uow=uow, merge_id=merge_id, actor=SYSTEM)
    check(uow, midday(7))
    check(uow, midday(8))  # nothing happened at all

    # A rush of big spenders moves every cut point a long way.
    for k in range(62, 90):
        shop.buy(k, 9, now_day=9, amount="999")
    before = {k: v for k, v in snapshot(uow.c)[0].items() if k[0] == "overall"}
    out = check(uow, midday(9))
    # Only the newcomers' values are written: those their arrival re-ranked are scored on
    # read from the moved cut points.
    assert out["written"]["overall"] == 28
    after = {k: v for k, v in snapshot(uow.c)[0].items() if k[0] == "overall"}
    assert sum(1 for k, v in before.items() if after[k][3:] != v[3:]) > 0  # re-ranked


def test_owner_thresholds_start_afresh_and_then_continue(uow):
    make_org(uow)
    shop = Shop(uow, seed=5)
    for k in range(40):
        for _ in range(shop.rng.choice([1, 2, 4])):
            shop.buy(k, -shop.rng.randrange(1, 200), now_day=0)
    check(uow, midday(0), mode="full")
    service.set_thresholds(uow=uow, actor=SYSTEM, rfm={"recency_days": [7, 30, 90, 180]})
    check(uow, midday(1), mode="full")  # other thresholds: computed from scratch
    for k in (0, 1, 2, 41):
        shop.buy(k, 2, now_day=2)
    check(uow, midday(2))
    check(uow, midday(40))  # customers cross the owner's day limits as time passes
    service.set_thresholds(uow=uow, actor=SYSTEM, rfm={"recency_days": None,
                                                        "frequency": [2, 3, 4, 5]})
    check(uow, midday(41), mode="full")
    shop.buy(3, 42, now_day=42)
    check(uow, midday(42))


def test_random_nights_stay_equal_to_a_full_recomputation(uow):
    make_org(uow)
    shop = Shop(uow, seed=11)
    for k in range(50):
        for _ in range(shop.rng.choice([1, 1, 2, 3])):
            shop.buy(k, -shop.rng.randrange(1, 60), now_day=0)
    check(uow, midday(0), mode="full")
    day = 0
    for _night in range(6):
        day += shop.rng.choice([1, 1, 2, 3])
        for _ in range(shop.rng.randrange(0, 12)):
            shop.buy(shop.rng.randrange(0, 70), day - shop.rng.choice([0, 0, 0, 1, 30]),
                     now_day=day)
        if shop.rng.random() < 0.5:
            shop.refund(full=shop.rng.random() < 0.5)
        check(uow, midday(day))
