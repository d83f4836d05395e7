"""Loyalty reports and the simulation over HTTP and the CLI: the role table, store scope, clean
JSON (money as decimal strings), bad input answered with field and reason."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from patron.db import UnitOfWork, get_engine
from patron.loyalty import service
from patron.loyalty.schemas import RedeemIn
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.e2e.conftest import login
from tests.factories import order
from tests.loyalty_factories import TIERS

PROGRAM = {"code": "BB", "brand": "B1", "name": "Bean Club", "privacy_version": "2026-01",
           "pending_days": 0, "tiers": TIERS}
ENROL = {"phone": "13812345678", "store": "SH01", "source": "pos",
         "privacy": {"version": "2026-01"}}
REPORTS = ["/api/v1/loyalty/programs/BB/reports/liability",
           "/api/v1/loyalty/programs/BB/reports/breakage?by=expiry",
           "/api/v1/loyalty/programs/BB/reports/settlement?from=2026-01-01&to=2030-12-31"]
SIMULATION = "/api/v1/loyalty/programs/BB/simulations"


@pytest.fixture
def ledger(client, users, db_url):
    """One member; 71 points earned at SH01 and 71 at BJ01; 100 redeemed at BJ01."""
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    member = client.post("/api/v1/loyalty/programs/BB/members", json=ENROL).json()
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(get_engine(db_url)) as uow:
        record_orders(uow=uow, orders_in=[
            order("O1", at=now, identifiers={"phone": "13812345678"}),
            order("O2", at=now + dt.timedelta(milliseconds=1), store="BJ01",
                  identifiers={"phone": "13812345678"})],
            source="api", actor=SYSTEM, now=now + dt.timedelta(milliseconds=2))
        service.redeem(uow=uow, actor=SYSTEM, member_id=member["id"],
                       now=now + dt.timedelta(milliseconds=3),
                       body=RedeemIn(idempotency_key="r1", points=100, store="BJ01"))
    return member


@pytest.mark.parametrize("role,status", [("owner", 200), ("analyst", 200), ("manager", 200),
                                         ("cashier", 403)])
def test_report_and_simulation_role_table(client, ledger, role, status):
    login(client, role)
    for path in REPORTS:
        r = client.get(path)
        assert r.status_code == status, (path, r.text)
    r = client.post(SIMULATION, json={"months": 1, "rules": {"points_per_yuan": "2"}})
    assert r.status_code == status, r.text


def test_reports_answer_clean_json_and_a_manager_sees_its_stores_only(client, ledger):
    login(client, "owner")
    body = client.get(REPORTS[0]).json()
    assert body["totals"]["outstanding"] == 42 and body["totals"]["liability"] == "0.42"
    settlement = client.get(REPORTS[2]).json()
    assert settlement["settlements"] == [{"payer": "SH01", "payee": "BJ01", "points": 71,
                                          "value": "0.71"}]
    login(client, "manager")  # SH01 only
    body = client.get(REPORTS[0]).json()
    assert body["totals"]["outstanding"] == 0 and body["by_store"] == []
    assert [(c["issued_at"], c["redeemed_at"]) for c in client.get(
        REPORTS[2]).json()["cells"]] == [("SH01", "BJ01")]


def test_simulation_over_http_doubles_the_points_and_writes_nothing(client, ledger):
    login(client, "owner")
    before = client.get(f"/api/v1/loyalty/members/{ledger['id']}/ledger").json()["total"]
    r = client.post(SIMULATION, json={"months": 1, "rules": {"points_per_yuan": "2"}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["current"]["net_points"], out["proposed"]["net_points"]) == (142, 284)
    assert out["difference"]["value"] == "1.42"
    assert client.get(f"/api/v1/loyalty/members/{ledger['id']}/ledger").json()["total"] == before


def test_bad_report_and_simulation_input_names_the_field_in_both_languages(client, ledger):
    login(client, "owner")
    r = client.get("/api/v1/loyalty/programs/BB/reports/settlement?from=2026-05-01"
                   "&to=2026-04-01", headers={"Accept-Language": "en"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "to"
    assert "before" in r.json()["error"]["fields"][0]["message"]
    r = client.get("/api/v1/loyalty/programs/BB/reports/breakage?from=2026-13&lang=zh")
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "from"
    r = client.post(SIMULATION, json={"months": 1}, headers={"Accept-Language": "en"})
    assert r.status_code == 422
    r = client.post(SIMULATION, json={"months": 99, "rules": {}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "months"
    r = client.get("/api/v1/loyalty/programs/NOPE/reports/liability")
    assert r.status_code == 404


def test_report_and_simulate_commands_print_json(ledger, db_url, tmp_path):
    from patron.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["loyalty", "report", "liability", "--program", "BB"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["totals"]["outstanding"] == 42
    out = runner.invoke(app, ["loyalty", "report", "breakage", "--program", "BB"])
    assert out.exit_code == 0 and json.loads(out.output)["totals"]["issued"] == 142
    out = runner.invoke(app, ["loyalty", "report", "settlement", "--program", "BB",
                              "--from", "2026-01-01", "--to", "2030-12-31"])
    assert out.exit_code == 0 and json.loads(out.output)["totals"]["cross_store_points"] == 71
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"points_per_yuan": "3"}))
    out = runner.invoke(app, ["loyalty", "simulate", "--program", "BB", "--months", "1",
                              "--rules", str(rules)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["proposed"]["net_points"] == 426
    bad = runner.invoke(app, ["loyalty", "simulate", "--program", "BB",
                              "--rules", str(tmp_path / "missing.json")])
    assert bad.exit_code == 2
