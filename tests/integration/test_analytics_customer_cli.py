"""``patron analytics customer ID``: one customer's analytics as JSON, on both databases."""

from __future__ import annotations

import datetime as dt
import json

import typer
from typer.testing import CliRunner

from patron.analytics import customer_cli, segments_cli
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order

CST = dt.timezone(dt.timedelta(hours=8))


def cli() -> typer.Typer:
    app = typer.Typer()
    group = typer.Typer()
    segments_cli.add_commands(group)
    customer_cli.add_commands(group)
    app.add_typer(group, name="analytics")
    return app


def test_prints_what_is_known_and_null_for_what_is_not_computed(uow):
    make_org(uow)
    out = record_orders(uow=uow, orders_in=[
        order(f"W{i}", at=dt.datetime(2026, 5, 11 - i, 8, tzinfo=CST),
              identifiers={"phone": "13800000001"}) for i in range(3)],
        source="api", actor=SYSTEM, now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    cid = out[0].customer_id
    before = CliRunner().invoke(cli(), ["analytics", "customer", str(cid)])
    assert before.exit_code == 0, before.output
    body = json.loads(before.output)
    assert body["analytics"]["rfm"] is None and body["analytics"]["stage"] is None
    assert body["prediction"]["computed"] is False
    prefs = body["preferences"]
    assert prefs["orders"] == 3
    assert [c["category"] for c in prefs["favourite_categories"]][:1] == ["coffee"]
    assert {s["slot"]: s["share"] for s in prefs["hour_slots"]}["morning"] == 1.0
    assert CliRunner().invoke(cli(), ["analytics", "rfm", "--as-of", "2026-06-01"]
                              ).exit_code == 0
    after = json.loads(CliRunner().invoke(cli(), ["analytics", "customer", str(cid)]).output)
    assert after["analytics"]["rfm"]["segment"]


def test_unknown_customer_exits_2_with_a_message(uow):
    make_org(uow)
    result = CliRunner().invoke(cli(), ["analytics", "customer", "424242"])
    assert result.exit_code == 2
    assert result.output.strip()
