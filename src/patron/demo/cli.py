"""``patron generate`` (synthetic data of any size) and ``patron demo`` (the README's first
command): parse options, call the demo services, print what happened."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer

DEMO_URL_HOST = "127.0.0.1"


def _parse_day(value: str | None, option: str) -> dt.date | None:
    from patron.cli import fail, lang
    from patron.i18n import t

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(t("demo_bad_date", lang(), option=option, value=value))
        raise  # unreachable: fail() exits


def generate(
    customers: Annotated[int | None, typer.Option(min=0, help="Simulated people")] = None,
    orders: Annotated[int | None, typer.Option(min=0, help="About this many orders")] = None,
    seed: Annotated[int, typer.Option(min=0, help="The same seed gives the same data")] = 42,
    start: Annotated[str | None, typer.Option(help="First day, YYYY-MM-DD "
                                                   "(default: 18 months before the end)")] = None,
    end: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default: today; "
                                                 "a window reaching today ends now)")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the canonical order file (CSV)")] = None,
    returns_out: Annotated[Path | None, typer.Option(
        help="Where refunds go in CSV mode (default: returns.csv next to --out)")] = None,
    to_db: Annotated[bool, typer.Option("--to-db", help="Record straight into the database")
                     ] = False,
    seed_org: Annotated[bool | None, typer.Option(
        help="Create the demo brands, stores and products first (default: with --to-db)")
                        ] = None,
) -> None:
    """Generate realistic orders: to a CSV file in the canonical format, or into the database."""
    from rich.progress import Progress

    from patron.cli import console, fail, lang
    from patron.config import get_settings
    from patron.db import UnitOfWork, get_engine, utcnow
    from patron.demo import service
    from patron.demo.generator import plan, window
    from patron.demo.seed import seed_organisation
    from patron.i18n import t
    from patron.security.model import SYSTEM

    if (out is None) == (not to_db):
        fail(t("demo_out_or_db", lang()))
    now = utcnow()
    today = now.astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    last = _parse_day(end, "--end") or today
    first = _parse_day(start, "--start") or service.months_before(last, service.DEMO_MONTHS)
    if first > last:
        fail(t("demo_start_after_end", lang()))
    begin, finish = window(first, last, now=now)
    if finish <= begin:
        fail(t("demo_start_after_end", lang()))
    config = plan(start=begin, end=finish, customers=customers, orders=orders, seed=seed)
    console.print(t("demo_generating", lang(), customers=config.customers, seed=config.seed,
                    start=first.isoformat(), end=last.isoformat()))
    started = time.perf_counter()
    if out is not None:
        returns_path = returns_out or out.with_name("returns.csv")
        counts = service.write_csv(config, out, returns_path)
        if seed_org:
            service.prepare_database(get_settings().effective_database_url)
            with UnitOfWork(get_engine()) as uow:
                seed_organisation(uow=uow, actor=SYSTEM)
        console.print(t("demo_csv_written", lang(), orders=counts[0], rows=counts[1],
                        path=str(out), returns=counts[2], returns_path=str(returns_path),
                        seconds=f"{time.perf_counter() - started:.1f}"))
        return

    url = get_settings().effective_database_url
    service.prepare_database(url)
    with UnitOfWork(get_engine(url)) as uow:
        if seed_org is not False:
            seed_organisation(uow=uow, actor=SYSTEM)
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(t("demo_recording", lang()), total=orders)
            report = service.load_generated(
                uow=uow, actor=SYSTEM, config=config,
                progress=lambda r: bar.update(task, completed=r.received))
    _print_report(report)
    if report.rejected or report.conflicts:
        raise typer.Exit(1)


def _print_report(report: object) -> None:
    from patron.cli import console, err_console, lang
    from patron.demo.service import LoadReport
    from patron.i18n import t

    assert isinstance(report, LoadReport)
    console.print(t("demo_loaded", lang(), created=report.created,
                    duplicates=report.duplicates, returns=report.returns,
                    seconds=f"{report.seconds:.1f}"))
    if report.conflicts or report.rejected:
        err_console.print(t("demo_problems", lang(), conflicts=report.conflicts,
                            rejected=report.rejected))
        for problem in report.problems:
            err_console.print(problem)


def demo(
    host: Annotated[str, typer.Option(help="Address to serve on")] = DEMO_URL_HOST,
    port: Annotated[int, typer.Option(help="Port to serve on")] = 8000,
    serve: Annotated[bool, typer.Option(help="Serve the web UI afterwards")] = True,
    customers: Annotated[int, typer.Option(min=1, help="Simulated people")] = 3000,
    seed: Annotated[int, typer.Option(min=0)] = 42,
) -> None:
    """Create the database, load demo data once (brands, stores, users, ~18 months of orders)
    and serve the web UI."""
    from rich.progress import Progress

    from patron.cli import console, lang
    from patron.config import get_settings
    from patron.demo import service
    from patron.i18n import t

    url = get_settings().effective_database_url
    console.print(t("demo_database", lang(), url=url.split("@")[-1]))
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(t("demo_recording", lang()),
                            total=round(customers * service.DEMO_ORDERS_PER_CUSTOMER))
        result = service.run_demo(url=url, customers=customers, seed=seed,
                                  progress=lambda r: bar.update(task, completed=r.received))
    if result.loaded and result.report is not None:
        _print_report(result.report)
        console.print(t("demo_loyalty_loaded", lang(), members=result.members,
                        coupons=result.coupons, topups=result.topups))
        console.print(t("demo_ready_in", lang(), seconds=f"{result.seconds:.1f}"))
        if result.report.rejected or result.report.conflicts:
            raise typer.Exit(1)
    else:
        console.print(t("demo_data_exists", lang()))
    shown_host = DEMO_URL_HOST if host in ("0.0.0.0", "::") else host  # noqa: S104
    console.print(t("demo_open", lang(), url=f"http://{shown_host}:{port}"))
    console.print(t("demo_login", lang(), username=service.DEMO_USERS[0][0],
                    password=service.DEMO_PASSWORD))
    console.print(t("demo_other_users", lang(), users=", ".join(
        f"{u} ({r})" for u, r, _d, _s in service.DEMO_USERS[1:]), store=service.DEMO_MANAGER_STORE))
    if result.member_phone:
        console.print(t("demo_member_login", lang(), url=f"http://{shown_host}:{port}",
                        phone=result.member_phone))
    if serve:
        import uvicorn

        uvicorn.run("patron.app:create_app", factory=True, host=host, port=port,
                    log_level="info")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("demo")(demo)


__all__ = ["register"]
