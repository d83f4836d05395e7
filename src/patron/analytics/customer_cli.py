"""``patron analytics customer ID``: everything analytics knows of one customer, as JSON: the
same readers as the customer 360 page and the API (segment and stage, predictions, churn
score, preferences, recommended products)."""

from __future__ import annotations

from typing import Annotated, Any

import typer


def customer_command(
    customer_id: Annotated[int, typer.Argument(help="The customer's id")],
) -> None:
    """Print one customer's RFM segment, lifecycle stage, predictions, churn score,
    preferences and recommended products as JSON; what has not been computed yet is null."""
    from patron.analytics.churn_service import customer_churn
    from patron.analytics.crosssell_service import recommendations_for
    from patron.analytics.predictions_api import customer_prediction
    from patron.analytics.preferences import preferences_for
    from patron.analytics.service import customer_analytics
    from patron.cli import _cli_actor, fail, lang, print_json
    from patron.db import UnitOfWork, get_engine
    from patron.errors import PatronError
    from patron.i18n import t

    actor = _cli_actor()
    try:
        with UnitOfWork(get_engine(), readonly=True) as uow:
            conn = uow.c
            out: dict[str, Any] = {
                "customer_id": customer_id,
                "analytics": customer_analytics(conn, actor=actor, customer_id=customer_id),
                "prediction": customer_prediction(conn, actor=actor, customer_id=customer_id),
                "churn": customer_churn(conn, actor=actor, customer_id=customer_id),
                "preferences": preferences_for(conn, [customer_id])[customer_id],
                "recommendations": recommendations_for(conn, actor=actor,
                                                       customer_id=customer_id),
            }
    except PatronError as exc:
        fail(t(exc.message, lang(), **exc.params))
        return
    print_json(out)


def add_commands(app: typer.Typer) -> None:
    app.command("customer")(customer_command)
