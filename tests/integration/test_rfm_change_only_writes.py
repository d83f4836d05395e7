"""An RFM refresh recomputes every score but writes only the rows that changed: recency is read
from the last purchase and the scope's as-of day, so a quiet night rewrites nothing, a new
purchase rewrites its customer (and those whose quantile moved), a merged profile leaves."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from patron.analytics import rfm_read, service
from patron.analytics.tables import rfm_refreshes
from patron.customers.service import merge_customers
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from tests.factories import make_org, order

# rfm_scores with the scores and segment computed from each scope's cut points
SCORED = rfm_read.scored()

CST = dt.timezone(dt.timedelta(hours=8))
AS_OF = dt.datetime(2026, 6, 1, 12, 0, tzinfo=CST)


def record(uow, bodies):
    out = record_orders(uow=uow, orders_in=bodies, source="api", actor=SYSTEM,
                        now=AS_OF + dt.timedelta(days=60), audit_each=False)
    assert all(o.status == "created" for o in out), out
    return out[-1].customer_id


def visits(uow, name, phone, store, ago):
    return record(uow, [order(f"{name}{i}", store=store, at=AS_OF - dt.timedelta(days=n),
                              identifiers={"phone": phone}) for i, n in enumerate(ago)])


def rows(uow, scope="overall"):
    return {r.customer_id: r for r in uow.c.execute(
        select(SCORED).where(SCORED.c.scope == scope))}


def test_a_quiet_night_writes_nothing_and_recency_still_grows(uow):
    make_org(uow)
    ids = [visits(uow, f"C{k}", f"1380000{k:04d}", "SH01" if k % 2 else "BJ01",
                  [3 + 11 * k + 7 * i for i in range(k % 4 + 1)]) for k in range(12)]
    first = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    assert first["written"] == first["scopes"]  # every row is new
    before = rows(uow)
    days = service.segment_customers(uow.c, actor=SYSTEM, segment=before[ids[0]].segment)
    recency_then = {i["id"]: i["recency_days"] for i in days["items"]}

    again = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    assert set(again["written"].values()) == {0}
    later = AS_OF + dt.timedelta(days=1)
    next_night = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=later, scope="all")
    # Everyone is a day further from their last purchase and nobody bought: ranks, scores
    # and segments are unchanged, so nothing is written.
    assert set(next_night["written"].values()) == {0}
    after = rows(uow)
    assert {k: (r.r_score, r.f_score, r.m_score, r.segment, r.computed_at)
            for k, r in after.items()} == {
        k: (r.r_score, r.f_score, r.m_score, r.segment, r.computed_at)
        for k, r in before.items()}
    days = service.segment_customers(uow.c, actor=SYSTEM, segment=before[ids[0]].segment)
    assert {i["id"]: i["recency_days"] for i in days["items"]} == {
        k: v + 1 for k, v in recency_then.items()}
    summary = service.rfm_summary(uow.c, actor=SYSTEM)
    assert summary["as_of"] == later.astimezone(dt.UTC)
    refreshed = uow.c.execute(select(rfm_refreshes.c.scope, rfm_refreshes.c.changed)).all()
    assert len(refreshed) == len(first["scopes"]) and {c for _s, c in refreshed} == {0}


def test_a_new_purchase_rewrites_its_customer_and_a_merged_profile_leaves(uow):
    make_org(uow)
    a = visits(uow, "A", "13800000001", "SH01", [40, 80])
    b = visits(uow, "B", "13800000002", "SH01", [10])
    c = visits(uow, "C", "13800000003", "BJ01", [200, 230, 260])
    d = visits(uow, "D", "13800000004", "BJ01", [5, 6])
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    old = rows(uow)

    record(uow, [order("A9", store="SH01", at=AS_OF + dt.timedelta(hours=20),
                       identifiers={"phone": "13800000001"})])
    merge_customers(uow=uow, survivor_id=c, merged_id=d, reason="same person", actor=SYSTEM)
    later = AS_OF + dt.timedelta(days=1)
    out = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=later, scope="all")

    new = rows(uow)
    assert set(new) == {a, b, c}  # d merged into c
    assert new[a].frequency == 3 and new[a].last_order_at > old[a].last_order_at
    assert new[a].computed_at > old[a].computed_at
    assert new[c].frequency == 5  # c's own three and d's two
    assert out["scopes"]["overall"] == 3
    assert 2 <= out["written"]["overall"] <= 3  # a and c; b only if its quantile moved
    assert rows(uow, "store:BJ01").keys() == {c}
    assert uow.c.execute(select(func.count()).select_from(SCORED).where(
        SCORED.c.customer_id == d)).scalar_one() == 0
    view = service.customer_analytics(uow.c, actor=SYSTEM, customer_id=a)
    assert view["rfm"]["recency_days"] == 0 and view["rfm"]["frequency"] == 3
    assert view["rfm"]["computed_at"] == new[a].computed_at


def test_the_stored_summary_equals_the_summary_computed_live(uow):
    org = make_org(uow)
    for k in range(15):
        visits(uow, f"C{k}", f"1380000{k:04d}", "SH01" if k % 3 else "BJ01",
               [2 + 9 * k + 5 * i for i in range(k % 5 + 1)])
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    everywhere = Actor(type="user", id=9, name="area", role="analyst",
                       store_ids=frozenset({org["SH01"], org["BJ01"]}))
    for scope in ("overall", "store:SH01", "region:NORTH", "brand:B1"):
        stored = service.rfm_summary(uow.c, actor=SYSTEM, scope=scope)  # the refresh's
        live = service.rfm_summary(uow.c, actor=everywhere, scope=scope)  # computed now
        assert stored == live
        assert stored["customers"] == sum(s["customers"] for s in stored["segments"]) > 0
    refreshed = uow.c.execute(select(rfm_refreshes.c.segments).where(
        rfm_refreshes.c.scope == "overall")).scalar_one()
    assert sum(v[0] for v in refreshed.values()) == 15


def test_scores_follow_the_rank_rule_on_many_ties_in_every_scope(uow):
    import random

    from patron.analytics.model import quantile_scores

    make_org(uow)
    rng = random.Random(7)
    bodies = []
    for k in range(240):
        store = rng.choice(["SH01", "BJ01"])
        for i, ago in enumerate(sorted(rng.sample(range(1, 90), rng.choice([1, 1, 2, 3, 5])))):
            amount = str(rng.choice([10, 20, 20, 35, 50, 80]))
            bodies.append(order(f"T{k}-{i}", store=store if i else rng.choice(["SH01", "BJ01"]),
                                at=AS_OF - dt.timedelta(days=ago, hours=rng.randint(0, 5)),
                                identifiers={"phone": f"1390000{k:04d}"},
                                lines=[{"sku": "X", "quantity": "1", "unit_price": amount}]))
    record(uow, bodies)
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    for scope in ("overall", "store:SH01", "store:BJ01", "region:EAST", "brand:B1"):
        got = list(rows(uow, scope).values())
        assert len(got) > 50
        recency = [service.recency_days(r.last_order_at, AS_OF) for r in got]
        assert [r.r_score for r in got] == quantile_scores(recency, higher_is_better=False)
        assert [r.f_score for r in got] == quantile_scores([r.frequency for r in got])
        assert [r.m_score for r in got] == quantile_scores([float(r.monetary) for r in got])
