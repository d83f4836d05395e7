"""The rule and tier simulation, on SQLite and PostgreSQL: a known change gives the difference
worked out by hand, and nothing is written.

The replayed orders (program BB: 1 point and 1 growth a yuan, tiers SILVER / GOLD 1000 x1.5 /
PLATINUM 5000 x2; the test basket is 2 lattes 56.00 (coffee) + a croissant 15.00 (bakery)):

    2026-03-02  M1 buys O1 at SH01                 71 points, growth 71
    2026-03-03  M1 buys O2 at BJ01                 71 points, growth 71
    2026-03-04  M1 buys O3 at SH01                 71 points, growth 71
    2026-03-05  O3's croissant is returned         15 points and 15 growth taken back
    M2 is a member without orders.

Today's rules replayed: 213 points, 15 clawed back, 198 net, growth 198, everyone SILVER.
"""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from pydantic import ValidationError
from sqlalchemy import func, select

from patron.errors import Forbidden, ValidationFailed
from patron.loyalty import simulation
from patron.loyalty.model import EarningRules, LineFacts, OrderFacts, TierDef
from patron.loyalty.simulation import ReplayOrder, SimulationIn, replay
from patron.loyalty.tables import (
    loyalty_entries,
    loyalty_lots,
    loyalty_members,
    loyalty_order_earnings,
    loyalty_tier_history,
)
from patron.security.model import SYSTEM, Actor
from tests.factories import T0, make_org
from tests.loyalty_factories import buy, enrol, give_back, make_program

DAY = dt.timedelta(days=1)
AS_OF = T0 + 10 * DAY
P2 = "13912345678"


@pytest.fixture
def orders(uow):
    stores = make_org(uow)
    make_program(uow)
    enrol(uow)
    enrol(uow, P2)
    buy(uow, "O1", at=T0)
    buy(uow, "O2", at=T0 + DAY, store="BJ01")
    buy(uow, "O3", at=T0 + 2 * DAY)
    with time_machine.travel(T0 + 3 * DAY, tick=False):
        give_back(uow, "R1", "O3", at=T0 + 3 * DAY, lines=[{"line_no": 2, "quantity": "1"}])
    return stores


def run(uow, actor=SYSTEM, **body):
    return simulation.simulate(uow.c, actor=actor, program="BB", as_of=AS_OF,
                               body=SimulationIn.model_validate({"months": 1, **body}))


def ledger_rows(uow):
    return [uow.c.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (loyalty_entries, loyalty_lots, loyalty_order_earnings,
                      loyalty_tier_history)] + [
        tuple(uow.c.execute(select(loyalty_members.c.points_available,
                                   loyalty_members.c.growth_value, loyalty_members.c.tier_id,
                                   loyalty_members.c.updated_at)
                            .order_by(loyalty_members.c.id)))]


def test_doubling_coffee_points_adds_the_hand_computed_difference_and_writes_nothing(uow,
                                                                                     orders):
    before = ledger_rows(uow)
    out = run(uow, rules={"multipliers": {"category": {"coffee": "2"}}})
    assert ledger_rows(uow) == before
    assert (out["orders"], out["members"], out["members_with_orders"]) == (3, 2, 1)
    assert out["recorded"] == {"points": 213, "clawed_back": 15, "net_points": 198,
                               "value": Decimal("1.98")}
    cur = out["current"]
    assert (cur["points"], cur["clawed_back"], cur["net_points"], cur["value"],
            cur["growth"]) == (213, 15, 198, Decimal("1.98"), 198)
    # Each basket: lattes 56 x 2 = 112 + croissant 15 = 127; the returned croissant gives 15.
    prop = out["proposed"]
    assert (prop["points"], prop["clawed_back"], prop["net_points"], prop["value"],
            prop["growth"]) == (381, 15, 366, Decimal("3.66"), 198)
    assert out["difference"] == {"points": 168, "net_points": 168, "value": Decimal("1.68"),
                                 "growth": 0}
    assert out["by_month"] == [{"month": "2026-03", "current": 198, "proposed": 366}]
    assert out["liability"]["outstanding_now"] == 198
    assert out["liability"]["projected"] == 198 + 366 - 198
    assert [(r["tier"], r["members"]) for r in prop["tier_distribution"]] == [
        ("SILVER", 2), ("GOLD", 0), ("PLATINUM", 0)]


def test_a_lower_gold_threshold_upgrades_a_member_whose_next_order_earns_one_and_a_half(
        uow, orders):
    tiers = [{"code": "SILVER", "name": "银卡", "rank": 0, "min_growth": 0},
             {"code": "GOLD", "name": "金卡", "rank": 1, "min_growth": 100,
              "points_multiplier": "1.5"}]
    out = run(uow, tiers=tiers)
    # O1 and O2 earn 71 each as SILVER; growth 142 reaches GOLD; O3 earns 71 x 1.5 = 106.5,
    # rounded down 106, of which the croissant's share is 22 (84 + 22 by largest remainder).
    prop = out["proposed"]
    assert (prop["points"], prop["clawed_back"], prop["net_points"], prop["upgrades"]) == (
        248, 22, 226, 1)
    assert [(r["tier"], r["members"]) for r in prop["tier_distribution"]] == [
        ("SILVER", 1), ("GOLD", 1)]
    assert [(r["tier"], r["members"]) for r in out["current"]["tier_distribution"]] == [
        ("SILVER", 2), ("GOLD", 0), ("PLATINUM", 0)]
    assert out["difference"]["net_points"] == 226 - 198


def test_a_store_manager_simulates_only_the_orders_of_its_stores(uow, orders):
    manager = Actor(type="user", id=7, name="m", role="manager",
                    store_ids=frozenset({orders["SH01"]}))
    out = run(uow, actor=manager, rules={"points_per_yuan": "2"})
    # O1 and O3 (SH01): 71 + 71 - 15 today; doubled 142 + 142 - 30.
    assert out["orders"] == 2 and out["current"]["net_points"] == 127
    assert out["proposed"]["net_points"] == 254
    with pytest.raises(Forbidden):
        run(uow, actor=Actor(type="user", id=8, name="c", role="cashier",
                             store_ids=frozenset({orders["SH01"]})), rules={})


def test_orders_outside_the_window_and_before_enrolment_are_not_replayed(uow, orders):
    buy(uow, "OLD", at=T0 - 90 * DAY)  # before enrolment: earned nothing, replays nothing
    out = simulation.simulate(uow.c, actor=SYSTEM, program="BB", as_of=T0 + 1.5 * DAY,
                              body=SimulationIn(months=1, rules={"points_per_yuan": "1"}))
    assert out["orders"] == 2  # O1, O2; O3 comes after the end


def test_a_simulation_needs_a_proposal_and_valid_tiers(uow, orders):
    with pytest.raises(ValidationError):
        SimulationIn.model_validate({"months": 1})
    with pytest.raises(ValidationError):
        SimulationIn.model_validate({"months": 0, "rules": {}})
    with pytest.raises(ValidationFailed) as exc:
        run(uow, tiers=[{"code": "A", "name": "a", "rank": 0, "min_growth": 10},
                        {"code": "B", "name": "b", "rank": 1, "min_growth": 5}])
    assert exc.value.fields[0].field == "tiers"


def test_the_daily_cap_applies_per_member_and_local_day_in_the_replay():
    # Pure replay: two orders on one local day under a cap of 100 a day earn 71 + 29.
    at = dt.datetime(2026, 3, 2, 2, 30, tzinfo=dt.UTC)
    facts = OrderFacts(total=Decimal("71.00"),
                       lines=(LineFacts(1, "LATTE", "coffee", Decimal("56.00")),
                              LineFacts(2, "CROISSANT", "bakery", Decimal("15.00"))),
                       payments=(), store_code="SH01", channel_code="pos",
                       local_time=at.astimezone(dt.timezone(dt.timedelta(hours=8))))
    orders_ = [ReplayOrder(i, 1, at + dt.timedelta(hours=i), facts, Decimal(0), {})
               for i in (1, 2)]
    out = replay(orders_, rules=EarningRules(cap_per_day=100),
                 tiers=[TierDef(1, "S", 0, 0, Decimal(0), Decimal(1))], basis="growth",
                 members=[1], opening_growth={}, prior_spend={}, month_of=lambda _: "m")
    assert (out.points, out.growth) == (100, 142)
