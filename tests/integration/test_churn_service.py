"""Churn risk on generated purchase histories, on SQLite and PostgreSQL: the model beats the
"days since last purchase" rule on a holdout period, the evaluation command prints and stores
its run, scores are stored idempotently, bad input is refused."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from patron.analytics import churn_service
from patron.analytics.churn_tables import churn_model_runs, customer_churn_scores
from patron.demo.generator import plan, window
from patron.demo.seed import seed_organisation
from patron.demo.service import load_generated
from patron.errors import Forbidden, ValidationFailed
from patron.orders.service import record_orders
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import make_org, order

PATRON = Path(sys.executable).parent / "patron"
CUTOFF = dt.date(2025, 6, 30)


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en",
           "COLUMNS": "200"}
    return subprocess.run([str(PATRON), "analytics", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=300, check=False)


def load_demo(uow, customers: int = 1200, seed: int = 3) -> None:
    """Two years of BG/NBD-like customers (each stops buying for good at some point)."""
    start, end = window(dt.date(2024, 1, 1), dt.date(2025, 12, 31))
    seed_organisation(uow=uow, actor=SYSTEM)
    report = load_generated(uow=uow, actor=SYSTEM, chunk_size=2000,
                            config=plan(start=start, end=end, customers=customers, seed=seed))
    assert report.rejected == 0 and report.created > 5000


def count(uow, table, *where) -> int:
    q = select(func.count()).select_from(table)
    for w in where:
        q = q.where(w)
    return int(uow.c.execute(q).scalar_one())


def test_model_beats_days_since_last_purchase_on_the_holdout_and_scores_are_idempotent(
        db_url, uow):
    load_demo(uow)

    out = patron(db_url, "churn-evaluate", "--cutoff", CUTOFF.isoformat())
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["train"]["cutoff"] == "2025-04-01" and doc["train"]["outcome_to"] == "2025-06-30"
    assert doc["test"]["cutoff"] == "2025-06-30" and doc["test"]["outcome_to"] == "2025-09-28"
    assert doc["test"]["customers"] > 1000
    assert 0.2 < doc["test"]["churn_rate"] < 0.95  # both outcomes well represented
    model, naive = doc["model"], doc["naive"]
    assert model["auc"] > naive["auc"] > 0.7
    assert model["brier"] < naive["brier"]
    calibration = model["calibration"]
    assert len(calibration) == 10
    assert sum(b["customers"] for b in calibration) == doc["test"]["customers"]
    # Calibrated: each decile's observed rate is near its mean prediction.
    assert max(abs(b["mean_predicted"] - b["observed_rate"]) for b in calibration) < 0.15
    assert calibration[0]["observed_rate"] < calibration[-1]["observed_rate"]

    uow.rollback()
    run = uow.c.execute(select(churn_model_runs)).mappings().one()
    assert run["purpose"] == "evaluate" and run["id"] == doc["run_id"]
    assert run["metrics"]["model"]["auc"] == model["auc"]
    assert count(uow, audit_log, audit_log.c.action == "analytics.churn_evaluated") == 1
    listed = churn_service.churn_evaluations(uow.c, actor=SYSTEM)["evaluations"]
    assert [e["run_id"] for e in listed] == [doc["run_id"]]
    assert listed[0]["naive"]["auc"] == naive["auc"]

    first = churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM,
                                               as_of=dt.date(2025, 12, 31))
    rows = uow.c.execute(select(customer_churn_scores.c.customer_id,
                                customer_churn_scores.c.probability)
                         .order_by(customer_churn_scores.c.customer_id)).all()
    assert len(rows) == first["customers"] > 1000
    assert all(0.0 < p < 1.0 for _id, p in rows)
    second = churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM,
                                                as_of=dt.date(2025, 12, 31))
    again = uow.c.execute(select(customer_churn_scores.c.customer_id,
                                 customer_churn_scores.c.probability)
                          .order_by(customer_churn_scores.c.customer_id)).all()
    assert second["customers"] == first["customers"]
    assert [r[0] for r in again] == [r[0] for r in rows]
    assert [r[1] for r in again] == pytest.approx([r[1] for r in rows], abs=1e-9)
    assert count(uow, customer_churn_scores,
                 customer_churn_scores.c.run_id == second["run_id"]) == len(rows)
    assert count(uow, audit_log,
                 audit_log.c.action == "analytics.churn_scores_refreshed") == 2
    # Scoring runs are not evaluations.
    assert len(churn_service.churn_evaluations(uow.c, actor=SYSTEM)["evaluations"]) == 1


def small_history(uow) -> None:
    make_org(uow)
    at = dt.datetime(2026, 1, 5, 4, 0, tzinfo=dt.UTC)
    record_orders(uow=uow, orders_in=[
        order(f"O{i}", at=at + dt.timedelta(days=9 * i), identifiers={"phone": f"1380000000{i}"})
        for i in range(5)], source="api", actor=SYSTEM, audit_each=False)


def test_evaluation_refuses_an_incomplete_holdout_a_bad_horizon_and_store_scoped_actors(uow):
    small_history(uow)
    with pytest.raises(ValidationFailed) as incomplete:
        churn_service.evaluate_churn(uow=uow, actor=SYSTEM, cutoff=dt.date(2026, 1, 20))
    assert incomplete.value.fields[0].reason == "churn_holdout_incomplete"
    assert incomplete.value.params == {"needed": "2026-04-20", "last": "2026-02-10"}
    with pytest.raises(ValidationFailed) as horizon:
        churn_service.evaluate_churn(uow=uow, actor=SYSTEM, cutoff=dt.date(2026, 1, 20),
                                     horizon_days=3)
    assert horizon.value.fields[0].field == "horizon_days"
    with pytest.raises(ValidationFailed) as nobody:
        churn_service.refresh_churn_scores(uow=uow, actor=SYSTEM, as_of=dt.date(2025, 6, 1))
    assert nobody.value.fields[0].reason == "churn_cutoff_too_early"  # names the first date
    manager = Actor(type="user", id=1, name="m", role="manager", store_ids=frozenset({1}))
    with pytest.raises(Forbidden):
        churn_service.refresh_churn_scores(uow=uow, actor=manager, as_of=dt.date(2026, 3, 1))
    with pytest.raises(Forbidden):
        churn_service.churn_evaluations(uow.c, actor=manager)
    uow.rollback()
    assert count(uow, churn_model_runs) == 0 and count(uow, customer_churn_scores) == 0


def test_cli_bad_input_exits_with_a_message_and_no_stack_trace(db_url, uow):
    small_history(uow)
    uow.commit()
    out = patron(db_url, "churn-evaluate", "--cutoff", "20/01/2026")
    assert out.returncode == 2 and "cutoff" in out.stderr and "Traceback" not in out.stderr
    out = patron(db_url, "churn-evaluate", "--cutoff", "2026-01-20")
    assert out.returncode == 2 and "2026-04-20" in out.stderr and "Traceback" not in out.stderr
    out = patron(db_url, "churn-score", "--as-of", "2026-03-01", "--horizon-days", "1000")
    assert out.returncode == 2 and "between 7 and 730" in out.stderr
