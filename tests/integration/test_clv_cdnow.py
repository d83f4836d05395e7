"""The published CDNOW results, reproduced through Patron's own import path and SQL summary.

The 2,357-customer CDNOW sample (first purchases in the first quarter of 1997, purchases up to
June 1998) ships with a well-known lifetime-value package; the test reads it from there when it
is installed (it is a dev dependency, never committed here), turns it into Patron's canonical
order CSV, imports it and fits on weeks 1-39 of 1997. Published: BG/NBD r=0.243, alpha=4.414,
a=0.793, b=2.426 (Fader, Hardie and Lee 2005); Gamma-Gamma p=6.25, q=3.74, gamma=15.44
(Fader and Hardie 2013).
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
from pathlib import Path

import pytest

from patron.analytics import clv_service
from patron.imports import service as imports
from patron.security.model import SYSTEM


def cdnow_sample() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the CDNOW sample ships with a dev dependency, not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"CDNOW sample not found at {path}")
    return path


# Patron refuses purchases before 2000, so the history moves forward 28 years: 1997-1998 and
# 2025-2026 have the same calendar (no leap day, same weekdays), so every day count is kept.
YEARS_LATER = 28
CALIBRATION_END = dt.date(1997 + YEARS_LATER, 9, 30)


def cdnow_as_order_csv(source: Path, target: Path) -> int:
    """One order per CDNOW transaction: customer id as member code, the day (28 years later)
    at noon local time, the dollar value as the total."""
    rows = 0
    with open(source) as f, open(target, "w", newline="", encoding="utf-8") as out:
        w = csv.writer(out)
        w.writerow(["order_id", "channel", "purchased_at", "member_code", "total"])
        for n, line in enumerate(f):
            customer, _index, day, _cds, dollars = line.split()
            stamp = f"{int(day[:4]) + YEARS_LATER}-{day[4:6]}-{day[6:]} 12:00:00"
            w.writerow([f"CD{n:05d}", "online_mall", stamp, f"CD{customer}", dollars])
            rows += 1
    return rows


def holdout_purchase_days(source: Path) -> int:
    """Distinct (customer, day) pairs after 1997-09-30, counted straight from the raw file."""
    with open(source) as f:
        return len({(c, d) for c, _i, d, _n, _v in map(str.split, f) if d > "19970930"})


def sig3(value: float) -> str:
    return f"{value:.3g}"


@pytest.fixture
def cdnow_imported(uow, tmp_path):
    path = tmp_path / "cdnow_orders.csv"
    rows = cdnow_as_order_csv(cdnow_sample(), path)
    job_id = imports.start_import(uow=uow, actor=SYSTEM, path=path, filename=path.name)
    job = imports.run_import(uow=uow, actor=SYSTEM, job_id=job_id, path=path)
    assert job.status == "done"
    assert job.orders_created == rows
    return uow


def test_cdnow_calibration_weeks_1_to_39_reproduce_the_published_parameters(cdnow_imported):
    result = clv_service.evaluate_clv(uow=cdnow_imported, actor=SYSTEM,
                                      calibration_end=CALIBRATION_END, period="week")

    assert result["customers"] == 2357
    bg, gg = result["bgnbd"], result["gamma_gamma"]
    assert {k: sig3(v) for k, v in bg.items()} == {
        "r": "0.243", "alpha": "4.41", "a": "0.793", "b": "2.43"}
    assert abs(bg["alpha"] - 4.414) < 0.0006 and abs(bg["b"] - 2.426) < 0.0006
    assert result["repeat_customers"] == 946
    assert {k: sig3(v) for k, v in gg.items()} == {"p": "6.25", "q": "3.74", "gamma": "15.4"}
    assert abs(gg["gamma"] - 15.44) < 0.006
    # Holdout: weeks 40-78, to the last day of the data (1998-06-30).
    holdout = result["holdout"]
    assert holdout["to"] == dt.date(1998 + YEARS_LATER, 6, 30)
    assert holdout["length"] == pytest.approx(39.0)
    assert holdout["actual_total"] == holdout_purchase_days(cdnow_sample())
    # 1,653.4 is what the reference implementation predicts from the published summary (its
    # times rounded to 0.01 week): the model under-predicts this holdout by about 12 %.
    assert holdout["predicted_total"] == pytest.approx(1653.4, abs=0.5)
    assert holdout["correlation"] > 0.5
