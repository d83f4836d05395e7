"""Loyalty reports over HTTP: points liability, breakage, inter-store settlement (清分) and the
rule and tier simulation. Read-only: nothing here writes (the simulation is a POST because it
carries the proposed rules, and writes nothing either). Clean JSON for charts: money as decimal
strings, months as 'YYYY-MM', one list of rows per breakdown."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from patron.deps import UowDep, require
from patron.loyalty import reports, simulation
from patron.loyalty.api import render
from patron.loyalty.simulation import SimulationIn
from patron.security.model import Actor

router = APIRouter(tags=["loyalty reports"])

Reader = Annotated[Actor, Depends(require("loyalty.read"))]
Month = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")]


@router.get("/loyalty/programs/{code}/reports/liability")
def liability(code: str, uow: UowDep, actor: Reader) -> Any:
    """Outstanding points now (available, pending, held) by month of expiry and by store of
    issue, with their value in yuan at the program's redeem rate."""
    return render(reports.liability(uow.c, actor=actor, program=code))


@router.get("/loyalty/programs/{code}/reports/breakage")
def breakage(code: str, uow: UowDep, actor: Reader,
             by: Literal["issue", "expiry"] = "issue",
             month_from: Annotated[Month, Query(alias="from")] = None,
             month_to: Annotated[Month, Query(alias="to")] = None) -> Any:
    """Issued, clawed back, expired, open and used points and the breakage rate per local
    month of issue or of expiry (``from``/``to`` as YYYY-MM, inclusive)."""
    return render(reports.breakage(uow.c, actor=actor, program=code, by=by,
                                   month_from=month_from, month_to=month_to))


@router.get("/loyalty/programs/{code}/reports/settlement")
def settlement(code: str, uow: UowDep, actor: Reader,
               date_from: Annotated[dt.date, Query(alias="from")],
               date_to: Annotated[dt.date, Query(alias="to")]) -> Any:
    """Points redeemed from ``from`` to ``to`` (local days, inclusive) by store of issue x
    store of redemption, and what each store owes the others."""
    return render(reports.settlement(uow.c, actor=actor, program=code, date_from=date_from,
                                     date_to=date_to))


@router.post("/loyalty/programs/{code}/simulations")
def simulate(code: str, body: SimulationIn, uow: UowDep, actor: Reader) -> Any:
    """Replay the last ``months`` months of member orders against proposed earning rules
    and/or tiers, next to today's rules and what the ledger recorded. Writes nothing."""
    return render(simulation.simulate(uow.c, actor=actor, program=code, body=body))
