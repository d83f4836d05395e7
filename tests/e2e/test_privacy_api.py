"""Personal-information rights over HTTP and the CLI: only owners handle requests; a request's
life from received to answered (copy, correction, deletion, refusal); errors with field and
reason in the caller's language; the opt-out of personalised marketing; the retention job."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from patron.cli import app as cli_app
from tests.e2e.conftest import login
from tests.e2e.test_loyalty_api import ENROL, PROGRAM


def member(client) -> dict:
    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    m = client.post("/api/v1/loyalty/programs/BB/members", json={**ENROL, "name": "林小美"})
    assert m.status_code == 201, m.text
    return m.json()


def test_only_owners_handle_requests(client, users):
    m = member(client)
    body = {"customer_id": m["customer_id"], "kind": "access", "source": "store"}
    for role in ("analyst", "manager", "cashier"):
        login(client, role)
        assert client.post("/api/v1/privacy/requests", json=body).status_code == 403, role
        assert client.get("/api/v1/privacy/requests").status_code == 403, role
    login(client, "owner")
    assert client.post("/api/v1/privacy/requests", json=body).status_code == 201


def test_a_request_from_received_to_answered(client, users):
    m = member(client)
    cid = m["customer_id"]
    access = client.post("/api/v1/privacy/requests",
                         json={"customer_id": cid, "kind": "access", "source": "app"}).json()
    assert access["status"] == "open" and access["days_left"] == 15
    copy = client.post(f"/api/v1/privacy/requests/{access['id']}/copy")
    assert copy.status_code == 200, copy.text
    assert copy.json()["tables"]["customers"][0]["name"] == "林小美"
    again = client.post(f"/api/v1/privacy/requests/{access['id']}/copy?lang=en")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "This request is already done."

    fix = client.post("/api/v1/privacy/requests",
                      json={"customer_id": cid, "kind": "correction", "source": "phone"}).json()
    r = client.post(f"/api/v1/privacy/requests/{fix['id']}/correction",
                    json={"changes": {"name": "林晓美"}})
    assert r.status_code == 200 and r.json()["outcome"]["fields"] == ["name"]

    gone = client.post("/api/v1/privacy/requests",
                       json={"customer_id": cid, "kind": "deletion", "source": "email"}).json()
    r = client.post(f"/api/v1/privacy/requests/{gone['id']}/erasure")
    assert r.status_code == 200, r.text
    assert r.json()["outcome"]["erased"]["profiles"] == 1
    page = client.get(f"/api/v1/customers/{cid}").json()
    assert page.get("phone") in (None, "") and page.get("name") in (None, "")
    actions = [e["action"] for e in client.get("/api/v1/audit").json()["items"]]
    for action in ("privacy.request_received", "privacy.copy_made", "privacy.request_done",
                   "privacy.erased"):
        assert action in actions
    assert "13812345678" not in json.dumps(client.get("/api/v1/audit").json())


def test_bad_requests_name_field_and_reason_in_the_callers_language(client, users):
    m = member(client)
    r = client.post("/api/v1/privacy/requests?lang=en",
                    json={"customer_id": m["customer_id"], "kind": "forget", "source": "fax"})
    assert r.status_code == 422
    assert {f["field"] for f in r.json()["error"]["fields"]} == {"kind", "source"}
    r = client.post("/api/v1/privacy/requests",
                    json={"customer_id": 999999, "kind": "access", "source": "store"})
    assert r.status_code == 404
    req = client.post("/api/v1/privacy/requests", json={
        "customer_id": m["customer_id"], "kind": "deletion", "source": "store"}).json()
    r = client.post(f"/api/v1/privacy/requests/{req['id']}/refusal", json={"reason": "x"})
    assert r.status_code == 422
    r = client.post(f"/api/v1/privacy/requests/{req['id']}/refusal",
                    json={"reason": "identity not proven"})
    assert r.status_code == 200 and r.json()["status"] == "refused"


def test_a_person_opts_out_of_personalised_marketing(client, users):
    m = member(client)
    url = f"/api/v1/privacy/customers/{m['customer_id']}/personalisation"
    assert client.get(url).json()["allowed"] is True
    r = client.put(url, json={"allowed": False, "source": "store"})
    assert r.status_code == 200 and r.json()["allowed"] is False
    login(client, "analyst")
    assert client.get(url).json()["history"][0]["granted"] is False
    assert client.put(url, json={"allowed": True, "source": "store"}).status_code == 403


def test_the_retention_job_from_the_api_and_the_cli(client, users, db_url, monkeypatch):
    member(client)
    r = client.post("/api/v1/privacy/retention/runs", json={"dry_run": True})
    assert r.status_code == 201 and r.json()["candidates"] == 0
    monkeypatch.setenv("PATRON_DATABASE_URL", db_url)
    out = CliRunner().invoke(cli_app, ["privacy", "retention", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["dry_run"] is True
    listed = CliRunner().invoke(cli_app, ["privacy", "requests", "--overdue"])
    assert listed.exit_code == 0 and json.loads(listed.output) == []
