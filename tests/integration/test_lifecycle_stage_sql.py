"""The lifecycle refresh decides stages in SQL: on both databases it must decide exactly as the
Python rule (``model.decide_stage``) on every case, boundaries included."""

from __future__ import annotations

import random
from itertools import product

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert, select

from patron.analytics import service
from patron.analytics.model import STAGES, LifecycleThresholds, decide_stage, usual_interval

CASES = MetaData()
cases = Table("tmp_stage_cases", CASES, Column("id", Integer, primary_key=True),
              Column("since_first", Integer), Column("since_last", Integer),
              Column("purchase_days", Integer), Column("span", Float),
              Column("previous", String(16), nullable=True), Column("bought_since", Integer),
              prefixes=["TEMPORARY"])


def make_cases() -> list[dict]:
    rng = random.Random(11)
    out = []
    # exact boundaries: a weekly buyer (interval 7) exactly 14/21/28 days late, one-time buyers
    # around the population interval, spans shorter than the minimum interval, long gaps
    for since_last, pd, span, prev, bought in product(
            [0, 13, 14, 15, 20, 21, 22, 27, 28, 29, 30, 60, 90, 119, 120, 121, 365, 366],
            [1, 2, 3, 5], [0.0, 1.5, 14.0, 21.0, 37.25, 100.0],
            [None, "new", "active", "dormant", "churn_risk", "churned", "reactivated"], [0, 1]):
        since_first = since_last + int(span)
        out.append((since_first, since_last, pd, span, prev, bought))
    for _ in range(3000):
        pd = rng.choice([1, 1, 2, 3, 4, 8, 20])
        span = 0.0 if pd == 1 else rng.uniform(0, 400)
        since_last = rng.randint(0, 500)
        out.append((since_last + int(span) + rng.randint(0, 1), since_last, pd, span,
                    rng.choice([None, *STAGES]), rng.randint(0, 1)))
    return [dict(zip(("since_first", "since_last", "purchase_days", "span", "previous",
                      "bought_since"), c, strict=True), id=i) for i, c in enumerate(out)]


THRESHOLDS = [
    LifecycleThresholds(),
    LifecycleThresholds(new_days=14, k_dormant=1.5, k_churn_risk=2.5, k_churned=3.1,
                        max_days=200, min_interval_days=10.0),
    LifecycleThresholds(dormant_days=30, churn_risk_days=60, churned_days=120),
]


def test_sql_stages_equal_the_python_rule_on_every_case(uow):
    conn = uow.c
    rows = make_cases()
    cases.create(conn)
    conn.execute(insert(cases), rows)
    c = cases.c
    for th in THRESHOLDS:
        for population in (30.0, 7.0, 21.0 / 3):
            stage = service._stage_case(
                conn, since_first=c.since_first, since_last=c.since_last,
                purchase_days=c.purchase_days, span=c.span, previous=c.previous,
                bought_since=c.bought_since, population=population, th=th)
            got = dict(conn.execute(select(c.id, stage).order_by(c.id)).all())
            expected = {r["id"]: decide_stage(
                days_since_first=float(r["since_first"]),
                days_since_last=float(r["since_last"]), purchase_days=r["purchase_days"],
                interval=usual_interval(r["span"], r["purchase_days"]),
                population_interval=population, previous_stage=r["previous"],
                bought_since_previous=bool(r["bought_since"]), th=th) for r in rows}
            wrong = {i: (got[i], expected[i]) for i in expected if got[i] != expected[i]}
            assert wrong == {}, (th, population, list(wrong.items())[:5])
            assert set(got.values()) >= {"new", "active", "dormant", "churn_risk", "churned",
                                         "reactivated"}
