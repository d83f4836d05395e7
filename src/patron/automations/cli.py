"""``patron automations ...``: list, one round or a worker, dry run."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

automations_app = typer.Typer(help="Automations: triggers, conditions, steps.",
                              no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(automations_app, name="automations")


def _now(value: str | None) -> dt.datetime | None:
    from patron.cli import fail

    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"--now: not an ISO time: {value}")
        raise
    if parsed.tzinfo is None:
        fail("--now: give a time zone (2026-11-25T10:00+08:00)")
    return parsed.astimezone(dt.UTC)


@automations_app.command("list")
def list_cmd() -> None:
    """Every automation: status, trigger, entries per state."""
    from patron.automations import service
    from patron.cli import _cli_actor
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = service.list_automations(uow.c, actor=_cli_actor())
    table = Table("code", "status", "trigger", "version", "entries")
    for a in items:
        counts = ", ".join(f"{k} {v}" for k, v in a["entries"].items() if v)
        table.add_row(a["code"], a["status"], a["flow"]["trigger"], str(a["version"]),
                      counts or "-")
    console.print(table)


@automations_app.command("run")
def run_cmd(
    now: Annotated[str | None, typer.Option(help="Run as of this time (ISO with zone)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="Entries per round")] = 500,
) -> None:
    """One round: look for triggers, admit entries, run due steps. Safe with other processes
    doing the same: each entry and step happens once."""
    from patron.automations.engine import run_due
    from patron.db import get_engine

    stats = run_due(engine=get_engine(), now=_now(now), limit=limit)
    console.print(", ".join(f"{k} {v}" for k, v in stats.as_dict().items()))


@automations_app.command("work")
def work(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between rounds")] = 10.0,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="Entries per round")] = 500,
) -> None:
    """Run rounds until stopped (instead of the server's thread, PATRON_AUTOMATIONS_WORKER)."""
    from patron.automations.engine import RoundStats, run_worker
    from patron.db import get_engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def show(stats: RoundStats) -> None:
        if stats.claimed or stats.triggered:
            console.print(", ".join(f"{k} {v}" for k, v in stats.as_dict().items() if v))

    try:
        run_worker(get_engine(), interval=interval, limit=limit, on_stats=show)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@automations_app.command("dry-run")
def dry_run_cmd(
    code: str,
    now: Annotated[str | None, typer.Option(help="As of this time (ISO with zone)")] = None,
    sample: Annotated[int, typer.Option(min=0, max=500)] = 5,
) -> None:
    """Who would enter today and what they would receive; writes nothing."""
    from patron.automations import service
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine(), readonly=True) as uow:
        out = service.dry_run(uow.c, actor=_cli_actor(), code=code, now=_now(now),
                              sample=sample)
    print_json(out)
