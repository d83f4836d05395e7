"""The benchmark code runs end to end at a tiny size, so that it cannot rot unnoticed.

Nothing here asserts a speed: only that every figure is measured next to its anchor, that the
orders were all recorded, and that the figures kept on the way match the orders.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from benchmarks.__main__ import main

pytestmark = pytest.mark.xdist_group("benchmarks")


def test_a_tiny_benchmark_run_prints_every_figure_next_to_its_anchor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--orders", "300", "--chunk", "120", "--csv-orders", "60", "--lookups", "50",
            "--skip-api", "--quiet", "--clv-customers", "2000", "--analytics-customers", "0",
            "--out", str(tmp_path)]
    postgres = os.environ.get("PATRON_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if postgres == "skip":
        args.append("--skip-postgres")
    else:
        args += ["--postgres-url", postgres]

    assert main(args) == 0

    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "latest.json").read_text())
    names = {f["name"] for f in doc["figures"]}
    databases = ["SQLite"] + ([] if postgres == "skip" else ["PostgreSQL"])
    for db in databases:
        for figure in (f"import orders/s ({db})", f"figures differing ({db}, sampled)",
                       f"lookup p50 ({db}, service)", f"lookup p99 ({db}, service)"):
            assert figure in names
            assert figure in printed
    for f in doc["figures"]:
        assert f["anchor"] and f["anchor_value"] > 0, f
        assert f["value"] >= 0, f
        assert "error" not in f["notes"], f
    by_name = {f["name"]: f for f in doc["figures"]}
    for db in databases:
        imported = by_name[f"import orders/s ({db})"]
        assert imported["notes"]["statuses"] == {"created": 300}
        assert imported["notes"]["customers"] > 0
        assert by_name[f"figures differing ({db}, sampled)"]["value"] == 0
    assert doc["meta"]["orders"] == 300
    assert (tmp_path / "profile-sqlite.txt").read_text().strip()


def test_a_tiny_api_load_records_an_order_for_every_201_and_nothing_else(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The load generator's orders (wrk's Lua script, or the httpx fallback) must all be valid
    # orders the API accepts, and the database must hold exactly the orders answered 201.
    postgres = os.environ.get("PATRON_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if postgres == "skip":
        pytest.skip("the API benchmark runs on PostgreSQL only")
    args = ["--orders", "200", "--csv-orders", "0", "--lookups", "20", "--no-profile",
            "--skip-sqlite", "--postgres-url", postgres, "--duration", "1",
            "--connections", "4", "--workers", "1", "--quiet", "--skip-clv",
            "--analytics-customers", "0",
            "--out", str(tmp_path)]

    assert main(args) == 0

    doc = json.loads((tmp_path / "latest.json").read_text())
    by_name = {f["name"].split(" (")[0]: f for f in doc["figures"]}
    rate = by_name["API orders/s"]
    setting = rate["notes"]["settings"][0]
    assert setting["orders"]["requests"] > 0
    assert set(setting["orders"]["statuses"]) == {"201"}, setting["orders"]
    assert setting["db_matches"] is True
    assert by_name["API orders in DB - 201s"]["value"] == 0
    assert rate["anchor_value"] > 0
    assert "load_generator" in doc["meta"]


def test_a_tiny_checkout_load_records_a_checkout_for_every_201_next_to_its_anchor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The checkout load (wrk's checkout.lua, or the httpx fallback) must send valid commits the
    # API accepts; the figure is printed next to the single-order API measured on the same
    # server, and the database holds exactly the checkouts answered 201.
    postgres = os.environ.get("PATRON_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if postgres == "skip":
        pytest.skip("the checkout benchmark runs on PostgreSQL only")
    args = ["--checkout-only", "--checkout-members", "5", "--orders", "100",
            "--postgres-url", postgres, "--duration", "1", "--connections", "4",
            "--workers", "1", "--quiet", "--out", str(tmp_path)]

    assert main(args) == 0

    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "latest.json").read_text())
    by_name = {f["name"].split(" (")[0]: f for f in doc["figures"]}
    rate = by_name["checkout commits/s"]
    assert "checkout commits/s" in printed
    setting = rate["notes"]["settings"][0]
    assert setting["checkout"]["requests"] > 0 and setting["orders"]["requests"] > 0
    assert set(setting["checkout"]["statuses"]) == {"201"}, setting["checkout"]
    assert setting["db_matches"] is True
    assert rate["anchor_value"] > 0 and rate["value"] > 0
    assert by_name["checkout commit p99"]["anchor_value"] > 0
    assert by_name["checkouts in DB - 201s"]["value"] == 0
