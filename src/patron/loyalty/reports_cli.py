"""``patron loyalty report liability|breakage|settlement`` and ``patron loyalty simulate``:
the reports and the simulation of docs/loyalty-reports.md, printed as JSON."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

report_app = typer.Typer(help="Loyalty reports: liability, breakage, settlement (JSON).",
                         no_args_is_help=True)

Program = Annotated[str, typer.Option("--program", help="Program code")]


def register(loyalty_app: typer.Typer) -> None:
    loyalty_app.add_typer(report_app, name="report")
    loyalty_app.command("simulate")(simulate)


def _print(data: Any) -> None:
    from fastapi.encoders import jsonable_encoder

    from patron.cli import print_json

    print_json(jsonable_encoder(data, custom_encoder={Decimal: str}))


def _actor() -> Any:
    from patron.cli import _cli_actor

    return _cli_actor()


def _date(value: str, option: str) -> dt.date:
    from patron.cli import fail, lang
    from patron.i18n import t

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {t('date_parsing', lang())}")
        raise


def _json_file(path: Path | None) -> Any:
    from patron.cli import fail, lang
    from patron.i18n import t

    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(t("json_file_unreadable", lang(), path=str(path), error=str(exc)))
        raise


@report_app.command("liability")
def liability(program: Program) -> None:
    """Outstanding points now by month of expiry and by store of issue, with their value."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty import reports

    with UnitOfWork(get_engine(), readonly=True) as uow:
        _print(reports.liability(uow.c, actor=_actor(), program=program))


@report_app.command("breakage")
def breakage(
    program: Program,
    by: Annotated[str, typer.Option(help="Cohorts by month of 'issue' or of 'expiry'")] = "issue",
    month_from: Annotated[str | None, typer.Option("--from", help="First month, YYYY-MM")
                          ] = None,
    month_to: Annotated[str | None, typer.Option("--to", help="Last month, YYYY-MM")] = None,
) -> None:
    """Share of issued points that expired, per month of issue or of expiry."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty import reports

    with UnitOfWork(get_engine(), readonly=True) as uow:
        _print(reports.breakage(uow.c, actor=_actor(), program=program, by=by,
                                month_from=month_from, month_to=month_to))


@report_app.command("settlement")
def settlement(
    program: Program,
    date_from: Annotated[str, typer.Option("--from", help="First local day, YYYY-MM-DD")],
    date_to: Annotated[str, typer.Option("--to", help="Last local day, YYYY-MM-DD")],
) -> None:
    """Points earned at one store and redeemed at another in a period (清分), and what each
    store owes the others."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty import reports

    with UnitOfWork(get_engine(), readonly=True) as uow:
        _print(reports.settlement(uow.c, actor=_actor(), program=program,
                                  date_from=_date(date_from, "--from"),
                                  date_to=_date(date_to, "--to")))


def simulate(
    program: Program,
    months: Annotated[int, typer.Option(help="Replay the orders of the last N months")] = 12,
    rules: Annotated[Path | None, typer.Option(
        help="JSON file: the proposed earning rules (the shape of a rule version's 'rules')")
    ] = None,
    tiers: Annotated[Path | None, typer.Option(
        help="JSON file: the proposed tiers, a list like a program's 'tiers'")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="End of the replay (ISO; now)")
                     ] = None,
) -> None:
    """Replay the last N months of orders against proposed earning rules and/or tiers, next to
    what today's rules gave; writes nothing."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty import simulation
    from patron.loyalty.cli import _when

    body = {"months": months, "rules": _json_file(rules), "tiers": _json_file(tiers)}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        _print(simulation.simulate(uow.c, actor=_actor(), program=program,
                                   body=simulation.SimulationIn.model_validate(body),
                                   as_of=_when(as_of, "--as-of")))
