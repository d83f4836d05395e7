"""``patron analytics rules`` (association rules), ``patron analytics recommend`` (every
customer's next-best products) and ``patron analytics recommend-evaluate`` (hit rate on a
holdout against a popularity baseline)."""

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
            FieldError(field, "crosssell_bad_date", {"value": value})]) from exc


def _fail(exc: PatronError) -> None:
    from patron.cli import fail, lang

    message = t(exc.message, lang(), **exc.params)
    for f in exc.fields:
        message += f"\n  {f.field}: {t(f.reason, lang(), **f.params)}"
    fail(message)


def rules_command(
    level: Annotated[str, typer.Option(help="Items to relate: category | sku")] = "category",
    store: Annotated[str | None, typer.Option(
        help="Store code (default: every store's orders)")] = None,
    min_support: Annotated[float, typer.Option(
        "--min-support", help="Least share of orders holding both items")] = 0.01,
    min_confidence: Annotated[float, typer.Option(
        "--min-confidence", help="Least share of the antecedent's orders holding the "
                                 "consequent")] = 0.1,
    top: Annotated[int, typer.Option(help="How many rules to print")] = 20,
) -> None:
    """Recount the baskets and replace the association rules (support, confidence, lift) of
    one scope and level; print the strongest as JSON."""
    from patron.analytics.crosssell_service import refresh_rules
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        with UnitOfWork(get_engine()) as uow:
            result = refresh_rules(uow=uow, actor=_cli_actor(), level=level, store=store,
                                   min_support=min_support, min_confidence=min_confidence,
                                   top=top)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def recommend_command(
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Learn from orders up to this local day (default: today)")] = None,
) -> None:
    """Replace every customer's top-10 next-best products; print a summary as JSON."""
    from patron.analytics.crosssell_service import refresh_recommendations
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        day = _parse_date(as_of, "as_of")
        with UnitOfWork(get_engine()) as uow:
            result = refresh_recommendations(uow=uow, actor=_cli_actor(), as_of=day)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def evaluate_command(
    cutoff: Annotated[str, typer.Option(
        help="First local day (YYYY-MM-DD) of the holdout; learning uses the orders before")],
    holdout_days: Annotated[int, typer.Option(
        "--holdout-days", help="Length of the holdout period in days")] = 60,
    k: Annotated[int, typer.Option(help="Recommendations checked per customer")] = 5,
) -> None:
    """Hit rate at k of the recommendations against the most popular products on the
    customers who bought in the holdout; print and store the run."""
    from patron.analytics.crosssell_service import evaluate_recommendations
    from patron.cli import _cli_actor, print_json
    from patron.db import UnitOfWork, get_engine

    try:
        day = _parse_date(cutoff, "cutoff")
        assert day is not None
        with UnitOfWork(get_engine()) as uow:
            result = evaluate_recommendations(uow=uow, actor=_cli_actor(), cutoff=day,
                                              holdout_days=holdout_days, k=k)
    except PatronError as exc:
        _fail(exc)
        return
    print_json(result)


def add_commands(analytics_app: typer.Typer) -> None:
    analytics_app.command("rules")(rules_command)
    analytics_app.command("recommend")(recommend_command)
    analytics_app.command("recommend-evaluate")(evaluate_command)
