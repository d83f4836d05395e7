"""``patron privacy ...``: data-subject requests, the copy of a person's data, erasure and the
retention job (for cron)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

privacy_app = typer.Typer(help="Personal-information rights: requests, copies, erasure, "
                          "retention.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(privacy_app, name="privacy")


def _run(work):  # type: ignore[no-untyped-def]
    from patron.cli import _cli_actor, fail, lang
    from patron.db import UnitOfWork, get_engine
    from patron.errors import PatronError
    from patron.i18n import t

    try:
        with UnitOfWork(get_engine()) as uow:
            return work(uow, _cli_actor())
    except PatronError as exc:
        fail(t(exc.message, lang(), **exc.params))
        raise


def _print(data) -> None:  # type: ignore[no-untyped-def]
    from fastapi.encoders import jsonable_encoder

    console.print_json(json.dumps(jsonable_encoder(data), ensure_ascii=False, default=str))


@privacy_app.command("requests")
def requests_cmd(
    overdue: Annotated[bool, typer.Option(help="Only open requests past their deadline")] = False,
    status: Annotated[str | None, typer.Option(help="open, done or refused")] = None,
) -> None:
    """List data-subject requests, open ones first by deadline."""
    from patron.privacy import service

    _print(_run(lambda uow, actor: service.list_requests(uow.c, actor=actor, status=status,
                                                         overdue=overdue)))


@privacy_app.command("request")
def request_cmd(
    customer_id: Annotated[int, typer.Argument(help="The customer's id")],
    kind: Annotated[str, typer.Option(help="access, correction or deletion")],
    source: Annotated[str, typer.Option(help="store, phone, email, app, web, api or letter")],
    note: Annotated[str | None, typer.Option(help="What the person asked")] = None,
) -> None:
    """Record a person's request; prints it with its deadline."""
    from patron.privacy import service

    _print(_run(lambda uow, actor: service.create_request(
        uow=uow, actor=actor, customer_id=customer_id, kind=kind, source=source, note=note)))


@privacy_app.command("copy")
def copy_cmd(
    request_id: Annotated[int, typer.Argument(help="The access request to answer")],
    out: Annotated[Path, typer.Option(help="Write the copy (JSON) to this file")],
) -> None:
    """Answer an access request: write everything Patron holds about the person to a file."""
    from fastapi.encoders import jsonable_encoder

    from patron.privacy import service

    def work(uow, actor):  # type: ignore[no-untyped-def]
        r = service.get_request(uow.c, actor=actor, request_id=request_id)
        return service.person_copy(uow=uow, actor=actor, customer_id=r["customer_id"],
                                   request_id=request_id)

    data = _run(work)
    out.write_text(json.dumps(jsonable_encoder(data), ensure_ascii=False, indent=1),
                   encoding="utf-8")
    _print({"file": str(out), "counts": data["counts"]})


@privacy_app.command("erase")
def erase_cmd(
    request_id: Annotated[int, typer.Argument(help="The deletion request to answer")],
) -> None:
    """Answer a deletion request: anonymise the person, keeping order amounts, ledgers and
    reports."""
    from patron.privacy import service

    _print(_run(lambda uow, actor: service.erase(uow=uow, actor=actor,
                                                 request_id=request_id)))


@privacy_app.command("retention")
def retention_cmd(
    dry_run: Annotated[bool, typer.Option(help="Count, change nothing")] = False,
    inactive_days: Annotated[int | None, typer.Option(
        help="Inactivity period (default PATRON_RETENTION_INACTIVE_DAYS)")] = None,
) -> None:
    """Scheduled job: anonymise customers inactive longer than the retention period; prints
    the run's report."""
    from patron.privacy import service

    _print(_run(lambda uow, actor: service.retention_run(
        uow=uow, actor=actor, dry_run=dry_run, inactive_days=inactive_days)))
