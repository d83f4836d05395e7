"""``patron stored-value ...``: the liability and settlement reports, verify, and the job that
releases expired holds and expires bonus."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Stored value: reports, verification, expiry.",
                  no_args_is_help=True)
console = Console()


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="stored-value")


def _actor():  # type: ignore[no-untyped-def]
    from patron.cli import _cli_actor

    return _cli_actor()


def _date(value: str, option: str) -> dt.date:
    from patron.cli import fail, lang
    from patron.i18n import t

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {t('datetime_parsing', lang())}")
        raise


def _print(data: object) -> None:
    console.print_json(json.dumps(data, default=str, ensure_ascii=False))


@app.command("liability")
def liability_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="As of this time (ISO; local "
                                                              "time when no offset; default now)")
                     ] = None,
    program: Annotated[str | None, typer.Option(help="Only this program (code)")] = None,
) -> None:
    """Outstanding principal and bonus on members' cards by store of top-up, and the total."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.cli import _when
    from patron.storedvalue.reports import liability

    with UnitOfWork(get_engine(), readonly=True) as uow:
        report = liability(uow.c, actor=_actor(), as_of=_when(as_of, "--as-of"),
                           program=program)
    _print(report)


@app.command("settlement")
def settlement_cmd(
    date_from: Annotated[str, typer.Option("--from", help="First local day (YYYY-MM-DD)")],
    date_to: Annotated[str, typer.Option("--to", help="Last local day (YYYY-MM-DD)")],
    program: Annotated[str | None, typer.Option(help="Only this program (code)")] = None,
) -> None:
    """Inter-store settlement (清分): principal topped up at one store and spent at another over
    the days, as a matrix, and what each store owes another."""
    from patron.config import get_settings
    from patron.db import UnitOfWork, get_engine
    from patron.storedvalue.reports import day_bounds, settlement

    start, end = day_bounds(_date(date_from, "--from"), _date(date_to, "--to"),
                            get_settings().default_timezone)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        report = settlement(uow.c, actor=_actor(), start=start, end=end, program=program)
    _print(report)


@app.command("verify")
def verify_cmd(
    limit: Annotated[int, typer.Option(min=1, help="Differences to print")] = 50,
) -> None:
    """Recompute every account, lot and operation from the entries; exit 1 on any
    difference."""
    from patron.db import UnitOfWork, get_engine
    from patron.storedvalue.verify import verify

    with UnitOfWork(get_engine(), readonly=True) as uow:
        report = verify(uow.c)
    diffs = report["differences"]
    _print({"checked": report["checked"], "checks": report["checks"],
            "differences": len(diffs), "first": diffs[:limit]})
    if diffs:
        raise typer.Exit(1)


@app.command("expire")
def expire_cmd(
    now: Annotated[str | None, typer.Option(help="Run as of this time (ISO; default now)")] = None,
) -> None:
    """Release every hold past its expiry and expire bonus past its date (writes on a card do
    the same for that card first; run this every few minutes so the figures stay current)."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.cli import _when
    from patron.storedvalue.service import run_due

    with UnitOfWork(get_engine()) as uow:
        stats = run_due(uow=uow, actor=_actor(), now=_when(now, "--now"))
    _print(stats)
