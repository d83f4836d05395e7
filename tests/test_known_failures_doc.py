"""docs/known-failures.md names, for every failure loyalty systems are known for, the tests that
show Patron avoids it. Every named test and benchmark must exist, and every scenario must name
at least one test, so the table cannot go stale silently."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "known-failures.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
BENCH_REF = re.compile(r"`(benchmarks/[\w/]+\.py)`")


def _rows() -> list[str]:
    return [line for line in DOC.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith(("| Scenario", "| ---"))]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_scenario_names_at_least_one_test():
    rows = _rows()
    assert len(rows) >= 25
    for row in rows:
        assert TEST_REF.search(row), f"no test named for: {row.split('|')[1].strip()}"


def test_every_named_test_and_benchmark_exists():
    missing = []
    names: dict[str, set[str]] = {}
    for row in _rows():
        for path, name in TEST_REF.findall(row):
            file = ROOT / path
            if not file.exists():
                missing.append(path)
                continue
            if name not in names.setdefault(path, _test_names(file)):
                missing.append(f"{path}::{name}")
        missing.extend(path for path in BENCH_REF.findall(row) if not (ROOT / path).exists())
    assert missing == []
