"""Customer and order exports to CSV or Excel, streamed so memory stays flat at any size.

Personal data is masked unless the actor may reveal it *and* asks for the full values; such an
export is audited twice, as an export and as a reveal. Files go to ``<data_dir>/exports``.

Every file is watermarked: its first row names who asked for it and when (UTC), and an Excel
file says so in its properties too, so that a copy found elsewhere tells where it came from.
Text that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return, or their full-width forms) is neutralised: in CSV with a leading
apostrophe (what OWASP recommends; Excel shows the text, not the apostrophe), in Excel by
writing the cell as a string, never a formula. Numbers are written as they are.
"""

from __future__ import annotations

import csv
import datetime as dt
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select

from patron.config import get_settings
from patron.customers.model import mask_email, mask_name, mask_phone
from patron.customers.queries import (
    CustomerFilters,
    customers_query,
    mask_birthday,
    order_conditions,
)
from patron.customers.tables import customers
from patron.db import UnitOfWork
from patron.errors import FieldError, Forbidden, ValidationFailed
from patron.orders.tables import orders
from patron.org.tables import channels, stores
from patron.security import audit
from patron.security.model import Actor

Format = Literal["csv", "xlsx"]
# What an export is for: "marketing" exports hold only customers who consented to the channel.
Purpose = Literal["analysis", "service", "marketing"]
BATCH = 1000

CUSTOMER_COLUMNS = ("id", "member_code", "is_member", "name", "gender", "birthday", "phone",
                    "email", "registration_store", "created_at", "order_count", "net_spend",
                    "last_order_at", "language")
ORDER_COLUMNS = ("id", "external_id", "channel", "store", "purchased_at_local", "customer_id",
                 "member_code", "customer_name", "customer_phone", "gross_amount",
                 "discount_amount", "total_amount", "refunded_amount", "line_count")


def exports_dir() -> Path:
    path = get_settings().data_dir / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check(actor: Actor, fmt: str, unmasked: bool) -> None:
    if not actor.can("export"):
        raise Forbidden("forbidden", params={"permission": "export"})
    if unmasked and not actor.can("personal_data.reveal"):
        raise Forbidden("forbidden", params={"permission": "personal_data.reveal"})
    if fmt not in ("csv", "xlsx"):
        raise ValidationFailed("validation_failed", fields=[
            FieldError("format", "literal_error", {"expected": "csv, xlsx"})])


# A spreadsheet treats a cell starting with one of these as a formula (DDE and HYPERLINK
# attacks on whoever opens the file).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise_formula(text: str) -> str:
    """CSV text that a spreadsheet shows as typed rather than evaluates."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def watermark(actor: Actor, path: Path, at: dt.datetime) -> str:
    who = f"{actor.name} ({actor.type} {actor.id})" if actor.id is not None else actor.name
    return (f"Patron export {path.name} · requested by {who} · "
            f"{at.astimezone(dt.UTC).isoformat(timespec='seconds')} · confidential / 内部资料")


def _target(kind: str, fmt: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return exports_dir() / f"{kind}-{stamp}-{secrets.token_hex(4)}.{fmt}"


@contextmanager
def _writer(path: Path, fmt: str, header: tuple[str, ...], actor: Actor) -> Iterator[Any]:
    """A ``write(row)`` callable; CSV in UTF-8 with a BOM so that Excel reads Chinese right,
    XLSX through openpyxl's write-only mode, which keeps one row in memory at a time. The
    first row is the watermark, the second the column names."""
    now = dt.datetime.now(dt.UTC)
    mark = watermark(actor, path, now)
    if fmt == "csv":
        with path.open("w", encoding="utf-8-sig", newline="") as fh:
            out = csv.writer(fh)
            out.writerow([mark])
            out.writerow(header)

            def write_csv(row: list[Any]) -> None:
                out.writerow([neutralise_formula(v) if isinstance(v, str) else v
                              for v in row])

            yield write_csv
        return
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    wb = Workbook(write_only=True)
    wb.properties.creator = actor.name
    wb.properties.title = mark
    wb.properties.created = now.replace(tzinfo=None)
    ws = wb.create_sheet(path.stem.split("-")[0])
    ws.append([mark])
    ws.append(list(header))

    def text_cell(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        cell = WriteOnlyCell(ws, value=value)
        cell.data_type = "s"  # openpyxl would store "=..." as a formula
        return cell

    try:
        yield lambda row: ws.append([text_cell(v) for v in row])
    finally:
        wb.save(path)


def _cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _stream(uow: UnitOfWork, query: Any) -> Iterator[Any]:
    # Options on the statement, not the connection: they must not outlive this query.
    result = uow.c.execute(query, execution_options={"stream_results": True,
                                                     "yield_per": BATCH})
    for part in result.mappings().partitions(BATCH):
        yield from part


def _approved(uow: UnitOfWork, actor: Actor, kind: str, fmt: str, unmasked: bool,
              filters: dict[str, Any], query: Any) -> None:
    """Large exports by anyone but an owner need an owner's approval (security.exports)."""
    from patron.config import get_settings
    from patron.security import exports

    if actor.can("exports.approve"):
        return
    rows = exports.count_rows(uow.c, query)
    if rows > get_settings().export_approval_rows:
        exports.check_approval(uow, actor=actor, kind=kind, fmt=fmt, unmasked=unmasked,
                               filters=filters, rows=rows)


def _record(uow: UnitOfWork, actor: Actor, kind: str, fmt: str, filters: dict[str, Any],
            rows: int, unmasked: bool, path: Path, purpose: str | None = None) -> None:
    details = {"format": fmt, "filters": filters, "rows": rows, "unmasked": unmasked,
               "file": path.name}
    if purpose is not None:
        details["purpose"] = purpose
    audit.record(uow.c, actor, f"{kind}.exported", entity="export", details=details)
    if unmasked:
        audit.record(uow.c, actor, "personal_data.revealed", entity="export",
                     details={"export": kind, "rows": rows, "file": path.name,
                              "fields": ["name", "phone", "email", "birthday"]})
    from patron.security import alerts

    alerts.after_export(uow.c, actor_name=actor.name, kind=kind, rows=rows, file=path.name,
                        unmasked=unmasked)
    uow.commit()


def export_customers(*, uow: UnitOfWork, actor: Actor,
                     filters: CustomerFilters | Mapping[str, Any] | None, fmt: Format,
                     unmasked: bool = False, among: Select[Any] | None = None,
                     among_audit: Mapping[str, Any] | None = None,
                     purpose: Purpose = "analysis") -> Path:
    """The customers the list would show for ``filters`` (the actor's scope applies), one row
    each, masked unless ``unmasked`` is asked for by someone allowed to. ``among`` narrows
    them to the ids a query selects (a list another area defines, such as an RFM segment);
    ``among_audit`` describes that list in the audit entry. An export for ``marketing`` must
    name the channel (the ``consent`` filter): only customers whose consent to it is in force
    are written."""
    _check(actor, fmt, unmasked)
    f = CustomerFilters.of(filters)
    if purpose not in ("analysis", "service", "marketing"):
        raise ValidationFailed("validation_failed", fields=[
            FieldError("purpose", "literal_error", {"expected": "analysis, service, marketing"})])
    if purpose == "marketing" and not f.consent:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("consent", "export_marketing_needs_consent")])
    conn = uow.c
    codes = {int(r.id): r.code for r in conn.execute(select(stores.c.id, stores.c.code))}
    query = customers_query(conn, actor, f).order_by(customers.c.id)
    if among is not None:
        query = query.where(customers.c.id.in_(among))
    _approved(uow, actor, "customers", fmt, unmasked,
              {**f.as_audit(), **dict(among_audit or {})}, query)
    path = _target("customers", fmt)
    count = 0
    with _writer(path, fmt, CUSTOMER_COLUMNS, actor) as write:
        for r in _stream(uow, query):
            plain = unmasked
            write([_cell(v) for v in (
                r["id"], r["member_code"], bool(r["is_member"]),
                r["name"] if plain else mask_name(r["name"]), r["gender"],
                r["birthday"] if plain else mask_birthday(r["birthday"]),
                r["phone"] if plain else mask_phone(r["phone"]),
                r["email"] if plain else mask_email(r["email"]),
                codes.get(r["registration_store_id"] or 0), r["created_at"],
                r["order_count"] or 0, r["net_spend"] if r["net_spend"] is not None else "0.00",
                r["last_order_at"], r["language"])])
            count += 1
    _record(uow, actor, "customers", fmt, {**f.as_audit(), **dict(among_audit or {})}, count,
            unmasked, path, purpose)
    return path


def export_orders(*, uow: UnitOfWork, actor: Actor, filters: Mapping[str, Any] | None,
                  fmt: Format, unmasked: bool = False) -> Path:
    """Orders between two local dates, for a store and/or channel (``date_from``, ``date_to``,
    ``store``, ``channel``, ``category``), oldest first, with the customer masked or not."""
    _check(actor, fmt, unmasked)
    wanted = {k: v for k, v in dict(filters or {}).items() if v not in (None, "")}
    allowed = ("date_from", "date_to", "store", "channel", "category")
    unknown = sorted(set(wanted) - set(allowed))
    if unknown:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError(k, "extra_forbidden") for k in unknown])
    for key in ("date_from", "date_to"):
        if key in wanted and not isinstance(wanted[key], dt.date):
            try:
                wanted[key] = dt.date.fromisoformat(str(wanted[key]))
            except ValueError as exc:
                raise ValidationFailed("validation_failed", fields=[
                    FieldError(key, "date_parsing")]) from exc
    conn = uow.c
    conds = order_conditions(conn, actor, **wanted)
    default_tz = get_settings().default_timezone
    query = (select(orders, channels.c.code.label("channel_code"),
                    stores.c.code.label("store_code"), stores.c.timezone,
                    customers.c.member_code, customers.c.name.label("customer_name"),
                    customers.c.phone.label("customer_phone"))
             .join(channels, channels.c.id == orders.c.channel_id)
             .outerjoin(stores, stores.c.id == orders.c.store_id)
             .outerjoin(customers, customers.c.id == orders.c.customer_id)
             .where(*conds).order_by(orders.c.purchased_at, orders.c.id))
    _approved(uow, actor, "orders", fmt, unmasked, {k: str(v) for k, v in wanted.items()},
              query)
    path = _target("orders", fmt)
    count = 0
    with _writer(path, fmt, ORDER_COLUMNS, actor) as write:
        for r in _stream(uow, query):
            local = r["purchased_at"].astimezone(ZoneInfo(r["timezone"] or default_tz))
            write([_cell(v) for v in (
                r["id"], r["external_id"], r["channel_code"], r["store_code"], local,
                r["customer_id"], r["member_code"],
                r["customer_name"] if unmasked else mask_name(r["customer_name"]),
                r["customer_phone"] if unmasked else mask_phone(r["customer_phone"]),
                r["gross_amount"], r["discount_amount"], r["total_amount"],
                r["refunded_amount"], r["line_count"])])
            count += 1
    _record(uow, actor, "orders", fmt, {k: str(v) for k, v in wanted.items()}, count, unmasked,
            path)
    return path
