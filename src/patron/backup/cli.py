"""``patron backup`` and ``patron restore`` (docs/backups.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_cmd)
    app.command("restore")(restore_cmd)


def backup_cmd(
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Where backups go (PATRON_BACKUP_DIR, default <data dir>/backups)")] = None,
    keep: Annotated[int | None, typer.Option(
        help="Backups to keep in the directory, the newest (PATRON_BACKUP_KEEP, default 7)",
        min=1)] = None,
    list_only: Annotated[bool, typer.Option(
        "--list", help="List the backups in the directory and the last runs; take none")] = False,
) -> None:
    """Take an encrypted, consistent backup of the database while Patron keeps running, then
    remove the oldest beyond --keep. Run it from cron, or set PATRON_BACKUP_AT."""
    from patron.backup.service import backup_files, describe, list_runs, take_backup
    from patron.cli import _cli_actor, console, print_json
    from patron.config import get_settings
    from patron.db import get_engine

    settings = get_settings()
    directory = directory or settings.effective_backup_dir
    if list_only:
        print_json({"backups": [describe(p) for p in backup_files(directory)],
                    "runs": list_runs(get_engine())})
        return
    result = take_backup(get_engine(), actor=_cli_actor(), directory=directory,
                         keep=keep or settings.backup_keep)
    console.print(str(result.path))
    for path in result.removed:
        console.print(f"removed {path.name} (more than {keep or settings.backup_keep} kept)")


def restore_cmd(
    file: Annotated[Path, typer.Argument(help="A backup file written by 'patron backup'")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Replace the configured database's content with a backup's. Stop Patron's servers and
    workers first. The file is decrypted and checked completely before the database is
    touched."""
    from patron.backup.service import restore_backup
    from patron.cli import _cli_actor, console, fail
    from patron.config import get_settings
    from patron.db import get_engine

    if not file.exists():
        fail(f"{file}: not found")
    url = get_settings().effective_database_url
    if not yes:
        typer.confirm(f"Replace everything in {url.split('@')[-1]} with {file.name}?",
                      abort=True)
    info = restore_backup(get_engine(), actor=_cli_actor(), path=file)
    console.print(f"restored {file.name} (taken {info.get('created_at')})")
