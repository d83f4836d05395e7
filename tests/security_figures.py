"""The security figures the suite reports (issue 6, section 7): how many endpoint x role
checks, fuzz cases, injection attempts and IDOR attempts the tests made, and how many of the
tests that made them failed. Tests call ``count(kind, n)``; with pytest-xdist each worker sends
its counts to the controller, which prints them at the end of the run."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

KINDS = {
    "endpoint_role_checks": "endpoints x roles checked",
    "fuzz_cases": "fuzz cases run (Schemathesis)",
    "injection_attempts": "injection attempts (CSV/Excel formulas, CSRF, hostile input)",
    "idor_attempts": "IDOR attempts (ids of another scope in URLs)",
}
# The test modules whose failures count against the figures.
MODULES = ("test_route_guards", "test_access_control", "test_hostile_input", "test_api_fuzz",
           "test_idor", "test_export_safety", "test_security_headers", "test_security_admin",
           "test_security_alerts")

_counts: Counter[str] = Counter()


def count(kind: str, n: int = 1) -> None:
    assert kind in KINDS, kind
    _counts[kind] += n


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["security_figures"] = json.dumps(dict(_counts))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    raw = getattr(node, "workeroutput", {}).get("security_figures")
    if raw:
        _counts.update(json.loads(raw))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _counts:
        return
    failed = [r for r in terminalreporter.stats.get("failed", [])
              if any(m in r.nodeid for m in MODULES)]
    terminalreporter.section("security figures")
    for kind, label in KINDS.items():
        terminalreporter.write_line(f"{label}: {_counts.get(kind, 0)}")
    terminalreporter.write_line(f"failing security tests: {len(failed)}")
