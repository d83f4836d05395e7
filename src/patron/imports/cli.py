"""``patron import``: import order files, manage column mappings, look at past jobs.

Exit codes of ``patron import orders``: 0 every row imported (or already there), 1 the file was
imported but some rows were rejected (they are listed), 2 the file was refused or the job failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from patron.errors import PatronError, ValidationFailed
from patron.i18n import t

import_app = typer.Typer(help="Import orders from CSV or Excel files.", no_args_is_help=True)
mappings_app = typer.Typer(help="Saved column mappings for other file layouts.",
                           no_args_is_help=True)
import_app.add_typer(mappings_app, name="mappings")

SHOWN_ERRORS = 20


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


def _lang() -> str:
    from patron.cli import lang

    return lang()


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A refused input is a message in the user's language and exit code 2, no stack trace."""
    from patron.cli import fail

    try:
        yield
    except PatronError as exc:
        message = t(exc.message, _lang(), **exc.params)
        for f in exc.fields:
            message += f"\n  {f.field}: {t(f.reason, _lang(), **f.params)}"
        fail(message)


@import_app.command("orders")
def import_orders(
    file: Annotated[Path, typer.Argument(help="A .csv (UTF-8) or .xlsx file", exists=True,
                                         dir_okay=False, readable=True)],
    mapping: Annotated[str | None, typer.Option(help="Name of a saved column mapping")] = None,
    pipeline: Annotated[bool, typer.Option(
        help="Read a large file (10,000 rows or more) in a second process while the rows "
             "before are recorded: faster when a CPU core is otherwise idle")] = False,
) -> None:
    """Import orders from a file in the canonical layout or a saved mapping's layout. Safe to
    run again: orders already recorded are counted as such, never imported twice."""
    from patron.cli import console, err_console
    from patron.db import UnitOfWork, get_engine
    from patron.imports import service
    from patron.security.model import SYSTEM

    lang = _lang()
    with _clear_errors(), UnitOfWork(get_engine()) as uow:
        job_id = service.start_import(uow=uow, actor=SYSTEM, path=file, filename=file.name,
                                      mapping=mapping)
        err_console.print(t("import_started", lang, id=job_id))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task(file.name, total=None)

            def show(p: service.ImportProgress) -> None:
                bar.update(task, completed=p.rows_read,
                           total=max(p.rows_total, p.rows_read) if p.rows_total else None)

            job = service.run_import(uow=uow, actor=SYSTEM, job_id=job_id, path=file,
                                     progress=show, pipeline=pipeline)
        job = service.get_job(uow=uow, actor=SYSTEM, job_id=job_id, lang=lang,
                              errors_limit=SHOWN_ERRORS)
    console.print(t("import_summary", lang, rows_read=job.rows_read,
                    orders_created=job.orders_created, orders_duplicate=job.orders_duplicate,
                    rows_rejected=job.rows_rejected))
    if job.errors:
        table = Table(title=t("import_errors_title", lang))
        for key in ("import_row", "import_column", "import_reason", "import_value"):
            table.add_column(t(key, lang))
        for e in job.errors:
            table.add_row(str(e.row), e.column or "", e.message, e.value or "")
        console.print(table)
        if job.errors_stored > len(job.errors):
            console.print(t("import_errors_more", lang, count=job.errors_stored - len(job.errors)))
    if job.status == "failed":
        err_console.print(f"[red]{job.error_message}[/red]")
        raise typer.Exit(2)
    if job.rows_rejected:
        raise typer.Exit(1)


@import_app.command("jobs")
def list_jobs(limit: int = 20) -> None:
    """The latest import jobs."""
    from patron.cli import console
    from patron.db import UnitOfWork, get_engine
    from patron.imports import service
    from patron.security.model import SYSTEM

    lang = _lang()
    with UnitOfWork(get_engine(), readonly=True) as uow:
        jobs = service.list_jobs(uow=uow, actor=SYSTEM, limit=limit, lang=lang)
    table = Table("id", "file", "mapping", "status", "rows", "created", "duplicate", "rejected",
                  "at")
    for j in jobs:
        table.add_row(str(j.id), j.filename, j.mapping or "", t(f"import_status_{j.status}", lang),
                      str(j.rows_read), str(j.orders_created), str(j.orders_duplicate),
                      str(j.rows_rejected), j.created_at.isoformat(timespec="seconds"))
    console.print(table)


@import_app.command("show")
def show_job(job_id: int, errors: int = 100) -> None:
    """One job's counts and its rejected rows, as JSON."""
    from patron.cli import print_json
    from patron.db import UnitOfWork, get_engine
    from patron.imports import service
    from patron.security.model import SYSTEM

    with _clear_errors(), UnitOfWork(get_engine(), readonly=True) as uow:
        job = service.get_job(uow=uow, actor=SYSTEM, job_id=job_id, lang=_lang(),
                              errors_limit=errors)
    print_json(job.model_dump(mode="json"))


@mappings_app.command("list")
def list_mappings() -> None:
    """Saved column mappings, as JSON."""
    from patron.cli import print_json
    from patron.db import UnitOfWork, get_engine
    from patron.imports import service

    with UnitOfWork(get_engine(), readonly=True) as uow:
        mappings = service.list_mappings(uow=uow)
    print_json([m.model_dump(mode="json") for m in mappings])


@mappings_app.command("create")
def create_mapping(
    file: Annotated[Path, typer.Argument(help='JSON: {"name": ..., "columns": {canonical: '
                                              'source}, "defaults": {...}, "ignored": [...], '
                                              '"datetime_format": ...}', exists=True,
                                         dir_okay=False)],
    replace: Annotated[bool, typer.Option(help="Replace a mapping of the same name")] = False,
) -> None:
    """Save a column mapping from a JSON file."""
    from patron.cli import console, fail
    from patron.db import UnitOfWork, get_engine
    from patron.errors import NotFound
    from patron.imports import service
    from patron.imports.schemas import ColumnMappingCreate, ColumnMappingUpdate
    from patron.orders.service import validation_errors
    from patron.security.model import SYSTEM

    lang = _lang()
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        fail(t("import_mapping_file_invalid", lang, detail=str(exc)))
    with _clear_errors(), UnitOfWork(get_engine()) as uow:
        try:
            body = ColumnMappingCreate.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed("validation_failed", fields=validation_errors(exc)) from exc
        existing = None
        if replace:
            try:
                existing = service.get_mapping(uow=uow, name=body.name)
            except NotFound:
                existing = None
        if existing is not None:
            saved = service.update_mapping(uow=uow, actor=SYSTEM, mapping_id=existing.id,
                                           changes=ColumnMappingUpdate(**body.model_dump()))
        else:
            saved = service.create_mapping(uow=uow, actor=SYSTEM, mapping=body)
    console.print(t("import_mapping_saved", lang, name=saved.name, id=saved.id))


@mappings_app.command("delete")
def delete_mapping(name: str) -> None:
    """Delete a saved column mapping by name."""
    from patron.cli import console
    from patron.db import UnitOfWork, get_engine
    from patron.imports import service
    from patron.security.model import SYSTEM

    with _clear_errors(), UnitOfWork(get_engine()) as uow:
        found = service.get_mapping(uow=uow, name=name)
        service.delete_mapping(uow=uow, actor=SYSTEM, mapping_id=found.id)
    console.print(t("import_mapping_deleted", _lang(), name=name))
