"""``patron rewards ...``: the catalog, the expiry job, the stock check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

rewards_app = typer.Typer(help="Rewards catalog (points mall).", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(rewards_app, name="rewards")


@rewards_app.command("items")
def items_cmd(
    program: Annotated[str, typer.Option(help="Program code")],
    redeemable: Annotated[bool, typer.Option(help="Only items on offer now")] = False,
) -> None:
    """List a program's catalog as JSON."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.cli import _actor
    from patron.rewards.service import list_items

    with UnitOfWork(get_engine(), readonly=True) as uow:
        out = list_items(uow.c, actor=_actor(), program_code=program,
                         redeemable_only=redeemable)
    console.print_json(json.dumps(out, default=str))


@rewards_app.command("add")
def add_cmd(
    program: Annotated[str, typer.Option(help="Program code")],
    file: Annotated[Path, typer.Argument(help="The item as JSON (see docs/rewards.md)")],
) -> None:
    """Add an item to a program's catalog from a JSON file."""
    from pydantic import ValidationError

    from patron.cli import fail
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.cli import _actor
    from patron.rewards.schemas import ItemIn
    from patron.rewards.service import create_item

    try:
        data = ItemIn.model_validate_json(file.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as exc:
        fail(str(exc))
        raise
    with UnitOfWork(get_engine()) as uow:
        out = create_item(uow=uow, actor=_actor(), program_code=program, data=data)
    console.print_json(json.dumps(out, default=str))


@rewards_app.command("expire")
def expire_cmd(
    now: Annotated[str | None, typer.Option(help="Run as of this time (ISO; default now)")] = None,
) -> None:
    """Give back the points and stock of redemptions whose hold time passed (run it every few
    minutes)."""
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.cli import _actor, _when
    from patron.rewards.service import expire_due

    with UnitOfWork(get_engine()) as uow:
        stats = expire_due(uow=uow, actor=_actor(), now=_when(now, "--now"))
    console.print_json(json.dumps(stats))


@rewards_app.command("verify")
def verify_cmd() -> None:
    """Check every item's held and sold units against its redemptions and their loyalty holds;
    exit 1 on any difference."""
    from patron.db import UnitOfWork, get_engine
    from patron.rewards.service import verify_stock

    with UnitOfWork(get_engine(), readonly=True) as uow:
        diffs = verify_stock(uow.c)
    console.print_json(json.dumps({"differences": len(diffs), "first": diffs[:50]},
                                  default=str))
    if diffs:
        raise typer.Exit(1)
