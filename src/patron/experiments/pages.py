"""The experiments page: every automation and campaign with a control group or A/B variants,
its arms and the headline of its lift against control, filtered by kind and status. Read-only.

Readable by whoever may read automations or campaigns, and it shows only the kinds the user
may read; no single permission says that, so the page declares a signed-in guard and checks
the two itself (tests/e2e/test_experiments_page.py covers the 403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from patron.automations.pages import lift_days
from patron.db import UnitOfWork, get_engine
from patron.deps import declare_guard
from patron.errors import Forbidden
from patron.experiments import service
from patron.security.model import Actor
from patron.web.render import PageRoute, render, signed_in

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def experiments_reader(request: Request) -> Actor:
    """The signed-in user, who must read automations or campaigns."""
    actor = signed_in(request)
    if not service.readable_kinds(actor):
        raise Forbidden("forbidden", params={"permission": service.READ["automation"]})
    return actor


declare_guard(experiments_reader, "signed_in",
              "automations.read or campaigns.read, checked by the page: each user sees the "
              "kinds they may read")


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 10_000 else 1


@router.get("/experiments")
def experiments_page(request: Request,
                     actor: Annotated[Actor, Depends(experiments_reader)]) -> Response:
    kind = request.query_params.get("kind") or None
    kind = kind if kind in service.READ else None
    status = request.query_params.get("status") or None
    kinds = service.readable_kinds(actor)
    statuses = sorted({s for k in kinds for s in service.STATUSES[k]})
    status = status if status in statuses else None
    with UnitOfWork(get_engine(), readonly=True) as uow:
        listing = service.list_experiments(uow.c, actor=actor, kind=kind, status=status,
                                           days=lift_days(request),
                                           page=_page_number(request))
    return render(request, "experiments/index.html",
                  {"listing": listing, "kinds": kinds, "kind": kind, "status": status,
                   "statuses": statuses},
                  actor=actor)
