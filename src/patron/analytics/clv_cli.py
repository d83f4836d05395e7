"""``patron analytics clv`` (fit and evaluate against a holdout) and ``patron analytics
predict`` (refresh every customer's predictions)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from patron.errors import FieldError, PatronError, ValidationFailed
from patron.i18n import t


def _parse_date(value: str | None, field: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(fields=[
            FieldError(field, "clv_bad_date", {"value": value})]) from exc


def _fail(exc: PatronError) -> None:
    from patron.cli import fail, lang

    message = t(exc.message, lang(), **exc.params)
    for f in exc.fields:
        message += f"\n  {f.field}: {t(f.reason, lang(), **f.params)}"
    fail(message)


def clv_command(
    calibration_end: Annotated[str, typer.Option(
        "--calibration-end", help="Last local day (YYYY-MM-DD) of the fitting period")],
    period: Annotated[str, typer.Option(help="Time unit of the parameters: day | week")] = "week",
    holdout_end: Annotated[str | None, typer.Option(
        "--holdout-end", help="Last day compared with the predictions (default: the last day "
                              "with a purchase)")] = None,
) -> None:
    """Fit BG/NBD and Gamma-Gamma on purchases up to a date; print the parameters and the
    holdout accuracy as JSON."""
    from patron.analytics.clv_service import evaluate_clv
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        end = _parse_date(calibration_end, "calibration_end")
        assert end is not None
        holdout = _parse_date(holdout_end, "holdout_end")
        with UnitOfWork(get_engine()) as uow:
            result = evaluate_clv(uow=uow, actor=_cli_actor(), calibration_end=end,
                                  period=period, holdout_end=holdout)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def predict_command(
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Fit on purchases up to this local day (default: today)")] = None,
    period: Annotated[str, typer.Option(help="Time unit of the parameters: day | week")] = "week",
    monthly_discount: Annotated[float, typer.Option(
        "--monthly-discount", help="Discount rate per month for the 12-month CLV")] = 0.01,
) -> None:
    """Refit and replace every customer's predictions (probability active, expected purchases
    in 30/90 days, next purchase date, expected spend, 12-month CLV); print the run as JSON."""
    from patron.analytics.clv_service import refresh_predictions
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        day = _parse_date(as_of, "as_of")
        with UnitOfWork(get_engine()) as uow:
            result = refresh_predictions(uow=uow, actor=_cli_actor(), as_of=day, period=period,
                                         monthly_discount=monthly_discount)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def add_commands(analytics_app: typer.Typer) -> None:
    analytics_app.command("clv")(clv_command)
    analytics_app.command("predict")(predict_command)
