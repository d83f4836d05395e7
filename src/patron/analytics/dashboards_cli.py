"""``patron analytics dashboard`` (a breakdown by store, region, brand, channel, category, day,
week or month), ``patron analytics cohorts`` and ``patron analytics dashboards-refresh``.

Bad input exits 2 with the message in the user's language (``PATRON_LANG``)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Any

import typer

from patron.errors import FieldError, PatronError, ValidationFailed
from patron.i18n import t

COLUMNS = ("key", "net_sales", "orders", "customers", "new_customers", "returning_customers",
           "repurchase_rate", "aov", "frequency")


def _fail(exc: PatronError) -> None:
    from patron.cli import fail, lang

    message = t(exc.message, lang(), **exc.params)
    for f in exc.fields:
        message += f"\n  {f.field}: {t(f.reason, lang(), **f.params)}"
    fail(message)


def _date(value: str | None, field_name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(fields=[FieldError(field_name, "date_parsing")]) from exc


def _as_of(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    from zoneinfo import ZoneInfo

    from patron.config import get_settings

    zone = ZoneInfo(get_settings().default_timezone)
    try:
        if len(value) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(23, 59, 59), zone)
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(fields=[FieldError("as_of", "date_parsing")]) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any, share: bool = False) -> str:
    if value is None:
        return "–"
    if share:
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _table(result: dict[str, Any]) -> None:
    from rich.table import Table

    from patron.cli import console, lang

    title = (f"{result['by']} {result['from']} .. {result['to']}  ({result['scope']}"
             + (f", {result['channel']}" if result.get("channel") else "")
             + (f", {result['member']}" if result.get("member") else "") + ")")
    table = Table(title=title)
    widest = max([len(str(r["key"])) for r in result["rows"]] + [5])
    for name in COLUMNS:
        if name == "key":
            table.add_column(t(f"dashboard.metric.{name}", lang()), no_wrap=True,
                             min_width=widest)
        else:
            table.add_column(t(f"dashboard.metric.{name}", lang()), justify="right")
    for row in result["rows"]:
        table.add_row(*[_cell(row.get(n), n == "repurchase_rate") for n in COLUMNS])
    total = result["total"]
    table.add_row(t("dashboard.total", lang()),
                  *[_cell(total.get(n), n == "repurchase_rate") for n in COLUMNS[1:]],
                  style="bold")
    console.print(table)
    if result.get("refreshed_at") is None:
        console.print(t("dashboard.never_refreshed", lang()))


def dashboard_command(
    by: Annotated[str, typer.Option(
        help="store | region | brand | channel | category | day | week | month")],
    date_from: Annotated[str, typer.Option("--from", help="First local date (YYYY-MM-DD)")],
    date_to: Annotated[str, typer.Option("--to", help="Last local date (YYYY-MM-DD)")],
    scope: Annotated[str, typer.Option(
        help="overall, store:CODE, region:CODE or brand:CODE")] = "overall",
    channel: Annotated[str | None, typer.Option(help="Only this channel (code)")] = None,
    member: Annotated[str | None, typer.Option(
        help="member | non_member | guest")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Sales, orders, customers, new and returning customers, repurchase rate, average order
    value and frequency per store, region, brand, channel, category, day, week or month."""
    from patron.analytics.dashboards_service import breakdown
    from patron.cli import _cli_actor
    from patron.db import UnitOfWork, get_engine

    try:
        start, end = _date(date_from, "from"), _date(date_to, "to")
        with UnitOfWork(get_engine(), readonly=True) as uow:
            result = breakdown(uow.c, actor=_cli_actor(), by=by, date_from=start,
                               date_to=end, scope=scope, channel=channel, member=member)
    except PatronError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(_plain(result), ensure_ascii=False, indent=2))
    else:
        _table(result)


def cohorts_command(
    month_from: Annotated[str | None, typer.Option("--from", help="First cohort (YYYY-MM)")] = None,
    month_to: Annotated[str | None, typer.Option("--to", help="Last cohort (YYYY-MM)")] = None,
    months: Annotated[int, typer.Option(help="Months of retention after each cohort")] = 12,
    scope: Annotated[str, typer.Option(
        help="overall, store:CODE, region:CODE or brand:CODE")] = "overall",
    channel: Annotated[str | None, typer.Option(help="Only this channel (code)")] = None,
    member: Annotated[str | None, typer.Option(help="member | non_member")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Monthly acquisition cohorts and the share of each buying again in the months after."""
    from patron.analytics.dashboards_service import cohorts
    from patron.cli import _cli_actor, console
    from patron.db import UnitOfWork, get_engine

    try:
        with UnitOfWork(get_engine(), readonly=True) as uow:
            result = cohorts(uow.c, actor=_cli_actor(), scope=scope, channel=channel,
                             member=member, month_from=month_from, month_to=month_to,
                             horizon=months)
    except PatronError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(_plain(result), ensure_ascii=False, indent=2))
        return
    from rich.table import Table

    width = max((len(c["retention"]) for c in result["cohorts"]), default=0)
    table = Table(title=f"{result['from']} .. {result['to']} ({result['scope']})")
    table.add_column("cohort", no_wrap=True, min_width=7)
    table.add_column("customers", justify="right")
    for k in range(1, width):
        table.add_column(f"+{k}", justify="right")
    for c in result["cohorts"]:
        table.add_row(c["cohort"], str(c["customers"]),
                      *[_cell(p["share"], True) for p in c["retention"][1:]])
    console.print(table)


def refresh_command(
    full: Annotated[bool, typer.Option("--full", help="Rebuild everything")] = False,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Date or ISO time (default now)")
                     ] = None,
) -> None:
    """Bring the dashboard rollups up to date (incrementally unless --full); prints JSON."""
    from patron.analytics.dashboards_service import refresh_dashboards
    from patron.cli import _cli_actor
    from patron.db import UnitOfWork, get_engine

    try:
        moment = _as_of(as_of)
        with UnitOfWork(get_engine()) as uow:
            result = refresh_dashboards(uow=uow, actor=_cli_actor(), as_of=moment, full=full)
    except PatronError as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(_plain(result), ensure_ascii=False, indent=2))


def add_commands(analytics_app: typer.Typer) -> None:
    analytics_app.command("dashboard")(dashboard_command)
    analytics_app.command("cohorts")(cohorts_command)
    analytics_app.command("dashboards-refresh")(refresh_command)
