"""`patron analytics ...`: each analytics module adds its commands to this group."""

from __future__ import annotations

import importlib

import typer

analytics_app = typer.Typer(help="Customer analytics: RFM, lifecycle, CLV.", no_args_is_help=True)

# Modules that add commands: each defines add_commands(analytics_app).
_MODULES = ("patron.analytics.segments_cli", "patron.analytics.clv_cli",
            "patron.analytics.churn_cli", "patron.analytics.crosssell_cli",
            "patron.analytics.jobs_cli", "patron.analytics.dashboards_cli",
            "patron.analytics.customer_cli")


def register(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            importlib.import_module(name).add_commands(analytics_app)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    app.add_typer(analytics_app, name="analytics")
