"""``patron analytics rfm`` and ``patron analytics lifecycle``: refresh now, print a summary as
JSON (what a cron job or the scheduler runs, and what an analyst pipes into jq)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Any, NoReturn

import typer


def _json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    return json.dumps(data, ensure_ascii=False, indent=2, default=default)


def _as_of(value: str | None) -> dt.datetime | None:
    """An ISO date or date-time; a date means the end of that day in the default time zone,
    a time without an offset is local to the default time zone."""
    if not value:
        return None
    from zoneinfo import ZoneInfo

    from patron.config import get_settings

    zone = ZoneInfo(get_settings().default_timezone)
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(23, 59, 59), zone)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use YYYY-MM-DD or an ISO date-time",
                                 param_hint="--as-of") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


AsOf = Annotated[str | None, typer.Option("--as-of", help="Date or ISO time (default now)")]


def _fail(exc: Exception) -> NoReturn:
    from patron.errors import PatronError
    from patron.i18n import t

    if isinstance(exc, PatronError):
        reasons = "; ".join(f"{f.field}: {t(f.reason, 'en', **f.params)}" for f in exc.fields)
        typer.echo(f"error: {t(exc.message, 'en', **exc.params)}"
                   + (f" ({reasons})" if reasons else ""), err=True)
        raise typer.Exit(2)
    raise exc


def add_commands(analytics_app: typer.Typer) -> None:
    @analytics_app.command("rfm")
    def rfm(scope: Annotated[str, typer.Option(
                help="overall, store:CODE, region:CODE, brand:CODE, or all")] = "all",
            as_of: AsOf = None) -> None:
        """Recompute RFM scores and segments, then print each scope's segment counts."""
        from patron.analytics import service
        from patron.db import UnitOfWork, get_engine
        from patron.security.model import SYSTEM

        moment = _as_of(as_of)
        try:
            with UnitOfWork(get_engine()) as uow:
                result = service.refresh_rfm(uow=uow, actor=SYSTEM, as_of=moment, scope=scope)
                summaries = {key: {s["segment"]: s["customers"] for s in service.rfm_summary(
                    uow.c, actor=SYSTEM, scope=key)["segments"]} for key in result["scopes"]}
        except Exception as exc:  # noqa: BLE001 - Patron errors become a message, others raise
            _fail(exc)
        typer.echo(_json({"as_of": result["as_of"], "customers": result["scopes"],
                          "segments": summaries}))

    @analytics_app.command("lifecycle")
    def lifecycle(as_of: AsOf = None) -> None:
        """Recompute lifecycle stages, record the changes, print the counts per stage."""
        from patron.analytics import service
        from patron.db import UnitOfWork, get_engine
        from patron.security.model import SYSTEM

        moment = _as_of(as_of)
        try:
            with UnitOfWork(get_engine()) as uow:
                result = service.refresh_lifecycle(uow=uow, actor=SYSTEM, as_of=moment)
        except Exception as exc:  # noqa: BLE001
            _fail(exc)
        typer.echo(_json(result))
