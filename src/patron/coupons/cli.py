"""``patron coupons ...``: templates, issuing, the liability report and the hold expiry job."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

coupons_app = typer.Typer(help="Coupons: templates, issuing, liability.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    app.add_typer(coupons_app, name="coupons")


def _actor():  # type: ignore[no-untyped-def]
    from patron.cli import _cli_actor

    return _cli_actor()


def _json(data: Any) -> str:
    from fastapi.encoders import jsonable_encoder

    return json.dumps(jsonable_encoder(data, custom_encoder={Decimal: str}), ensure_ascii=False)


@coupons_app.command("templates")
def templates_cmd(
    program: Annotated[str | None, typer.Option(help="Only this program (code)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List coupon templates with their kind, status, version and what is left of the budget."""
    from patron.coupons import service
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = service.list_templates(uow.c, actor=_actor(), program=program)
    if as_json:
        typer.echo(_json(items))
        return
    table = Table("id", "program", "code", "name", "kind", "status", "version", "face value",
                  "issued", "left")
    for t in items:
        table.add_row(str(t["id"]), t["program"], t["code"], t["name"], t["kind"], t["status"],
                      str(t["version"]), str(t["face_value"] or "-"), str(t["issued_count"]),
                      "-" if t["left_count"] is None else str(t["left_count"]))
    console.print(table)


@coupons_app.command("issue")
def issue_cmd(
    template_id: Annotated[int, typer.Argument(help="Template id")],
    member: Annotated[list[int], typer.Option(help="Member id (repeat for a list)")],
    key: Annotated[str, typer.Option(help="Idempotency key: running again with it issues "
                                          "nothing more")],
    quantity: Annotated[int, typer.Option(min=1, max=100, help="Coupons per member")] = 1,
    store: Annotated[str | None, typer.Option(help="Store of issue (code)")] = None,
) -> None:
    """Issue coupons of a template to one member or a list; prints the issue as JSON."""
    from patron.coupons import service
    from patron.coupons.schemas import IssueIn
    from patron.db import UnitOfWork, get_engine

    body = IssueIn(idempotency_key=key, member_ids=member, quantity=quantity, store=store)
    with UnitOfWork(get_engine()) as uow:
        out = service.issue(uow=uow, actor=_actor(), template_id=template_id, body=body)
    typer.echo(_json(out))


@coupons_app.command("liability")
def liability_cmd(
    program: Annotated[str | None, typer.Option(help="Only this program (code)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Outstanding coupons (issued, unused, still valid): count and face value by template, by
    month of expiry and by store of issue."""
    from patron.coupons import service
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine(), readonly=True) as uow:
        report = service.liability(uow.c, actor=_actor(), program=program)
    if as_json:
        typer.echo(_json(report))
        return
    for title, rows, key in (("by template", report["by_template"], "code"),
                             ("by month of expiry", report["by_month"], "month"),
                             ("by store of issue", report["by_store"], "store")):
        table = Table(key, "coupons", "face value", "without face value", title=title)
        for r in rows:
            table.add_row(str(r[key] or "-"), str(r["count"]), str(r["face_value"]),
                          str(r["without_face_value"]))
        console.print(table)
    total = report["total"]
    console.print(f"total: {total['count']} coupons, face value {total['face_value']}, "
                  f"{total['without_face_value']} without a face value")


@coupons_app.command("expire-holds")
def expire_holds_cmd() -> None:
    """Release coupon holds past their time (run it every few minutes or daily; a held coupon
    whose hold ran out is usable again anyway)."""
    from patron.coupons import service
    from patron.db import UnitOfWork, get_engine

    with UnitOfWork(get_engine()) as uow:
        out = service.expire_holds(uow=uow, actor=_actor())
    typer.echo(_json(out))
