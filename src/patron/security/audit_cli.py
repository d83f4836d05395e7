"""``patron audit verify``: check the audit log's hash chain."""

from __future__ import annotations

import typer

audit_app = typer.Typer(help="The audit log: verify its hash chain.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def verify_cmd() -> None:
    """Check every audit entry against its hash and the previous one; print the first broken
    link and exit 1 if there is one. Prints the head (last id and hash) to note elsewhere."""
    from patron.cli import console, print_json
    from patron.db import UnitOfWork, get_engine
    from patron.security.audit import verify

    with UnitOfWork(get_engine(), readonly=True) as uow:
        report = verify(uow.c)
    print_json({"ok": report.ok, "entries": report.entries, "head_id": report.head_id,
                "head_hash": report.head_hash, "broken_at": report.broken_at,
                "reason": report.reason})
    if not report.ok:
        console.print(f"audit chain broken at entry {report.broken_at}: {report.reason}")
        raise typer.Exit(1)
