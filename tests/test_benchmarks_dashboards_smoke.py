"""The dashboard benchmark runs end to end on a tiny shop, on both databases, so that it
cannot rot unnoticed. Nothing here asserts a speed: only that every query is measured next to
its anchor and that the figures are well formed."""

from __future__ import annotations

import datetime as dt

from benchmarks.dashboards import measure

from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order

CST = dt.timezone(dt.timedelta(hours=8))


def test_every_dashboard_query_is_measured_next_to_its_anchor(db_url):
    start = dt.datetime(2026, 1, 3, 10, tzinfo=CST)
    with UnitOfWork(get_engine(db_url)) as uow:
        make_org(uow)
        record_orders(uow=uow, orders_in=[
            order(str(i), store="SH01" if i % 3 else "BJ01",
                  at=start + dt.timedelta(days=5 * i),
                  identifiers={"phone": f"1380000{i % 7:04d}"} if i % 5 else {})
            for i in range(40)], source="api", actor=SYSTEM,
            now=start + dt.timedelta(days=200), audit_each=False)
    figures = measure(db_url, label="tiny", samples=2)
    names = [f.name for f in figures]
    assert names[:2] == ["dashboard rollups full rebuild (tiny)",
                         "dashboard rollups refresh, nothing changed (tiny)"]
    assert figures[1].notes["mode"] == "incremental"
    for query in ("dashboard by store, 365 days", "dashboard by week, 52 weeks",
                  "dashboard cohorts, 12 months", "dashboard RFM x lifecycle",
                  "dashboard by channel, 30 days, one store's manager"):
        assert f"{query} p50 (tiny)" in names and f"{query} p99 (tiny)" in names
    for f in figures:
        assert f.anchor and f.anchor_value > 0, f
        assert f.value >= 0, f
    assert all(f.passed is not None for f in figures if f.name.endswith("p99 (tiny)"))
