"""Dashboards over HTTP: roles and store scope, figures and their drill-down lists, the audited
export, promotions, bad input in the caller's language; and the CLI."""

from __future__ import annotations

import csv
import datetime as dt

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from patron.cli import app as cli_app
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.factories import order

CST = dt.timezone(dt.timedelta(hours=8))
BASE = "/api/v1/analytics/dashboards"
PERIOD = {"from": "2026-01-01", "to": "2026-03-31"}


@pytest.fixture
def sales(db_url, org, users):
    """SH01: a member twice (January, February) and a non-member once; BJ01: the non-member
    and a guest."""
    def at(month, day):
        return dt.datetime(2026, month, day, 11, tzinfo=CST)

    with UnitOfWork(get_engine(db_url)) as uow:
        out = record_orders(uow=uow, orders_in=[
            order("1", at=at(1, 10), identifiers={"member_code": "M1"}),
            order("2", at=at(2, 10), identifiers={"member_code": "M1"}),
            order("3", at=at(2, 11), identifiers={"phone": "13800000002"}),
            order("4", store="BJ01", at=at(3, 1), identifiers={"phone": "13800000002"}),
            order("5", store="BJ01", at=at(3, 2))], source="api", actor=SYSTEM,
            now=at(3, 3), audit_each=False)
    return {"member": out[0].customer_id, "other": out[2].customer_id}


def refresh(client):
    r = client.post(f"{BASE}/refresh", json={})
    assert r.status_code == 200, r.text
    return r.json()


def test_owner_refreshes_and_reads_each_figure_and_its_customers(client, sales):
    login(client, "owner")
    assert client.get(f"{BASE}/status").json()["refreshed"] is False
    assert refresh(client)["mode"] == "full"
    r = client.get(f"{BASE}/breakdown", params={"by": "store", **PERIOD, "lang": "en"})
    assert r.status_code == 200, r.text
    rows = {x["key"]: x for x in r.json()["rows"]}
    assert (rows["SH01"]["orders"], rows["SH01"]["customers"], rows["SH01"]["net_sales"],
            rows["SH01"]["repurchase_rate"]) == (3, 2, "213.00", 0.5)
    assert (rows["BJ01"]["orders"], rows["BJ01"]["guest_orders"],
            rows["BJ01"]["customers"]) == (2, 1, 1)
    total = r.json()["total"]
    assert (total["customers"], total["new_customers"], total["aov"]) == (2, 2, "71.00")
    listed = client.get(f"{BASE}/customers", params={
        "by": "store", "key": "SH01", **PERIOD, "metric": "repurchase_rate"}).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == sales["member"]
    members = client.get(f"{BASE}/members", params=PERIOD).json()["groups"]
    assert (members["member"]["orders"], members["non_member"]["orders"],
            members["guest"]["orders"], members["guest"]["customers"]) == (2, 2, 1, None)
    cohorts = client.get(f"{BASE}/cohorts", params={"from": "2026-01", "to": "2026-02"}).json()
    assert [c["customers"] for c in cohorts["cohorts"]] == [1, 1]
    assert client.get(f"{BASE}/structure").status_code == 200


def test_the_export_of_a_figures_customers_is_audited(client, sales, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path))
    from patron.config import get_settings

    get_settings.cache_clear()
    login(client, "analyst")
    refresh(client)
    r = client.get(f"{BASE}/customers.csv", params={"by": "month", "key": "2026-02", **PERIOD})
    assert r.status_code == 200, r.text
    rows = list(csv.reader(r.content.decode("utf-8-sig").splitlines()))
    assert rows[0][0].startswith("Patron export customers-")  # the watermark
    assert [int(x[0]) for x in rows[2:]] == sorted([sales["member"], sales["other"]])
    assert "138****0002" in r.content.decode("utf-8-sig")  # masked
    with UnitOfWork(get_engine()) as uow:
        entry = uow.c.execute(select(audit_log).where(
            audit_log.c.action == "customers.exported")).mappings().one()
    assert entry["actor_name"] == "analyst" and entry["details"]["rows"] == 2
    assert entry["details"]["filters"]["drill_down"]["key"] == "2026-02"


def test_roles_and_store_scope(client, sales):
    login(client, "owner")
    refresh(client)
    login(client, "manager")  # SH01 only
    rows = client.get(f"{BASE}/breakdown", params={"by": "store", **PERIOD}).json()["rows"]
    assert [x["key"] for x in rows] == ["SH01"]
    r = client.get(f"{BASE}/breakdown", params={"by": "store", "scope": "store:BJ01",
                                                **PERIOD, "lang": "en"})
    assert r.status_code == 403 and "own stores" in r.json()["error"]["message"]
    listed = client.get(f"{BASE}/customers", params={"by": "total", **PERIOD}).json()
    assert listed["total"] == 2
    assert client.post(f"{BASE}/refresh", json={}).status_code == 403
    assert client.post(f"{BASE}/promotions", json={
        "name": "x", "starts_on": "2026-03-01", "ends_on": "2026-03-07"}).status_code == 403
    login(client, "cashier")
    assert client.get(f"{BASE}/breakdown", params={"by": "store", **PERIOD}).status_code == 403
    assert client.get(f"{BASE}/customers", params={"by": "total", **PERIOD}).status_code == 403


def test_promotions_through_the_api(client, sales):
    login(client, "owner")
    refresh(client)
    r = client.post(f"{BASE}/promotions", json={"name": "February treats",
                                                "starts_on": "2026-02-10",
                                                "ends_on": "2026-02-11", "store": "SH01"})
    assert r.status_code == 201, r.text
    promo = r.json()
    assert promo["scope"] == "store:SH01"
    cmp = client.get(f"{BASE}/promotions/{promo['id']}/comparison").json()
    assert cmp["status"] == "ended"
    assert cmp["during"]["groups"]["all"]["orders"] == 2
    assert cmp["before"]["groups"]["all"]["orders"] == 0
    r = client.patch(f"{BASE}/promotions/{promo['id']}", json={"store": None})
    assert r.status_code == 200 and r.json()["scope"] == "overall"
    r = client.patch(f"{BASE}/promotions/{promo['id']}", json={"ends_on": "2026-01-01",
                                                               "lang": "x"})
    assert r.status_code == 422
    r = client.patch(f"{BASE}/promotions/{promo['id']}?lang=en", json={"ends_on": "2026-01-01"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "ends_on"
    assert client.get(f"{BASE}/promotions").json()["items"][0]["id"] == promo["id"]
    assert client.delete(f"{BASE}/promotions/{promo['id']}").status_code == 204
    assert client.get(f"{BASE}/promotions/{promo['id']}").status_code == 404


def test_bad_input_gets_a_422_with_the_field_in_the_callers_language(client, sales):
    login(client, "owner")
    r = client.get(f"{BASE}/breakdown", params={"by": "planet", **PERIOD, "lang": "en"})
    assert r.status_code == 422
    field = r.json()["error"]["fields"][0]
    assert field["field"] == "by" and "planet" in field["message"]
    r = client.get(f"{BASE}/breakdown", params={"by": "store", "from": "2026-03-01",
                                                "to": "2026-01-01", "lang": "zh"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["message"] == "结束日期早于开始日期。"
    r = client.get(f"{BASE}/breakdown", params={"by": "store", "from": "yesterday",
                                                "to": "2026-01-01"})
    assert r.status_code == 422
    r = client.get(f"{BASE}/customers", params={"view": "cohort", "cohort": "2026-99"})
    assert r.status_code == 422


def test_cli_prints_a_breakdown_and_refuses_bad_input(db_url, sales, monkeypatch):
    monkeypatch.setenv("PATRON_LANG", "en")
    runner = CliRunner()
    done = runner.invoke(cli_app, ["analytics", "dashboards-refresh"])
    assert done.exit_code == 0, done.output
    got = runner.invoke(cli_app, ["analytics", "dashboard", "--by", "store", "--from",
                                  "2026-01-01", "--to", "2026-03-31", "--json"])
    assert got.exit_code == 0, got.output
    import json

    rows = {r["key"]: r for r in json.loads(got.output)["rows"]}
    assert rows["SH01"]["orders"] == 3 and rows["SH01"]["net_sales"] == "213.00"
    table = runner.invoke(cli_app, ["analytics", "dashboard", "--by", "month", "--from",
                                    "2026-01-01", "--to", "2026-03-31"])
    assert table.exit_code == 0 and "2026-02" in table.output
    cohorts = runner.invoke(cli_app, ["analytics", "cohorts", "--from", "2026-01", "--to",
                                      "2026-03", "--json"])
    assert cohorts.exit_code == 0
    assert [c["customers"] for c in json.loads(cohorts.output)["cohorts"]] == [1, 1, 0]
    bad = runner.invoke(cli_app, ["analytics", "dashboard", "--by", "planet", "--from",
                                  "2026-01-01", "--to", "2026-03-31"])
    assert bad.exit_code == 2 and "planet" in bad.output
    bad = runner.invoke(cli_app, ["analytics", "dashboard", "--by", "store", "--from",
                                  "2026-03-01", "--to", "2026-01-01"])
    assert bad.exit_code == 2 and "before the start" in bad.output
