"""``patron messages ...``: the delivery worker, the outbox and templates from the shell."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

messages_app = typer.Typer(help="Messages to customers: the outbox and its delivery worker.",
                           no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(messages_app, name="messages")


def _actor():  # type: ignore[no-untyped-def]
    from patron.cli import _cli_actor

    return _cli_actor()


@messages_app.command("work")
def work(
    once: Annotated[bool, typer.Option("--once", help="One round, then exit")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between rounds")] = 5.0,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="Messages per round")] = 100,
) -> None:
    """Send due messages through their channels, retrying failures with backoff.

    Several workers may run at once on PostgreSQL; each message is sent by one of them.
    """
    from patron.db import get_engine
    from patron.messaging.delivery import DeliveryStats, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def show(stats: DeliveryStats) -> None:
        if stats.claimed or once:
            console.print(", ".join(f"{k} {v}" for k, v in stats.as_dict().items()
                                    if v or k in ("delivered", "failed")))

    try:
        run_worker(get_engine(), interval=interval, once=once, limit=limit, on_stats=show)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@messages_app.command("list")
def list_cmd(
    state: Annotated[str | None, typer.Option(help="pending | sending | delivered | failed | "
                                                   "suppressed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
) -> None:
    """The newest messages (addresses masked, one-time codes hidden) and the count per state."""
    from patron.db import UnitOfWork, get_engine
    from patron.messaging import service

    with UnitOfWork(get_engine(), readonly=True) as uow:
        page = service.list_messages(uow.c, actor=_actor(), state=state, page_size=limit)
    table = Table("id", "channel", "purpose", "template", "to", "state", "reason", "attempts",
                  "created")
    for m in page["items"]:
        table.add_row(str(m["id"]), m["channel"], m["purpose"], m["template"],
                      m["address"] or "", m["state"], m["reason"] or "", str(m["attempts"]),
                      m["created_at"].isoformat(timespec="seconds"))
    console.print(table)
    console.print(" ".join(f"{k} {v}" for k, v in page["counts"].items()))


@messages_app.command("retry")
def retry_cmd(message_id: int) -> None:
    """Queue a failed message again, due now."""
    from patron.db import UnitOfWork, get_engine
    from patron.messaging import service

    with UnitOfWork(get_engine()) as uow:
        out = service.retry_message(uow=uow, actor=_actor(), message_id=message_id)
    console.print(f"message {out['id']} queued again ({out['attempts']} attempts so far)")


@messages_app.command("templates")
def templates_cmd() -> None:
    """Templates: Patron's built-in ones and those saved by owners, with their variables."""
    from patron.db import UnitOfWork, get_engine
    from patron.messaging import service

    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = service.list_templates(uow.c, actor=_actor())
    table = Table("code", "variables", "kind", "zh")
    for t in rows:
        kind = "built-in" if t["builtin"] else ("saved (overrides built-in)"
                                               if t["overrides_builtin"] else "saved")
        table.add_row(t["code"], ", ".join(t["variables"]), kind, t["body_zh"] or "")
    console.print(table)
