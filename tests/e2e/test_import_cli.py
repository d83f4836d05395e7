"""``patron import``: orders from files, mappings, exit codes and messages."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from patron import cli

HEADER = "order_id,channel,store,purchased_at,sku,quantity,unit_price\n"
GOOD = ("C-1,pos,SH01,2026-03-02 10:30,LATTE,2,28\n"
        "C-1,pos,SH01,,CAKE,1,16\n"
        "C-2,pos,BJ01,2026-03-02 11:30,LATTE,1,28\n")


@pytest.fixture
def run(db_url, org, monkeypatch):
    # The console was sized when first imported; give tables room so nothing is elided.
    monkeypatch.setattr(cli.console, "width", 200)
    runner = CliRunner()

    def invoke(*args, lang="en"):
        return runner.invoke(cli.app, ["import", *args], env={"PATRON_LANG": lang})

    return invoke


def test_import_orders_reports_counts_and_is_safe_to_rerun(run, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + GOOD, encoding="utf-8")
    first = run("orders", str(path))
    assert first.exit_code == 0, first.output
    assert "3 rows read: 2 orders created, 0 already recorded, 0 rows rejected." in first.stdout
    again = run("orders", str(path))
    assert again.exit_code == 0
    assert "0 orders created, 2 already recorded" in again.stdout
    jobs = run("jobs")
    assert jobs.exit_code == 0 and "orders.csv" in jobs.stdout


def test_rejected_rows_are_listed_and_exit_code_is_1(run, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + GOOD + "C-3,pos,NOPE,2026-03-02 12:00,LATTE,1,28\n",
                    encoding="utf-8")
    result = run("orders", str(path))
    assert result.exit_code == 1, result.output
    assert "1 rows rejected" in result.stdout
    assert 'Unknown store "NOPE".' in result.stdout
    shown = run("show", "1")
    job = json.loads(shown.stdout)
    assert [(e["row"], e["column"], e["reason"]) for e in job["errors"]] == [
        (5, "store", "unknown_store")]


def test_refused_file_exits_2_with_the_reason_in_the_users_language(run, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order_id,channel,shop\nA,pos,x\n", encoding="utf-8")
    result = run("orders", str(path), lang="zh")
    assert result.exit_code == 2
    assert "文件的列与标准列或列映射不一致" in result.stderr
    assert "shop" in result.stderr
    assert "Traceback" not in result.output


def test_mapping_from_a_json_file_then_import_with_it(run, tmp_path):
    spec = {"name": "饿了么", "columns": {"order_id": "订单编号", "purchased_at": "下单时间",
                                          "total": "实付金额"},
            "defaults": {"channel": "eleme"}, "ignored": ["备注"]}
    (tmp_path / "eleme.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    created = run("mappings", "create", str(tmp_path / "eleme.json"))
    assert created.exit_code == 0, created.output
    listed = json.loads(run("mappings", "list").stdout)
    assert [m["name"] for m in listed] == ["饿了么"]
    duplicate = run("mappings", "create", str(tmp_path / "eleme.json"))
    assert duplicate.exit_code == 2
    replaced = run("mappings", "create", "--replace", str(tmp_path / "eleme.json"))
    assert replaced.exit_code == 0
    path = tmp_path / "eleme.csv"
    path.write_text("订单编号,下单时间,实付金额,备注\nE-1,2026-03-02 12:00,30,\n", encoding="utf-8")
    result = run("orders", str(path), "--mapping", "饿了么")
    assert result.exit_code == 0, result.output
    assert "1 orders created" in result.stdout
    unknown = run("orders", str(path), "--mapping", "nope")
    assert unknown.exit_code == 2
    assert 'No column mapping named "nope".' in unknown.stderr


def test_installed_command_exits_cleanly_on_a_bad_file(db_url, tmp_path):
    path = tmp_path / "old.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64)
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "patron.cli", "import", "orders", str(path)],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Old Excel files (.xls) are not supported" in done.stderr
    assert "Traceback" not in done.stderr
