"""``patron tags ...``: list tags and refresh rule tags from the shell."""

from __future__ import annotations

from typing import Annotated

import typer

tags_app = typer.Typer(help="Customer tags: counts and rule tags.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tags_app, name="tags")


@tags_app.command("list")
def list_cmd() -> None:
    """Every tag with its kind and how many customers carry it, as JSON."""
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine
    from patron.tags import service

    with UnitOfWork(get_engine(), readonly=True) as uow:
        print_json([{k: v for k, v in t.items() if k != "definition"}
                    for t in service.list_tags(uow.c, actor=_cli_actor())])


@tags_app.command("refresh")
def refresh(
    code: Annotated[str | None, typer.Option(help="Only this rule tag")] = None,
) -> None:
    """Evaluate rule tags again for every customer (the nightly analytics refresh does it too);
    prints how many customers each gained and lost."""
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine
    from patron.tags import service

    with UnitOfWork(get_engine()) as uow:
        print_json(service.refresh_rule_tags(uow=uow, actor=_cli_actor(), code=code))
