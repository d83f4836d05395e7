"""The dashboard's figures: local days, refunds, members and guests, new and returning, scope."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from patron.db import UnitOfWork, get_engine
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.web import dashboard
from tests.factories import order

SH = ZoneInfo("Asia/Shanghai")
TODAY = dt.date(2026, 3, 20)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=SH)


def latte(n: int = 1) -> list[dict]:
    return [{"sku": "LATTE", "category": "coffee", "quantity": str(n), "unit_price": "30.00"}]


def test_figures_for_today_and_thirty_days_with_refunds_members_guests_and_scope(db_url, org):
    engine = get_engine(db_url)
    yesterday = TODAY - dt.timedelta(days=1)
    long_ago = TODAY - dt.timedelta(days=60)
    with UnitOfWork(engine) as uow:
        outcomes = record_orders(uow=uow, source="api", actor=SYSTEM, now=at(TODAY, 23),
                                 orders_in=[
            # A member who first bought 60 days ago: returning in both periods.
            order("OLD", at=at(long_ago, 12), identifiers={"member_code": "M001"},
                  lines=latte()),
            order("M-1", at=at(TODAY, 9), identifiers={"member_code": "M001"}, lines=latte(2)),
            # A new customer (phone only, not a member), first order yesterday, again today.
            order("N-1", at=at(yesterday, 18), identifiers={"phone": "13900001111"},
                  lines=latte()),
            order("N-2", at=at(TODAY, 0, 30), identifiers={"phone": "13900001111"},
                  lines=latte()),
            # A guest at the Beijing store, 23:30 local yesterday = 15:30 UTC: yesterday.
            order("G-1", store="BJ01", at=at(yesterday, 23, 30), lines=latte(3)),
        ])
        assert {o.status for o in outcomes} == {"created"}
    with UnitOfWork(engine) as uow:
        record_return(uow=uow, actor=SYSTEM, ret=ReturnIn.model_validate({
            "order_external_id": "M-1", "channel": "pos", "store": "SH01", "external_id": "R1",
            "returned_at": at(TODAY, 10).isoformat(),
            "lines": [{"sku": "LATTE", "quantity": "1"}]}))

    with UnitOfWork(engine, readonly=True) as uow:
        data = dashboard.dashboard(uow.c, actor=SYSTEM, today=TODAY, tz=SH)
        today, month = data.today, data.month
        assert (today.sales, today.orders, today.buyers) == (Decimal("60.00"), 2, 2)
        assert (today.member_orders, today.customer_orders, today.guest_orders) == (1, 1, 0)
        assert today.member_share == Decimal("0.5")
        assert (today.new_customers, today.returning_customers) == (0, 2)
        assert (month.sales, month.orders, month.buyers) == (Decimal("180.00"), 4, 2)
        assert (month.member_orders, month.customer_orders, month.guest_orders) == (1, 2, 1)
        assert (month.new_customers, month.returning_customers) == (1, 1)
        assert len(data.trend) == 30 and data.trend[-1].day == TODAY
        by_day = {p.day: (p.sales, p.orders) for p in data.trend}
        assert by_day[TODAY] == (Decimal("60.00"), 2)
        assert by_day[yesterday] == (Decimal("120.00"), 2)
        assert by_day[TODAY - dt.timedelta(days=2)] == (Decimal("0.00"), 0)

        manager = Actor(type="user", id=9, name="m", role="manager",
                        store_ids=frozenset({org["BJ01"]}))
        scoped = dashboard.dashboard(uow.c, actor=manager, today=TODAY, tz=SH)
        assert (scoped.month.sales, scoped.month.orders, scoped.month.guest_orders) == (
            Decimal("90.00"), 1, 1)
        assert scoped.today.orders == 0 and scoped.today.member_share is None
        nobody = Actor(type="user", id=10, name="n", role="manager", store_ids=frozenset())
        assert dashboard.summary(uow.c, actor=nobody, start=long_ago, end=TODAY,
                                 tz=SH).orders == 0
