"""Order files: canonical columns, column mappings, rows grouped into orders. Plain Python.

A file has a header row and one row per order line; consecutive rows with the same
(channel, store, order_id) form one order. Rows become the payloads that
:func:`patron.orders.service.record_orders` validates and records, and the reasons it gives
(``lines.0.quantity``, ``identifiers.phone``, ``store``) are mapped back to the file's row and
column, the way the user sees them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from patron.errors import FieldError
from patron.orders.model import fen

ORDER_COLUMNS = (
    "order_id", "channel", "store", "purchased_at", "total", "discount", "payment_method",
)
IDENTIFIER_COLUMNS = (
    "phone", "member_code", "wechat_openid", "wechat_unionid", "alipay_user_id",
    "platform_buyer_id", "email",
)
PROFILE_COLUMNS = ("customer_name", "gender", "birthday", "language")
LINE_COLUMNS = ("sku", "product_name", "category", "quantity", "unit_price", "line_discount")
CANONICAL_COLUMNS = ORDER_COLUMNS + IDENTIFIER_COLUMNS + PROFILE_COLUMNS + LINE_COLUMNS
# Required in the file; the channel may instead come from a mapping's constant default.
REQUIRED_COLUMNS = ("order_id", "channel")
# Cells of these columns are personal data: an error names the column but does not keep them.
# (The message language is not: a refused one is shown.)
PERSONAL_COLUMNS = frozenset(IDENTIFIER_COLUMNS + PROFILE_COLUMNS) - {"language"}

# Where a field of an order payload comes from in the file.
_LINE_FIELDS = {"sku": "sku", "name": "product_name", "category": "category",
                "quantity": "quantity", "unit_price": "unit_price", "discount": "line_discount"}
_CUSTOMER_FIELDS = {"name": "customer_name", "gender": "gender", "birthday": "birthday",
                    "language": "language"}
# Language cells as exports write them, besides Patron's codes and tags (zh, en-US).
_LANGUAGE_NAMES = {"中文": "zh", "简体中文": "zh", "汉语": "zh", "英文": "en", "英语": "en",
                   "chinese": "zh", "english": "en"}
_GENDERS = {"F": "F", "M": "M", "U": "U", "女": "F", "男": "M", "未知": "U"}
_DATETIME_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d")
_SAMPLE_TIME = dt.datetime(2026, 12, 31, 23, 59, 58)


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How one file layout names Patron's canonical columns."""

    name: str
    columns: Mapping[str, str] = field(default_factory=dict)  # canonical -> source column
    defaults: Mapping[str, str] = field(default_factory=dict)  # canonical -> constant
    ignored: frozenset[str] = frozenset()  # source columns to skip
    datetime_format: str | None = None  # strptime format of purchased_at


def check_mapping(*, columns: Mapping[str, str], defaults: Mapping[str, str],
                  ignored: Iterable[str], datetime_format: str | None) -> list[FieldError]:
    """The reasons a mapping cannot be saved; empty when it can."""
    errors: list[FieldError] = []
    seen: dict[str, str] = {}
    for canonical, source in columns.items():
        if canonical not in CANONICAL_COLUMNS:
            errors.append(FieldError(f"columns.{canonical}", "import_unknown_canonical",
                                     {"column": canonical}))
        elif not str(source).strip():
            errors.append(FieldError(f"columns.{canonical}", "missing"))
        elif source.strip() in seen:
            errors.append(FieldError(f"columns.{canonical}", "import_source_mapped_twice",
                                     {"column": source, "other": seen[source.strip()]}))
        else:
            seen[source.strip()] = canonical
    for canonical, value in defaults.items():
        if canonical not in CANONICAL_COLUMNS:
            errors.append(FieldError(f"defaults.{canonical}", "import_unknown_canonical",
                                     {"column": canonical}))
        elif not str(value).strip():
            errors.append(FieldError(f"defaults.{canonical}", "missing"))
    for source in ignored:
        if source.strip() in seen:
            errors.append(FieldError("ignored", "import_ignored_and_mapped", {"column": source}))
    if datetime_format is not None and not _valid_datetime_format(datetime_format):
        errors.append(FieldError("datetime_format", "import_bad_datetime_format",
                                 {"value": datetime_format}))
    return errors


def _valid_datetime_format(fmt: str) -> bool:
    if "%" not in fmt:
        return False
    try:
        dt.datetime.strptime(_SAMPLE_TIME.strftime(fmt), fmt)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Layout:
    """A file's header resolved against the canonical columns and a mapping."""

    positions: dict[str, int]  # canonical -> index in the row
    headers: dict[str, str]  # canonical -> the header text as in the file
    defaults: dict[str, str]
    datetime_format: str | None = None

    def column_name(self, canonical: str | None) -> str | None:
        if canonical is None:
            return None
        return self.headers.get(canonical, canonical)


def resolve_header(header: list[str], mapping: ColumnMapping | None) -> Layout:
    """Which canonical column each header cell holds, or the reasons the file is unusable
    (raised as :class:`HeaderError`). A canonical name in the file is read as itself unless the
    mapping maps another column to it; any other column must be mapped or ignored."""
    mapping = mapping or ColumnMapping(name="")
    by_source = {src.strip(): canonical for canonical, src in mapping.columns.items()}
    ignored = {s.strip() for s in mapping.ignored}
    positions: dict[str, int] = {}
    headers: dict[str, str] = {}
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, raw in enumerate(header):
        name = (raw or "").strip()
        if not name:
            continue  # a column without a header: nothing to read
        if name in seen:
            errors.append(FieldError(name, "import_duplicate_column", {"column": name}))
            continue
        seen.add(name)
        if name in ignored:
            continue
        canonical = by_source.get(name)
        if canonical is None and name in CANONICAL_COLUMNS and name not in mapping.columns:
            canonical = name
        if canonical is None:
            errors.append(FieldError(name, "import_unknown_column", {"column": name}))
            continue
        positions[canonical] = index
        headers[canonical] = name
    for canonical, source in mapping.columns.items():
        if canonical not in positions:
            errors.append(FieldError(source, "import_missing_column", {"column": source}))
    for canonical in REQUIRED_COLUMNS:
        if canonical not in positions and canonical not in mapping.defaults \
                and canonical not in mapping.columns:
            errors.append(FieldError(canonical, "import_missing_column", {"column": canonical}))
    if errors:
        raise HeaderError(errors)
    return Layout(positions, headers, dict(mapping.defaults), mapping.datetime_format)


class HeaderError(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(", ".join(e.field for e in errors))
        self.errors = errors


@dataclass(slots=True)
class FileRow:
    number: int  # as the user sees it: the header is row 1
    values: dict[str, Any]  # canonical -> cell (str, or a date/number from Excel)


def cell_text(value: Any) -> Any:
    """A cell as text, except dates. Excel keeps numbers as floats: an integral float is read
    as the integer it shows (a phone number, an order id), other floats to 15 significant
    digits, which is what Excel displays and drops binary noise such as 30.000000000000004."""
    if value is None:
        return None
    if isinstance(value, (dt.datetime, dt.date)):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(value, ".15g")
    text = str(value).strip()
    return text or None


def read_row(number: int, cells: Iterable[Any], layout: Layout) -> FileRow | None:
    """One data row in canonical columns, with the mapping's defaults; None for a blank row."""
    cells = cells if type(cells) is list else list(cells)
    width = len(cells)
    values: dict[str, Any] = {}
    for canonical, index in layout.positions.items():
        if index >= width:
            continue
        value = cells[index]
        # Every cell of a CSV file is text: the common case without cell_text's type checks.
        if type(value) is str:
            value = value.strip()
            if value:
                values[canonical] = value
        else:
            value = cell_text(value)
            if value is not None:
                values[canonical] = value
    if not values:
        return None
    for canonical, constant in layout.defaults.items():
        values.setdefault(canonical, constant)
    return FileRow(number, values)


def text_row_reader(layout: Layout) -> Callable[[int, list[str]], FileRow | None]:
    """:func:`read_row` for rows whose every cell is text (a CSV file's): the same rows, one
    comprehension per row instead of a type check per cell."""
    pairs = tuple(layout.positions.items())
    defaults = tuple(layout.defaults.items())

    def read(number: int, cells: list[str]) -> FileRow | None:
        try:
            values = {canonical: value for canonical, index in pairs
                      if (value := cells[index].strip())}
        except IndexError:  # a row shorter than the header
            return read_row(number, cells, layout)
        if not values:
            return None
        for canonical, constant in defaults:
            values.setdefault(canonical, constant)
        return FileRow(number, values)

    return read


@dataclass(slots=True)
class FileOrder:
    """The rows of one order and the payload built from them."""

    rows: list[FileRow]
    payload: dict[str, Any] | None = None
    line_rows: list[int] = field(default_factory=list)  # row number of each line
    errors: list[RowError] = field(default_factory=list)

    @property
    def first_row(self) -> int:
        return self.rows[0].number


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str | None  # canonical column
    reason: str  # message key
    params: dict[str, Any] = field(default_factory=dict)
    value: str | None = None


def _continues(order: list[FileRow], row: FileRow) -> bool:
    """Whether a row adds a line to the order before it: the same order id, and the same
    channel and store, or those left blank the way many exports write an order's later rows."""
    first, this = order[0].values, row.values
    order_id = this.get("order_id")
    if order_id is None or order_id != first.get("order_id"):
        return False
    channel, store = this.get("channel"), this.get("store")
    return ((channel is None or channel == first.get("channel"))
            and (store is None or store == first.get("store")))


def group_orders(rows: Iterable[FileRow]) -> Iterator[list[FileRow]]:
    """Consecutive rows with the same (channel, store, order_id) as one order. Streams: holds
    one order's rows at a time. A row without an order id is an order of its own (rejected)."""
    current: list[FileRow] = []
    for row in rows:
        if current and _continues(current, row):
            current.append(row)
            continue
        if current:
            yield current
        current = [row]
    if current:
        yield current


def parse_datetime(value: Any, fmt: str | None = None) -> dt.datetime:
    """ISO 8601 (with or without offset), ``YYYY-MM-DD HH:MM:SS``, ``YYYY/MM/DD HH:MM``, or a
    mapping's own format. Naive results are the store's local time, as tills report it."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value).strip()
    if fmt:
        return dt.datetime.strptime(text, fmt)
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    for candidate in _DATETIME_FORMATS:
        try:
            return dt.datetime.strptime(text, candidate)
        except ValueError:
            continue
    raise ValueError(text)


def parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip().replace("/", "-"))


def amount_text(value: Any) -> str:
    """Amounts as exported: ``¥1,234.50`` reads as ``1234.50``."""
    return str(value).strip().lstrip("¥￥").replace(",", "").strip()


# A file's lines repeat a few amounts (the catalogue's prices, quantities of 1, 2, 3): the
# cleaned texts and each line's paid amount are kept by the texts they come from, so that a
# repeated line costs a dictionary lookup instead of string cleaning and Decimal arithmetic.
# Amounts are not personal data; each cache is emptied when full.
_AMOUNTS_CACHE_SIZE = 4096
_UNKNOWN: Any = object()
_amount_texts: dict[str, str] = {}
_line_paid: dict[tuple[str, str, str], Decimal | None] = {}


def _amount(value: Any) -> str:
    """:func:`amount_text`, kept by the text for text cells."""
    if type(value) is not str:
        return amount_text(value)
    text = _amount_texts.get(value)
    if text is None:
        text = amount_text(value)
        if len(_amount_texts) >= _AMOUNTS_CACHE_SIZE:
            _amount_texts.clear()
        _amount_texts[value] = text
    return text


def _paid_for_line(quantity: str, unit_price: str, discount: str) -> Decimal | None:
    q, p, d = _decimal(quantity), _decimal(unit_price), _decimal(discount)
    if q is None or p is None or d is None:
        return None
    return fen(q * p) - fen(d)


def _decimal(value: Any) -> Decimal | None:
    if type(value) is str:
        try:
            # A number Decimal reads as it is has no currency sign or thousands separator
            # for amount_text to remove: the same value, without cleaning the text first.
            return Decimal(value)
        except InvalidOperation:
            pass
    try:
        return Decimal(amount_text(value))
    except (InvalidOperation, ValueError):
        return None


def _shown(canonical: str, value: Any) -> str | None:
    if value is None or canonical in PERSONAL_COLUMNS:
        return None
    text = value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)
    return text[:200]


def build_order(rows: list[FileRow], datetime_format: str | None = None) -> FileOrder:
    """An order payload for :class:`patron.orders.schemas.OrderIn` from its rows, or the
    reasons it cannot be built (cells that are not dates). Amounts stay text so that the
    order's own validation reports them with the rules it applies everywhere."""
    order = FileOrder(rows)
    first = rows[0].values
    if first.get("order_id") is None:
        order.errors.append(RowError(rows[0].number, "order_id", "missing"))
        return order
    payload: dict[str, Any] = {"external_id": first["order_id"], "channel": first.get("channel"),
                               "store": first.get("store")}
    if payload["channel"] is None:
        order.errors.append(RowError(rows[0].number, "channel", "missing"))
    raw_time = first.get("purchased_at")
    if raw_time is None:
        order.errors.append(RowError(rows[0].number, "purchased_at", "missing"))
    else:
        try:
            payload["purchased_at"] = parse_datetime(raw_time, datetime_format)
        except ValueError:
            order.errors.append(RowError(rows[0].number, "purchased_at", "datetime_parsing",
                                         value=_shown("purchased_at", raw_time)))
    for name in ("total", "discount"):
        if first.get(name) is not None:
            payload[name] = amount_text(first[name])
    identifiers = {k: str(first[k]) for k in IDENTIFIER_COLUMNS if first.get(k) is not None}
    if identifiers:
        payload["identifiers"] = identifiers
    customer: dict[str, Any] = {}
    if first.get("customer_name") is not None:
        customer["name"] = str(first["customer_name"])
    if first.get("gender") is not None:
        gender = str(first["gender"]).strip()
        customer["gender"] = _GENDERS.get(gender.upper(), _GENDERS.get(gender, gender))
    if first.get("birthday") is not None:
        try:
            customer["birthday"] = parse_date(first["birthday"])
        except ValueError:
            order.errors.append(RowError(rows[0].number, "birthday", "date_parsing"))
    if first.get("language") is not None:
        language = str(first["language"]).strip()
        customer["language"] = _LANGUAGE_NAMES.get(language.lower(), language)
    if customer:
        payload["customer"] = customer

    lines = []
    for row in rows:
        # The cells of LINE_COLUMNS, each read once (this loop runs for every line of a file).
        get = row.values.get
        sku, quantity, unit_price = get("sku"), get("quantity"), get("unit_price")
        name, category, discount = get("product_name"), get("category"), get("line_discount")
        if (sku is None and quantity is None and unit_price is None and name is None
                and category is None and discount is None):
            continue
        line: dict[str, Any] = {}
        if sku is not None:
            line["sku"] = sku
        if quantity is not None:
            line["quantity"] = _amount(quantity)
        if unit_price is not None:
            line["unit_price"] = _amount(unit_price)
        if name is not None:
            line["name"] = name
        if category is not None:
            line["category"] = category
        if discount is not None:
            line["discount"] = _amount(discount)
        lines.append(line)
        order.line_rows.append(row.number)
    if lines:
        payload["lines"] = lines
    method = first.get("payment_method")
    if method is not None:
        paid = _paid_amount(payload)
        if paid is not None:
            payload["payments"] = [{"method": str(method).strip(), "amount": str(paid)}]
    if order.errors:
        return order
    order.payload = {k: v for k, v in payload.items() if v is not None}
    return order


def _paid_amount(payload: dict[str, Any]) -> Decimal | None:
    """The total the single payment method paid: the given total, else the lines less the
    discounts (when they are numbers; otherwise the order is rejected for them anyway)."""
    if payload.get("total") is not None:
        return _decimal(payload["total"])
    total = Decimal(0)
    for line in payload.get("lines", []):
        # The line's texts come from _amount (or are the defaults): always str.
        key = (line.get("quantity", ""), line.get("unit_price", ""), line.get("discount", "0"))
        paid = _line_paid.get(key, _UNKNOWN)
        if paid is _UNKNOWN:
            paid = _paid_for_line(*key)
            if len(_line_paid) >= _AMOUNTS_CACHE_SIZE:
                _line_paid.clear()
            _line_paid[key] = paid
        if paid is None:
            return None
        total += paid
    discount = _decimal(payload.get("discount", "0"))
    if discount is None or not payload.get("lines"):
        return None
    return total - fen(discount)


def locate(order: FileOrder, field_path: str) -> tuple[int, str | None]:
    """The file row and canonical column behind a field of the order payload."""
    parts = field_path.split(".")
    head = parts[0]
    if head == "lines" and len(parts) > 1 and parts[1].isdigit():
        index = int(parts[1])
        row = order.line_rows[index] if index < len(order.line_rows) else order.first_row
        return row, _LINE_FIELDS.get(parts[2]) if len(parts) > 2 else None
    if head == "identifiers" and len(parts) > 1:
        return order.first_row, parts[1] if parts[1] in IDENTIFIER_COLUMNS else None
    if head == "customer":
        return order.first_row, _CUSTOMER_FIELDS.get(parts[1]) if len(parts) > 1 else None
    if head == "payments":
        return order.first_row, "payment_method"
    if head == "external_id":
        return order.first_row, "order_id"
    if head in ORDER_COLUMNS:
        return order.first_row, head
    return order.first_row, None


def outcome_errors(order: FileOrder, errors: list[dict[str, Any]]) -> list[RowError]:
    """``record_orders``'s reasons for rejecting an order, on the file's rows and columns."""
    out = []
    for err in errors:
        row, column = locate(order, err["field"])
        value = None
        if column is not None:
            cells = next((r.values for r in order.rows if r.number == row), {})
            value = _shown(column, cells.get(column))
        out.append(RowError(row, column, err["reason"], dict(err.get("params") or {}), value))
    return out
