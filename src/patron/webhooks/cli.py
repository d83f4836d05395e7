"""``patron webhooks ...``: the delivery worker and endpoint management from the shell."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

webhooks_app = typer.Typer(help="Outgoing webhooks: endpoints and the delivery worker.",
                           no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("deliver")
def deliver(
    once: Annotated[bool, typer.Option("--once", help="One round, then exit")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between rounds")] = 5.0,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="Deliveries per round")] = 100,
) -> None:
    """Send due deliveries, signed, retrying failures with backoff.

    Several workers may run at once (on PostgreSQL); each delivery is sent by one of them.
    """
    from patron.db import get_engine
    from patron.webhooks.delivery import DeliveryStats, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def show(stats: DeliveryStats) -> None:
        if stats.claimed or once:
            console.print(f"delivered {stats.delivered}, retrying {stats.retrying}, "
                          f"failed {stats.failed}"
                          + (f", lease lost {stats.lease_lost}" if stats.lease_lost else ""))

    try:
        run_worker(get_engine(), interval=interval, once=once, limit=limit, on_stats=show)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@webhooks_app.command("list")
def list_endpoints() -> None:
    """Endpoints with their delivery counts."""
    from patron.db import UnitOfWork, get_engine
    from patron.webhooks import service

    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = service.list_endpoints(uow.c)
    table = Table("id", "url", "events", "active", "pending", "delivered", "failed")
    for r in rows:
        c = r["deliveries"]
        table.add_row(str(r["id"]), r["url"], ", ".join(r["events"]),
                      "yes" if r["active"] else "no", str(c["pending"] + c["sending"]),
                      str(c["delivered"]), str(c["failed"]))
    console.print(table)


@webhooks_app.command("add")
def add_endpoint(
    url: str,
    event: Annotated[list[str], typer.Option("--event", "-e",
                                             help="An event to send (repeat); * for all")],
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Register an endpoint and print its secret (shown this once)."""
    from patron.db import UnitOfWork, get_engine
    from patron.security.model import SYSTEM
    from patron.webhooks import service

    with UnitOfWork(get_engine()) as uow:
        created = service.create_endpoint(uow=uow, actor=SYSTEM, url=url, events=event,
                                          description=description)
    console.print(f"webhook {created['id']} created for {created['url']}")
    console.print(f"secret (shown once): {created['secret']}")
