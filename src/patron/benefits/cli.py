"""``patron benefits ...``: the daily birthday, anniversary and referral job; settings."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

benefits_app = typer.Typer(help="Birthday and anniversary gifts, referrals.",
                           no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(benefits_app, name="benefits")


@benefits_app.command("run")
def run_cmd(
    date: Annotated[str | None, typer.Option(
        help="Run as this local day (YYYY-MM-DD), as at its end; default today")] = None,
) -> None:
    """Daily job: birthday and anniversary gifts, referral rewards. Idempotent; safe with two
    processes running it."""
    from patron.benefits.service import run
    from patron.cli import fail, lang
    from patron.db import UnitOfWork, get_engine
    from patron.i18n import t
    from patron.loyalty.cli import _actor

    on = None
    if date is not None:
        try:
            on = dt.date.fromisoformat(date)
        except ValueError:
            fail(f"--date: {t('date_parsing', lang())}")
            raise
    with UnitOfWork(get_engine()) as uow:
        stats = run(uow=uow, actor=_actor(), on=on)
    console.print_json(json.dumps(stats))


@benefits_app.command("settings")
def settings_cmd(
    program: Annotated[str, typer.Option(help="Program code")],
    file: Annotated[Path | None, typer.Argument(
        help="New settings as JSON (see docs/benefits.md); without it, print them")] = None,
) -> None:
    """Print a program's birthday, anniversary and referral settings, or replace them."""
    from pydantic import ValidationError

    from patron.benefits.schemas import BenefitSettingsIn
    from patron.benefits.service import get_settings, put_settings
    from patron.cli import fail
    from patron.db import UnitOfWork, get_engine
    from patron.loyalty.cli import _actor

    with UnitOfWork(get_engine()) as uow:
        if file is None:
            out = get_settings(uow.c, actor=_actor(), program_code=program)
        else:
            try:
                body = BenefitSettingsIn.model_validate_json(file.read_text(encoding="utf-8"))
            except (OSError, ValidationError) as exc:
                fail(str(exc))
                raise
            out = put_settings(uow=uow, actor=_actor(), program_code=program, body=body)
    console.print_json(json.dumps(out, default=str))
