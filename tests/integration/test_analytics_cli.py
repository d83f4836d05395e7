"""``patron analytics rfm`` / ``lifecycle`` on both databases: refresh and print JSON."""

from __future__ import annotations

import datetime as dt
import json

import typer
from typer.testing import CliRunner

from patron.analytics.segments_cli import add_commands
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order

CST = dt.timezone(dt.timedelta(hours=8))


def cli() -> typer.Typer:
    app = typer.Typer()
    group = typer.Typer()
    add_commands(group)
    app.add_typer(group, name="analytics")
    return app


def seed(uow):
    make_org(uow)
    record_orders(uow=uow, orders_in=[
        order(f"W{i}", at=dt.datetime(2026, 5, 11 - i, 10, tzinfo=CST),
              identifiers={"phone": "13800000001"}) for i in range(3)] + [
        order("N1", store="BJ01", at=dt.datetime(2026, 5, 30, 10, tzinfo=CST),
              identifiers={"phone": "13800000002"})],
        source="api", actor=SYSTEM, now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))


def test_rfm_command_refreshes_every_scope_and_prints_json(uow):
    seed(uow)
    result = CliRunner().invoke(cli(), ["analytics", "rfm", "--as-of", "2026-06-01"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["customers"]["overall"] == 2
    assert body["customers"]["store:BJ01"] == 1
    assert sum(body["segments"]["overall"].values()) == 2


def test_lifecycle_command_twice_records_changes_once(uow):
    seed(uow)
    first = CliRunner().invoke(cli(), ["analytics", "lifecycle", "--as-of", "2026-06-01"])
    assert first.exit_code == 0, first.output
    body = json.loads(first.output)
    assert body["changed"] == 2 and body["stages"]["new"] == 1
    assert body["stages"]["dormant"] == 1  # daily visits, three weeks ago
    again = json.loads(CliRunner().invoke(
        cli(), ["analytics", "lifecycle", "--as-of", "2026-06-01T20:00"]).output)
    assert again["changed"] == 0


def test_bad_scope_or_date_exit_non_zero_with_a_message(uow):
    seed(uow)
    bad = CliRunner().invoke(cli(), ["analytics", "rfm", "--scope", "store:NOPE"])
    assert bad.exit_code == 2 and "store:NOPE" in bad.output and "Traceback" not in bad.output
    date = CliRunner().invoke(cli(), ["analytics", "lifecycle", "--as-of", "June"])
    assert date.exit_code == 2 and "--as-of" in date.output
