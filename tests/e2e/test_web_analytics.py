"""The analytics pages over HTTP (SQLite and PostgreSQL): figures against the readers', both
languages, drill-down and export, a store manager's scope, roles, the thresholds form, the
refresh button's form path, and what each page says before anything was computed."""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
import re
import time
from decimal import Decimal

import pytest
from sqlalchemy import insert, select

from patron.analytics import crosssell_service, jobs, rfm_read, service
from patron.analytics.churn_tables import churn_model_runs, customer_churn_scores
from patron.analytics.clv_tables import clv_model_runs, customer_predictions
from patron.analytics.tables import rfm_scores
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.e2e.test_web_pages import errors_in, post_form
from tests.factories import order

AS_OF = dt.datetime(2026, 3, 31, 12, 0, tzinfo=dt.UTC)
SH = dt.timezone(dt.timedelta(hours=8))
PAGES = ["/analytics", "/analytics/lifecycle", "/analytics/churn", "/analytics/crosssell",
         "/analytics/clv", "/analytics/segments/champions"]


def _at(day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2026, 3, 1, hour, 0, tzinfo=SH) + dt.timedelta(days=day - 1)


def _lines(amount: int, *categories: str) -> list[dict[str, str]]:
    cats = categories or ("coffee",)
    return [{"sku": f"{c.upper()}-1", "category": c, "quantity": "1",
             "unit_price": str(amount if i == 0 else 10)} for i, c in enumerate(cats)]


@pytest.fixture
def shop(db_url, org, users):
    """48 customers: 30 one-time buyers on the same day and amount at SH01 (one segment, two
    pages), 10 regulars at SH01 buying coffee and bakery together, 8 at BJ01 only."""
    orders_in = []
    for i in range(30):
        orders_in.append(order(f"ONE-{i}", at=_at(3), identifiers={"phone": f"1380000{i:04d}"},
                               customer={"name": f"单次{i}"}, lines=_lines(20)))
    for i in range(10):
        for k in range(1 + i % 4):
            orders_in.append(order(f"REG-{i}-{k}", at=_at(29 - 7 * k - i % 3),
                                   identifiers={"phone": f"1390000{i:04d}"},
                                   customer={"name": f"常客{i}"},
                                   lines=_lines(30 + 15 * i, "coffee", "bakery")))
    for i in range(8):
        orders_in.append(order(f"BJ-{i}", store="BJ01", at=_at(10 + i),
                               identifiers={"phone": f"1370000{i:04d}"},
                               lines=_lines(50 + i, "tea")))
    with UnitOfWork(get_engine(db_url)) as uow:
        outcomes = record_orders(uow=uow, orders_in=orders_in, source="api", actor=SYSTEM)
    assert {o.status for o in outcomes} == {"created"}
    return db_url


@pytest.fixture
def refreshed(shop):
    with UnitOfWork(get_engine(shop)) as uow:
        service.refresh_all(uow=uow, actor=SYSTEM, as_of=AS_OF)
    with UnitOfWork(get_engine(shop)) as uow:
        crosssell_service.refresh_rules(uow=uow, actor=SYSTEM, level="category",
                                        min_support=0.05, min_confidence=0.1)
    with UnitOfWork(get_engine(shop)) as uow:
        crosssell_service.refresh_rules(uow=uow, actor=SYSTEM, level="category", store="SH01",
                                        min_support=0.05, min_confidence=0.1)
    return shop


def reader(db_url: str, fn, **kw):
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return fn(uow.c, **kw)


def chart_spec(page: str, chart_id: str) -> dict:
    found = re.search(rf'<div class="chart" id="{chart_id}"[^>]*data-chart="([^"]*)"', page)
    assert found, f"no chart {chart_id}"
    return json.loads(html.unescape(found.group(1)))


def table_rows(page: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert body, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows]


def as_user(name: str, role: str, store_ids=None, lang: str = "zh") -> Actor:
    return Actor(type="user", id=1, name=name, role=role, language=lang,
                 store_ids=None if store_ids is None else frozenset(store_ids))


# --- before any refresh -------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_page_says_nothing_is_computed_yet_before_a_refresh(client, shop, lang):
    login(client, "owner")
    expected = {
        "/analytics": ("rfm-empty", {"zh": "尚未计算 RFM 分群", "en": "have not been computed"}),
        "/analytics/lifecycle": ("lifecycle-empty", {"zh": "尚未计算生命周期阶段",
                                                     "en": "have not been computed"}),
        "/analytics/churn": ("churn-empty", {"zh": "流失模型尚未评估",
                                             "en": "has not been evaluated"}),
        "/analytics/crosssell": ("rules-empty", {"zh": "尚无关联规则", "en": "No association"}),
        "/analytics/clv": ("clv-empty", {"zh": "尚无预测结果", "en": "No predictions yet"}),
    }
    for path, (marker, text) in expected.items():
        r = client.get(f"{path}?lang={lang}")
        assert r.status_code == 200, (path, r.text[:300])
        assert f'id="{marker}"' in r.text and text[lang] in r.text, path
        assert "NaN" not in r.text and "None" not in r.text, path
        assert 'class="chart"' not in r.text, path
        never = {"zh": "尚未刷新", "en": "Not refreshed yet"}[lang]
        assert never in r.text, path


# --- RFM ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["zh", "en"])
def test_rfm_page_shows_the_readers_figures_with_a_chart(client, refreshed, lang):
    login(client, "owner")
    page = client.get(f"/analytics?lang={lang}").text
    summary = reader(refreshed, service.rfm_summary, actor=as_user("o", "owner", lang=lang))
    assert summary["customers"] == 48
    rows = table_rows(page, "segments")
    assert len(rows) == 11
    for row, seg in zip(rows, summary["segments"], strict=True):
        assert row[0] == seg["label"]
        assert int(row[1]) == seg["customers"]
        assert row[2] == f"{Decimal(str(seg['share'])) * 100:.1f}%"
        assert row[5] == ("–" if seg["avg_monetary"] is None else f"¥{seg['avg_monetary']:,.2f}")
    # Hand check: the 30 one-time buyers share one segment, 30/48 = 62.5 %.
    biggest = max(summary["segments"], key=lambda s: s["customers"])
    assert biggest["customers"] == 30 and biggest["share"] == 0.625
    spec = chart_spec(page, "segments-chart")
    bars, spend = spec["data"]
    assert bars["type"] == "bar" and spend["yaxis"] == "y2"
    assert bars["y"] == [s["customers"] for s in summary["segments"]]
    assert bars["x"] == [html.escape(s["label"], quote=False) for s in summary["segments"]]
    assert spec["layout"]["yaxis2"]["tickprefix"] == "¥"
    share = chart_spec(page, "share-chart")["data"][0]
    assert share["values"] == [n for n in bars["y"] if n] and 0 not in share["values"]
    heading = {"zh": "各分群顾客数与平均消费", "en": "Customers and average spend"}[lang]
    assert heading in page and "NaN" not in page
    # The scripts come from Patron itself.
    assert '<script src="/static/vendor/plotly.min.js?v=' in page
    assert "cdn" not in page.lower()


def test_scope_switch_reads_each_scope(client, refreshed):
    login(client, "analyst")
    page = client.get("/analytics?scope=store:BJ01&lang=en").text
    rows = table_rows(page, "segments")
    assert sum(int(r[1]) for r in rows) == 8
    summary = reader(refreshed, service.rfm_summary, actor=as_user("a", "analyst", lang="en"),
                     scope="store:BJ01")
    assert [int(r[1]) for r in rows] == [s["customers"] for s in summary["segments"]]
    region = table_rows(client.get("/analytics?scope=region:EAST").text, "segments")
    assert sum(int(r[1]) for r in region) == 40
    r = client.get("/analytics?scope=region:NOWHERE&lang=en")
    assert r.status_code == 422 and errors_in(r.text) == {"scope": "There is no region:NOWHERE."}
    options = re.findall(r'<option value="([^"]+)"', client.get("/analytics").text)
    assert options[:1] == ["overall"]
    assert {"store:SH01", "store:BJ01", "region:EAST", "region:NORTH", "brand:B1"} <= set(
        options)


def test_segment_drill_down_lists_the_customers_behind_the_number_masked(client, refreshed):
    login(client, "owner")
    summary = reader(refreshed, service.rfm_summary, actor=as_user("o", "owner"))
    biggest = max(summary["segments"], key=lambda s: s["customers"])["segment"]
    overview = client.get("/analytics").text
    assert f'href="/analytics/segments/{biggest}?scope=overall"' in overview
    first = client.get(f"/analytics/segments/{biggest}?scope=overall").text
    rows = table_rows(first, "segment-customers")
    assert len(rows) == 25
    expected = reader(refreshed, service.segment_customers, actor=as_user("o", "owner"),
                      segment=biggest, page=1, page_size=25)
    assert [int(r[0]) for r in rows] == [c["id"] for c in expected["items"]]
    assert all(re.fullmatch(r"138\*{4}\d{4}", r[3]) for r in rows)
    assert "13800000001" not in first and "单次1" not in first
    assert 'rel="next"' in first
    second = client.get(f"/analytics/segments/{biggest}?scope=overall&page=2").text
    assert len(table_rows(second, "segment-customers")) == 5
    assert client.get("/analytics/segments/bogus").status_code == 404


def test_segment_export_goes_through_the_audited_customer_export(client, refreshed, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    from patron.config import get_settings

    get_settings.cache_clear()
    login(client, "analyst")
    summary = reader(refreshed, service.rfm_summary, actor=as_user("a", "analyst"))
    biggest = max(summary["segments"], key=lambda s: s["customers"])["segment"]
    page = f"/analytics/segments/{biggest}?scope=overall"
    r = post_form(client, f"/analytics/segments/{biggest}/export",
                  {"scope": "overall", "format": "csv"}, page=page)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(r.content.decode("utf-8-sig").splitlines()[1:]))  # watermark
    with UnitOfWork(get_engine(refreshed), readonly=True) as uow:
        scored = rfm_read.scored()  # the segment computed from the scope's cut points
        ids = set(uow.c.execute(select(scored.c.customer_id).where(
            scored.c.scope == "overall", scored.c.segment == biggest)).scalars())
        entry = uow.c.execute(select(audit_log).where(audit_log.c.action == "customers.exported")
                              ).mappings().one()
    assert {int(row["id"]) for row in lines} == ids and len(lines) == 30
    assert all("*" in row["phone"] for row in lines)
    assert entry["details"]["filters"] == {"rfm_scope": "overall", "rfm_segment": biggest}
    assert entry["details"]["rows"] == 30 and entry["actor_name"] == "analyst"
    # Without the form's token nothing is exported.
    r = client.post(f"/analytics/segments/{biggest}/export", data={"format": "csv"})
    assert r.status_code == 403
    get_settings.cache_clear()


# --- who may see what ---------------------------------------------------------------------------

def test_store_manager_sees_only_their_stores(client, refreshed, org):
    login(client, "manager")
    page = client.get("/analytics").text
    options = re.findall(r'<option value="([^"]+)"', page)
    assert options == ["overall", "store:SH01"]
    assert re.search(r'<option value="store:SH01"\s+selected', page)  # their store by default
    summary = reader(refreshed, service.rfm_summary, scope="store:SH01",
                     actor=as_user("m", "manager", store_ids=[org["SH01"]]))
    rows = table_rows(page, "segments")
    assert [int(r[1]) for r in rows] == [s["customers"] for s in summary["segments"]]
    assert sum(int(r[1]) for r in rows) == 40
    for path in ["/analytics?scope=store:BJ01", "/analytics?scope=region:EAST",
                 "/analytics?scope=brand:B1", "/analytics/segments/lost?scope=store:BJ01",
                 "/analytics/churn", "/analytics/clv", "/analytics/crosssell?store=BJ01"]:
        r = client.get(path)
        assert r.status_code == 403, path
        assert "<html" in r.text, path
    tabs = re.findall(r'id="tab-(\w+)"', page)
    assert tabs == ["rfm", "lifecycle", "crosssell"]
    assert 'id="refresh-button"' not in page  # refreshing is for owners and analysts
    rules = client.get("/analytics/crosssell").text
    assert re.search(r'<option value="SH01"\s+selected', rules)
    expected = reader(refreshed, crosssell_service.list_rules, actor=as_user(
        "m", "manager", store_ids=[org["SH01"]]), store="SH01")
    assert len(table_rows(rules, "rule-table")) == len(expected["rules"]) > 0
    r = post_form(client, "/analytics/refresh", {}, page="/analytics")
    assert r.status_code == 403
    lifecycle = client.get("/analytics/lifecycle").text
    counts = table_rows(lifecycle, "stage-table")
    assert sum(int(r[1]) for r in counts) == 40  # the BJ01 customers are not theirs
    assert 'id="thresholds-form"' not in lifecycle


@pytest.mark.parametrize("path", PAGES)
def test_cashier_is_refused_and_anonymous_is_sent_to_sign_in(client, users, path):
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/analytics")
    login(client, "cashier")
    r = client.get(path)
    assert r.status_code == 403 and "<html" in r.text


def test_navigation_offers_analytics_to_the_roles_that_may_open_it(client, users):
    for role, shown in (("owner", True), ("analyst", True), ("manager", True),
                        ("cashier", False)):
        client.cookies.clear()
        login(client, role)
        home = client.get("/admin/audit").text  # a page every role can load (403 or 200)
        assert ('href="/analytics"' in home) is shown, role


# --- lifecycle ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["zh", "en"])
def test_lifecycle_page_counts_stages_and_charts_the_flows(client, refreshed, lang):
    login(client, "analyst")
    day = AS_OF.astimezone(SH).date().isoformat()
    page = client.get(f"/analytics/lifecycle?from={day}&to={day}&lang={lang}").text
    actor = as_user("a", "analyst", lang=lang)
    summary = reader(refreshed, service.lifecycle_summary, actor=actor)
    rows = table_rows(page, "stage-table")
    assert [(r[0], int(r[1])) for r in rows] == [(s["label"], s["customers"])
                                                 for s in summary["stages"]]
    assert sum(int(r[1]) for r in rows) == 48
    flows = reader(refreshed, service.lifecycle_flows, actor=actor,
                   date_from=AS_OF.date(), date_to=AS_OF.date())["flows"]
    # First refresh: every customer enters their first stage, from nothing.
    assert sum(f["customers"] for f in flows) == 48 and {f["from_stage"] for f in flows} == {
        None}
    table = table_rows(page, "flow-table")
    first = {"zh": "（首次评定）", "en": "(first stage)"}[lang]
    assert [(r[0], r[1], int(r[2])) for r in table] == [(first, f["to_label"], f["customers"])
                                                        for f in flows]
    sankey = chart_spec(page, "flows-chart")["data"][0]
    assert sankey["type"] == "sankey"
    assert sorted(sankey["link"]["value"]) == sorted(f["customers"] for f in flows)
    assert sankey["node"]["label"][0] == first
    stages = chart_spec(page, "stages-chart")["data"][0]
    assert stages["y"] == [s["customers"] for s in summary["stages"]]
    empty = client.get(f"/analytics/lifecycle?from=2020-01-01&to=2020-01-31&lang={lang}").text
    assert 'id="flows-empty"' in empty and 'id="flows-chart"' not in empty


def test_lifecycle_dates_that_are_wrong_are_field_errors(client, refreshed):
    login(client, "owner")
    r = client.get("/analytics/lifecycle?from=yesterday&lang=en")
    assert r.status_code == 422 and errors_in(r.text) == {"from": "Not a valid date."}
    r = client.get("/analytics/lifecycle?from=2026-03-10&to=2026-03-01&lang=en")
    assert r.status_code == 422 and list(errors_in(r.text)) == ["to"]


def test_thresholds_form_saves_for_the_owner_and_explains_each_mistake(client, refreshed,
                                                                       db_url):
    login(client, "owner")
    page = "/analytics/lifecycle?lang=en"
    assert 'id="thresholds-form"' in client.get(page).text
    bad = {"new_days": "ten", "k_dormant": "3", "k_churn_risk": "2", "k_churned": "-1",
           "dormant_days": "60", "churn_risk_days": "", "churned_days": "",
           "rfm_recency_days": "30, 20, 60, 90", "rfm_frequency": "1, 2, 3",
           "rfm_monetary": "100, 200, 300, 400"}
    r = post_form(client, "/analytics/lifecycle/thresholds", bad, page=page)
    assert r.status_code == 422
    assert errors_in(r.text) == {
        "new_days": "A whole number of days, at least 1 (new: at least 0).",
        "k_churn_risk": "Must be larger than the field before it.",
        "k_churned": "A number greater than 0.",
        "churn_risk_days": "Set all three fixed days or none.",
        "churned_days": "Set all three fixed days or none.",
        "rfm_recency_days": "Four ascending, non-negative numbers separated by commas.",
        "rfm_frequency": "Four ascending, non-negative numbers separated by commas.",
    }
    assert 'value="ten"' in r.text  # what was typed stays in the form
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert service.get_thresholds(uow.c, actor=SYSTEM)["lifecycle"]["k_dormant"] == 2.0
    r = post_form(client, "/analytics/lifecycle/thresholds?lang=zh", {
        "dormant_days": "30", "churn_risk_days": "20", "churned_days": "90"}, page=page)
    assert r.status_code == 422 and errors_in(r.text) == {"churn_risk_days": "必须大于前一项。"}

    good = {"new_days": "14", "k_dormant": "1.5", "k_churn_risk": "2.5", "k_churned": "3.5",
            "rfm_monetary": "50, 100, 200, 400"}
    r = post_form(client, "/analytics/lifecycle/thresholds", good, page=page)
    assert r.status_code == 303 and r.headers["location"] == "/analytics/lifecycle?saved=1"
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        saved = service.get_thresholds(uow.c, actor=SYSTEM)
    assert saved["lifecycle"]["new_days"] == 14 and saved["lifecycle"]["k_churned"] == 3.5
    assert saved["rfm"]["monetary"] == (50.0, 100.0, 200.0, 400.0)
    after = client.get("/analytics/lifecycle?saved=1&lang=en").text
    assert 'id="thresholds-saved"' in after and 'value="50, 100, 200, 400"' in after

    client.cookies.clear()
    login(client, "analyst")
    assert 'id="thresholds-form"' not in client.get(page).text
    r = post_form(client, "/analytics/lifecycle/thresholds", good, page=page)
    assert r.status_code == 403


# --- churn, cross-sell, lifetime value ------------------------------------------------------------

CALIBRATION = [{"bin": b, "customers": 10, "min_predicted": (b - 1) / 10,
                "max_predicted": b / 10, "mean_predicted": (b - 0.5) / 10,
                "observed_rate": min(1.0, (b - 0.5) / 10 + 0.02)} for b in range(1, 11)]
NAIVE = [{**c, "mean_predicted": 0.5, "observed_rate": c["observed_rate"]} for c in CALIBRATION]


def _churn_run(db_url: str) -> None:
    with UnitOfWork(get_engine(db_url)) as uow:
        run = uow.c.execute(insert(churn_model_runs).values(
            fitted_at=AS_OF, purpose="evaluate", cutoff=dt.date(2026, 1, 1), horizon_days=60,
            train_customers=40, train_churn_rate=0.35, test_customers=100, model={},
            metrics={"model": {"auc": 0.8123, "brier": 0.1432, "calibration": CALIBRATION},
                     "naive": {"auc": 0.7011, "brier": 0.2011, "calibration": NAIVE}},
            actor="owner").returning(churn_model_runs.c.id)).scalar_one()
        ids = [r for r in uow.c.execute(select(rfm_scores.c.customer_id).where(
            rfm_scores.c.scope == "overall").order_by(rfm_scores.c.customer_id)).scalars()]
        for i, cid in enumerate(ids[:10]):
            uow.c.execute(insert(customer_churn_scores).values(
                customer_id=cid, run_id=run, scored_at=AS_OF, as_of=dt.date(2026, 3, 31),
                horizon_days=90, probability=[0.05, 0.15, 0.95, 1.0, 0.55][i % 5],
                days_since_last_purchase=i, usual_interval_days=7.0))
        uow.commit()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_churn_page_shows_the_latest_evaluation_against_the_naive_rule(client, refreshed, lang):
    _churn_run(refreshed)
    login(client, "owner")
    page = client.get(f"/analytics/churn?lang={lang}").text
    assert re.search(r'id="auc-model">0\.812<', page) and re.search(r'id="auc-naive">0\.701<',
                                                                      page)
    assert re.search(r'id="brier-model">0\.1432<', page)
    spec = chart_spec(page, "calibration-chart")
    model, naive, diagonal = spec["data"]
    assert model["x"] == [c["mean_predicted"] for c in CALIBRATION]
    assert model["y"] == [c["observed_rate"] for c in CALIBRATION]
    assert naive["line"]["dash"] == "dash" and diagonal["line"]["dash"] == "dot"
    assert spec["layout"]["xaxis"]["tickformat"] == ".0%"
    assert len(table_rows(page, "calibration")) == 10
    bands = chart_spec(page, "churn-scores-chart")["data"][0]
    # 0.05 x2, 0.15 x2, 0.55 x2, 0.95 x2, 1.0 x2 -> deciles 0, 1, 5, 9 (1.0 in the last)
    assert bands["y"] == [2, 2, 0, 0, 0, 2, 0, 0, 0, 4]
    assert "NaN" not in page


def test_crosssell_page_lists_the_stored_rules(client, refreshed):
    login(client, "analyst")
    page = client.get("/analytics/crosssell?lang=en").text
    expected = reader(refreshed, crosssell_service.list_rules,
                      actor=as_user("a", "analyst", lang="en"), level="category", limit=50)
    rows = table_rows(page, "rule-table")
    assert [(r[0], r[1]) for r in rows] == [(x["antecedent"], x["consequent"])
                                           for x in expected["rules"]]
    # coffee and bakery always go together: confidence 100 %, lift 48 baskets... hand check
    both = next(x for x in expected["rules"] if x["antecedent"] == "bakery")
    assert both["consequent"] == "coffee" and both["confidence"] == 1.0
    row = next(r for r in rows if r[0] == "bakery")
    assert row[3] == "100.0%" and row[4] == f"{both['lift']:.2f}"
    lift = chart_spec(page, "lift-chart")["data"][0]
    assert lift["y"] == [x["lift"] for x in expected["rules"][:15]]
    sku = client.get("/analytics/crosssell?level=sku&lang=en").text
    assert 'id="rules-empty"' in sku  # SKU rules were not computed
    r = client.get("/analytics/crosssell?level=brand&lang=en")
    assert r.status_code == 422 and list(errors_in(r.text)) == ["level"]


def test_clv_page_shows_runs_holdout_accuracy_and_value_bands(client, refreshed):
    with UnitOfWork(get_engine(refreshed)) as uow:
        run = uow.c.execute(insert(clv_model_runs).values(
            fitted_at=AS_OF, calibration_end=dt.date(2026, 3, 15),
            holdout_end=dt.date(2026, 3, 31), period="week", customers=48,
            bgnbd={"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
            gamma_gamma={"p": 6.25, "q": 3.74, "gamma": 15.44},
            holdout={"customers": 48, "actual_total": 12.0, "predicted_total": 10.5,
                     "mae": 0.25, "rmse": 0.5, "correlation": 0.61},
            purpose="evaluate", actor="owner").returning(clv_model_runs.c.id)).scalar_one()
        ids = list(uow.c.execute(select(rfm_scores.c.customer_id).where(
            rfm_scores.c.scope == "overall").order_by(rfm_scores.c.customer_id)).scalars())
        values = ["10.00", "49.99", "50.00", "150.00", "2500.00", None]
        for cid, value in zip(ids, values, strict=False):
            uow.c.execute(insert(customer_predictions).values(
                customer_id=cid, run_id=run, fitted_at=AS_OF,
                calibration_end=dt.date(2026, 3, 31), probability_alive=0.5,
                clv_12m=None if value is None else Decimal(value)))
        uow.commit()
    login(client, "owner")
    page = client.get("/analytics/clv?lang=en").text
    assert re.search(r'id="clv-customers">6<', page)
    assert re.search(r'id="clv-total">¥2,759\.99<', page)
    assert re.search(r'id="clv-mean">¥552\.00<', page)  # 2759.99 / 5 valued customers
    assert re.search(r'id="holdout-predicted">10\.5<', page) and re.search(
        r'id="holdout-actual">12\.0<', page)
    bands = chart_spec(page, "clv-bands-chart")
    assert bands["data"][0]["y"] == [2, 1, 1, 0, 0, 0, 1]
    assert bands["data"][1]["y"] == [59.99, 50.0, 150.0, 0.0, 0.0, 0.0, 2500.0]
    assert bands["data"][0]["x"][-1] == "¥2,000+"
    rows = table_rows(page, "run-table")
    assert rows[0][5:12] == ["0.243", "4.414", "0.793", "2.426", "6.250", "3.740", "15.440"]


# --- refresh --------------------------------------------------------------------------------------

def _wait_for_job(db_url: str, job_id: int) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = jobs.get_job(get_engine(db_url), actor=SYSTEM, job_id=job_id)
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError("the refresh job did not finish")


def test_refresh_button_without_javascript_starts_a_job_and_the_page_follows_it(client, shop):
    login(client, "analyst")
    page = client.get("/analytics?lang=en").text
    assert 'id="refresh-button"' in page and "Not refreshed yet" in page
    r = post_form(client, "/analytics/refresh", {"back": "/analytics?scope=store:SH01"},
                  page="/analytics")
    assert r.status_code == 303
    found = re.fullmatch(r"/analytics\?scope=store:SH01&job=(\d+)", r.headers["location"])
    assert found, r.headers["location"]
    job_id = int(found.group(1))
    following = client.get(r.headers["location"] + "&lang=en").text
    assert f'data-job="{job_id}"' in following
    job = _wait_for_job(shop, job_id)
    assert job["status"] == "done", job
    done = client.get(f"/analytics?job={job_id}&lang=en").text
    assert 'data-status="done"' in done and 'id="refresh-last-time"' in done
    assert 'http-equiv="refresh"' not in done
    assert table_rows(done, "segments")  # the figures are there now
    # Somewhere outside Patron is not a place to go back to.
    r = post_form(client, "/analytics/refresh", {"back": "//evil.example/analytics"},
                  page="/analytics")
    assert r.status_code == 303 and r.headers["location"].startswith("/analytics?job=")
    _wait_for_job(shop, int(r.headers["location"].rsplit("=", 1)[1]))
    r = client.post("/analytics/refresh", data={"csrf_token": "0" * 64})
    assert r.status_code == 403


def test_a_running_job_reloads_the_page_without_javascript(client, shop, db_url):
    with UnitOfWork(get_engine(db_url)) as uow:
        job, created = jobs.request_refresh(uow=uow, actor=SYSTEM, trigger="manual")
    assert created
    login(client, "owner")
    with jobs._running_lock:  # this process "runs" it, so nobody fails it as abandoned
        jobs._running.add(job["id"])
    try:
        page = client.get(f"/analytics?job={job['id']}&lang=en").text
    finally:
        with jobs._running_lock:
            jobs._running.discard(job["id"])
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page
    assert 'data-status="queued"' in page and "disabled" in page
