"""Bad input for every analytics module, on both databases: a customer with one purchase, a
refund larger than the order, orders dated in the future, an empty store, a calibration date
before the first order. Each gives a sensible result or a clear message (exit 2 on the
command line, 4xx over HTTP), never a crash, and never a NaN or an infinity in what a user
sees."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal

import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient
from sqlalchemy import select

from patron.analytics import churn_service, clv_service, crosssell_service, jobs, rfm_read, service
from patron.analytics.clv_tables import customer_predictions
from patron.analytics.tables import lifecycle_stages
from patron.app import create_app
from patron.db import UnitOfWork
from patron.errors import ValidationFailed
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.security import service as security
from patron.security.model import SYSTEM
from tests.factories import make_org, order
from tests.integration.test_clv_cli import patron
from tests.integration.test_clv_service import random_history

# rfm_scores with the scores and segment computed from each scope's cut points
SCORED = rfm_read.scored()

CST = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 6, 30, 12, 0, tzinfo=CST)
TODAY = NOW.date()


def strict_json(value) -> str:
    """What the API would send, refusing NaN and infinities as the JSON standard does."""
    return json.dumps(jsonable_encoder(value, custom_encoder={Decimal: str}), allow_nan=False)


def no_nan_anywhere(value) -> None:
    strict_json(value)
    if isinstance(value, dict):
        for v in value.values():
            no_nan_anywhere(v)
    elif isinstance(value, list | tuple):
        for v in value:
            no_nan_anywhere(v)
    elif isinstance(value, float):
        assert math.isfinite(value)


def refused(fn, reason: str, field: str | None = None) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        fn()
    err = info.value
    reasons = [err.message, *(f.reason for f in err.fields)]
    assert reason in reasons, reasons
    if field is not None:
        assert field in [f.field for f in err.fields]
    return err


def record(uow, bodies, now=NOW):
    return record_orders(uow=uow, orders_in=bodies, source="api", actor=SYSTEM, now=now,
                         audit_each=False)


@pytest.fixture
def shop(uow):
    """150 customers with histories (January to May 2026) and one who bought once."""
    make_org(uow)
    record(uow, random_history(5, 150))
    single = record(uow, [order("ONCE", at=NOW - dt.timedelta(days=10),
                                identifiers={"phone": "13700000001"})])
    assert single[0].status == "created"
    return {"single": single[0].customer_id}


def test_a_customer_with_one_purchase_is_scored_staged_predicted_and_recommended(uow, shop):
    one = shop["single"]
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=NOW, scope="all")
    service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=NOW)
    clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=TODAY)
    churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM, as_of=TODAY)
    crosssell_service.refresh_rules(uow=uow, actor=SYSTEM, level="sku")
    crosssell_service.refresh_recommendations(uow=uow, actor=SYSTEM, as_of=TODAY)

    rfm = uow.c.execute(select(SCORED).where(SCORED.c.customer_id == one,
                                                 SCORED.c.scope == "overall")).one()
    assert (rfm.frequency, rfm.f_score) == (1, 1)
    assert service.recency_days(rfm.last_order_at, NOW) == 10
    assert rfm.segment in ("new", "promising", "potential_loyalists", "about_to_sleep")
    stage = uow.c.execute(select(lifecycle_stages.c.stage).where(
        lifecycle_stages.c.customer_id == one)).scalar_one()
    assert stage == "new"  # one purchase day, 10 days ago (within 30)
    pred = uow.c.execute(select(customer_predictions).where(
        customer_predictions.c.customer_id == one)).mappings().one()
    assert pred["probability_alive"] == 1.0  # BG/NBD: no repeat purchase, no drop-out yet
    assert 0 < pred["expected_purchases_30d"] < pred["expected_purchases_90d"] < 5
    assert pred["expected_average_spend"] > 0  # the population's mean spend
    views = [
        service.customer_analytics(uow.c, actor=SYSTEM, customer_id=one),
        churn_service.customer_churn(uow.c, actor=SYSTEM, customer_id=one),
        crosssell_service.recommendations_for(uow.c, actor=SYSTEM, customer_id=one),
        service.rfm_summary(uow.c, actor=SYSTEM), service.lifecycle_summary(uow.c, actor=SYSTEM),
    ]
    for view in views:
        no_nan_anywhere(view)
    churn = views[1]["churn"]
    assert 0 < churn["probability"] < 1 and churn["probability_alive"] == 1.0
    assert churn["usual_interval_days"] > 0  # the population's, not a division by zero
    # the only products sold (the other histories are totals without lines), bought once: not
    # regular, so still worth proposing
    assert {r["sku"] for r in views[2]["recommendations"]} == {"LATTE", "CROISSANT"}


def test_a_store_where_nobody_bought_twice_gets_a_clear_message_from_the_models(uow):
    make_org(uow)
    record(uow, [order(f"S{i}", at=NOW - dt.timedelta(days=i * 3),
                       identifiers={"phone": f"1370000{i:04d}"}) for i in range(1, 30)])
    err = refused(lambda: clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=TODAY),
                  "clv_no_repeat_customers", "calibration_end")
    assert err.params == {"customers": 29}
    refused(lambda: clv_service.evaluate_clv(uow=uow, actor=SYSTEM,
                                             calibration_end=TODAY - dt.timedelta(days=20)),
            "clv_no_repeat_customers")
    # RFM and lifecycle still score everyone: all one-time buyers tie at F = 1
    out = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=NOW)
    assert out["scopes"] == {"overall": 29}
    assert {r.f_score for r in uow.c.execute(select(SCORED.c.f_score))} == {1}
    life = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=NOW)
    assert life["stages"]["new"] == 10  # bought within 30 days; the rest judged by 30 days
    assert life["population_interval_days"] == 30.0


def test_a_refund_larger_than_the_order_is_refused_and_a_full_refund_scores_zero_spend(
        uow, shop):
    out_customer = record(uow, [order("R1", at=NOW - dt.timedelta(days=5),
                                      identifiers={"phone": "13700000099"})])[0].customer_id
    too_much = ReturnIn(order_external_id="R1", channel="pos", store="SH01", external_id="RT1",
                        returned_at=NOW - dt.timedelta(days=4),
                        lines=[{"line_no": 1, "quantity": "1", "amount": "100.00"}])
    err = refused(lambda: record_return(uow=uow, ret=too_much, actor=SYSTEM),
                  "return_exceeds_amount", "lines.0.amount")
    assert err.fields[0].params == {"left": "56.00"}
    uow.rollback()
    full = ReturnIn(order_external_id="R1", channel="pos", store="SH01", external_id="RT2",
                    returned_at=NOW - dt.timedelta(days=4), full=True)
    record_return(uow=uow, ret=full, actor=SYSTEM)
    uow.commit()
    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=NOW, scope="all")
    refunded = uow.c.execute(select(SCORED).where(
        SCORED.c.scope == "overall", SCORED.c.customer_id == out_customer)).one()
    assert (refunded.frequency, refunded.monetary, refunded.m_score) == (1, Decimal("0.00"), 1)
    result = clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=TODAY)
    assert result["customers"] == 152
    no_nan_anywhere(result)
    no_nan_anywhere(service.rfm_summary(uow.c, actor=SYSTEM, scope="store:SH01"))


def test_orders_dated_in_the_future_are_refused_beyond_a_day_and_count_as_today(uow, shop):
    out = record(uow, [
        order("F1", at=NOW + dt.timedelta(days=3), identifiers={"phone": "13600000001"}),
        order("F2", at=NOW + dt.timedelta(hours=13), identifiers={"phone": "13600000002"})])
    assert out[0].status == "rejected"
    assert [e["reason"] for e in out[0].errors] == ["in_future"]
    assert out[1].status == "created"  # a till's clock a few hours ahead: kept
    soon = out[1].customer_id

    service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=NOW, scope="all")
    row = uow.c.execute(select(SCORED).where(SCORED.c.customer_id == soon,
                                                 SCORED.c.scope == "overall")).one()
    # bought "after" the as-of moment: today, never negative
    assert service.recency_days(row.last_order_at, NOW) == 0
    assert service.customer_analytics(uow.c, actor=SYSTEM, customer_id=soon)["rfm"][
        "recency_days"] == 0
    assert uow.c.execute(select(SCORED).where(
        SCORED.c.customer_id == soon, SCORED.c.scope == "store:SH01")).first() is None
    life = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=NOW)
    assert uow.c.execute(select(lifecycle_stages.c.stage).where(
        lifecycle_stages.c.customer_id == soon)).scalar_one() == "new"
    no_nan_anywhere(life)
    # The models as of today leave tomorrow's purchase out (it is the next local day).
    pred = clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=TODAY)
    assert pred["customers"] == 151
    assert uow.c.execute(select(customer_predictions).where(
        customer_predictions.c.customer_id == soon)).first() is None
    churn = churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM, as_of=TODAY)
    assert churn["customers"] == 151
    no_nan_anywhere(churn)


def test_an_empty_store_gives_zeros_and_the_models_say_why(uow):
    make_org(uow)
    assert service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=NOW, scope="all")["scopes"] == {
        "overall": 0, "store:BJ01": 0, "store:SH01": 0, "region:EAST": 0, "region:NORTH": 0,
        "brand:B1": 0}
    life = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=NOW)
    assert life["changed"] == 0 and set(life["stages"].values()) == {0}
    summary = service.rfm_summary(uow.c, actor=SYSTEM, scope="store:SH01")
    assert summary["customers"] == 0
    assert {s["share"] for s in summary["segments"]} == {0.0}
    assert {s["avg_monetary"] for s in summary["segments"]} == {None}
    stages = service.lifecycle_summary(uow.c, actor=SYSTEM)
    assert stages["customers"] == 0 and {s["share"] for s in stages["stages"]} == {0.0}
    flows = service.lifecycle_flows(uow.c, actor=SYSTEM, date_from=TODAY, date_to=TODAY)
    assert flows["flows"] == []
    refused(lambda: clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=TODAY),
            "clv_no_customers")
    refused(lambda: clv_service.evaluate_clv(uow=uow, actor=SYSTEM, calibration_end=TODAY),
            "clv_no_customers")
    refused(lambda: churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM, as_of=TODAY),
            "churn_no_customers")
    rules = crosssell_service.refresh_rules(uow=uow, actor=SYSTEM, store="SH01")
    assert (rules["baskets"], rules["rules"], rules["top"]) == (0, 0, [])
    recs = crosssell_service.refresh_recommendations(uow=uow, actor=SYSTEM, as_of=TODAY)
    assert recs["customers"] == 0
    for value in (summary, stages, flows, rules, recs, life,
                  crosssell_service.list_rules(uow.c, actor=SYSTEM, store="SH01")):
        no_nan_anywhere(value)


def test_an_empty_store_nightly_job_finishes_with_the_models_skipped(engine, uow):
    make_org(uow)
    with UnitOfWork(engine) as u:
        job, _ = jobs.request_refresh(uow=u, actor=SYSTEM, as_of=NOW)
    out = jobs.run_job(engine, job["id"], SYSTEM)
    assert out["status"] == "done"
    steps = out["result"]["steps"]
    assert steps["clv"]["reason"] == "clv_no_customers"
    assert steps["churn"]["reason"] == "churn_no_customers"
    no_nan_anywhere(out)


def test_a_calibration_date_before_the_first_order_is_refused_with_the_first_date(uow, shop):
    early = dt.date(2025, 6, 1)  # the history starts in January 2026
    err = refused(lambda: clv_service.evaluate_clv(uow=uow, actor=SYSTEM,
                                                   calibration_end=early),
                  "clv_calibration_before_first_purchase", "calibration_end")
    assert err.params == {"end": "2025-06-01", "first": "2026-01-01"}
    refused(lambda: clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=early),
            "clv_calibration_before_first_purchase", "as_of")
    err = refused(lambda: churn_service.evaluate_churn(uow=uow, actor=SYSTEM,
                                                       cutoff=dt.date(2026, 3, 1)),
                  "churn_cutoff_too_early", "cutoff")
    assert err.params["earliest"] == "2026-04-01"
    refused(lambda: churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM, as_of=early),
            "churn_cutoff_too_early", "as_of")
    refused(lambda: crosssell_service.evaluate_recommendations(
        uow=uow, actor=SYSTEM, cutoff=dt.date(2026, 1, 1)),
        "crosssell_cutoff_before_first_purchase", "cutoff")
    moment = dt.datetime(2025, 12, 31, 23, 0, tzinfo=CST)
    err = refused(lambda: service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=moment),
                  "analytics_as_of_before_first_purchase", "as_of")
    assert err.fields[0].params == {"first": "2026-01-01"}
    refused(lambda: service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=moment),
            "analytics_as_of_before_first_purchase", "as_of")
    uow.rollback()  # (SQLite: one writer; the refusals above left our transaction open)
    with UnitOfWork(uow.engine) as other:
        refused(lambda: jobs.request_refresh(uow=other, actor=SYSTEM, as_of=moment),
                "analytics_as_of_before_first_purchase", "as_of")
    assert uow.c.execute(select(SCORED)).first() is None  # nothing half-written


def test_the_commands_exit_2_with_a_message_for_dates_before_the_first_order(db_url, uow, shop):
    for args, words in (
            (["clv", "--calibration-end", "2025-06-01"], "before the first purchase (2026-01-01)"),
            (["predict", "--as-of", "2025-06-01"], "before the first purchase"),
            (["churn-evaluate", "--cutoff", "2026-02-01"], "on or after 2026-04-01"),
            (["recommend-evaluate", "--cutoff", "2025-12-01"], "first purchase was on"),
            (["rfm", "--as-of", "2025-12-01"], "first purchase was on 2026-01-01"),
            (["lifecycle", "--as-of", "2025-12-01"], "first purchase was on 2026-01-01"),
            (["refresh", "--as-of", "2025-12-01"], "2026-01-01")):
        out = patron(db_url, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert words in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_the_api_answers_4xx_for_an_early_date_and_never_sends_nan(db_url, uow, shop):
    security.create_user(uow=uow, actor=SYSTEM, username="boss", password="correct-horse-9",
                         role="owner")
    with TestClient(create_app()) as client:
        r = client.post("/api/v1/auth/login", json={"username": "boss",
                                                    "password": "correct-horse-9"})
        assert r.status_code == 200
        en = {"Accept-Language": "en"}
        early = {"as_of": "2025-12-31T23:00:00+08:00"}
        for path in ("/api/v1/analytics/refresh", "/api/v1/analytics/refresh-jobs"):
            r = client.post(path, json=early, headers=en)
            assert r.status_code == 422, (path, r.text)
            field = r.json()["error"]["fields"][0]
            assert field["field"] == "as_of"
            assert field["message"] == "The first purchase was on 2026-01-01: choose a moment " \
                                       "after it."
        assert client.get("/api/v1/analytics/refresh-jobs").json() == {"items": []}
        r = client.post("/api/v1/analytics/refresh", json={"as_of": NOW.isoformat()})
        assert r.status_code == 200
        clv_service.refresh_predictions(uow=uow, actor=SYSTEM, as_of=TODAY)
        churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM, as_of=TODAY)
        single = shop["single"]
        for path in ("/api/v1/analytics/rfm/summary",
                     "/api/v1/analytics/rfm/summary?scope=store:BJ01",
                     "/api/v1/analytics/lifecycle/summary",
                     f"/api/v1/customers/{single}/analytics",
                     f"/api/v1/customers/{single}/predictions",
                     f"/api/v1/customers/{single}/churn",
                     f"/api/v1/customers/{single}/recommendations",
                     "/api/v1/analytics/rules"):
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert "NaN" not in r.text and "Infinity" not in r.text, path
            json.loads(r.text, parse_constant=pytest.fail)
