"""The purchase summary in SQL (local days, time zones, same-day orders) and stored
predictions, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from patron.analytics import clv_service
from patron.analytics.clv_tables import clv_model_runs, customer_predictions
from patron.errors import Forbidden, ValidationFailed
from patron.orders.service import record_orders
from patron.org import service as org
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
CAL_END = dt.date(2026, 3, 31)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def buy(phone: str, when: dt.datetime, total: str, *, store: str | None = "SH01",
        channel: str = "pos") -> dict:
    n = buy.counter = getattr(buy, "counter", 0) + 1
    body = {"external_id": f"O{n}", "channel": channel, "purchased_at": when.isoformat(),
            "identifiers": {"phone": phone}, "total": total}
    if store:
        body["store"] = store
    return body


def customer_of(uow, phone: str) -> int:
    from patron.customers.model import normalize_identity
    from patron.customers.protect import identity_is
    from patron.customers.tables import identities

    return uow.c.execute(select(identities.c.customer_id).where(
        identity_is(normalize_identity("phone", phone).value))).scalar_one()


def record_hand_made_history(uow, *, new_york: bool) -> dict[str, int]:
    make_org(uow)
    orders = [
        # A: two orders on 1 March count as one purchase day; 00:30 on 2 March in Shanghai is
        # still 1 March in UTC but a new local day; one purchase after the calibration end.
        buy("13800000001", at("2026-03-01T10:00:00+08:00"), "10.00"),
        buy("13800000001", at("2026-03-01T20:00:00+08:00"), "5.00"),
        buy("13800000001", at("2026-03-02T00:30:00+08:00"), "20.00"),
        buy("13800000001", at("2026-03-15T23:59:00+08:00"), "30.00"),
        buy("13800000001", at("2026-04-10T12:00:00+08:00"), "40.00"),
        # B: one purchase late on the last calibration day.
        buy("13800000002", at("2026-03-31T23:30:00+08:00"), "8.00"),
        # C: first purchase just after midnight on 1 April local (31 March UTC): not in it.
        buy("13800000003", at("2026-04-01T00:10:00+08:00"), "9.00"),
        # D: online orders without a store use the default zone (Asia/Shanghai).
        buy("13800000004", at("2026-03-10T23:00:00-05:00"), "12.00", store=None,
            channel="online_mall"),
        buy("13800000004", at("2026-03-20T12:00:00+08:00"), "18.00", store=None,
            channel="online_mall"),
        # F: one second before and exactly at local midnight: two purchase days.
        buy("13800000006", at("2026-03-04T23:59:59+08:00"), "4.00"),
        buy("13800000006", at("2026-03-05T00:00:00+08:00"), "6.00"),
    ]
    if new_york:
        # E: a New York store (daylight saving starts on 8 March 2026): 22:00 on 5 March
        # there is 6 March in Shanghai and in UTC.
        org.create_store(uow=uow, actor=SYSTEM, code="NY01", name="New York",
                         timezone="America/New_York")
        orders += [
            buy("13800000005", at("2026-03-05T22:00:00-05:00"), "7.00", store="NY01"),
            buy("13800000005", at("2026-03-06T09:00:00-05:00"), "3.00", store="NY01"),
        ]
    out = record_orders(uow=uow, orders_in=orders, source="api", actor=SYSTEM)
    assert all(o.status == "created" for o in out), out
    names = "ABCDEF" if new_york else "ABCDF"
    return {name: customer_of(uow, f"1380000000{'ABCDEF'.index(name) + 1}") for name in names}


@pytest.fixture(params=["with a daylight-saving zone", "fixed offsets only"])
def hand_made_history(request, uow):
    return record_hand_made_history(uow, new_york=request.param.startswith("with"))


def test_summary_counts_local_purchase_days_per_customer(uow, hand_made_history):
    ids = hand_made_history
    s = clv_service.purchase_summary(uow=uow, calibration_end=CAL_END)
    rows = {int(c): i for i, c in enumerate(s.customer_id)}
    assert set(rows) == {ids[n] for n in ids if n != "C"}
    # SQLite takes the plain-SQL path only when no zone in use changes offset.
    fixed = clv_service._fixed_offsets(uow.c, "Asia/Shanghai")
    assert (fixed is None) == ("E" in ids)
    x, t_x, age = s.model_inputs("day")
    spend = s.average_repeat_spend()

    def of(name: str) -> tuple:
        i = rows[ids[name]]
        return (x[i], t_x[i], age[i], round(spend[i], 2), s.holdout_days[i])

    # A: days 1, 2 and 15 March: x = 2, t_x = 14, T = 30; repeat spend (20 + 30) / 2.
    assert of("A") == (2, 14, 30, 25.0, 1)
    assert of("B") == (0, 0, 0, 0.0, 0)
    # D: 11 March (Shanghai) and 20 March.
    assert of("D") == (1, 9, 20, 18.0, 0)
    assert of("F") == (1, 1, 27, 6.0, 0)
    if "E" in ids:  # 5 and 6 March in New York
        assert of("E") == (1, 1, 26, 3.0, 0)
    weeks = s.model_inputs("week")
    i = rows[ids["A"]]
    assert (weeks[0][i], weeks[1][i], weeks[2][i]) == pytest.approx((2, 2, 30 / 7))
    assert s.holdout_end == dt.date(2026, 4, 10)


def test_holdout_end_bounds_the_purchases_counted_after_calibration(uow, hand_made_history):
    s = clv_service.purchase_summary(uow=uow, calibration_end=CAL_END,
                                     holdout_end=dt.date(2026, 4, 9))
    assert int(s.holdout_days.sum()) == 0
    assert s.holdout_end == dt.date(2026, 4, 9)


def random_history(seed: int, customers: int) -> list[dict]:
    """Customers who buy every few days for a while, then stop."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1, 9, tzinfo=SHANGHAI)
    out = []
    for c in range(customers):
        phone = f"139{c:08d}"
        day = rng.randint(0, 60)
        gap = rng.choice([3, 7, 14, 30])
        for _ in range(rng.randint(1, 12)):
            if day > 150:
                break
            out.append(buy(phone, start + dt.timedelta(days=day, hours=rng.randint(0, 10)),
                           f"{rng.uniform(10, 80):.2f}"))
            day += max(1, int(rng.expovariate(1 / gap)))
    return out


def test_predictions_are_stored_for_every_customer_and_replaced_by_a_refresh(uow, monkeypatch):
    monkeypatch.setattr(clv_service, "INSERT_CHUNK", 40)  # several chunks, the last one short
    make_org(uow)
    record_orders(uow=uow, orders_in=random_history(5, 150), source="api", actor=SYSTEM,
                  audit_each=False)
    as_of = dt.date(2026, 6, 30)
    first = clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=as_of, period="week")
    assert first["customers"] == 150
    count = uow.c.execute(select(func.count()).select_from(customer_predictions)).scalar_one()
    assert count == 150
    rows = uow.c.execute(select(customer_predictions)).mappings().all()
    for r in rows:
        assert 0 < r["probability_alive"] <= 1
        assert 0 <= r["expected_purchases_30d"] <= r["expected_purchases_90d"]
        assert r["calibration_end"] == as_of
        assert r["expected_average_spend"] > 0
        assert isinstance(r["clv_12m"], Decimal) and r["clv_12m"] >= 0
        if r["expected_next_purchase"] is not None:
            assert as_of < r["expected_next_purchase"] <= as_of + dt.timedelta(days=730)
    assert any(r["expected_next_purchase"] is not None for r in rows)

    again = clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=as_of, period="week")
    rows_again = uow.c.execute(select(customer_predictions)).mappings().all()
    assert len(rows_again) == 150
    assert {r["run_id"] for r in rows_again} == {again["run_id"]}
    before = {r["customer_id"]: (r["clv_12m"], r["expected_next_purchase"]) for r in rows}
    after = {r["customer_id"]: (r["clv_12m"], r["expected_next_purchase"]) for r in rows_again}
    assert before == after
    actions = uow.c.execute(select(audit_log.c.action).where(
        audit_log.c.action == "analytics.clv_predictions_refreshed")).scalars().all()
    assert len(actions) == 2
    runs = uow.c.execute(select(clv_model_runs.c.purpose)).scalars().all()
    assert runs == ["predict", "predict"]


def test_evaluation_reports_holdout_accuracy_and_is_audited(uow):
    make_org(uow)
    record_orders(uow=uow, orders_in=random_history(9, 150), source="api", actor=SYSTEM,
                  audit_each=False)
    result = clv_service.evaluate_clv(uow=uow, actor=SYSTEM, calibration_end=dt.date(2026, 3, 31),
                                      period="day")
    assert set(result["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert result["holdout"]["customers"] == result["customers"]
    assert result["holdout"]["actual_total"] > 0
    assert uow.c.execute(select(func.count()).select_from(audit_log).where(
        audit_log.c.action == "analytics.clv_evaluated")).scalar_one() == 1


def test_no_history_store_scoped_actors_and_bad_periods_are_refused(uow):
    with pytest.raises(ValidationFailed) as no_data:
        clv_service.evaluate_clv(uow=uow, actor=SYSTEM, calibration_end=CAL_END)
    assert no_data.value.message == "clv_no_customers"
    with pytest.raises(ValidationFailed) as bad:
        clv_service.evaluate_clv(uow=uow, actor=SYSTEM, calibration_end=CAL_END, period="month")
    assert bad.value.fields[0].field == "period"
    manager = Actor(type="user", id=1, name="m", role="manager", store_ids=frozenset({1}))
    with pytest.raises(Forbidden):
        clv_service.refresh_predictions(uow=uow, actor=manager, as_of=CAL_END)
    assert uow.c.execute(select(func.count()).select_from(customer_predictions)).scalar_one() == 0
