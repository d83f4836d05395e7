"""A fast check of plain order payloads (file rows, batch bodies) before Pydantic.

Pydantic's validation of :class:`~patron.orders.schemas.OrderIn` cost about as much per order as
the database inserts of a bulk import. Most payloads are plain: strings, ISO times, decimal
numbers written as text, known keys. :func:`plain_order` accepts exactly such payloads when it
can tell that Pydantic would accept them too, and returns the same values Pydantic would
(stripped strings, ``Decimal`` of the same text, the same datetime); for anything else (another
type, an unknown key, a constraint near its limit, a value Pydantic might coerce) it returns
None and the caller validates the payload with Pydantic, which then reports the errors. So the
fast path decides nothing on its own: it is a subset of what Pydantic accepts, checked by
``tests/unit/test_fast_validation.py`` against Pydantic on generated payloads.

:func:`normalized_plain_order` goes one step further for the ingestion path: it checks and
normalises a plain payload in one pass, building the :class:`NormalizedOrder` directly (one
object per order and per line instead of three), and returns None both for what
:func:`plain_order` would leave to Pydantic and for an order that normalisation would refuse,
so that the usual path reports the reasons. Whatever it returns equals what
``normalize_order(plain_order(payload))`` gives (the same test checks it).

The limits below are OrderIn's; a test fails when the schema and this module disagree.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from patron.customers.model import (
    IdentifierError,
    LanguageError,
    clean_language,
    normalize_identity,
)
from patron.orders.model import DEFAULT_TZ, Line, NormalizedOrder
from patron.orders.schemas import PAYMENT_METHODS

ORDER_KEYS = frozenset(("external_id", "channel", "store", "purchased_at", "identifiers",
                        "customer", "lines", "payments", "discount", "total"))
LINE_KEYS = frozenset(("sku", "name", "category", "quantity", "unit_price", "discount",
                       "amount"))
PAYMENT_KEYS = frozenset(("method", "amount"))
CUSTOMER_KEYS = frozenset(("name", "gender", "birthday", "language"))
GENDERS = frozenset(("F", "M", "U"))
METHODS = frozenset(PAYMENT_METHODS)

EXTERNAL_ID_MAX = 64
CHANNEL_MAX = 32
STORE_MAX = 32
SKU_MAX = 64
LINE_NAME_MAX = 200
CATEGORY_MAX = 64
CUSTOMER_NAME_MAX = 120
MAX_LINES = 500
MAX_PAYMENTS = 20

# Decimal text that no constraint can refuse: no sign, exponent, spaces or leading zeros, and
# few enough digits that neither max_digits nor decimal_places is reached (quantities: 12
# digits, 3 decimals; money: 14 digits, 2 decimals).
_QUANTITY = re.compile(r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,3})?")
_MONEY = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,2})?")
_QUANTITY_INT_MAX = 10**9 - 1
_MONEY_INT_MAX = 10**12 - 1
# ISO 8601 date and time as tills and exports write it; anything else goes to Pydantic.
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?")
_ZERO = Decimal("0")
# What Pydantic strips (Rust's ``trim``: Unicode White_Space). Python's own ``strip()`` also
# strips the separators U+001C..U+001F, which Pydantic keeps.
_WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


@dataclass(slots=True)
class PlainLine:
    sku: str
    name: str | None
    category: str | None
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    amount: Decimal | None


@dataclass(slots=True)
class PlainPayment:
    method: str
    amount: Decimal


@dataclass(slots=True)
class PlainOrder:
    """The fields of :class:`OrderIn` that recording reads, with the values Pydantic would
    have given them; ``customer`` is the hint as ``OrderIn.customer.model_dump(exclude_none=
    True)`` gives it, or None."""

    external_id: str
    channel: str
    store: str | None
    purchased_at: dt.datetime
    identifiers: dict[str, str]
    customer: dict[str, Any] | None
    lines: list[PlainLine]
    payments: list[PlainPayment]
    discount: Decimal
    total: Decimal | None


class _NotPlain(Exception):
    """Leave this payload to Pydantic."""


def plain_order(payload: Any) -> PlainOrder | None:
    """The payload's fields if it is plain and valid as far as :class:`OrderIn` goes, else
    None (then validate it with Pydantic)."""
    if type(payload) is not dict or not ORDER_KEYS.issuperset(payload):
        return None
    try:
        return _plain_order(payload)
    except (_NotPlain, KeyError, ArithmeticError, ValueError):
        return None


def _plain_order(p: dict[str, Any]) -> PlainOrder:
    get = p.get
    identifiers = get("identifiers", _MISSING)
    if identifiers is _MISSING:
        identifiers = {}
    elif type(identifiers) is not dict:
        raise _NotPlain
    else:
        for k, v in identifiers.items():
            if type(k) is not str or type(v) is not str or k != k.strip(_WHITESPACE):
                raise _NotPlain
        identifiers = {k: v.strip(_WHITESPACE) for k, v in identifiers.items()}
    lines = get("lines", _MISSING)
    if lines is _MISSING:
        lines = []
    elif type(lines) is not list or len(lines) > MAX_LINES:
        raise _NotPlain
    else:
        lines = [_line(ln) for ln in lines]
    payments = get("payments", _MISSING)
    if payments is _MISSING:
        payments = []
    elif type(payments) is not list or len(payments) > MAX_PAYMENTS:
        raise _NotPlain
    else:
        payments = [_payment(pay) for pay in payments]
    customer = get("customer")
    return PlainOrder(
        external_id=_text(p["external_id"], EXTERNAL_ID_MAX, required=True),
        channel=_text(p["channel"], CHANNEL_MAX, required=True),
        store=_optional_text(get("store"), STORE_MAX),
        purchased_at=_datetime(p["purchased_at"]),
        identifiers=identifiers,
        customer=None if customer is None else _customer(customer),
        lines=lines,
        payments=payments,
        discount=_money(p["discount"]) if "discount" in p else _ZERO,
        total=_optional_money(get("total")),
    )


_MISSING: Any = object()


def _text(value: Any, max_length: int, *, required: bool = False) -> str:
    if type(value) is not str:
        raise _NotPlain
    value = value.strip(_WHITESPACE)
    if len(value) > max_length or (required and not value):
        raise _NotPlain
    return value


def _optional_text(value: Any, max_length: int) -> str | None:
    return None if value is None else _text(value, max_length)


def _datetime(value: Any) -> dt.datetime:
    if type(value) is dt.datetime:
        return value
    if type(value) is not str or not _DATETIME.fullmatch(value):
        raise _NotPlain
    return dt.datetime.fromisoformat(value)


def _number(value: Any, pattern: re.Pattern[str], int_max: int) -> Decimal:
    if type(value) is str:
        if not pattern.fullmatch(value):
            raise _NotPlain
        return Decimal(value)
    if type(value) is int and 0 <= value <= int_max:
        return Decimal(value)
    raise _NotPlain


def _money(value: Any) -> Decimal:
    return _number(value, _MONEY, _MONEY_INT_MAX)


def _optional_money(value: Any) -> Decimal | None:
    return None if value is None else _money(value)


def _line(ln: Any) -> PlainLine:
    if type(ln) is not dict or not LINE_KEYS.issuperset(ln):
        raise _NotPlain
    get = ln.get
    quantity = _number(ln["quantity"], _QUANTITY, _QUANTITY_INT_MAX)
    if not quantity:
        raise _NotPlain  # quantity must be > 0: Pydantic says so
    return PlainLine(
        sku=_text(ln["sku"], SKU_MAX, required=True),
        name=_optional_text(get("name"), LINE_NAME_MAX),
        category=_optional_text(get("category"), CATEGORY_MAX),
        quantity=quantity,
        unit_price=_money(ln["unit_price"]),
        discount=_money(ln["discount"]) if "discount" in ln else _ZERO,
        amount=_optional_money(get("amount")),
    )


def _payment(pay: Any) -> PlainPayment:
    if type(pay) is not dict or not PAYMENT_KEYS.issuperset(pay):
        raise _NotPlain
    method = pay["method"]
    if type(method) is not str or method not in METHODS:
        raise _NotPlain
    return PlainPayment(method, _money(pay["amount"]))


def _customer(c: Any) -> dict[str, Any]:
    if type(c) is not dict or not CUSTOMER_KEYS.issuperset(c):
        raise _NotPlain
    hint: dict[str, Any] = {}
    name = c.get("name")
    if name is not None:
        hint["name"] = _text(name, CUSTOMER_NAME_MAX)
    gender = c.get("gender")
    if gender is not None:
        if type(gender) is not str or gender not in GENDERS:
            raise _NotPlain
        hint["gender"] = gender
    birthday = c.get("birthday")
    if birthday is not None:
        if type(birthday) is not dt.date:
            raise _NotPlain
        hint["birthday"] = birthday
    language = c.get("language")
    if language is not None:
        if type(language) is not str:
            raise _NotPlain
        try:
            language = clean_language(language)
        except LanguageError:
            raise _NotPlain from None  # the schema names the field and the reason
        if language is not None:
            hint["language"] = language
    return hint


# --- checked and normalised in one pass ------------------------------------------------------

_FEN = Decimal("0.01")
_DAY = dt.timedelta(days=1)
_UTC = dt.UTC
_zones: dict[str, ZoneInfo] = {}


def normalized_plain_order(payload: Any, *, store_tz: Any, now: dt.datetime
                           ) -> NormalizedOrder | None:
    """``normalize_order(plain_order(payload), ...)`` when that is an order, in one pass; None
    when :func:`plain_order` would give None or normalisation would refuse the order (then the
    usual path, Pydantic and :func:`~patron.orders.model.normalize_order`, gives the reasons).

    ``store_tz`` gives the time zone name for the payload's (stripped) store code, or for
    None: the store is known only once the payload's text is read."""
    if type(payload) is not dict or not ORDER_KEYS.issuperset(payload):
        return None
    try:
        return _normalized(payload, store_tz, now)
    except (_NotPlain, KeyError, ArithmeticError, ValueError, IdentifierError):
        return None


def _zone(name: str) -> ZoneInfo:
    zone = _zones.get(name)
    if zone is None:
        zone = _zones[name] = ZoneInfo(name)
    return zone


# A line's amounts depend only on the texts of its quantity, unit price and discount, and a
# shop's lines repeat the same few (the catalogue's prices, quantities of 1, 2, 3): the
# checked values are kept by those texts, so that a repeated line costs a dictionary lookup
# instead of two regular expressions, three Decimals, five roundings and four conversions.
# Only valid amounts are kept (an invalid one raises before it is stored); the cache is
# emptied when full. Prices and quantities are not personal data.
_AMOUNTS_CACHE_SIZE = 4096
_amounts_cache: dict[tuple[str, str, Any], tuple[Any, ...]] = {}
# The same for a line's product texts (sku, name, category as sent -> as checked): only
# strings and None are kept, so a key never matches a value of another type.
_texts_cache: dict[tuple[Any, Any, Any], tuple[str, str | None, str | None]] = {}
_TEXT_TYPES = (str, type(None))


def _cached(cache: dict[Any, Any], check: Any, *raw: Any) -> Any:
    """``check(*raw)``, kept in ``cache`` under ``raw`` (the cache emptied first when full)."""
    value = cache.get(raw)
    if value is None:
        value = check(*raw)
        if len(cache) >= _AMOUNTS_CACHE_SIZE:
            cache.clear()
        cache[raw] = value
    return value


def _line_texts(sku: Any, name: Any, category: Any) -> tuple[str, str | None, str | None]:
    return (_text(sku, SKU_MAX, required=True), _optional_text(name, LINE_NAME_MAX),
            _optional_text(category, CATEGORY_MAX))


def _line_amounts(raw_q: Any, raw_p: Any, raw_d: Any) -> tuple[Any, ...]:
    """(quantity, unit price, discount, amount before the discount, amount, quantity in
    thousandths, unit price, discount and amount in fen) of a line, or _NotPlain."""
    quantity = _number(raw_q, _QUANTITY, _QUANTITY_INT_MAX)
    if not quantity:
        raise _NotPlain
    unit_price = _money(raw_p).quantize(_FEN, rounding=ROUND_HALF_UP)
    discount = (_money(raw_d).quantize(_FEN, rounding=ROUND_HALF_UP)
                if raw_d is not _MISSING else _ZERO_FEN)
    before = (quantity * unit_price).quantize(_FEN, rounding=ROUND_HALF_UP)
    if discount > before:
        raise _NotPlain
    amount = before - discount
    return (quantity, unit_price, discount, before, amount, int(quantity * 1000),
            int(unit_price * 100), int(discount * 100), int(amount * 100))


def _normalized(p: dict[str, Any], store_tz: Any, now: dt.datetime) -> NormalizedOrder:
    get = p.get
    external_id = _text(p["external_id"], EXTERNAL_ID_MAX, required=True)
    channel = _text(p["channel"], CHANNEL_MAX, required=True)
    store = _optional_text(get("store"), STORE_MAX) or None
    tz_name = store_tz(store) or DEFAULT_TZ
    purchased = _datetime(p["purchased_at"])
    zone = _zone(tz_name)
    if purchased.tzinfo is None:
        purchased = purchased.replace(tzinfo=zone)
    purchased_at = purchased.astimezone(_UTC)  # OverflowError is an ArithmeticError
    if purchased_at > now + _DAY or purchased_at.year < 2000:
        raise _NotPlain  # refused: the usual path says why

    identities = []
    raw_ids = get("identifiers", _MISSING)
    if raw_ids is not _MISSING:
        if type(raw_ids) is not dict:
            raise _NotPlain
        seen_kinds: set[tuple[str, str]] = set()
        for kind, raw in raw_ids.items():
            if type(kind) is not str or type(raw) is not str or kind != kind.strip(_WHITESPACE):
                raise _NotPlain
            identity = normalize_identity(kind, raw.strip(_WHITESPACE), platform=channel)
            pair = (identity.kind, identity.namespace)
            if pair in seen_kinds:
                continue
            seen_kinds.add(pair)
            identities.append(identity)

    lines: list[Line] = []
    # The lines' sums in fen (every amount is a whole number of fen): integer additions,
    # turned into the Decimals normalize_order gives once at the end.
    gross_fen = line_total_fen = 0
    raw_lines = get("lines", _MISSING)
    if raw_lines is not _MISSING:
        if type(raw_lines) is not list or len(raw_lines) > MAX_LINES:
            raise _NotPlain
        for no, ln in enumerate(raw_lines, start=1):
            if type(ln) is not dict or not LINE_KEYS.issuperset(ln):
                raise _NotPlain
            lget = ln.get
            raw_sku, raw_name, raw_category = ln["sku"], lget("name"), lget("category")
            if (type(raw_sku) is str and type(raw_name) in _TEXT_TYPES
                    and type(raw_category) in _TEXT_TYPES):
                texts = _cached(_texts_cache, _line_texts, raw_sku, raw_name, raw_category)
            else:
                texts = _line_texts(raw_sku, raw_name, raw_category)
            sku, name, category = texts
            raw_q, raw_p, raw_d = ln["quantity"], ln["unit_price"], lget("discount", _MISSING)
            if type(raw_q) is str and type(raw_p) is str and (
                    raw_d is _MISSING or type(raw_d) is str):
                amounts = _cached(_amounts_cache, _line_amounts, raw_q, raw_p, raw_d)
            else:
                amounts = _line_amounts(raw_q, raw_p, raw_d)
            quantity, unit_price, discount, _, amount = amounts[:5]
            given = lget("amount")
            if given is not None and _money(given).quantize(
                    _FEN, rounding=ROUND_HALF_UP) != amount:
                raise _NotPlain
            gross_fen += amounts[7] + amounts[8]  # before the discount: amount + discount
            line_total_fen += amounts[8]
            lines.append(Line(no, sku, name, category, quantity, unit_price, discount, amount,
                              *amounts[5:]))

    discount = (_money(p["discount"]).quantize(_FEN, rounding=ROUND_HALF_UP)
                if "discount" in p else _ZERO_FEN)
    given_total = get("total")
    if lines:
        gross, line_total = _fen_decimal(gross_fen), _fen_decimal(line_total_fen)
        total = line_total - discount
        if total < 0:
            raise _NotPlain
        if given_total is not None and _money(given_total).quantize(
                _FEN, rounding=ROUND_HALF_UP) != total:
            raise _NotPlain
        all_discount = (gross - line_total) + discount
    else:
        if given_total is None:
            raise _NotPlain
        total = _money(given_total).quantize(_FEN, rounding=ROUND_HALF_UP)
        gross = total + discount
        all_discount = discount

    payments = []
    raw_payments = get("payments", _MISSING)
    if raw_payments is not _MISSING:
        if type(raw_payments) is not list or len(raw_payments) > MAX_PAYMENTS:
            raise _NotPlain
        paid = _ZERO
        for pay in raw_payments:
            if type(pay) is not dict or not PAYMENT_KEYS.issuperset(pay):
                raise _NotPlain
            method = pay["method"]
            if type(method) is not str or method not in METHODS:
                raise _NotPlain
            amount = _money(pay["amount"]).quantize(_FEN, rounding=ROUND_HALF_UP)
            paid += amount
            payments.append((method, amount))
        if payments and paid != total:
            raise _NotPlain

    customer = get("customer")
    hint = _customer(customer) if customer is not None else {}
    return NormalizedOrder(
        external_id=external_id, channel=channel, store=store, purchased_at=purchased_at,
        local_time=purchased_at.astimezone(zone), identities=identities, lines=lines,
        payments=payments, gross=gross, discount=all_discount, total=total,
        gross_fen=int(gross * 100), discount_fen=int(all_discount * 100),
        total_fen=int(total * 100), customer_hint=hint)


_ZERO_FEN = _ZERO.quantize(_FEN)


def _fen_decimal(fen: int) -> Decimal:
    """A sum of amounts in fen as the Decimal the amounts' own sum is (two decimals)."""
    return Decimal(fen).scaleb(-2)
