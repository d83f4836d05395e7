"""``patron campaigns ...``: list, one sending round, preview."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

campaigns_app = typer.Typer(help="Campaigns: sends to a segment.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(campaigns_app, name="campaigns")


@campaigns_app.command("list")
def list_cmd() -> None:
    """Every campaign: status, audience, recipients per state, spent."""
    from patron.campaigns import service
    from patron.cli import _cli_actor
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = service.list_campaigns(uow.c, actor=_cli_actor())
    table = Table("code", "status", "audience", "recipients", "spent")
    for c in items:
        counts = ", ".join(f"{k} {v}" for k, v in c["recipient_states"].items() if v)
        table.add_row(c["code"], c["status"], str(c["audience_size"] or "-"), counts or "-",
                      f"{c['spent_messages']} msg, ¥{c['spent_value']}")
    console.print(table)


@campaigns_app.command("run")
def run_cmd(
    now: Annotated[str | None, typer.Option(help="Run as of this time (ISO with zone)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000000, help="Recipients per round")] = 1000,
) -> None:
    """One round: start campaigns whose time has come, send to pending recipients within the
    budget. Safe with other processes doing the same."""
    from patron.automations.cli import _now
    from patron.campaigns.engine import run_due
    from patron.db import get_engine

    stats = run_due(engine=get_engine(), now=_now(now), limit=limit)
    console.print(", ".join(f"{k} {v}" for k, v in stats.as_dict().items()))


@campaigns_app.command("preview")
def preview_cmd(code: str, sample: Annotated[int, typer.Option(min=0, max=100)] = 5) -> None:
    """The audience, its arms, the estimated cost and rendered messages; writes nothing."""
    from patron.campaigns import service
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine(), readonly=True) as uow:
        print_json(service.preview(uow.c, actor=_cli_actor(), code=code, sample=sample))
