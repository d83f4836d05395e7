"""Dependency vulnerability audit for CI (``make audit``), with pip-audit.

pip-audit asks a vulnerability service about every installed distribution: PyPI's JSON API
(``/pypi/<name>/<version>/json``, the default) or OSV (``api.osv.dev``). CI machines reach only
the package registries, and a registry mirror may answer the per-version JSON with 404: pip-audit
then *skips* every package and still says "No known vulnerabilities found" with exit status 0.
That is not a pass, so this script reads pip-audit's JSON report and says exactly what happened:

- a known vulnerability: exit 1, with the package, version, id and fixed versions;
- no package could be checked (service unreachable): a clear ``DEGRADED`` message and exit 0,
  or exit 2 with ``PATRON_AUDIT_STRICT=1`` (for a machine that does reach the service);
- some packages skipped: they are listed, exit 0.

If the PyPI service audits nothing, OSV is tried next when it answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

OSV_URL = "https://api.osv.dev/v1/query"


@dataclass
class Outcome:
    audited: int = 0
    skipped: list[str] = field(default_factory=list)
    vulnerable: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.audited + len(self.skipped)


def interpret(report: dict[str, Any]) -> Outcome:
    """What a ``pip-audit --format json`` report says, skips counted apart from passes."""
    out = Outcome()
    for dep in report.get("dependencies", []):
        name, version = dep.get("name", "?"), dep.get("version", "?")
        if "skip_reason" in dep:
            out.skipped.append(f"{name} {version}: {dep['skip_reason']}")
            continue
        out.audited += 1
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version"
            out.vulnerable.append(f"{name} {version}: {vuln.get('id')} (fixed in {fixes})")
    return out


def run_pip_audit(service: str) -> tuple[dict[str, Any] | None, str]:
    cmd = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off",
           "--skip-editable", "--vulnerability-service", service, "--timeout", "20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # noqa: S603
    try:
        return json.loads(proc.stdout), proc.stderr
    except json.JSONDecodeError:
        return None, (proc.stderr or proc.stdout)[-2000:]


def reachable(url: str, data: bytes | None = None) -> str:
    """'ok' or why not, for the message."""
    try:
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET",  # noqa: S310
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return "ok" if resp.status < 400 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return f"unreachable ({getattr(exc, 'reason', exc)})"


def main() -> int:
    strict = os.environ.get("PATRON_AUDIT_STRICT") == "1"
    report, err = run_pip_audit("pypi")
    service = "PyPI JSON API"
    outcome = interpret(report) if report is not None else Outcome()
    if outcome.audited == 0:
        osv = reachable(OSV_URL, json.dumps({"package": {"name": "jinja2",
                                                         "ecosystem": "PyPI"},
                                             "version": "2.10"}).encode())
        if osv == "ok":
            report, err = run_pip_audit("osv")
            service = "OSV"
            outcome = interpret(report) if report is not None else Outcome()
    else:
        osv = "not needed"
    if outcome.vulnerable:
        print(f"dependency audit ({service}): {len(outcome.vulnerable)} known vulnerabilities")
        for line in outcome.vulnerable:
            print(f"  {line}")
        return 1
    if outcome.audited == 0:
        probe = reachable("https://pypi.org/pypi/pip/25.0/json")
        print("dependency audit DEGRADED: no installed package could be checked for known "
              "vulnerabilities; this is NOT a pass.")
        print(f"  pip-audit's services from this machine: PyPI per-version JSON API -> {probe}; "
              f"OSV ({OSV_URL}) -> {osv}.")
        print(f"  {outcome.total} packages skipped"
              + (f"; pip-audit said: {err.strip()[-500:]}" if report is None else "."))
        print("  Run `make audit` where one of these services answers "
              "(PATRON_AUDIT_STRICT=1 makes this a failure).")
        return 2 if strict else 0
    print(f"dependency audit ({service}): {outcome.audited} packages checked, "
          "no known vulnerabilities")
    if outcome.skipped:
        print(f"  {len(outcome.skipped)} not checked:")
        for line in outcome.skipped:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
