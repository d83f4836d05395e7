"""Refresh jobs over HTTP: the contract the UI is written against, roles, one job at a time."""

from __future__ import annotations

import datetime as dt
import json
import time

from patron.analytics import jobs
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.e2e.conftest import login
from tests.integration.test_clv_service import random_history

KEYS = {"id", "status", "step", "steps_done", "steps_total", "progress", "error", "started_at",
        "finished_at"}
AS_OF = "2026-06-30T12:00:00+08:00"
STEPS = len(jobs.plan_steps())


def wait_done(client, job_id, seconds=120.0):
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/analytics/refresh-jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        seen.append(body)
        if body["status"] in ("done", "failed"):
            return body, seen
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {seen[-1]}")


def no_nan(text: str) -> None:
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))


def test_owner_starts_a_job_follows_it_to_the_end_and_lists_it(client, db_url, org, users):
    with UnitOfWork(get_engine(db_url)) as uow:
        record_orders(uow=uow, orders_in=random_history(5, 120), source="api", actor=SYSTEM,
                      audit_each=False)
    login(client, "owner")
    r = client.post("/api/v1/analytics/refresh-jobs", json={"as_of": AS_OF})
    assert r.status_code == 202, r.text
    started = r.json()
    assert set(started) == KEYS
    assert started["status"] in ("queued", "running", "done")
    assert started["steps_total"] == STEPS and 0 <= started["progress"] <= 1

    done, seen = wait_done(client, started["id"])
    assert set(done) == KEYS
    assert done["status"] == "done", done
    assert done["error"] is None and done["progress"] == 1.0
    assert done["steps_done"] == done["steps_total"] == STEPS
    assert dt.datetime.fromisoformat(done["finished_at"]) >= dt.datetime.fromisoformat(
        done["started_at"])
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress)

    listed = client.get("/api/v1/analytics/refresh-jobs")
    assert listed.status_code == 200
    no_nan(listed.text)
    assert [j["id"] for j in listed.json()["items"]] == [started["id"]]
    assert set(listed.json()["items"][0]) == KEYS

    again = client.post("/api/v1/analytics/refresh-jobs")
    assert again.status_code == 202 and again.json()["id"] != started["id"]
    wait_done(client, again.json()["id"])
    items = client.get("/api/v1/analytics/refresh-jobs").json()["items"]
    assert [j["id"] for j in items] == [again.json()["id"], started["id"]]


def test_a_request_while_a_job_is_queued_gets_that_job_with_200(client, db_url, org, users):
    with UnitOfWork(get_engine(db_url)) as uow:
        queued, _ = jobs.request_refresh(uow=uow, actor=SYSTEM, trigger="cli")
    login(client, "analyst")
    r = client.post("/api/v1/analytics/refresh-jobs")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == queued["id"] and r.json()["status"] == "queued"
    jobs.run_job(get_engine(db_url), queued["id"], SYSTEM)
    assert client.get(f"/api/v1/analytics/refresh-jobs/{queued['id']}").json()["status"] == "done"


def test_managers_cannot_start_a_job_and_bad_input_is_a_clear_422(client, org, users):
    login(client, "manager")
    r = client.post("/api/v1/analytics/refresh-jobs", headers={"Accept-Language": "en"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    login(client, "owner")
    naive = client.post("/api/v1/analytics/refresh-jobs", json={"as_of": "2026-06-01T12:00:00"},
                        headers={"Accept-Language": "en"})
    assert naive.status_code == 422
    assert naive.json()["error"]["fields"][0]["field"] == "as_of"
    extra = client.post("/api/v1/analytics/refresh-jobs", json={"scope": "all"})
    assert extra.status_code == 422
    missing = client.get("/api/v1/analytics/refresh-jobs/999999",
                         headers={"Accept-Language": "en"})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "There is no refresh job 999999."
    assert client.get("/api/v1/analytics/refresh-jobs").json() == {"items": []}


def test_cashiers_and_strangers_cannot_read_jobs(client, org, users):
    assert client.get("/api/v1/analytics/refresh-jobs").status_code == 401
    login(client, "cashier")
    assert client.get("/api/v1/analytics/refresh-jobs").status_code == 403
    assert client.post("/api/v1/analytics/refresh-jobs").status_code == 403
