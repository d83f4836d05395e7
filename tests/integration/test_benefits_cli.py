"""``patron benefits ...`` as an operator runs it, in a real process."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from patron.customers.custom_fields import update_customer
from patron.db import UnitOfWork
from patron.security.model import SYSTEM
from tests.factories import make_org
from tests.loyalty_factories import enrol, make_program

PATRON = Path(sys.executable).parent / "patron"


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}
    return subprocess.run([str(PATRON), "benefits", *args], env=env, capture_output=True,  # noqa: S603
                          text=True, timeout=60, check=False)


def test_an_operator_sets_the_gifts_and_the_daily_job_gives_them_once(db_url, engine,
                                                                      tmp_path):
    start = dt.datetime(2024, 6, 1, 10, 0, tzinfo=dt.UTC)
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow, now=start, expiry_months=120)
        m = enrol(uow, "13800000001", now=start)
        update_customer(uow=uow, actor=SYSTEM, customer_id=m["customer_id"],
                        changes={"birthday": "1990-09-09"})
    spec = tmp_path / "benefits.json"
    spec.write_text(json.dumps({"birthday_mode": "points", "birthday_points": 88,
                                "anniversary_points": 20}))
    out = patron(db_url, "settings", "--program", "BB", str(spec))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["birthday_points"] == 88
    shown = json.loads(patron(db_url, "settings", "--program", "BB").stdout)
    assert (shown["birthday_mode"], shown["anniversary_points"]) == ("points", 20)
    first = patron(db_url, "run", "--date", "2025-09-10")
    assert first.returncode == 0, first.stderr
    stats = json.loads(first.stdout)
    assert (stats["birthday"], stats["birthday_points"], stats["anniversary"]) == (1, 88, 1)
    again = json.loads(patron(db_url, "run", "--date", "2025-09-10").stdout)
    assert (again["birthday"], again["anniversary"]) == (0, 0)
    bad = patron(db_url, "run", "--date", "10/09/2025")
    assert bad.returncode != 0 and "--date" in bad.stderr
