"""Analytics refresh jobs over HTTP: request one (it runs in a background thread of this server
process), follow its progress, list the latest.

Reads use read-only transactions: on SQLite a refresh step holds the write lock for its whole
transaction, and a progress poll must not wait for it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from patron.analytics import jobs
from patron.analytics.api import render
from patron.db import get_engine
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["analytics"])

Reader = Annotated[Actor, Depends(require("dashboard.read"))]


class RefreshJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: dt.datetime | None = None


@router.post("/analytics/refresh-jobs")
def request_refresh(uow: UowDep, actor: Reader, body: RefreshJobIn | None = None) -> Any:
    """Start a full analytics refresh (owners and analysts): 202 with the new job, or 200 with
    the job already queued or running."""
    job, created = jobs.request_refresh(uow=uow, actor=actor, trigger="manual",
                                        as_of=body.as_of if body else None)
    if created:
        jobs.start_job_thread(uow.engine, job["id"], actor)
    return render(job, status_code=202 if created else 200)


@router.get("/analytics/refresh-jobs")
def list_refresh_jobs(actor: Reader,
                      limit: Annotated[int, Query(ge=1, le=jobs.MAX_LIST)] = 20) -> Any:
    """The latest jobs, newest first."""
    return render(jobs.list_jobs(get_engine(), actor=actor, limit=limit))


@router.get("/analytics/refresh-jobs/{job_id}")
def get_refresh_job(job_id: int, actor: Reader) -> Any:
    """One job: status, the step running, steps done of total, progress (0-1)."""
    return render(jobs.get_job(get_engine(), actor=actor, job_id=job_id))
