"""The nightly lifecycle refresh decides again only the customers whose stage can have changed
(figures changed, due day reached, one-time buyers as old as a population-based limit): after
imports, late imports, merges and their undo, quiet nights, days and weeks skipped, a moving
population interval and owner thresholds, a full decision of every customer on the same day
must find nothing to change, and the stored counts must be the table's."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from patron.analytics import service
from patron.analytics.tables import lifecycle_refreshes, lifecycle_stages, lifecycle_transitions
from patron.customers.service import merge_customers, undo_merge
from patron.security.model import SYSTEM
from tests.factories import make_org
from tests.integration.test_rfm_nightly_equivalence import Shop, midday


def stages(conn):
    return {r.customer_id: (r.stage, r.since, r.entered_last_order_at, r.due_day)
            for r in conn.execute(select(lifecycle_stages))}


def check(uow, as_of: dt.datetime, *, mode: str = "changes") -> dict:
    out = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=as_of)
    assert out["mode"] == mode
    before = stages(uow.c)
    moves = uow.c.execute(select(func.count()).select_from(lifecycle_transitions)).scalar_one()
    state = uow.c.execute(select(lifecycle_refreshes.c.state)).scalar_one()
    assert out["stages"] == service._stage_counts(uow.c, None)
    again = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=as_of, full=True)
    assert again["mode"] == "full"
    assert again["changed"] == 0  # deciding everyone again changes no stage...
    assert stages(uow.c) == before  # ... and no due day
    assert uow.c.execute(select(func.count()).select_from(lifecycle_transitions)
                         ).scalar_one() == moves
    assert uow.c.execute(select(lifecycle_refreshes.c.state)).scalar_one() == state
    return out


def test_the_nightly_lifecycle_refresh_equals_deciding_everyone_again(uow):
    make_org(uow)
    shop = Shop(uow, seed=17)
    for k in range(60):
        for _ in range(shop.rng.choice([1, 1, 2, 3, 6])):
            shop.buy(k, -shop.rng.randrange(1, 150), now_day=0)
    check(uow, midday(0), mode="full")
    for k in (1, 2, 3, 5, 8, 60, 61):  # regulars, lapsed customers coming back, newcomers
        shop.buy(k, 1, now_day=1)
    shop.buy(22, 2, now_day=2)  # dated after the end of the as-of day
    check(uow, midday(1))
    shop.buy(30, -100, now_day=2)  # a late import changes a usual interval
    check(uow, midday(2))
    merge_id = merge_customers(uow=uow, survivor_id=shop.customer_id(4),
                               merged_id=shop.customer_id(9), reason="same person",
                               actor=SYSTEM)
    check(uow, midday(2) + dt.timedelta(hours=3))
    undo_merge(uow=uow, merge_id=merge_id, actor=SYSTEM)
    check(uow, midday(3))
    for day in (4, 11, 32, 33, 95, 200, 420):  # due days and one-time buyers' limits pass
        if day in (32, 200):
            for k in range(70, 80):  # new repeat buyers move the population's interval
                shop.buy(k, day - 3 - k % 5, now_day=day)
                shop.buy(k, day - k % 3, now_day=day)
        check(uow, midday(day))


def test_owner_fixed_days_start_afresh_and_then_continue(uow):
    make_org(uow)
    shop = Shop(uow, seed=19)
    for k in range(40):
        for _ in range(shop.rng.choice([1, 2, 4])):
            shop.buy(k, -shop.rng.randrange(1, 200), now_day=0)
    check(uow, midday(0), mode="full")
    service.set_thresholds(uow=uow, actor=SYSTEM, lifecycle={
        "dormant_days": 20, "churn_risk_days": 45, "churned_days": 90, "new_days": 10})
    check(uow, midday(1), mode="full")
    for day in (2, 9, 25, 60, 130):
        shop.buy(day % 40, day, now_day=day)
        check(uow, midday(day))


def test_random_nights_keep_the_lifecycle_equal_to_deciding_everyone(uow):
    make_org(uow)
    shop = Shop(uow, seed=23)
    for k in range(50):
        for _ in range(shop.rng.choice([1, 1, 2, 3])):
            shop.buy(k, -shop.rng.randrange(1, 90), now_day=0)
    check(uow, midday(0), mode="full")
    day = 0
    for _night in range(7):
        day += shop.rng.choice([1, 2, 7, 30])
        for _ in range(shop.rng.randrange(0, 10)):
            shop.buy(shop.rng.randrange(0, 70), day - shop.rng.choice([0, 0, 1, 20]),
                     now_day=day)
        check(uow, midday(day))


def test_the_population_interval_walks_from_the_last_middle_up_down_and_over_ties(uow):
    """The middle usual interval, continued from the last one by what was taken out and put
    in (many ties, the middle moving far both ways, the table emptied), always equals the one
    read from scratch, with the same state to continue from."""
    import random

    from sqlalchemy import delete, insert

    from patron.analytics.tables import lifecycle_intervals
    from patron.customers.tables import customers

    rng = random.Random(29)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    uow.c.execute(insert(customers), [{"id": i, "custom_fields": {}, "created_at": now,
                                       "updated_at": now} for i in range(1, 301)])
    li = lifecycle_intervals.c
    values: dict[int, float] = {}
    _value, state = service._population_interval(uow.c)
    assert state["middle"] is None
    for step in range(40):
        out, put = [], []
        for cid in rng.sample(range(1, 301), rng.choice([1, 5, 40, 120])):
            if cid in values:
                out.append(values.pop(cid))
                uow.c.execute(delete(lifecycle_intervals).where(li.customer_id == cid))
            if step % 13 != 12 and rng.random() < 0.7:  # every 13th night empties a lot
                # skewed draws, many ties: the middle jumps up and down
                value = float(rng.choice([3, 7, 7, 7, 14, 30]) if step % 2 else
                              rng.choice([60, 90, 90, 180.5]))
                values[cid] = value
                put.append(value)
                uow.c.execute(insert(lifecycle_intervals).values(customer_id=cid,
                                                                 usual_interval=value))
        continued = service._population_interval(uow.c, state, out, put)
        fresh = service._population_interval(uow.c)
        assert continued == fresh, step
        ordered = sorted(values.values())
        assert fresh[0] == (ordered[len(ordered) // 2] if ordered else
                            service.DEFAULT_POPULATION_INTERVAL)
        state = continued[1]
