"""The one command-line entry point, ``patron``. Each business area adds its command group.

Commands parse input, call a service and print the result; errors print a clear message in the
user's language (``PATRON_LANG`` or ``--lang``) and exit non-zero, never with a stack trace.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from patron.errors import PatronError
from patron.i18n import t

app = typer.Typer(help="Patron: retail customer data and membership.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
customers_app = typer.Typer(help="Customer profiles and figures.", no_args_is_help=True)
users_app = typer.Typer(help="Users and API keys.", no_args_is_help=True)
export_app = typer.Typer(help="Exports for analysts (audited; personal data masked).",
                         no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(export_app, name="export")
app.add_typer(customers_app, name="customers")
app.add_typer(users_app, name="users")

console = Console()
err_console = Console(stderr=True)


def lang() -> str:
    return os.environ.get("PATRON_LANG", "zh") if os.environ.get("PATRON_LANG") in ("zh",
                                                                                   "en") else "zh"


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]{message}[/red]")
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False, default=str))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations to the configured database."""
    from patron import migrate
    from patron.config import get_settings
    from patron.db import UnitOfWork, get_engine
    from patron.org.service import ensure_default_channels

    url = get_settings().effective_database_url
    migrate.upgrade(url)
    with UnitOfWork(get_engine(url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
    console.print(f"schema up to date: {url.split('@')[-1]}")


@customers_app.command("rebuild-figures")
def rebuild_figures(
    fix: Annotated[bool, typer.Option(help="Replace stored figures with recomputed ones")] = True,
) -> None:
    """Recompute per-customer figures from the orders and report any difference."""
    from patron.customers.service import rebuild_figures as rebuild
    from patron.db import UnitOfWork, get_engine
    from patron.security.model import SYSTEM

    with UnitOfWork(get_engine()) as uow:
        diffs = rebuild(uow=uow, fix=fix, actor=SYSTEM)
    for d in diffs[:50]:
        console.print(d)
    console.print(f"differences: {len(diffs)}" + (" (fixed)" if fix and diffs else ""))
    if diffs and not fix:
        raise typer.Exit(1)


@users_app.command("create")
def create_user(
    username: str,
    role: Annotated[str, typer.Option(help="owner | analyst | manager | cashier")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    store: Annotated[list[str] | None, typer.Option(help="Store code (managers, cashiers)")] = None,
) -> None:
    """Create a user."""
    from sqlalchemy import select

    from patron.db import UnitOfWork, get_engine
    from patron.org.tables import stores
    from patron.security.model import SYSTEM
    from patron.security.service import create_user as create

    with UnitOfWork(get_engine()) as uow:
        ids = []
        for code in store or []:
            sid = uow.c.execute(select(stores.c.id).where(stores.c.code == code)).scalar()
            if sid is None:
                fail(t("unknown_store", lang(), value=code))
            ids.append(int(sid))
        user_id = create(uow=uow, actor=SYSTEM, username=username, password=password, role=role,
                         store_ids=ids)
    console.print(f"user {username} created (id {user_id})")


def _cli_actor() -> Any:
    """Whoever runs the CLI has the machine and its database: an owner, named in the audit
    log by the operating-system user."""
    import getpass

    from patron.security.model import Actor

    return Actor(type="system", id=None, name=f"cli:{getpass.getuser()}", role="owner")


@export_app.command("customers")
def export_customers_cmd(
    fmt: Annotated[str, typer.Option("--format", help="csv | xlsx")] = "csv",
    store: Annotated[str | None, typer.Option(help="Registered or bought at this store")] = None,
    channel: Annotated[str | None, typer.Option(help="Registered or bought through it")] = None,
    member: Annotated[bool | None, typer.Option(help="Members only / non-members only")] = None,
    consent: Annotated[str | None, typer.Option(
        help="Only customers consenting to this channel: sms, wechat, app, email")] = None,
    purpose: Annotated[str, typer.Option(
        help="analysis | service | marketing (marketing needs --consent)")] = "analysis",
) -> None:
    """Export the customer list (masked) to a file under the data directory."""
    from patron.customers.export import export_customers
    from patron.db import UnitOfWork, get_engine

    if fmt not in ("csv", "xlsx"):
        fail(t("literal_error", lang(), expected="csv, xlsx"))
    with UnitOfWork(get_engine()) as uow:
        try:
            path = export_customers(uow=uow, actor=_cli_actor(), fmt=fmt,  # type: ignore[arg-type]
                                    filters={"store": store, "channel": channel,
                                             "member": member, "consent": consent},
                                    purpose=purpose)  # type: ignore[arg-type]
        except PatronError as exc:
            reasons = "; ".join(f"{f.field}: {t(f.reason, lang(), **f.params)}"
                                for f in exc.fields) or t(exc.message, lang(), **exc.params)
            fail(reasons)
            raise
    console.print(str(path))


@export_app.command("orders")
def export_orders_cmd(
    fmt: Annotated[str, typer.Option("--format", help="csv | xlsx")] = "csv",
    date_from: Annotated[str | None, typer.Option("--from", help="First local date")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Last local date")] = None,
    store: Annotated[str | None, typer.Option(help="Store code")] = None,
    channel: Annotated[str | None, typer.Option(help="Channel code")] = None,
) -> None:
    """Export orders (customers masked) to a file under the data directory."""
    from patron.customers.export import export_orders
    from patron.db import UnitOfWork, get_engine

    if fmt not in ("csv", "xlsx"):
        fail(t("literal_error", lang(), expected="csv, xlsx"))
    with UnitOfWork(get_engine()) as uow:
        path = export_orders(uow=uow, actor=_cli_actor(), fmt=fmt,  # type: ignore[arg-type]
                             filters={"date_from": date_from, "date_to": date_to,
                                      "store": store, "channel": channel})
    console.print(str(path))


@app.command("serve")
def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          access_log: bool = typer.Option(True, help="one log line per request (personal "
                                          "data masked); off saves CPU on busy tills' API")
          ) -> None:
    """Serve the web UI and API: uvicorn on uvloop with the httptools parser when they are
    installed (``uvicorn[standard]``, a dependency), else asyncio and h11."""
    import uvicorn

    uvicorn.run("patron.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=access_log, loop="auto", http="auto")


# Command groups that live in their business areas.
for _module in ("patron.imports.cli", "patron.demo.cli", "patron.webhooks.cli",
                "patron.analytics.cli", "patron.loyalty.cli", "patron.coupons.cli",
                "patron.storedvalue.cli", "patron.messaging.cli",
                "patron.rewards.cli", "patron.benefits.cli", "patron.segments.cli",
                "patron.tags.cli", "patron.privacy.cli", "patron.automations.cli",
                "patron.campaigns.cli", "patron.security.audit_cli", "patron.backup.cli",
                "patron.protection.cli"):
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise


def main() -> None:
    try:
        app()
    except PatronError as exc:
        message = t(exc.message, lang(), **exc.params)
        for f in exc.fields:
            message += f"\n  {f.field}: {t(f.reason, lang(), **f.params)}"
        err_console.print(f"[red]{message}[/red]")
        sys.exit(2)


if __name__ == "__main__":
    main()
