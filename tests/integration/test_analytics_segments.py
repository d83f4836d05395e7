"""RFM scores and lifecycle stages computed on both databases from recorded order histories."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from patron.analytics import rfm_read, service
from patron.analytics.model import quantile_scores, segment_for
from patron.analytics.tables import lifecycle_flow_counts, lifecycle_transitions, rfm_scores
from patron.customers.service import merge_customers
from patron.customers.tables import customers
from patron.errors import Forbidden, NotFound, ValidationFailed
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org, order

# rfm_scores with the scores and segment computed from each scope's cut points
SCORED = rfm_read.scored()

CST = dt.timezone(dt.timedelta(hours=8))
AS_OF = dt.datetime(2026, 6, 1, 12, 0, tzinfo=CST)
BIG = [{"sku": "BEANS", "category": "beans", "quantity": "4", "unit_price": "150.00"}]


def days_ago(n: int) -> dt.datetime:
    return AS_OF - dt.timedelta(days=n)


def record(uow, bodies):
    out = record_orders(uow=uow, orders_in=bodies, source="api", actor=SYSTEM,
                        now=AS_OF + dt.timedelta(days=60), audit_each=False)
    assert all(o.status == "created" for o in out), out
    return out[-1].customer_id


def history(uow, name, phone, store, ago, lines=None):
    return record(uow, [order(f"{name}{i}", store=store, at=days_ago(n),
                              identifiers={"phone": phone}, lines=lines)
                        for i, n in enumerate(ago)])


@pytest.fixture
def shop(uow):
    """A weekly regular three weeks late, a quarterly regular as late, a newcomer, a one-time
    buyer of long ago and a big weekly spender."""
    org = make_org(uow)
    people = {
        "weekly": history(uow, "W", "13800000001", "SH01", [21 + 7 * i for i in range(10)]),
        "quarterly": history(uow, "Q", "13800000002", "BJ01", [21 + 90 * i for i in range(5)]),
        "newcomer": history(uow, "N", "13800000003", "SH01", [3]),
        "gone": history(uow, "L", "13800000004", "BJ01", [400]),
        "big": history(uow, "B", "13800000005", "SH01", [2 + 7 * i for i in range(6)], BIG),
    }
    return {"org": org, **people,
            "manager": Actor(type="user", id=3, name="mgr", role="manager",
                             store_ids=frozenset({org["SH01"]}))}


def scores(uow, scope="overall"):
    return {r.customer_id: r for r in uow.c.execute(
        select(SCORED).where(SCORED.c.scope == scope))}


def test_overall_scores_follow_the_rank_rule_with_ties(uow, shop):
    result = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF)
    assert result["scopes"] == {"overall": 5}
    got = scores(uow)
    ids = [shop[k] for k in ("weekly", "quarterly", "newcomer", "gone", "big")]
    recency = [service.recency_days(got[i].last_order_at, AS_OF) for i in ids]
    assert recency == [21, 21, 3, 400, 2]
    assert [got[i].frequency for i in ids] == [10, 5, 1, 1, 6]
    assert [got[i].monetary for i in ids] == [Decimal("710.00"), Decimal("355.00"),
                                              Decimal("71.00"), Decimal("71.00"),
                                              Decimal("3600.00")]
    r = quantile_scores(recency, higher_is_better=False)
    f = quantile_scores([10, 5, 1, 1, 6])
    m = quantile_scores([710, 355, 71, 71, 3600])
    assert [got[i].r_score for i in ids] == r == [2, 2, 4, 1, 5]
    assert [got[i].f_score for i in ids] == f == [5, 3, 1, 1, 4]
    assert [got[i].m_score for i in ids] == m == [4, 3, 1, 1, 5]
    assert [got[i].segment for i in ids] == [segment_for(*x) for x in zip(r, f, m, strict=True)]
    assert got[shop["big"]].segment == "champions"
    assert got[shop["gone"]].segment == "lost"
    assert got[shop["newcomer"]].segment == "promising"


def test_refresh_replaces_the_scope_and_is_audited(uow, shop):
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF)
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF + dt.timedelta(days=30))
    assert uow.c.execute(select(func.count()).select_from(SCORED)).scalar_one() == 5
    later = AS_OF + dt.timedelta(days=30)
    assert service.customer_analytics(uow.c, actor=SYSTEM, customer_id=shop["big"])[
        "rfm"]["recency_days"] == 32
    assert service.recency_days(scores(uow)[shop["big"]].last_order_at, later) == 32
    actions = list(uow.c.execute(select(audit_log.c.action).where(
        audit_log.c.action == "analytics.rfm_refreshed")).scalars())
    assert len(actions) == 2


def test_store_region_and_brand_scopes_count_only_their_orders(uow, shop):
    result = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    assert result["scopes"] == {"overall": 5, "store:BJ01": 2, "store:SH01": 3,
                                "region:EAST": 3, "region:NORTH": 2, "brand:B1": 5}
    sh = scores(uow, "store:SH01")
    assert set(sh) == {shop["weekly"], shop["newcomer"], shop["big"]}
    north = scores(uow, "region:NORTH")
    assert set(north) == {shop["quarterly"], shop["gone"]}
    # within the north the quarterly regular is the better of two
    assert (north[shop["quarterly"]].r_score, north[shop["gone"]].r_score) == (3, 1)


def test_a_scope_in_the_past_ignores_later_orders(uow, shop):
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=days_ago(10), scope="store:SH01")
    sh = scores(uow, "store:SH01")
    assert shop["newcomer"] not in sh
    assert sh[shop["big"]].frequency == 4


def test_unknown_or_malformed_scopes_are_refused(uow, shop):
    for bad in ("store:NOPE", "city:SH", "store:"):
        with pytest.raises(ValidationFailed) as exc:
            service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope=bad)
        assert exc.value.fields[0].field == "scope"


def test_owner_thresholds_replace_quantiles(uow, shop):
    owner = Actor(type="user", id=1, name="boss", role="owner")
    service.set_thresholds(uow=uow, actor=owner, rfm={"recency_days": [7, 30, 90, 180],
                                                      "monetary": [100, 500, 1000, 3000]})
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF)
    got = scores(uow)
    assert got[shop["weekly"]].r_score == 4
    assert got[shop["gone"]].r_score == 1
    assert got[shop["newcomer"]].m_score == 1
    assert got[shop["weekly"]].m_score == 3
    assert got[shop["big"]].m_score == 5


def test_bad_thresholds_are_refused_and_nothing_is_written(uow, shop):
    owner = Actor(type="user", id=1, name="boss", role="owner")
    with pytest.raises(ValidationFailed):
        service.set_thresholds(uow=uow, actor=owner, rfm={"recency_days": [30, 7, 90, 180]})
    with pytest.raises(ValidationFailed):
        service.set_thresholds(uow=uow, actor=owner, lifecycle={"dormant_days": 30})
    with pytest.raises(Forbidden):
        service.set_thresholds(uow=uow, actor=Actor(type="user", id=2, name="a",
                                                    role="analyst"), rfm={})
    assert service.rfm_thresholds(uow.c).recency_days is None


def test_summary_and_drill_down_respect_the_managers_stores(uow, shop):
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF)
    everyone = service.rfm_summary(uow.c, actor=SYSTEM)
    assert everyone["customers"] == 5
    mine = service.rfm_summary(uow.c, actor=shop["manager"])
    assert mine["customers"] == 3
    champions = service.segment_customers(uow.c, actor=shop["manager"], segment="champions")
    assert [c["id"] for c in champions["items"]] == [shop["big"]]
    assert champions["items"][0]["phone"] != "+8613800000005"
    lost = service.segment_customers(uow.c, actor=shop["manager"], segment="lost")
    assert lost["total"] == 0
    with pytest.raises(NotFound):
        service.segment_customers(uow.c, actor=SYSTEM, segment="vip")


# --- lifecycle ------------------------------------------------------------------------------


def stage_of(uow, customer_id):
    return service.customer_analytics(uow.c, actor=SYSTEM, customer_id=customer_id)["stage"]


def test_stages_follow_each_customers_rhythm(uow, shop):
    result = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    assert result["changed"] == 5
    assert stage_of(uow, shop["weekly"]) == "dormant"
    assert stage_of(uow, shop["quarterly"]) == "active"
    assert stage_of(uow, shop["newcomer"]) == "new"
    assert stage_of(uow, shop["gone"]) == "churned"
    assert stage_of(uow, shop["big"]) == "active"
    assert result["stages"] == {"new": 1, "active": 2, "dormant": 1, "churn_risk": 0,
                                "churned": 1, "reactivated": 0}


def test_refreshing_twice_the_same_day_records_no_duplicate_transitions(uow, shop):
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    # late in the evening the weekly regular is 21.4 days past their last visit: still the
    # same calendar day, so still the same stage
    again = service.refresh_lifecycle(uow=uow, actor=SYSTEM,
                                      as_of=AS_OF + dt.timedelta(hours=11, minutes=30))
    assert again["changed"] == 0
    assert uow.c.execute(select(func.count()).select_from(lifecycle_transitions)
                         ).scalar_one() == 5


def test_a_lapsed_regular_who_returns_is_reactivated_then_active(uow, shop):
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    day2 = AS_OF + dt.timedelta(days=1)
    record(uow, [order("W-back", at=day2 - dt.timedelta(hours=2),
                       identifiers={"phone": "13800000001"})])
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=day2)
    assert stage_of(uow, shop["weekly"]) == "reactivated"
    day9 = AS_OF + dt.timedelta(days=9)
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=day9)
    assert stage_of(uow, shop["weekly"]) == "reactivated"  # no purchase since coming back
    record(uow, [order("W-again", at=day9 - dt.timedelta(hours=1),
                       identifiers={"phone": "13800000001"})])
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=day9 + dt.timedelta(hours=1))
    view = service.customer_analytics(uow.c, actor=SYSTEM, customer_id=shop["weekly"])
    assert view["stage"] == "active"
    assert [(h["from_stage"], h["to_stage"], h["changed_on"]) for h in view["stage_history"]] == [
        (None, "dormant", dt.date(2026, 6, 1)),
        ("dormant", "reactivated", dt.date(2026, 6, 2)),
        ("reactivated", "active", dt.date(2026, 6, 10)),
    ]
    flows = service.lifecycle_flows(uow.c, actor=SYSTEM, date_from=dt.date(2026, 6, 2),
                                    date_to=dt.date(2026, 6, 30))["flows"]
    assert [(f["from_stage"], f["to_stage"], f["customers"]) for f in flows] == [
        ("dormant", "reactivated", 1), ("reactivated", "active", 1)]


def test_the_newcomer_ages_into_the_population_rhythm(uow, shop):
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    later = service.refresh_lifecycle(uow=uow, actor=SYSTEM,
                                      as_of=AS_OF + dt.timedelta(days=40))
    # repeat buyers' usual intervals: 7, 7 and 90 days; the middle one is a week
    assert later["population_interval_days"] == 7.0
    assert stage_of(uow, shop["newcomer"]) == "churned"


def test_owner_fixed_days_override_the_rhythm(uow, shop):
    owner = Actor(type="user", id=1, name="boss", role="owner")
    service.set_thresholds(uow=uow, actor=owner, lifecycle={
        "dormant_days": 60, "churn_risk_days": 120, "churned_days": 180})
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    assert stage_of(uow, shop["weekly"]) == "active"
    assert stage_of(uow, shop["gone"]) == "churned"


def test_lifecycle_summary_and_flows_are_scoped(uow, shop):
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    summary = service.lifecycle_summary(uow.c, actor=shop["manager"])
    assert summary["customers"] == 3
    assert {s["stage"]: s["customers"] for s in summary["stages"]}["churned"] == 0
    flows = service.lifecycle_flows(uow.c, actor=shop["manager"], date_from=AS_OF.date(),
                                    date_to=AS_OF.date())["flows"]
    assert sum(f["customers"] for f in flows) == 3
    with pytest.raises(NotFound):
        service.customer_analytics(uow.c, actor=shop["manager"], customer_id=shop["gone"])


# --- what those who see everyone read instead of counting ------------------------------------


def test_stored_stage_counts_and_flows_equal_those_counted_live(uow, shop):
    """Owners and analysts of every store read the stage counts the last refresh kept and the
    flows the transitions' triggers keep (migration 0012); someone whose stores are all of
    them gets both counted from the rows: the same answers, night after night, with a merged
    profile and transitions written by hand too."""
    org = shop["org"]
    everywhere = Actor(type="user", id=9, name="area", role="analyst",
                       store_ids=frozenset({org["SH01"], org["BJ01"]}))
    periods = [(AS_OF.date() + dt.timedelta(days=a), AS_OF.date() + dt.timedelta(days=b))
               for a, b in ((0, 0), (0, 40), (1, 9), (-30, -1))]

    def same() -> None:
        stored = service.lifecycle_summary(uow.c, actor=SYSTEM)
        assert stored == service.lifecycle_summary(uow.c, actor=everywhere)
        for lo, hi in periods:
            flows = service.lifecycle_flows(uow.c, actor=SYSTEM, date_from=lo, date_to=hi)
            assert flows == service.lifecycle_flows(uow.c, actor=everywhere, date_from=lo,
                                                    date_to=hi)

    same()  # nothing refreshed yet: nothing either way
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    same()
    assert service.lifecycle_summary(uow.c, actor=SYSTEM)["customers"] == 5
    day2 = AS_OF + dt.timedelta(days=1)
    record(uow, [order("W-back", at=day2 - dt.timedelta(hours=2),
                       identifiers={"phone": "13800000001"})])
    merge_customers(uow=uow, survivor_id=shop["big"], merged_id=shop["newcomer"],
                    reason="same person", actor=SYSTEM)
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=day2)
    same()
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF + dt.timedelta(days=40))
    same()
    assert service.lifecycle_summary(uow.c, actor=SYSTEM)["customers"] == 4
    flows = service.lifecycle_flows(uow.c, actor=SYSTEM, date_from=AS_OF.date(),
                                    date_to=AS_OF.date())["flows"]
    assert sum(f["customers"] for f in flows) == 5
    assert {f["from_stage"] for f in flows} == {None}
    # The counts follow whatever writes the transitions, not only the refresh.
    tr = lifecycle_transitions.c
    first = uow.c.execute(select(func.min(tr.id))).scalar_one()
    uow.c.execute(lifecycle_transitions.update().where(tr.id == first)
                  .values(changed_on=AS_OF.date() + dt.timedelta(days=5), from_stage="new"))
    same()
    uow.c.execute(lifecycle_transitions.delete().where(tr.changed_on == AS_OF.date()))
    same()
    fc = lifecycle_flow_counts.c
    assert uow.c.execute(select(func.sum(fc.customers))).scalar_one() == uow.c.execute(
        select(func.count()).select_from(lifecycle_transitions)).scalar_one()


def test_a_segments_total_is_the_same_stored_or_counted(uow, shop):
    """Who sees everyone gets a segment's total from the refresh's summary of the scope; the
    same total as counting the segment's rows (someone whose stores are all of them)."""
    org = shop["org"]
    everywhere = Actor(type="user", id=9, name="area", role="analyst",
                       store_ids=frozenset({org["SH01"], org["BJ01"]}))
    for segment in service.SEGMENTS:  # before any refresh: nobody
        assert service.segment_customers(uow.c, actor=SYSTEM, segment=segment)["total"] == 0
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    for scope in ("overall", "store:SH01", "region:NORTH", "brand:B1"):
        totals = []
        for segment in service.SEGMENTS:
            stored = service.segment_customers(uow.c, actor=SYSTEM, segment=segment,
                                               scope=scope, page_size=2)
            live = service.segment_customers(uow.c, actor=everywhere, segment=segment,
                                             scope=scope, page_size=2)
            assert stored == live
            totals.append(stored["total"])
        assert sum(totals) == service.rfm_summary(uow.c, actor=SYSTEM, scope=scope)["customers"]
    assert sum(service.segment_customers(uow.c, actor=SYSTEM, segment=s)["total"]
               for s in service.SEGMENTS) == 5


def test_a_summary_counted_for_some_stores_equals_the_refreshs_own(uow, shop):
    """The summary counted for a store-scoped actor (its rows grouped by their three scores,
    the groups added up per segment) is the refresh's own summary when its stores are all of
    them: the same customers, averages and scores per segment."""
    org = shop["org"]
    everywhere = Actor(type="user", id=9, name="area", role="analyst",
                       store_ids=frozenset({org["SH01"], org["BJ01"]}))
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    for scope in ("overall", "store:SH01", "region:NORTH", "brand:B1"):
        stored = service.rfm_summary(uow.c, actor=SYSTEM, scope=scope)
        counted = service.rfm_summary(uow.c, actor=everywhere, scope=scope)
        assert counted == stored, scope
        assert stored["customers"] > 0


def test_a_segments_envelope_keeps_every_member(uow, shop):
    """The ranges around a segment's cells (what a page's index walk starts from) are implied
    by its cells: adding them selects the very same customers, in every scope."""
    for k in range(30):
        history(uow, f"E{k}", f"1390000{k:04d}", "SH01" if k % 3 else "BJ01",
                [1 + (k * 13) % 200 + 9 * i for i in range(k % 6 + 1)],
                BIG if k % 4 == 0 else None)
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    s = SCORED.c
    for scope in ("overall", "store:SH01", "brand:B1"):
        cuts = rfm_read.cuts_of(service._scope_refresh(uow.c, scope))
        members = {seg: set() for seg in service.SEGMENTS}
        for r in uow.c.execute(select(s.customer_id, s.segment).where(s.scope == scope)):
            members[r.segment].add(r.customer_id)
        assert sum(len(v) for v in members.values()) > 10
        for seg in service.SEGMENTS:
            found = set(uow.c.execute(select(rfm_scores.c.customer_id).where(
                rfm_scores.c.scope == scope, rfm_read.segment_envelope([seg], cuts),
                rfm_read.segment_condition([seg], cuts))).scalars())
            assert found == members[seg], (scope, seg)
            within = set(uow.c.execute(select(rfm_scores.c.customer_id).where(
                rfm_scores.c.scope == scope, rfm_read.segment_envelope([seg], cuts))).scalars())
            assert within >= members[seg]


def test_a_managers_counts_hold_who_registered_or_bought_at_its_stores(uow, shop):
    """A store manager's segment totals, RFM summary and stage counts (counted over the set of
    its customers at once) hold a customer who only registered at its store and one who only
    bought there, and nobody else; the same customers its drill-down pages list."""
    org = shop["org"]
    c = customers.c
    registered_only = history(uow, "R", "13800000006", "BJ01", [30, 60])
    uow.c.execute(customers.update().where(c.id == registered_only)
                  .values(registration_store_id=org["SH01"]))
    bought_only = history(uow, "T", "13800000007", "SH01", [10])
    uow.c.execute(customers.update().where(c.id == bought_only)
                  .values(registration_store_id=org["BJ01"]))
    elsewhere = shop["quarterly"]  # registered and bought at BJ01 only
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=AS_OF, scope="all")
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=AS_OF)
    manager = shop["manager"]
    seen = {shop["weekly"], shop["newcomer"], shop["big"], registered_only, bought_only}
    assert elsewhere not in seen
    for scope in ("overall", "store:BJ01"):
        listed = set()
        for segment in service.SEGMENTS:
            page = service.segment_customers(uow.c, actor=manager, segment=segment,
                                             scope=scope, page_size=200)
            assert page["total"] == len(page["items"])
            listed |= {i["id"] for i in page["items"]}
        scored = set(scores(uow, scope))
        assert listed == seen & scored, scope
        summary = service.rfm_summary(uow.c, actor=manager, scope=scope)
        assert summary["customers"] == len(seen & scored)
    assert bought_only not in scores(uow, "store:BJ01")
    assert registered_only in scores(uow, "store:BJ01")
    stages = service.lifecycle_summary(uow.c, actor=manager)
    assert stages["customers"] == len(seen)
    flows = service.lifecycle_flows(uow.c, actor=manager, date_from=AS_OF.date(),
                                    date_to=AS_OF.date())["flows"]
    assert sum(f["customers"] for f in flows) == len(seen)
    nobody = Actor(type="user", id=4, name="none", role="manager", store_ids=frozenset())
    assert service.rfm_summary(uow.c, actor=nobody)["customers"] == 0
    assert service.lifecycle_summary(uow.c, actor=nobody)["customers"] == 0
