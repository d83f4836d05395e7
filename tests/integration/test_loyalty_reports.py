"""Liability, breakage and settlement on a small ledger worked out by hand, on SQLite and
PostgreSQL (docs/loyalty-reports.md defines each figure).

The ledger (program BB: 7 pending days, 12-month rolling expiry, 100 points a yuan; every
purchase is the test basket: 2 lattes 56.00 + a croissant 15.00 = 71 points):

    2026-03-02 10:30  M1 buys O1 at SH01       lot L1 71, expires 2027-03-02
    2026-03-02 11:30  M1 buys O2 at BJ01       lot L2 71, expires 2027-03-02
    2026-03-12        M1 redeems 100 at BJ01   takes L1 71 (SH01) + L2 29 (BJ01)
    2026-04-02        M2 buys O3 at BJ01       lot L3 71, expires 2027-04-02
    2026-04-08        M2 buys O4 at SH01       lot L4 71, pending until 04-15, expires 2027-04-08
    2026-04-10 10:00  M2 holds 50 at SH01, committed: L3 50 (BJ01)
    2026-04-10 10:00  M2 holds 10 at SH01, left open: L3 10 (BJ01)
    -- liability and settlement are read here, 2026-04-10 11:00 --
    2026-04-11        O4's croissant returned: 15 pending points clawed back from L4
    2027-05-01        the daily job releases the open hold (L3 back to 21) and expires
                      L2 42, L3 21, L4 56
"""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine

from patron.errors import Forbidden, ValidationFailed
from patron.loyalty import reports, service
from patron.loyalty.jobs import run_due
from patron.loyalty.schemas import HoldIn, RedeemIn
from patron.loyalty.verify import verify
from patron.security.model import SYSTEM, Actor
from tests.factories import make_org
from tests.loyalty_factories import buy, enrol, give_back, make_program

CST = dt.timezone(dt.timedelta(hours=8))
P2 = "13912345678"
AS_OF = dt.datetime(2026, 4, 10, 11, 0, tzinfo=CST)
LATER = dt.datetime(2027, 5, 1, 0, 0, tzinfo=CST)


def at(month, day, hour=10, minute=30):
    return dt.datetime(2026, month, day, hour, minute, tzinfo=CST)


@pytest.fixture
def ledger(uow):
    stores = make_org(uow)
    make_program(uow, pending_days=7)
    m1 = enrol(uow)
    m2 = enrol(uow, P2)
    buy(uow, "O1", at=at(3, 2))
    buy(uow, "O2", at=at(3, 2, 11), store="BJ01")
    service.redeem(uow=uow, actor=SYSTEM, member_id=m1["id"], now=at(3, 12),
                   body=RedeemIn(idempotency_key="r1", points=100, store="BJ01"))
    buy(uow, "O3", phone=P2, at=at(4, 2), store="BJ01")
    buy(uow, "O4", phone=P2, at=at(4, 8))
    h = service.hold(uow=uow, actor=SYSTEM, member_id=m2["id"], now=at(4, 10, 10, 0),
                     body=HoldIn(idempotency_key="h1", points=50, store="SH01"))
    service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=at(4, 10, 10, 0))
    service.hold(uow=uow, actor=SYSTEM, member_id=m2["id"], now=at(4, 10, 10, 0),
                 body=HoldIn(idempotency_key="h2", points=10, store="SH01", minutes=600))
    return {"m1": m1, "m2": m2, **stores}


def manager_of(store_id):
    return Actor(type="user", id=7, name="sh-manager", role="manager",
                 store_ids=frozenset({store_id}))


def test_liability_counts_available_pending_and_held_points_by_expiry_month_and_store(
        uow, ledger):
    out = reports.liability(uow.c, actor=SYSTEM, program="BB", now=AS_OF)
    assert out["totals"] == {
        "available": 53, "pending": 71, "held": 10, "outstanding": 134,
        "liability": Decimal("1.34"), "available_value": Decimal("0.53"),
        "pending_value": Decimal("0.71"), "held_value": Decimal("0.10"),
        "awaiting_expiry": 0, "owed": 0}
    assert out["by_expiry_month"] == [
        {"month": "2027-03", "available": 42, "pending": 0, "held": 0, "points": 42,
         "value": Decimal("0.42")},
        {"month": "2027-04", "available": 11, "pending": 71, "held": 10, "points": 92,
         "value": Decimal("0.92")}]
    assert out["by_store"] == [
        {"store": "BJ01", "available": 53, "pending": 0, "held": 10, "points": 63,
         "value": Decimal("0.63")},
        {"store": "SH01", "available": 0, "pending": 71, "held": 0, "points": 71,
         "value": Decimal("0.71")}]


def test_points_past_expiry_are_not_liability_even_before_the_daily_job(uow, ledger):
    out = reports.liability(uow.c, actor=SYSTEM, program="BB",
                            now=dt.datetime(2027, 3, 3, tzinfo=CST))
    # L2's 42 expired on 2027-03-02; the open hold's 10 still count as held until released.
    assert out["totals"]["awaiting_expiry"] == 42
    assert out["totals"]["available"] == 11 + 71
    assert [r["month"] for r in out["by_expiry_month"]] == ["2027-04"]


def test_a_store_manager_sees_only_the_liability_issued_at_its_stores(uow, ledger):
    out = reports.liability(uow.c, actor=manager_of(ledger["SH01"]), program="BB", now=AS_OF)
    assert out["totals"]["outstanding"] == 71 and out["totals"]["owed"] is None
    assert [r["store"] for r in out["by_store"]] == ["SH01"]
    with pytest.raises(Forbidden):
        reports.liability(uow.c, actor=Actor(type="user", id=8, name="c", role="cashier",
                                             store_ids=frozenset({ledger["SH01"]})),
                          program="BB", now=AS_OF)


def test_settlement_matrix_and_what_each_store_owes_the_other(uow, ledger):
    out = reports.settlement(uow.c, actor=SYSTEM, program="BB",
                             date_from=dt.date(2026, 3, 1), date_to=dt.date(2026, 4, 30))
    cells = {(c["issued_at"], c["redeemed_at"]): (c["points"], c["value"], c["redemptions"])
             for c in out["cells"]}
    assert cells == {("BJ01", "BJ01"): (29, Decimal("0.29"), 1),
                     ("SH01", "BJ01"): (71, Decimal("0.71"), 1),
                     ("BJ01", "SH01"): (50, Decimal("0.50"), 1)}
    # SH01 issued 71 spent at BJ01; BJ01 issued 50 spent at SH01: SH01 pays BJ01 for 21.
    assert out["settlements"] == [{"payer": "SH01", "payee": "BJ01", "points": 21,
                                   "value": Decimal("0.21")}]
    by = {r["store"]: r for r in out["by_store"]}
    assert by["BJ01"]["receives"] == Decimal("0.21") and by["BJ01"]["net"] == Decimal("0.21")
    assert by["SH01"]["pays"] == Decimal("0.21") and by["SH01"]["net"] == Decimal("-0.21")
    assert by["BJ01"]["issued_here_redeemed_elsewhere"] == 50
    assert by["BJ01"]["issued_elsewhere_redeemed_here"] == 71
    assert out["totals"] == {"points": 150, "value": Decimal("1.50"),
                             "cross_store_points": 121, "cross_store_value": Decimal("1.21"),
                             "unattributed_points": 0}


def test_settlement_counts_a_redemption_in_the_period_it_happened_and_not_open_holds(uow,
                                                                                     ledger):
    march = reports.settlement(uow.c, actor=SYSTEM, program="BB",
                               date_from=dt.date(2026, 3, 1), date_to=dt.date(2026, 3, 31))
    assert march["totals"]["points"] == 100
    april = reports.settlement(uow.c, actor=SYSTEM, program="BB",
                               date_from=dt.date(2026, 4, 1), date_to=dt.date(2026, 4, 30))
    assert [(c["issued_at"], c["redeemed_at"], c["points"]) for c in april["cells"]] == [
        ("BJ01", "SH01", 50)]  # the open hold of 10 is not a redemption yet
    assert april["settlements"] == [{"payer": "BJ01", "payee": "SH01", "points": 50,
                                     "value": Decimal("0.50")}]


def test_a_store_manager_sees_only_settlement_rows_touching_its_store(uow, ledger):
    out = reports.settlement(uow.c, actor=manager_of(ledger["SH01"]), program="BB",
                             date_from=dt.date(2026, 3, 1), date_to=dt.date(2026, 4, 30))
    assert {(c["issued_at"], c["redeemed_at"]) for c in out["cells"]} == {
        ("SH01", "BJ01"), ("BJ01", "SH01")}
    assert [r["store"] for r in out["by_store"]] == ["SH01"]


def test_breakage_by_month_of_issue_and_of_expiry(uow, ledger):
    with time_machine.travel(at(4, 11), tick=False):
        give_back(uow, "R1", "O4", at=at(4, 11), lines=[{"line_no": 2, "quantity": "1"}])
    run_due(uow=uow, actor=SYSTEM, now=LATER)
    assert verify(uow.c)["differences"] == []
    out = reports.breakage(uow.c, actor=SYSTEM, program="BB", by="issue", now=LATER)
    rows = {r["month"]: r for r in out["cohorts"]}
    assert rows["2026-03"] | {"received_by_transfer": None} == {
        "month": "2026-03", "issued": 142, "clawed_back": 0, "net_issued": 142,
        "expired": 42, "open": 0, "used": 100, "breakage_rate": Decimal("0.2958"),
        "final": True, "received_by_transfer": None}
    assert (rows["2026-04"]["issued"], rows["2026-04"]["clawed_back"],
            rows["2026-04"]["expired"], rows["2026-04"]["used"],
            rows["2026-04"]["breakage_rate"]) == (142, 15, 77, 50, Decimal("0.6063"))
    assert out["totals"]["breakage_rate"] == Decimal("0.4424")  # 119 / 269
    by_expiry = reports.breakage(uow.c, actor=SYSTEM, program="BB", by="expiry", now=LATER)
    assert [(r["month"], r["expired"]) for r in by_expiry["cohorts"]] == [
        ("2027-03", 42), ("2027-04", 77)]
    only_april = reports.breakage(uow.c, actor=SYSTEM, program="BB", by="issue",
                                  month_from="2026-04", month_to="2026-04", now=LATER)
    assert [r["month"] for r in only_april["cohorts"]] == ["2026-04"]


def test_breakage_counts_points_past_expiry_before_the_daily_job_has_run(uow, ledger):
    out = reports.breakage(uow.c, actor=SYSTEM, program="BB", by="issue",
                           now=dt.datetime(2027, 3, 3, tzinfo=CST))
    march = out["cohorts"][0]
    assert (march["month"], march["expired"], march["open"], march["final"]) == (
        "2026-03", 42, 0, True)
    april = out["cohorts"][1]
    assert (april["expired"], april["open"], april["final"]) == (0, 11 + 71, False)


def test_report_inputs_are_refused_with_the_field(uow, ledger):
    with pytest.raises(ValidationFailed) as exc:
        reports.breakage(uow.c, actor=SYSTEM, program="BB", month_from="2026-13")
    assert exc.value.fields[0].field == "from"
    with pytest.raises(ValidationFailed) as exc:
        reports.breakage(uow.c, actor=SYSTEM, program="BB", by="week")
    assert exc.value.fields[0].field == "by"
    with pytest.raises(ValidationFailed) as exc:
        reports.settlement(uow.c, actor=SYSTEM, program="BB", date_from=dt.date(2026, 4, 2),
                           date_to=dt.date(2026, 4, 1))
    assert exc.value.fields[0].field == "to"
