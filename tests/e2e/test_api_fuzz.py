"""Property-based fuzzing of the whole OpenAPI document with Schemathesis, signed in as each
role (issue 6, section 6): whatever a caller sends that the document allows, and whatever it
sends that it does not, Patron never answers with a 5xx nor with a body that breaks the
response schema it publishes.

The default run draws a bounded number of cases per operation and role on SQLite
(``FUZZ_EXAMPLES``, 4 unless ``PATRON_FUZZ_EXAMPLES`` says otherwise); the ``slow`` run draws
many more, positive and negative, on both databases. Failures are gathered over all operations
and reported together, each with the request that caused it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from patron.app import create_app
from tests.e2e.conftest import PASSWORD
from tests.security_figures import count

ROLES = ("owner", "analyst", "manager", "cashier")
FUZZ_EXAMPLES = int(os.environ.get("PATRON_FUZZ_EXAMPLES", "4"))
# Ending one's own session would sign the fuzzer out halfway; logout has its own tests.
SKIP = {("POST", "/api/v1/auth/logout")}


def _session_token(app: Any, username: str) -> str:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        r = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return r.cookies["patron_session"]


def fuzz(app: Any, role: str, *, examples: int, modes: list[GenerationMode]) -> int:
    from patron.security.model import PERMISSIONS
    from patron.security.routes import app_routes

    # An operation whose permission the role lacks answers 403 before reading its input
    # (test_route_guards shows it for every route and role): fuzzing it adds nothing.
    needs = {(r.method, r.path): r.permissions for r in app_routes(app)[0]}
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    token = _session_token(app, role)
    cases = 0
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIP or not set(needs.get(key, ())) <= PERMISSIONS[role]:
            continue
        operations += 1
        for mode in modes:
            seen = 0

            @settings(max_examples=examples, deadline=None, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                nonlocal seen
                seen += 1
                response = case.call(cookies={"patron_session": token})
                case.validate_response(response, checks=[not_a_server_error,
                                                         response_schema_conformance])

            try:
                check()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid (no parameters)
            except Exception as exc:  # noqa: BLE001 - gathered and reported together
                failures.append(f"{role} {operation.method.upper()} {operation.path} "
                                f"({mode.value}): {str(exc)[:1500]}")
            cases += seen
    count("fuzz_cases", cases)
    assert operations > (100 if role == "owner" else 10)
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)
    return cases


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", ROLES)
def test_fuzzing_the_openapi_document_finds_no_server_error_nor_schema_break(db_url, users,
                                                                            role):
    app = create_app()
    cases = fuzz(app, role, examples=FUZZ_EXAMPLES,
                 modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    assert cases > 10 * FUZZ_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_deep_fuzzing_on_both_databases(db_url, users, role):
    fuzz(create_app(), role, examples=100,
         modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
