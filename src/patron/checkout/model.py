"""Checkout rules in plain Python: a basket's prices, the tier's member discount, what points
may pay, the payable amount. Amounts are integer fen. Nothing here touches a database.

The order of a checkout (docs/checkout.md, "How a basket is priced"): each line's amount
(quantity x unit price, rounded half up); the member discount of the tier on each line; coupons
on what is left (the coupons area's stacking policy); then what pays it: points, stored value,
and the till's tenders (cash, WeChat Pay, ...) for the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class BasketLine:
    line_no: int
    sku: str
    name: str | None
    category: str | None
    quantity: Decimal
    unit_price: int  # fen, what the till charges per unit (its own promotions included)

    @property
    def amount(self) -> int:
        """Quantity x unit price, rounded half up (the coupons area's rule too)."""
        return int((self.quantity * self.unit_price).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class TierBenefits:
    """A tier's benefits as stored (``loyalty_tiers.benefits``), read leniently: a key this
    version does not know is ignored and a value it cannot read counts as no benefit, so that
    tiers saved before the schema existed never break a checkout. Edits are validated by
    :class:`patron.loyalty.schemas.TierBenefitsIn`."""

    discount_percent: Decimal = Decimal(0)
    birthday_gift: Mapping[str, Any] | None = None
    free_items: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_json(cls, raw: Any) -> TierBenefits:
        if not isinstance(raw, Mapping):
            return cls()
        try:
            percent = Decimal(str(raw.get("member_discount_percent", "0")))
        except (ArithmeticError, ValueError):
            percent = Decimal(0)
        if not percent.is_finite() or not Decimal(0) <= percent < Decimal(100):
            percent = Decimal(0)
        gift = raw.get("birthday_gift")
        items = raw.get("free_items")
        return cls(
            discount_percent=percent,
            birthday_gift=dict(gift) if isinstance(gift, Mapping) and gift.get("description")
            else None,
            free_items=tuple({"sku": str(i["sku"]), "name": i.get("name"),
                              "quantity": int(i.get("quantity") or 1)}
                             for i in (items if isinstance(items, list) else [])
                             if isinstance(i, Mapping) and i.get("sku")),
        )



def tier_discount(lines: Sequence[BasketLine], percent: Decimal) -> list[int]:
    """The member discount per line: the percentage of each line, rounded half up (the same
    rule as the coupons area's stacking, so that a basket costs the same with or without
    coupons)."""
    return [int((Decimal(ln.amount) * percent / 100).to_integral_value(rounding=ROUND_HALF_UP))
            for ln in lines]


def points_value(points: int, points_per_yuan: int) -> int:
    """The cash value of points in fen, rounded down (the loyalty program's redeem rate)."""
    return points * 100 // points_per_yuan


def points_deduction_value(points: int, points_per_yuan: int) -> int:
    """The money a refund keeps back for ``points`` it could not take back, in fen: the
    redemption value rounded **up** to the fen. Points that pay are valued rounded down, so a
    member who spends points and then returns the purchase that earned them never comes out
    ahead; the member loses less than a fen at most."""
    return -(-points * 100 // points_per_yuan)


def points_deductible(money: int, points_per_yuan: int) -> int:
    """The most points whose deduction value (:func:`points_deduction_value`) fits in ``money``
    fen."""
    return max(0, money) * points_per_yuan // 100


def max_redeemable(spendable: int, payable: int, points_per_yuan: int) -> int:
    """The most points a basket can take: no more than the member can spend, and no more than
    make the payable amount (so that it never goes negative)."""
    return max(0, min(spendable, payable * points_per_yuan // 100))


@dataclass(frozen=True, slots=True)
class PricedLine:
    line: BasketLine
    tier_discount: int
    coupon_discount: int = 0

    @property
    def amount(self) -> int:
        """What the customer pays for the line, after the member's and the coupons' discounts."""
        return self.line.amount - self.tier_discount - self.coupon_discount


@dataclass(frozen=True, slots=True)
class Pricing:
    lines: tuple[PricedLine, ...]
    points: int
    points_value: int
    stored_value: int
    tenders: tuple[tuple[str, int], ...] = field(default_factory=tuple)

    @property
    def gross(self) -> int:
        return sum(p.line.amount for p in self.lines)

    @property
    def tier_discount(self) -> int:
        return sum(p.tier_discount for p in self.lines)

    @property
    def coupon_discount(self) -> int:
        return sum(p.coupon_discount for p in self.lines)

    @property
    def total(self) -> int:
        """What the order costs: the order's total in the orders area."""
        return sum(p.amount for p in self.lines)

    @property
    def payable(self) -> int:
        """Left for the till's tenders after points and stored value."""
        return self.total - self.points_value - self.stored_value

    def payments(self) -> list[tuple[str, int]]:
        out = []
        if self.points_value:
            out.append(("points", self.points_value))
        if self.stored_value:
            out.append(("stored_value", self.stored_value))
        out.extend((m, a) for m, a in self.tenders if a)
        return out


class PricingError(Exception):
    def __init__(self, field: str, reason: str, **params: Any) -> None:
        super().__init__(reason)
        self.field, self.reason, self.params = field, reason, params


def price(lines: Sequence[BasketLine], *, tier_lines: Sequence[int],
          coupon_lines: Sequence[int] | None = None, points: int = 0,
          points_per_yuan: int = 100, stored_value: int = 0,
          tenders: Sequence[tuple[str, int]] | None = None) -> Pricing:
    """Price a basket with the member discount and the coupons' discount on each line, and
    check that what pays it adds up: points and stored value never exceed what is left to pay,
    and the tenders (when given) pay exactly the rest. Raises :class:`PricingError` naming the
    field."""
    coupon_lines = coupon_lines or [0] * len(lines)
    priced = tuple(PricedLine(ln, t, c) for ln, t, c in
                   zip(lines, tier_lines, coupon_lines, strict=True))
    if any(p.amount < 0 for p in priced):
        raise PricingError("coupons", "discount_exceeds_amount")
    total = sum(p.amount for p in priced)
    value = points_value(points, points_per_yuan)
    if points and points > max_redeemable(points, total, points_per_yuan):
        raise PricingError("redeem_points", "points_exceed_payable",
                           max=max_redeemable(points, total, points_per_yuan))
    if points and value == 0:
        raise PricingError("redeem_points", "points_worth_nothing", per_yuan=points_per_yuan)
    if stored_value > total - value:
        raise PricingError("stored_value_fen", "stored_value_exceeds_payable",
                           max=total - value)
    pricing = Pricing(priced, points, value, stored_value, tuple(tenders or ()))
    if tenders is not None and sum(a for _, a in tenders) != pricing.payable:
        raise PricingError("payments", "tenders_mismatch", expected=pricing.payable)
    return pricing


def in_birthday_month(birthday: dt.date | None, local_day: dt.date) -> bool:
    return birthday is not None and birthday.month == local_day.month


def refund_share(total_paid: int, refunded_so_far: int, order_total: int, refunded_now: int,
                 already_returned: int) -> int:
    """What of one way of paying (``total_paid`` fen or points) goes back for a refund: in
    proportion to the order's cumulative refunded amount, less what earlier refunds gave back;
    the refund that completes the order gives back exactly what is left."""
    cumulative = refunded_so_far + refunded_now
    if order_total <= 0 or cumulative >= order_total:
        return total_paid - already_returned
    due = int((Decimal(total_paid) * cumulative / order_total).to_integral_value(
        rounding=ROUND_HALF_UP))
    return max(0, min(total_paid, due) - already_returned)
