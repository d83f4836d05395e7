"""``patron analytics clv`` and ``patron analytics predict`` as an operator runs them, in a real
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from patron.analytics.clv_tables import customer_predictions
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import make_org
from tests.integration.test_clv_service import random_history

PATRON = Path(sys.executable).parent / "patron"


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en",
           "COLUMNS": "200"}
    return subprocess.run([str(PATRON), "analytics", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)


def test_clv_prints_parameters_and_holdout_accuracy_then_predict_stores_rows(db_url, uow):
    make_org(uow)
    record_orders(uow=uow, orders_in=random_history(21, 120), source="api", actor=SYSTEM,
                  audit_each=False)

    out = patron(db_url, "clv", "--calibration-end", "2026-03-31", "--period", "week")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["period"] == "week" and doc["calibration_end"] == "2026-03-31"
    assert set(doc["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(doc["gamma_gamma"]) == {"p", "q", "gamma"}
    assert {"mae", "rmse", "actual_total", "predicted_total", "correlation"} <= set(
        doc["holdout"])

    out = patron(db_url, "predict", "--as-of", "2026-06-30")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["customers"] == 120
    uow.rollback()
    assert uow.c.execute(select(func.count()).select_from(customer_predictions)
                         ).scalar_one() == 120


def test_bad_input_exits_with_a_message_and_no_stack_trace(db_url):
    out = patron(db_url, "clv", "--calibration-end", "31/03/2026")
    assert out.returncode == 2
    assert "calibration_end" in out.stderr and "Traceback" not in out.stderr
    out = patron(db_url, "clv", "--calibration-end", "2026-03-31", "--period", "month")
    assert out.returncode == 2
    assert "day, week" in out.stderr
    out = patron(db_url, "clv", "--calibration-end", "2026-03-31")
    assert out.returncode == 2
    assert "No customer has a purchase" in out.stderr
