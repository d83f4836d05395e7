"""The lift report on SQLite and PostgreSQL, in a tiny world whose every figure is computed by
hand: a campaign (and an automation) with four customers in the control group and four in the
treatment arm, known orders, coupon redemptions and unsubscribes, some inside the 30-day window
and some outside it.

Campaign "spring", control share 0.5, a coupon (10.00 off) and an SMS at 0.10 per treated
customer, assigned at A. Treatment t1..t4, control c1..c4 (71.00 per order):

- t1: orders at A+2d (redeeming the campaign's coupon) and A+20d; t2: an order at A+5d;
  t3: an order at A+40d (after the window); t4: no order, unsubscribes at A+3d.
- c1: an order at A+2d; c2 unsubscribes at A+1d; c3 unsubscribes at A+31d (after the window).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from scipy import stats as sp
from sqlalchemy import select

from patron.automations import service as automations
from patron.automations.tables import experiment_assignments
from patron.campaigns import service
from patron.campaigns.engine import run_due
from patron.campaigns.schemas import CampaignIn
from patron.campaigns.tables import campaign_recipients
from patron.db import UnitOfWork
from patron.messaging.service import withdraw_consent_in
from patron.security.model import SYSTEM
from tests.automation_factories import DAY, NOW, PHONES, create, run, setup_program
from tests.coupon_factories import redeem
from tests.loyalty_factories import buy

HOUR = dt.timedelta(hours=1)
A = NOW + HOUR  # the campaign starts (assigns its customers) in the round run at A


def arms_of(engine, source):
    x = experiment_assignments.c
    with UnitOfWork(engine, readonly=True) as uow:
        rows = uow.c.execute(select(x.customer_id, x.arm).where(x.source == source)
                             .order_by(x.customer_id)).all()
    out: dict[str, list[int]] = {}
    for cid, arm in rows:
        out.setdefault(arm, []).append(int(cid))
    return out


def purchase(engine, key, phone_of, customer, at):
    with UnitOfWork(engine) as uow:
        buy(uow, key, phone=phone_of[customer], at=at, now=at + dt.timedelta(minutes=1))


def unsubscribe(engine, customer, at):
    with UnitOfWork(engine) as uow:
        assert withdraw_consent_in(uow.c, actor=SYSTEM, customer_id=customer, kind="sms",
                                   source="unsubscribe", now=at) == 1
        uow.commit()


@pytest.fixture
def world(engine):
    club = setup_program(engine, members=8)
    phone_of = {m["customer_id"]: p for m, p in zip(club["members"], PHONES, strict=False)}
    member_of = {m["customer_id"]: m["id"] for m in club["members"]}
    with UnitOfWork(engine) as uow:
        service.create(uow=uow, actor=SYSTEM, now=NOW, body=CampaignIn.model_validate({
            "code": "spring", "name": "春季回馈", "program": "BB", "channel": "sms",
            "template": "welcome", "coupon_template_id": club["coupon"]["id"],
            "message_cost": "0.10", "control_share": "0.5"}))
    with UnitOfWork(engine) as uow:
        service.launch(uow=uow, actor=SYSTEM, code="spring", now=NOW)
    run_due(engine=engine, now=A)
    arms = arms_of(engine, "campaign")
    # The split is a hash of the campaign and the customer: four and four for these ids.
    assert sorted(arms) == ["control", "main"], arms
    assert (len(arms["main"]), len(arms["control"])) == (4, 4), arms
    t1, t2, t3, t4 = arms["main"]
    c1, c2, c3, _c4 = arms["control"]
    with UnitOfWork(engine, readonly=True) as uow:
        code_of = dict(uow.c.execute(select(campaign_recipients.c.customer_id,
                                            campaign_recipients.c.coupon_code)).all())
    purchase(engine, "T1a", phone_of, t1, A + 2 * DAY)
    with UnitOfWork(engine) as uow:
        redeem(uow, member_of[t1], [code_of[t1]], "redeem-t1", now=A + 2 * DAY,
               order={"channel": "pos", "store": "SH01", "external_id": "T1a"})
    purchase(engine, "T1b", phone_of, t1, A + 20 * DAY)
    purchase(engine, "T2", phone_of, t2, A + 5 * DAY)
    purchase(engine, "T3", phone_of, t3, A + 40 * DAY)
    unsubscribe(engine, t4, A + 3 * DAY)
    purchase(engine, "C1", phone_of, c1, A + 2 * DAY)
    unsubscribe(engine, c2, A + 1 * DAY)
    unsubscribe(engine, c3, A + 31 * DAY)
    return engine


def lift(engine, now=A + 41 * DAY):
    with UnitOfWork(engine, readonly=True) as uow:
        return service.lift(uow.c, actor=SYSTEM, code="spring", days=30, now=now)


def test_each_figure_of_each_arm(world):
    out = lift(world)
    main, control = out["arms"]["main"], out["arms"]["control"]
    # t1 (two orders) and t2 bought within 30 days; t3's order came on day 40.
    assert (main["customers"], main["converted"], main["conversion"]) == (4, 2, 0.5)
    assert (main["orders"], main["revenue"]) == (3, Decimal("213.00"))
    assert main["revenue_per_customer"] == Decimal("53.25")
    assert (control["customers"], control["converted"], control["conversion"]) == (4, 1, 0.25)
    assert (control["orders"], control["revenue"]) == (1, Decimal("71.00"))
    assert control["revenue_per_customer"] == Decimal("17.75")
    # Four coupons issued to the treated customers, one redeemed; none to the control group.
    assert (main["coupons_issued"], main["coupons_redeemed"]) == (4, 1)
    assert main["coupon_redemption_rate"] == 0.25
    assert (control["coupons_issued"], control["coupon_redemption_rate"]) == (0, None)
    # t4 and c2 unsubscribed within the window; c3 only on day 31.
    assert (main["unsubscribed"], main["unsubscribe_rate"]) == (1, 0.25)
    assert (control["unsubscribed"], control["unsubscribe_rate"]) == (1, 0.25)
    # Cost: the redeemed coupon's 10.00 and four SMS at 0.10.
    assert main["cost"] == {"coupons": Decimal("10.00"), "points": 0,
                            "points_value": Decimal("0.00"), "messages": 4,
                            "messages_value": Decimal("0.40"), "total": Decimal("10.40")}
    assert control["cost"]["total"] == Decimal("0.00")
    assert out["window_not_over"] == 0


def test_the_comparison_incremental_revenue_and_roi(world):
    vs = lift(world)["versus_control"]["main"]
    assert vs["conversion"]["difference"] == 0.25
    assert vs["conversion"]["ci_low"] < 0 < vs["conversion"]["ci_high"]
    assert vs["unsubscribe_rate"]["difference"] == 0.0
    # Revenue per customer: treatment (142, 71, 0, 0), control (71, 0, 0, 0).
    welch = sp.ttest_ind([142, 71, 0, 0], [71, 0, 0, 0], equal_var=False)
    interval = welch.confidence_interval(0.95)
    rev = vs["revenue_per_customer"]
    assert rev["difference"] == Decimal("35.50")
    assert rev["ci_low"] == Decimal(interval.low).quantize(Decimal("0.01"))
    assert rev["ci_high"] == Decimal(interval.high).quantize(Decimal("0.01"))
    assert rev["p_value"] == pytest.approx(welch.pvalue, abs=1e-6)
    # Incremental revenue: 35.50 per customer times 4; its interval the same way.
    inc = vs["incremental_revenue"]
    assert inc["value"] == Decimal("142.00")
    assert inc["ci_low"] == (Decimal(interval.low) * 4).quantize(Decimal("0.01"))
    assert inc["ci_high"] == (Decimal(interval.high) * 4).quantize(Decimal("0.01"))
    # ROI: (142.00 - 10.40) / 10.40.
    assert vs["roi"] == round((Decimal("142.00") - Decimal("10.40")) / Decimal("10.40"), 4)
    assert vs["roi"] == Decimal("12.6538")


def test_attribution_by_coupon_and_by_purchase_window(world):
    arms = lift(world)["arms"]
    assert arms["main"]["attribution"] == {
        "purchase_window": {"orders": 3, "revenue": Decimal("213.00")},
        "coupon": {"orders": 1, "revenue": Decimal("71.00")}}
    assert arms["control"]["attribution"] == {
        "purchase_window": {"orders": 1, "revenue": Decimal("71.00")},
        "coupon": {"orders": 0, "revenue": Decimal("0.00")}}


def test_the_daily_series_is_cumulative_from_the_assignment(world):
    arms = lift(world)["arms"]
    main = {p["day"]: p for p in arms["main"]["series"]}
    control = {p["day"]: p for p in arms["control"]["series"]}
    assert sorted(main) == list(range(1, 31))
    assert (main[1]["conversion"], main[1]["revenue_per_customer"]) == (0.0, Decimal("0.00"))
    assert (main[2]["conversion"], main[2]["revenue_per_customer"]) == (0.25, Decimal("17.75"))
    assert (main[4]["conversion"], main[4]["revenue_per_customer"]) == (0.25, Decimal("17.75"))
    assert (main[5]["conversion"], main[5]["revenue_per_customer"]) == (0.5, Decimal("35.50"))
    assert (main[20]["conversion"], main[20]["revenue_per_customer"]) == (0.5,
                                                                         Decimal("53.25"))
    assert (main[30]["conversion"], main[30]["revenue_per_customer"]) == (0.5,
                                                                         Decimal("53.25"))
    assert (control[2]["conversion"], control[30]["revenue_per_customer"]) == (
        0.25, Decimal("17.75"))


def test_only_customers_whose_window_is_over_are_counted(world):
    early = lift(world, now=A + 29 * DAY)
    assert early["arms"] == {} and early["window_not_over"] == 8
    # On the window's last moment everything above already counts; t3's order does not.
    assert lift(world, now=A + 30 * DAY)["arms"]["main"]["revenue"] == Decimal("213.00")


def test_the_api_gives_money_as_strings(world):
    import json

    from patron.campaigns.api import lift as route

    with UnitOfWork(world, readonly=True) as uow:
        body = json.loads(route("spring", uow, SYSTEM, days=30).body)
    main = body["arms"]["main"]
    assert body["campaign"] == "spring" and main["revenue"] == "213.00"
    assert main["cost"]["total"] == "10.40" and main["series"][1]["revenue_per_customer"] == "17.75"
    assert body["versus_control"]["main"]["incremental_revenue"]["value"] == "142.00"


def test_an_automation_costs_its_points_and_messages_per_channel(engine, monkeypatch):
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_MESSAGE_COSTS", '{"sms": "0.05"}')
    get_settings.cache_clear()
    club = setup_program(engine, members=8)
    phone_of = {m["customer_id"]: p for m, p in zip(club["members"], PHONES, strict=False)}
    create(engine, "gift", {"type": "schedule", "cron": "0 10 * * *"}, steps=[
        {"action": "grant_points", "points": 150, "reason": "gift"},
        {"action": "send_message", "channel": "sms", "template": "hello"}],
        control_share="0.15", reentry_days=0)
    tick = NOW + DAY  # the next 10:00 in Shanghai
    run(engine, tick)
    run(engine, tick + HOUR)
    arms = arms_of(engine, "automation")
    assert (len(arms["main"]), len(arms["control"])) == (4, 4), arms
    x = experiment_assignments.c
    with UnitOfWork(engine, readonly=True) as uow:
        assigned = uow.c.execute(select(x.assigned_at).limit(1)).scalar_one()
    purchase(engine, "G1", phone_of, arms["main"][0], assigned + DAY)
    with UnitOfWork(engine, readonly=True) as uow:
        out = automations.lift(uow.c, actor=SYSTEM, code="gift", days=30,
                               now=assigned + 31 * DAY)
    get_settings.cache_clear()
    main = out["arms"]["main"]
    # 4 x 150 points at 100 points a yuan, and 4 SMS at 0.05.
    assert main["cost"] == {"coupons": Decimal("0.00"), "points": 600,
                            "points_value": Decimal("6.00"), "messages": 4,
                            "messages_value": Decimal("0.20"), "total": Decimal("6.20")}
    assert out["arms"]["control"]["cost"]["total"] == Decimal("0.00")
    vs = out["versus_control"]["main"]
    assert vs["incremental_revenue"]["value"] == Decimal("71.00")
    assert vs["roi"] == round((Decimal("71.00") - Decimal("6.20")) / Decimal("6.20"), 4)
