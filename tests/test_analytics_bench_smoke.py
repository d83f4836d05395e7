"""The analytics benchmark runs end to end at a tiny size on both databases, so that it cannot
rot unnoticed. No speed is asserted: every figure has its anchor, the generated data is what
Patron would hold (the rebuilt figures equal DuckDB's aggregates of the raw orders) and both
fits agree."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from benchmarks import analytics
from benchmarks.__main__ import main

pytestmark = pytest.mark.xdist_group("benchmarks")


def test_the_generator_draws_about_four_orders_per_customer_deterministically():
    a = analytics.generate(3000, 20, seed=5)
    b = analytics.generate(3000, 20, seed=5)
    assert (a.order_at == b.order_at).all() and (a.line_amount == b.line_amount).all()
    identified = a.order_customer >= 0
    per_customer = identified.sum() / a.customers
    assert 3.3 < per_customer < 4.7
    assert 0.06 < (~identified).mean() < 0.10  # guests
    assert set(range(a.customers)) == set(a.order_customer[identified].tolist())
    assert (a.order_total == a.order_gross - a.order_discount).all()
    assert (a.order_total > 0).all()
    assert (a.order_refunded[a.order_refunded > 0] == a.order_total[a.order_refunded > 0]).all()
    assert (a.order_at[1:] >= a.order_at[:-1]).all()  # ids in time order, as recorded


def test_a_tiny_analytics_run_prints_every_figure_next_to_its_anchor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--analytics-only", "--analytics-customers", "400", "--analytics-samples", "3",
            "--quiet", "--out", str(tmp_path)]
    postgres = os.environ.get("PATRON_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if postgres == "skip":
        args.append("--skip-postgres")
    else:
        args += ["--postgres-url", postgres]

    assert main(args) == 0

    printed = capsys.readouterr().out
    for words in ("RFM + lifecycle full", "BG/NBD fit", "rfm_summary p99", "DuckDB"):
        assert words in printed
    doc = json.loads((tmp_path / "latest.json").read_text())
    by_name = {f["name"]: f for f in doc["figures"]}
    databases = ["SQLite"] + ([] if postgres == "skip" else ["PostgreSQL"])
    for db in databases:
        label = f"{db}, 400 customers"
        for name in (f"RFM + lifecycle full refresh, cold ({label})",
                     f"RFM + lifecycle full refresh, next night ({label})",
                     f"RFM + lifecycle full refresh, a quiet night ({label})",
                     f"BG/NBD fit ({label})",
                     f"BG/NBD parameters vs lifetimes, max relative difference ({label})",
                     f"rfm_summary p99 ({label})", f"lifecycle_summary p99 ({label})",
                     f"lifecycle_flows 30 days p99 ({label})"):
            assert name in by_name, name
        assert by_name[f"customer figures differing from DuckDB's aggregates ({label})"][
            "value"] == 0
        cold = by_name[f"RFM + lifecycle full refresh, cold ({label})"]["notes"]
        night = by_name[f"RFM + lifecycle full refresh, next night ({label})"]["notes"]
        # the last day's orders came through record_orders, between the two refreshes
        day = night["last_day_recorded"]
        assert day["orders"] > 0 and day["statuses"] == {"created": day["orders"]}
        assert night["overall"] == 400 == night["duckdb"]["customers"]
        assert night["scopes"] == cold["scopes"] == 27  # overall, 20 stores, 4 regions, 2 brands
        assert night["scored_rows"] == 400 + night["duckdb"]["scope_rows"]
        assert sum(night["stages"].values()) == 400
        assert cold["overall"] <= 400 and cold["rows_written"] == cold["scored_rows"]
        assert cold["stage_changes"] == cold["overall"]
        assert 0 < night["rows_written"] < night["scored_rows"]  # only what changed
        quiet = by_name[f"RFM + lifecycle full refresh, a quiet night ({label})"]["notes"]
        assert night["rfm_mode"] == quiet["rfm_mode"] == "changes"
        assert night["lifecycle_mode"] == quiet["lifecycle_mode"] == "changes"
        assert quiet["rows_written"] == 0 and quiet["scored_rows"] == night["scored_rows"]
        fit = by_name[f"BG/NBD parameters vs lifetimes, max relative difference ({label})"]
        assert fit["passed"], fit
    for f in doc["figures"]:
        assert f["anchor"] and f["anchor_value"] > 0, f
        assert f["value"] >= 0, f


def test_analytics_reuse_builds_the_template_once_and_copies_it(tmp_path: Path) -> None:
    """``--analytics-reuse``: the first run builds the kept template database, the second
    copies it; both print the same refresh figures' row counts (the same data)."""
    postgres = os.environ.get("PATRON_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if postgres == "skip":
        pytest.skip("PostgreSQL only")
    from benchmarks.analytics import template_name
    from sqlalchemy import create_engine, text

    template = template_name(300)
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))

    drop()
    try:
        runs = []
        for n in range(2):
            out = tmp_path / str(n)
            assert main(["--analytics-only", "--analytics-customers", "300",
                         "--analytics-samples", "2", "--skip-sqlite", "--analytics-reuse",
                         "--postgres-url", postgres, "--quiet", "--out", str(out)]) == 0
            doc = json.loads((out / "latest.json").read_text())
            runs.append({f["name"]: f["notes"] for f in doc["figures"]})
            with admin.connect() as conn:
                assert conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                    {"n": template}).first() is not None
        name = "RFM + lifecycle full refresh, next night (PostgreSQL, 300 customers)"
        first, second = runs[0][name], runs[1][name]
        assert second["load_seconds"] == {"template": "copied"}
        for key in ("scored_rows", "rows_written", "stage_changes", "orders"):
            assert first[key] == second[key], key
    finally:
        drop()
        admin.dispose()
