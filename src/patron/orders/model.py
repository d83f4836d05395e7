"""Purchase rules: amounts, canonical content for idempotency, local time. No database here."""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from patron.customers.model import IdentifierError, Identity, normalize_identity
from patron.errors import FieldError
from patron.orders.schemas import OrderIn
from patron.protection.keys import index_key

if TYPE_CHECKING:
    from patron.orders.fast_validation import PlainOrder

FEN = Decimal("0.01")
DEFAULT_TZ = "Asia/Shanghai"


def fen(value: Decimal) -> Decimal:
    return value.quantize(FEN, rounding=ROUND_HALF_UP)


@dataclass(slots=True)
class Line:
    line_no: int
    sku: str
    name: str | None
    category: str | None
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    amount: Decimal
    # The same amounts as the integers they are stored and digested as (thousandths, fen):
    # computed once, read by the digest, the rows and the figures.
    quantity_k: int
    unit_price_fen: int
    discount_fen: int
    amount_fen: int


@dataclass(slots=True)
class NormalizedOrder:
    external_id: str
    channel: str
    store: str | None
    purchased_at: dt.datetime  # UTC
    local_time: dt.datetime  # in the store's time zone, for hour and day figures
    identities: list[Identity]
    lines: list[Line]
    payments: list[tuple[str, Decimal]]
    gross: Decimal
    discount: Decimal
    total: Decimal
    gross_fen: int
    discount_fen: int
    total_fen: int
    customer_hint: dict[str, Any] = field(default_factory=dict)
    _hash: str | None = None

    def canonical(self) -> dict[str, Any]:
        return canonical_content(
            external_id=self.external_id,
            channel=self.channel,
            store=self.store,
            purchased_at=self.purchased_at,
            identities=[i.key for i in self.identities],
            lines=[(ln.sku, ln.category, ln.quantity, ln.unit_price, ln.discount, ln.amount)
                   for ln in self.lines],
            payments=self.payments,
            discount=self.discount,
            total=self.total,
        )

    @property
    def content_hash(self) -> str:
        """A digest of the same facts as :meth:`canonical`, built from exact integers (fen,
        thousandths, epoch seconds) instead of formatted decimals: several times cheaper, and
        equal for two orders exactly when their canonical forms are equal."""
        if self._hash is None:
            self._hash = keyed_digest(repr(self.digest_key()))
        return self._hash

    def digest_key(self) -> tuple[Any, ...]:
        """The facts the digest covers. Orders already recorded carry digests of this exact
        key: changing it makes every retry of them compare facts instead of digests."""
        # List comprehensions turned into tuples: the same key, built faster than from
        # generator expressions (this runs once per recorded order).
        return (
            self.external_id, self.channel, self.store or None,
            int(self.purchased_at.timestamp()),
            tuple(sorted([f"{i.kind}:{i.namespace}:{i.value}" if i.namespace
                          else f"{i.kind}:{i.value}" for i in self.identities])),
            tuple([(ln.sku, ln.category or None, ln.quantity_k, ln.unit_price_fen,
                    ln.discount_fen, ln.amount_fen) for ln in self.lines]),
            tuple(sorted([(m, int(a * 100)) for m, a in self.payments])),
            self.discount_fen, self.total_fen,
        )


def fen_int(amount: Decimal) -> int:
    """Money as the integer fen it is stored as. Every amount of a normalised order is already
    quantized to the fen, so this is exact (and what the Money column type binds)."""
    return int((amount * 100).to_integral_value(rounding=ROUND_HALF_UP))


def thousandths(quantity: Decimal) -> int:
    """A quantity as the integer thousandths it is stored as (what the Quantity type binds);
    validated quantities have at most three decimals, so this is exact."""
    return int((quantity * 1000).to_integral_value(rounding=ROUND_HALF_UP))


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


def canonical_content(*, external_id: str, channel: str, store: str | None,
                      purchased_at: dt.datetime, identities: list[tuple[str, str, str]],
                      lines: list[tuple[Any, ...]], payments: list[tuple[str, Decimal]],
                      discount: Decimal, total: Decimal) -> dict[str, Any]:
    """The facts of an order that a retry must repeat exactly. Built the same way from a request
    and from stored rows, so that a conflicting retry can be told what differs."""
    return {
        "external_id": external_id,
        "channel": channel,
        "store": store or None,
        "purchased_at": purchased_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "identifiers": sorted(f"{k}:{ns}:{v}" if ns else f"{k}:{v}" for k, ns, v in identities),
        "lines": [
            {"sku": sku, "category": cat or None, "quantity": _num(Decimal(q)),
             "unit_price": _num(fen(Decimal(p))), "discount": _num(fen(Decimal(d))),
             "amount": _num(fen(Decimal(a)))}
            for sku, cat, q, p, d, a in lines
        ],
        "payments": sorted([m, _num(fen(Decimal(a)))] for m, a in payments),
        "discount": _num(fen(Decimal(discount))),
        "total": _num(fen(Decimal(total))),
    }


def content_hash(canonical: dict[str, Any]) -> str:
    # repr of the canonical form (fixed key order, strings and sorted lists only) is as
    # deterministic as JSON and several times cheaper to produce.
    return keyed_digest(repr(canonical))


def keyed_digest(text: str) -> str:
    """HMAC-SHA-256 under the index key: the content hash covers the order's identifiers, and a
    plain hash would let anyone holding the other (clear) facts of an order try every phone
    number against it (docs/data-protection.md#personal-data-at-rest)."""
    # hmac.digest: the same HMAC in one call to OpenSSL, about twice as fast as hmac.new.
    return hmac.digest(index_key(), text.encode(), "sha256").hex()


def differences(stored: dict[str, Any], sent: dict[str, Any]) -> list[dict[str, Any]]:
    """Which fields of a re-sent order differ from the order recorded under the same id."""
    out = []
    for key in sorted(set(stored) | set(sent)):
        if stored.get(key) != sent.get(key):
            out.append({"field": key, "recorded": stored.get(key), "sent": sent.get(key)})
    return out


def to_utc(value: dt.datetime, tz_name: str) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz_name))
    return value.astimezone(dt.UTC)


def normalize_order(order: OrderIn | PlainOrder, *, store_tz: str | None = None,
                    now: dt.datetime | None = None) -> tuple[NormalizedOrder | None,
                                                             list[FieldError]]:
    """Check an order's amounts and identifiers; return it normalised, or the reasons not to
    record it. Nothing here touches the database."""
    errors: list[FieldError] = []
    tz_name = store_tz or DEFAULT_TZ
    try:
        purchased_at = to_utc(order.purchased_at, tz_name)
    except OverflowError:  # year 1 or 9999 moved across the date line: out of any range
        reason = "too_old" if order.purchased_at.year < 2000 else "in_future"
        return None, [FieldError("purchased_at", reason)]
    now = now or dt.datetime.now(dt.UTC)
    if purchased_at > now + dt.timedelta(days=1):
        errors.append(FieldError("purchased_at", "in_future"))
    if purchased_at.year < 2000:
        errors.append(FieldError("purchased_at", "too_old"))

    identities: list[Identity] = []
    seen_kinds: set[tuple[str, str]] = set()
    for kind, raw in order.identifiers.items():
        try:
            identity = normalize_identity(kind, raw, platform=order.channel)
        except IdentifierError as exc:
            errors.append(FieldError(f"identifiers.{kind}", exc.reason))
            continue
        if (identity.kind, identity.namespace) in seen_kinds:
            continue
        seen_kinds.add((identity.kind, identity.namespace))
        identities.append(identity)

    lines: list[Line] = []
    gross = Decimal(0)
    line_total = Decimal(0)
    for i, ln in enumerate(order.lines, start=1):
        before = fen(ln.quantity * ln.unit_price)
        if ln.discount > before:
            errors.append(FieldError(f"lines.{i - 1}.discount", "discount_exceeds_amount"))
        amount = before - fen(ln.discount)
        if ln.amount is not None and fen(ln.amount) != amount:
            errors.append(FieldError(f"lines.{i - 1}.amount", "line_amount_mismatch",
                                     {"expected": str(amount)}))
        gross += before
        line_total += amount
        unit_price, line_discount = fen(ln.unit_price), fen(ln.discount)
        lines.append(Line(i, ln.sku, ln.name, ln.category, ln.quantity, unit_price,
                          line_discount, amount, thousandths(ln.quantity), fen_int(unit_price),
                          fen_int(line_discount), fen_int(amount)))

    discount = fen(order.discount)
    if lines:
        total = line_total - discount
        if total < 0:
            errors.append(FieldError("discount", "discount_exceeds_amount"))
        if order.total is not None and fen(order.total) != total:
            errors.append(FieldError("total", "total_mismatch", {"expected": str(total)}))
        line_discounts = gross - line_total
        all_discount = line_discounts + discount
    else:
        if order.total is None:
            errors.append(FieldError("total", "total_required_without_lines"))
            total = Decimal(0)
        else:
            total = fen(order.total)
        gross = total + discount
        all_discount = discount

    payments = [(p.method, fen(p.amount)) for p in order.payments]
    if payments and sum((a for _, a in payments), Decimal(0)) != total:
        errors.append(FieldError("payments", "payments_mismatch", {"expected": str(total)}))

    if errors:
        return None, errors
    local_time = purchased_at.astimezone(ZoneInfo(tz_name))
    customer = order.customer
    hint = (customer if isinstance(customer, dict) else customer.model_dump(exclude_none=True)
            ) if customer else {}
    return NormalizedOrder(
        external_id=order.external_id,
        channel=order.channel,
        store=order.store or None,
        purchased_at=purchased_at,
        local_time=local_time,
        identities=identities,
        lines=lines,
        payments=payments,
        gross=gross,
        discount=all_discount,
        total=total,
        gross_fen=fen_int(gross),
        discount_fen=fen_int(all_discount),
        total_fen=fen_int(total),
        customer_hint=hint,
    ), []
