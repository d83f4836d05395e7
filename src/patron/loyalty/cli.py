"""``patron loyalty ...`` (the scheduled jobs) and ``patron ledger verify``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.console import Console

loyalty_app = typer.Typer(help="Loyalty: expiry and tier review jobs.", no_args_is_help=True)
ledger_app = typer.Typer(help="The points ledger: verification.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    from patron.loyalty import reports_cli

    reports_cli.register(loyalty_app)  # reports and the simulation (docs/loyalty-reports.md)
    app.add_typer(loyalty_app, name="loyalty")
    app.add_typer(ledger_app, name="ledger")


def _when(value: str | None, option: str) -> dt.datetime | None:
    from patron.cli import fail, lang
    from patron.i18n import t

    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {t('datetime_parsing', lang())}")
        raise
    if parsed.tzinfo is None:
        from zoneinfo import ZoneInfo

        from patron.config import get_settings

        parsed = parsed.replace(tzinfo=ZoneInfo(get_settings().default_timezone))
    return parsed.astimezone(dt.UTC)


def _actor():  # type: ignore[no-untyped-def]
    from patron.cli import _cli_actor

    return _cli_actor()


@loyalty_app.command("expire")
def expire(
    now: Annotated[str | None, typer.Option(help="Run as of this time (ISO; default now)")] = None,
) -> None:
    """Daily job: release expired holds, make pending points available after the return
    window, expire lots, end manual tier grants, write expiry reminders to the outbox."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.jobs import run_due

    with UnitOfWork(get_engine()) as uow:
        stats = run_due(uow=uow, actor=_actor(), now=_when(now, "--now"))
    console.print_json(json.dumps(stats))


@loyalty_app.command("review-tiers")
def review_tiers_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Review date (ISO; default now)")
                     ] = None,
    program: Annotated[str | None, typer.Option(help="Only this program (code)")] = None,
) -> None:
    """Periodic tier review: downgrades after the grace period (at most the program's levels),
    upgrades any member that qualifies higher."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.jobs import review_tiers

    with UnitOfWork(get_engine()) as uow:
        stats = review_tiers(uow=uow, actor=_actor(), as_of=_when(as_of, "--as-of"),
                             program_code=program)
    console.print_json(json.dumps(stats))


@ledger_app.command("verify")
def verify_cmd(
    limit: Annotated[int, typer.Option(min=1, help="Differences to print")] = 50,
) -> None:
    """Recompute every balance, lot and tier from the entries; exit 1 on any difference."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.verify import verify

    with UnitOfWork(get_engine(), readonly=True) as uow:
        report = verify(uow.c)
    diffs = report["differences"]
    console.print_json(json.dumps({"checked": report["checked"], "checks": report["checks"],
                                   "differences": len(diffs),
                                   "first": diffs[:limit]}, default=str))
    if diffs:
        raise typer.Exit(1)
