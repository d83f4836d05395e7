"""The CI dependency audit tells a skipped package from a checked one (pip-audit alone reports
"No known vulnerabilities found" when it could check nothing)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "dependency_audit.py"
spec = importlib.util.spec_from_file_location("dependency_audit", TOOL)
assert spec is not None and spec.loader is not None
audit = importlib.util.module_from_spec(spec)
sys.modules["dependency_audit"] = audit  # dataclasses look their module up
spec.loader.exec_module(audit)


def test_a_report_where_every_package_was_skipped_audits_nothing():
    out = audit.interpret({"dependencies": [
        {"name": "fastapi", "version": "0.165.0",
         "skip_reason": "Dependency not found on PyPI and could not be audited"},
        {"name": "jinja2", "version": "3.1.6",
         "skip_reason": "Dependency not found on PyPI and could not be audited"}]})
    assert out.audited == 0 and len(out.skipped) == 2 and not out.vulnerable


def test_vulnerabilities_are_reported_with_their_fixes():
    out = audit.interpret({"dependencies": [
        {"name": "jinja2", "version": "2.10", "vulns": [
            {"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}]},
        {"name": "numpy", "version": "2.4.6", "vulns": []}]})
    assert out.audited == 2
    assert out.vulnerable == ["jinja2 2.10: PYSEC-2019-217 (fixed in 2.10.1)"]


def test_degraded_run_says_so_and_fails_only_when_strict(monkeypatch, capsys):
    skipped = {"dependencies": [{"name": "x", "version": "1", "skip_reason": "not found"}]}
    monkeypatch.setattr(audit, "run_pip_audit", lambda service: (skipped, ""))
    monkeypatch.setattr(audit, "reachable", lambda url, data=None: "HTTP 404")
    assert audit.main() == 0
    assert "DEGRADED" in capsys.readouterr().out
    monkeypatch.setenv("PATRON_AUDIT_STRICT", "1")
    assert audit.main() == 2


def test_a_known_vulnerability_fails_the_run(monkeypatch, capsys):
    report = {"dependencies": [{"name": "jinja2", "version": "2.10", "vulns": [
        {"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}]}]}
    monkeypatch.setattr(audit, "run_pip_audit", lambda service: (report, ""))
    assert audit.main() == 1
    assert "PYSEC-2019-217" in capsys.readouterr().out
