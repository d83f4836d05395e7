"""The loyalty report pages over HTTP (SQLite and PostgreSQL): liability (points, stored value,
coupons), breakage, settlement (清分) and the simulation run in the background; the figures on
each page are the report services' for the same reader; every chart has its table; roles and
store scope; bad input names the field."""

from __future__ import annotations

import re
import time

import pytest

from patron.checkout import service as checkout
from patron.checkout.schemas import CommitIn
from patron.coupons import service as coupons
from patron.db import UnitOfWork, get_engine
from patron.loyalty import reports, simulation_runs
from patron.loyalty.simulation import SimulationIn, simulate
from patron.security.model import SYSTEM, Actor
from patron.storedvalue import reports as sv_reports
from tests.checkout_factories import LINES
from tests.e2e.conftest import login
from tests.e2e.test_web_pages import csrf, errors_in
from tests.web_loyalty_helpers import make_shop


@pytest.fixture
def shop(db_url, org, users):
    out = make_shop(db_url)
    # Points issued at SH01 and stored value topped up there, spent at BJ01: a settlement.
    with UnitOfWork(get_engine(db_url)) as uow:
        checkout.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate({
            "store": "BJ01", "lines": LINES, "member": {"member_code": out["a"]["member_code"]},
            "idempotency_key": "bj-1", "order_number": "BJ-1", "redeem_points": 500,
            "stored_value_fen": 1000, "payments": [{"method": "cash", "amount_fen": 4890}]}))
    out["org"], out["users"] = org, users
    return out


def owner_actor(shop) -> Actor:
    return Actor(type="user", id=shop["users"]["owner"], name="owner", role="owner")


def manager_actor(shop) -> Actor:
    return Actor(type="user", id=shop["users"]["manager"], name="manager", role="manager",
                 store_ids=frozenset({shop["org"]["SH01"]}))


def read(db_url, fn, **kw):
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return fn(uow.c, **kw)


def text_of(html: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html)
    assert found, element_id
    return found.group(1).strip()


def table_rows(html: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r,
                                                                  re.S)]
            for r in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_liability_page_shows_the_reports_figures_with_charts_and_tables(client, shop, db_url):
    login(client, "owner")
    r = client.get("/loyalty/reports/liability?program=BB&lang=en")
    assert r.status_code == 200, r.text[:500]
    html = r.text
    actor = owner_actor(shop)
    pts = read(db_url, reports.liability, actor=actor, program="BB")["totals"]
    assert text_of(html, "outstanding") == f"{pts['outstanding']:,}" != "0"
    assert text_of(html, "liability-value") == f"¥{pts['liability']:,.2f}"
    assert text_of(html, "available") == f"{pts['available']:,}"
    months = read(db_url, reports.liability, actor=actor, program="BB")["by_expiry_month"]
    assert [row[0] for row in table_rows(html, "expiry-table")] == [m["month"] for m in months]
    assert [row[1] for row in table_rows(html, "expiry-table")] == [f"{m['points']:,}"
                                                                   for m in months]
    sv = read(db_url, sv_reports.liability, actor=actor, program="BB")["total"]
    assert text_of(html, "sv-principal") == f"¥{sv['principal']:,.2f}"
    assert text_of(html, "sv-total") == f"¥{sv['total']:,.2f}" != "¥0.00"
    cl = read(db_url, coupons.liability, actor=actor, program="BB")["total"]
    assert text_of(html, "coupon-count") == str(cl["count"]) == "1"
    assert text_of(html, "coupon-value") == f"¥{cl['face_value']:,.2f}"
    for chart in ("expiry-chart", "store-chart", "sv-chart", "coupon-chart"):
        assert f'id="{chart}"' in html and "data-chart=" in html
    assert "/static/vendor/plotly.min.js" in html
    zh = client.get("/loyalty/reports/liability?program=BB&lang=zh").text
    assert "积分负债" in zh and "储值负债" in zh and "优惠券负债" in zh


def test_roles_and_store_scope(client, shop, db_url):
    r = client.get("/loyalty/reports/liability", follow_redirects=False)
    assert r.status_code == 303
    login(client, "cashier")
    for tab in ("liability", "breakage", "settlement", "simulation"):
        assert client.get(f"/loyalty/reports/{tab}").status_code == 403
    login(client, "analyst")
    assert client.get("/loyalty/reports/liability").status_code == 200
    login(client, "manager")
    html = client.get("/loyalty/reports/liability?program=BB&lang=en").text
    assert 'id="scope-note"' in html
    mine = read(db_url, reports.liability, actor=manager_actor(shop), program="BB")["totals"]
    assert text_of(html, "outstanding") == f"{mine['outstanding']:,}"
    assert 'id="owed"' not in html  # program-wide debts are not a store's figure
    stores = [row[0] for row in table_rows(html, "store-table")]
    assert stores and set(stores) <= {"SH01"}
    assert client.get("/loyalty/reports/liability?program=NOPE").status_code == 404


def test_breakage_page(client, shop, db_url):
    login(client, "owner")
    html = client.get("/loyalty/reports/breakage?program=BB&lang=en").text
    data = read(db_url, reports.breakage, actor=owner_actor(shop), program="BB")
    assert text_of(html, "net-issued") == f"{data['totals']['net_issued']:,}"
    assert text_of(html, "used") == f"{data['totals']['used']:,}"
    assert [row[0] for row in table_rows(html, "cohort-table")] == [
        c["month"] for c in data["cohorts"]]
    assert 'id="breakage-chart"' in html
    r = client.get("/loyalty/reports/breakage?program=BB&from=2026-13&lang=en")
    assert r.status_code == 422 and "from" in errors_in(r.text)
    r = client.get("/loyalty/reports/breakage?program=BB&from=2026-05&to=2026-01&lang=en")
    assert r.status_code == 422 and "to" in errors_in(r.text)


def test_settlement_page(client, shop, db_url):
    login(client, "owner")
    html = client.get("/loyalty/reports/settlement?program=BB&lang=en").text
    assert 'id="settlement-chart"' in html
    import datetime as dt
    from zoneinfo import ZoneInfo

    from patron.db import utcnow

    today = utcnow().astimezone(ZoneInfo("Asia/Shanghai")).date()
    data = read(db_url, reports.settlement, actor=owner_actor(shop), program="BB",
                date_from=today.replace(day=1), date_to=today)
    (s,) = data["settlements"]
    assert (s["payer"], s["payee"], s["points"]) == ("SH01", "BJ01", 500)
    assert table_rows(html, "settlements") == [["SH01", "BJ01", "500", f"¥{s['value']:,.2f}"]]
    assert text_of(html, "redeemed") == "500" and text_of(html, "cross-store") == "500"
    lo, hi = sv_reports.day_bounds(today.replace(day=1), today, "Asia/Shanghai")
    (sv,) = read(db_url, sv_reports.settlement, actor=owner_actor(shop), start=lo, end=hi,
                 program="BB")["owed"]
    # The principal part of the ¥10.00 spent (spent in proportion with the bonus).
    assert table_rows(html, "sv-owed") == [["SH01", "BJ01", f"¥{sv['amount']:,.2f}"]]
    assert (sv["from"], sv["to"]) == ("SH01", "BJ01") and 0 < sv["amount"] < 10
    assert 'id="sv-settlement-chart"' in html
    r = client.get("/loyalty/reports/settlement?program=BB&from=yesterday&lang=en")
    assert r.status_code == 422 and errors_in(r.text)["from"] == "Not a valid date."
    r = client.get(f"/loyalty/reports/settlement?program=BB&from={today}"
                   f"&to={today - dt.timedelta(days=3)}&lang=en")
    assert r.status_code == 422 and "to" in errors_in(r.text)


def wait_done(client, location, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(location + "?lang=en")
        status = re.search(r'id="run" data-status="(\w+)"', page.text).group(1)
        if status in ("done", "failed") or time.monotonic() > deadline:
            return status, page
        assert '<meta http-equiv="refresh" content="2">' in page.text  # follows itself
        time.sleep(0.2)


def sim_form(client, **data):
    page = client.get("/loyalty/reports/simulation?program=BB").text
    return {"csrf_token": csrf(page), "months": "12", "propose_rules": "on",
            "points_per_yuan": "2", "growth_per_yuan": "1", "min_spend": "0",
            "category": "coffee=2", "tier_multiplier": "on", **data}


def test_simulation_runs_in_the_background_and_shows_the_replays_figures(client, shop, db_url):
    login(client, "owner")
    page = client.get("/loyalty/reports/simulation?program=BB&lang=en")
    assert page.status_code == 200
    assert 'name="points_per_yuan" value="1"' in page.text  # today's rules, to edit
    assert page.text.count('class="tier-row"') == 3  # today's two tiers and a blank row
    r = client.post("/loyalty/reports/simulation?program=BB", data=sim_form(client),
                    follow_redirects=False)
    assert r.status_code == 303, errors_in(r.text)
    status, done = wait_done(client, r.headers["location"])
    assert status == "done", done.text[-2000:]
    html = done.text
    run_id = int(r.headers["location"].rsplit("/", 1)[1])
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        stored = simulation_runs.get_run(uow.c, actor=owner_actor(shop), run_id=run_id)
        direct = simulate(uow.c, actor=owner_actor(shop), program="BB",
                          body=SimulationIn.model_validate(stored["request"]),
                          as_of=dt_of(stored["result"]["to"]))
    assert stored["request"]["rules"]["points_per_yuan"] == "2"
    assert text_of(html, "current-net") == f"{direct['current']['net_points']:,}"
    assert text_of(html, "proposed-net") == f"{direct['proposed']['net_points']:,}"
    assert direct["proposed"]["points"] > direct["current"]["points"] > 0
    assert text_of(html, "liability-now") == f"{direct['liability']['outstanding_now']:,}"
    for chart in ("sim-month-chart", "sim-tier-chart", "sim-totals-chart"):
        assert f'id="{chart}"' in html
    assert [row[0] for row in table_rows(html, "sim-months")] == [
        m["month"] for m in direct["by_month"]]
    assert "<meta http-equiv" not in html  # over: no more reloads
    # Another reader does not see this run (it was computed in the owner's scope).
    login(client, "analyst")
    assert client.get(r.headers["location"]).status_code == 404
    login(client, "owner")
    listed = client.get("/loyalty/reports/simulation?program=BB").text
    assert f'href="/loyalty/reports/simulation/{run_id}"' in listed


def dt_of(text: str):
    import datetime as dt

    return dt.datetime.fromisoformat(text)


def test_bad_simulation_input_names_the_field(client, shop, db_url):
    login(client, "owner")
    r = client.post("/loyalty/reports/simulation?program=BB&lang=en",
                    data=sim_form(client, months="0", category="coffee=lots"))
    assert r.status_code == 422
    errors = errors_in(r.text)
    assert errors["months"] == "Must be at least 1." and "category" in errors
    r = client.post("/loyalty/reports/simulation?program=BB&lang=en", data=sim_form(
        client, propose_rules="", propose_tiers=""))
    assert r.status_code == 422 and "Propose earning rules, tiers or both." in r.text
    r = client.post("/loyalty/reports/simulation?program=BB&lang=en", data={
        **sim_form(client, propose_rules="", propose_tiers="on"),
        "tier_code": ["SILVER", "GOLD"], "tier_name": ["银卡", "金卡"], "tier_rank": ["0", "1"],
        "tier_min_growth": ["500", "100"], "tier_min_spend": ["0", "0"],
        "tier_points_multiplier": ["1", "1.5"]})
    assert r.status_code == 422, r.text[-1500:]
    assert errors_in(r.text)
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert simulation_runs.latest_runs(uow.c, actor=owner_actor(shop), program="BB") == []


def test_a_run_whose_runner_is_gone_shows_as_failed(client, shop, db_url):
    login(client, "owner")
    with UnitOfWork(get_engine(db_url)) as uow:
        run_id = simulation_runs.request_run(uow=uow, actor=owner_actor(shop), program="BB",
                                             body=SimulationIn.model_validate({"months": 3,
                                                                               "tiers": []}))
    simulation_runs._running.discard(run_id)  # as after a restart: nobody runs it
    html = client.get(f"/loyalty/reports/simulation/{run_id}?lang=en").text
    assert 'data-status="failed"' in html and "stopped" in html


def test_no_program_yet(client, users):
    login(client, "owner")
    r = client.get("/loyalty/reports")
    assert r.status_code == 200 and 'id="no-program"' in r.text
