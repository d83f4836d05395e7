"""``patron segments ...``: the daily size history, counts and exports from the shell."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

segments_app = typer.Typer(help="Saved segments: daily sizes, counts, exports, the audience "
                                "replica.",
                           no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(segments_app, name="segments")


def _actor():  # type: ignore[no-untyped-def]
    from patron.cli import _cli_actor

    return _cli_actor()


@segments_app.command("snapshot")
def snapshot(
    date: Annotated[str | None, typer.Option(help="Local day to record (YYYY-MM-DD); "
                                                  "default today")] = None,
) -> None:
    """Record every saved segment's size and every tag's count for the day (run it daily,
    e.g. from cron after the nightly analytics refresh; running it again replaces the day)."""
    from patron.cli import print_json
    from patron.db import UnitOfWork, get_engine
    from patron.segments import service

    day = dt.date.fromisoformat(date) if date else None
    with UnitOfWork(get_engine()) as uow:
        print_json(service.snapshot_sizes(uow=uow, actor=_actor(), day=day))


@segments_app.command("list")
def list_cmd() -> None:
    """Saved segments with their last recorded size, as JSON."""
    from patron.cli import print_json
    from patron.db import UnitOfWork, get_engine
    from patron.segments import service

    with UnitOfWork(get_engine(), readonly=True) as uow:
        print_json(service.list_segments(uow.c, actor=_actor()))


@segments_app.command("count")
def count_cmd(
    file: Annotated[Path, typer.Argument(help="A segment definition as JSON")],
    sample: Annotated[int, typer.Option(min=0, max=100, help="Also show N members")] = 0,
) -> None:
    """Check a definition and count the customers it selects now (and a masked sample)."""
    from patron.cli import print_json
    from patron.db import UnitOfWork, get_engine
    from patron.segments import service

    definition = json.loads(file.read_text(encoding="utf-8"))
    with UnitOfWork(get_engine(), readonly=True) as uow:
        out = service.preview(uow.c, actor=_actor(), definition=definition,
                              limit=max(sample, 1))
    if not sample:
        out.pop("sample")
    print_json(out)


@segments_app.command("export")
def export_cmd(
    segment_id: Annotated[int, typer.Argument(help="Saved segment id")],
    fmt: Annotated[str, typer.Option("--format", help="csv | xlsx")] = "csv",
) -> None:
    """Export a saved segment's members (masked, audited); prints the file's path."""
    from patron.db import UnitOfWork, get_engine
    from patron.segments import service

    with UnitOfWork(get_engine()) as uow:
        path = service.export_members(uow=uow, actor=_actor(), segment_id=segment_id, fmt=fmt)
    typer.echo(str(path))


@segments_app.command("sync-replica")
def sync_replica_cmd(
    quiet: Annotated[bool, typer.Option(help="Print only the JSON summary")] = False,
) -> None:
    """Copy what segment conditions read into the audience replica (<data dir>/audience.duckdb)
    that the builder's live count uses; each server process also does it every
    PATRON_AUDIENCE_REPLICA_REFRESH_MINUTES."""
    from patron.cli import print_json
    from patron.db import get_engine
    from patron.segments import replica

    def say(message: str) -> None:
        if not quiet:
            typer.echo(message, err=True)

    print_json(replica.sync(get_engine(), progress=say).as_json())
