"""``patron stored-value liability | settlement | verify | expire`` on both databases."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import update
from typer.testing import CliRunner

from patron.cli import app
from patron.storedvalue.tables import sv_accounts
from tests.factories import T0
from tests.storedvalue_factories import hold, setup, spend, topup


def run(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["stored-value", *args])
    return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else {})


def test_the_reports_verify_and_the_hold_job_from_the_command_line(uow):
    m = setup(uow, spend_order="principal_first")["member"]
    topup(uow, m, "500", "t1", store="SH01")
    spend(uow, m, "120", "s1", store="BJ01")
    hold(uow, m, "30", "h1", minutes=5)
    code, liab = run("liability", "--as-of", (T0 + dt.timedelta(minutes=1)).isoformat())
    assert code == 0
    assert liab["stores"] == [{"store": "SH01", "principal": "380.00", "bonus": "50.00",
                               "total": "430.00"}]
    code, settle = run("settlement", "--from", "2026-03-02", "--to", "2026-03-02")
    assert code == 0 and settle["owed"] == [{"from": "SH01", "to": "BJ01", "amount": "120.00"}]
    code, empty = run("settlement", "--from", "2026-03-03", "--to", "2026-03-31")
    assert code == 0 and empty["owed"] == [] and empty["matrix"] == []
    code, jobs = run("expire", "--now", (T0 + dt.timedelta(minutes=6)).isoformat())
    assert code == 0 and jobs == {"accounts": 1, "holds_released": 1, "bonus_expired": "0.00"}
    code, report = run("verify")
    assert code == 0 and report["differences"] == 0
    uow.c.execute(update(sv_accounts).values(bonus="49"))
    uow.commit()
    code, report = run("verify")
    assert code == 1 and report["first"][0]["check"] == "account_figures"


def test_bad_dates_are_refused_with_a_message():
    result = CliRunner().invoke(app, ["stored-value", "settlement", "--from", "yesterday",
                                      "--to", "2026-03-02"])
    assert result.exit_code != 0
