"""``patron analytics churn-evaluate`` (fit, score and judge against a holdout period) and
``patron analytics churn-score`` (refresh every customer's churn score)."""

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
            FieldError(field, "churn_bad_date", {"value": value})]) from exc


def _fail(exc: PatronError) -> None:
    from patron.cli import fail, lang

    message = t(exc.message, lang(), **exc.params)
    for f in exc.fields:
        message += f"\n  {f.field}: {t(f.reason, lang(), **f.params)}"
    fail(message)


def churn_evaluate_command(
    cutoff: Annotated[str, typer.Option(
        "--cutoff", help="Local day (YYYY-MM-DD) as of which customers are scored and judged")],
    horizon_days: Annotated[int, typer.Option(
        "--horizon-days", help="Churned = no purchase within this many days")] = 90,
) -> None:
    """Fit the churn model as of cutoff - horizon, score as of the cutoff and print AUC, Brier
    score and calibration on what happened after it, for the model and the naive rule, as
    JSON."""
    from patron.analytics.churn_service import evaluate_churn
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        day = _parse_date(cutoff, "cutoff")
        assert day is not None
        with UnitOfWork(get_engine()) as uow:
            result = evaluate_churn(uow=uow, actor=_cli_actor(), cutoff=day,
                                    horizon_days=horizon_days)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def churn_score_command(
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Score as of this local day (default: today)")] = None,
    horizon_days: Annotated[int, typer.Option(
        "--horizon-days", help="Churned = no purchase within this many days")] = 90,
) -> None:
    """Refit the churn model and replace every customer's churn score; print the run as
    JSON."""
    from patron.analytics.churn_service import refresh_churn_scores
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        day = _parse_date(as_of, "as_of")
        with UnitOfWork(get_engine()) as uow:
            result = refresh_churn_scores(uow=uow, actor=_cli_actor(), as_of=day,
                                          horizon_days=horizon_days)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def add_commands(analytics_app: typer.Typer) -> None:
    analytics_app.command("churn-evaluate")(churn_evaluate_command)
    analytics_app.command("churn-score")(churn_score_command)
