"""``patron analytics refresh``: every analytics table recomputed now, with a progress bar, the
job's result printed as JSON (what cron runs when the server's nightly schedule is off)."""

from __future__ import annotations

from typing import Annotated

import typer


def refresh_command(
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Date or ISO time the refresh is as of (default now; a date means the "
                        "end of that local day)")] = None,
) -> None:
    """Refresh RFM (every scope), lifecycle stages, CLV predictions, churn scores, cross-sell
    rules and recommendations as one job; print its result as JSON."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from patron.analytics import jobs
    from patron.analytics.segments_cli import _as_of, _json
    from patron.cli import _cli_actor, err_console, fail, lang
    from patron.db import UnitOfWork, get_engine
    from patron.errors import PatronError
    from patron.i18n import t

    moment = _as_of(as_of)
    engine = get_engine()
    actor = _cli_actor()
    try:
        with UnitOfWork(engine) as uow:
            job, created = jobs.request_refresh(uow=uow, actor=actor, trigger="cli",
                                                as_of=moment)
    except PatronError as exc:
        message = t(exc.message, lang(), **exc.params)
        for f in exc.fields:
            message += f"\n  {f.field}: {t(f.reason, lang(), **f.params)}"
        fail(message)
        return
    if not created:
        fail(t("analytics_job_already_running", lang(), id=job["id"], status=job["status"],
               step=job["step"] or "-", done=job["steps_done"], total=job["steps_total"]),
             code=1)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=False) as bar:
        task = bar.add_task(t("analytics_job_progress", lang()), total=job["steps_total"])

        def on_progress(step: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total,
                       description=f"{t('analytics_job_progress', lang())} {step}")

        result = jobs.run_job(engine, job["id"], actor, on_progress=on_progress)
    typer.echo(_json(result))
    if result["status"] != "done":
        raise typer.Exit(1)


def add_commands(analytics_app: typer.Typer) -> None:
    analytics_app.command("refresh")(refresh_command)
