"""Coupon rules, pure Python: terms of a template, validation of a coupon against a basket, the
discount and the lines it applies to, the stacking policy between several coupons, the member's
tier discount and points, and unguessable codes with a check character.

Money here is integer fen. Rounding (docs/coupons.md, "Rounding"):

- a line's amount is quantity x unit price, rounded half up to the fen;
- the tier discount is taken per line, rounded half up;
- a percentage coupon's discount is the percentage of what is left of its eligible lines,
  rounded half up, then capped;
- a coupon's discount is spread over its eligible lines in proportion to what is left of them
  (largest remainders get the odd fen), so no line ever goes below zero and the discount is never
  above the eligible amount.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

KINDS = ("amount", "percent", "threshold", "free_item", "shipping")

# Codes: no 0/O, 1/I/L: nothing a cashier can misread or mistype into another valid code.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_BODY = 12  # 31**12 ~ 7.9e17 possibilities (59 bits) from the system's CSPRNG


# --- codes ----------------------------------------------------------------------------------------

def _check_char(body: str) -> str:
    """A weighted sum modulo 31 (a prime, the alphabet's size): position i weighs i, and the check
    character (weight 13) makes the sum 0. Weights are distinct and non-zero modulo 31, so every
    single mistyped character and every swap of two adjacent different characters changes the
    sum and is caught."""
    n = len(ALPHABET)
    total = sum((i + 1) * ALPHABET.index(ch) for i, ch in enumerate(body))
    weight = len(body) + 1
    return ALPHABET[(-total * pow(weight, -1, n)) % n]


def new_coupon_code() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(CODE_BODY))
    return body + _check_char(body)


def normalize_code(text: str) -> str:
    """What a cashier types or a scanner reads: case, spaces and dashes do not matter."""
    return "".join(text.split()).replace("-", "").upper()


def code_is_well_formed(code: str) -> bool:
    return (len(code) == CODE_BODY + 1 and all(ch in ALPHABET for ch in code)
            and _check_char(code[:-1]) == code[-1])


def format_code(code: str) -> str:
    """Grouped by four for reading aloud: ``ABCD-EFGH-JKMN-P``."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


# --- terms ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Terms:
    """A template version's terms, snapshotted: coupons keep the version they were issued from,
    so changing a template never changes coupons already issued."""

    kind: str
    amount_off: int = 0  # amount: fen off
    percent_off: Decimal = Decimal(0)  # percent: e.g. 15 for 15% off (8.5 折)
    cap: int | None = None  # percent and shipping: at most this many fen off
    threshold: int = 0  # threshold: for every (or at) this many fen of eligible spend ...
    reduction: int = 0  # ... this many fen off
    repeat: bool = False  # threshold: every N (True) or once at N (False)
    max_repeats: int | None = None  # threshold with repeat: at most this many times
    item_sku: str | None = None  # free_item: this SKU ...
    item_quantity: int = 1  # ... this many units free
    item_value: int | None = None  # free_item: the face value declared for budgets and reports
    min_spend: int = 0  # on the eligible lines, after the tier discount
    stores: tuple[str, ...] = ()  # empty: every store (and store-less orders)
    channels: tuple[str, ...] = ()  # empty: every channel
    categories: tuple[str, ...] = ()  # with skus: the eligible lines; both empty: every line
    skus: tuple[str, ...] = ()
    valid_from: dt.datetime | None = None  # absolute validity ...
    valid_to: dt.datetime | None = None
    valid_days: int | None = None  # ... or this many days from issue
    restore_on_refund: bool = True
    with_coupons: bool = False  # combinable with other coupons
    with_tier_discount: bool = True
    with_points: bool = True

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dt.datetime):
                value = value.isoformat()
            out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Terms:
        values = dict(data)
        values["percent_off"] = Decimal(str(values.get("percent_off", "0")))
        for name in ("stores", "channels", "categories", "skus"):
            values[name] = tuple(values.get(name) or ())
        for name in ("valid_from", "valid_to"):
            if values.get(name):
                values[name] = dt.datetime.fromisoformat(values[name])
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


class TermsError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_terms(t: Terms) -> None:
    """What the schema cannot see field by field."""
    if t.kind not in KINDS:
        raise TermsError("kind", "unknown_coupon_kind")
    if t.kind == "amount" and t.amount_off <= 0:
        raise TermsError("amount_off", "coupon_amount_required")
    if t.kind == "percent" and not (Decimal(0) < t.percent_off < Decimal(100)):
        raise TermsError("percent_off", "coupon_percent_range")
    if t.kind == "threshold" and (t.threshold <= 0 or t.reduction <= 0):
        raise TermsError("threshold", "coupon_threshold_required")
    if t.kind == "threshold" and t.reduction >= t.threshold:
        raise TermsError("reduction", "coupon_reduction_not_below_threshold")
    if t.kind == "free_item" and not t.item_sku:
        raise TermsError("item_sku", "coupon_item_required")
    if (t.valid_days is None) == (t.valid_to is None):
        raise TermsError("validity", "coupon_validity_one_of")
    if t.valid_to is not None and t.valid_from is not None and t.valid_to <= t.valid_from:
        raise TermsError("valid_to", "coupon_validity_reversed")


def face_value(t: Terms) -> int | None:
    """The most one coupon can take off, in fen, as budgets and the liability report count it;
    None when the terms set no bound (a percentage without a cap, a free item without a declared
    value, a shipping coupon without a cap, a repeating threshold without a maximum)."""
    if t.kind == "amount":
        return t.amount_off
    if t.kind in ("percent", "shipping"):
        return t.cap
    if t.kind == "threshold":
        if not t.repeat:
            return t.reduction
        return None if t.max_repeats is None else t.reduction * t.max_repeats
    return t.item_value


def validity(t: Terms, issued_at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The window a coupon issued at ``issued_at`` is valid in: the template's absolute dates, or
    from issue for ``valid_days`` x 24 hours."""
    if t.valid_days is not None:
        return issued_at, issued_at + dt.timedelta(days=t.valid_days)
    assert t.valid_to is not None
    return (t.valid_from or issued_at), t.valid_to


# --- baskets --------------------------------------------------------------------------------------

def to_fen(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value(rounding=ROUND_HALF_UP))


def fen_to_yuan(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Line:
    line_no: int
    sku: str
    category: str | None
    quantity: Decimal
    unit_price: int  # fen

    @property
    def amount(self) -> int:
        return int((self.quantity * self.unit_price).to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Basket:
    lines: tuple[Line, ...]
    store: str | None
    channel: str
    purchased_at: dt.datetime
    shipping_fee: int = 0

    @property
    def amount(self) -> int:
        return sum(ln.amount for ln in self.lines)


@dataclass(frozen=True)
class Coupon:
    """A member's coupon as the rules see it."""

    id: int
    code: str
    template_id: int
    member_id: int
    status: str  # available | held | redeemed | revoked
    valid_from: dt.datetime
    valid_until: dt.datetime
    terms: Terms


@dataclass
class Refusal:
    code: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Applied:
    coupon: Coupon
    discount: int  # fen, lines + shipping
    lines: dict[int, int]  # line_no -> fen taken off that line
    shipping: int = 0


@dataclass
class Combination:
    """What the checkout may apply: the tier discount (per line), the accepted coupons in the
    order they apply, the refused ones with their reasons, and whether points may pay."""

    subtotal: int
    tier_discount_percent: Decimal
    tier_applied: bool
    tier_lines: dict[int, int]
    accepted: list[Applied]
    refused: list[Refusal]
    points_allowed: bool
    shipping_fee: int

    @property
    def tier_discount(self) -> int:
        return sum(self.tier_lines.values()) if self.tier_applied else 0

    @property
    def coupon_discount(self) -> int:
        return sum(a.discount for a in self.accepted)

    @property
    def total_discount(self) -> int:
        return self.tier_discount + self.coupon_discount

    @property
    def to_pay(self) -> int:
        return self.subtotal + self.shipping_fee - self.total_discount


def _eligible(t: Terms, line: Line) -> bool:
    if not t.categories and not t.skus:
        return True
    return line.sku in t.skus or (line.category is not None and line.category in t.categories)


def spread(total: int, weights: dict[int, int]) -> dict[int, int]:
    """``total`` fen over the keys in proportion to ``weights`` (each share at most its weight
    when ``total`` <= their sum); the largest remainders get the odd fen, ties to the lower key."""
    base = sum(weights.values())
    if total <= 0 or base <= 0:
        return {k: 0 for k in weights}
    shares = {k: total * w // base for k, w in weights.items()}
    left = total - sum(shares.values())
    by_remainder = sorted(weights, key=lambda k: (-(total * weights[k] % base), k))
    for k in by_remainder[:left]:
        shares[k] += 1
    return shares


def check_coupon(c: Coupon, basket: Basket, *, base: dict[int, int],
                 remaining: dict[int, int], shipping_left: int) -> Applied | Refusal:
    """One coupon against the basket. ``base``: each line's amount after the tier discount (what
    minimum spends and thresholds are measured on); ``remaining``: what is left of each line
    after the coupons applied before this one (what the discount is taken from)."""
    t = c.terms

    def no(reason: str, **params: Any) -> Refusal:
        return Refusal(c.code, reason, params)

    if c.status != "available":
        return no({"held": "coupon_held", "redeemed": "coupon_used"}.get(c.status,
                                                                           "coupon_revoked"))
    if basket.purchased_at < c.valid_from:
        return no("coupon_not_yet_valid", valid_from=c.valid_from.isoformat())
    if basket.purchased_at >= c.valid_until:
        return no("coupon_expired", valid_until=c.valid_until.isoformat())
    if t.stores and basket.store not in t.stores:
        return no("coupon_store_not_allowed")
    if t.channels and basket.channel not in t.channels:
        return no("coupon_channel_not_allowed")
    lines = [ln for ln in basket.lines if _eligible(t, ln)]
    if not lines and t.kind != "shipping":
        return no("coupon_no_eligible_lines")
    eligible = sum(base[ln.line_no] for ln in lines)
    if eligible < t.min_spend:
        return no("coupon_below_min_spend", min_spend=str(fen_to_yuan(t.min_spend)),
                  eligible=str(fen_to_yuan(eligible)))
    left = {ln.line_no: remaining[ln.line_no] for ln in lines}
    room = sum(left.values())
    if t.kind == "shipping":
        off = shipping_left if t.cap is None else min(shipping_left, t.cap)
        if off <= 0:
            return no("coupon_no_shipping_fee")
        return Applied(c, off, {}, shipping=off)
    if t.kind == "amount":
        off = min(t.amount_off, room)
    elif t.kind == "percent":
        off = int((Decimal(room) * t.percent_off / 100).to_integral_value(
            rounding=ROUND_HALF_UP))
        off = min(off, room if t.cap is None else min(t.cap, room))
    elif t.kind == "threshold":
        if eligible < t.threshold:
            return no("coupon_below_threshold", threshold=str(fen_to_yuan(t.threshold)),
                      eligible=str(fen_to_yuan(eligible)))
        times = eligible // t.threshold if t.repeat else 1
        if t.max_repeats is not None:
            times = min(times, t.max_repeats)
        off = min(times * t.reduction, room)
    else:  # free_item: the cheapest units of the SKU, up to the coupon's quantity
        units = sorted((ln for ln in lines if ln.sku == t.item_sku),
                       key=lambda ln: (ln.unit_price, ln.line_no))
        if not units:
            return no("coupon_item_not_in_basket", sku=t.item_sku)
        taken: dict[int, int] = {}
        wanted = Decimal(t.item_quantity)
        for ln in units:
            if wanted <= 0:
                break
            qty = min(ln.quantity.to_integral_value(rounding=ROUND_FLOOR), wanted)
            if qty <= 0:
                continue
            share = min(int(qty * ln.unit_price), left[ln.line_no])
            if share > 0:
                taken[ln.line_no] = share
            wanted -= qty
        off = sum(taken.values())
        if off <= 0:
            return no("coupon_no_discount")
        return Applied(c, off, taken)
    if off <= 0:
        return no("coupon_no_discount")
    split = spread(off, left)
    return Applied(c, off, {k: v for k, v in split.items() if v})


def tier_discount_lines(basket: Basket, percent: Decimal) -> dict[int, int]:
    return {ln.line_no: int((Decimal(ln.amount) * percent / 100).to_integral_value(
        rounding=ROUND_HALF_UP)) for ln in basket.lines}


def _apply_in_order(basket: Basket, coupons: list[Coupon], *, tier_lines: dict[int, int] | None,
                    with_points: bool) -> tuple[list[Applied], list[Refusal]]:
    base = {ln.line_no: ln.amount - (tier_lines or {}).get(ln.line_no, 0)
            for ln in basket.lines}
    remaining = dict(base)
    shipping_left = basket.shipping_fee
    accepted: list[Applied] = []
    refused: list[Refusal] = []
    seen_codes: set[str] = set()
    for c in coupons:
        t = c.terms
        if c.code in seen_codes:
            refused.append(Refusal(c.code, "coupon_listed_twice"))
            continue
        seen_codes.add(c.code)
        if tier_lines is not None and not t.with_tier_discount:
            refused.append(Refusal(c.code, "coupon_not_with_tier_discount"))
            continue
        if with_points and not t.with_points:
            refused.append(Refusal(c.code, "coupon_not_with_points"))
            continue
        if any(a.coupon.template_id == c.template_id for a in accepted):
            refused.append(Refusal(c.code, "coupon_same_template"))
            continue
        if accepted and (not t.with_coupons
                         or any(not a.coupon.terms.with_coupons for a in accepted)):
            refused.append(Refusal(c.code, "coupon_not_combinable",
                                   {"with": accepted[0].coupon.code}))
            continue
        result = check_coupon(c, basket, base=base, remaining=remaining,
                              shipping_left=shipping_left)
        if isinstance(result, Refusal):
            refused.append(result)
            continue
        for line_no, off in result.lines.items():
            remaining[line_no] -= off
        shipping_left -= result.shipping
        accepted.append(result)
    return accepted, refused


def combine(basket: Basket, coupons: list[Coupon], *, tier_discount_percent: Decimal,
            with_points: bool = False) -> Combination:
    """The stacking policy (docs/coupons.md, "Stacking"), for the POS checkout.

    Coupons are taken in the order the cashier chose them. A coupon is refused when it is not
    valid for the basket, when it was listed twice, when an accepted coupon of the same template
    exists, when it or an accepted coupon does not combine with other coupons, when the member
    pays with points (``with_points``) and it excludes points. The tier discount applies per line
    first; coupons that exclude it are refused, unless dropping the tier discount (and applying
    those coupons) saves the member more, in which case the tier discount is not applied. The
    same choice on equal savings keeps the tier discount.
    """
    subtotal = basket.amount
    tier_lines = tier_discount_lines(basket, tier_discount_percent) \
        if tier_discount_percent > 0 else {}
    with_tier, refused_tier = _apply_in_order(basket, coupons, tier_lines=tier_lines or None,
                                              with_points=with_points)
    saving_with = sum(tier_lines.values()) + sum(a.discount for a in with_tier)
    chosen = (True, with_tier, refused_tier)
    if tier_lines and any(not c.terms.with_tier_discount for c in coupons):
        without, refused_without = _apply_in_order(basket, coupons, tier_lines=None,
                                                   with_points=with_points)
        if sum(a.discount for a in without) > saving_with:
            chosen = (False, without, refused_without)
    tier_applied, accepted, refused = chosen
    return Combination(subtotal=subtotal, tier_discount_percent=tier_discount_percent,
                       tier_applied=bool(tier_lines) and tier_applied, tier_lines=tier_lines,
                       accepted=accepted, refused=refused,
                       points_allowed=all(a.coupon.terms.with_points for a in accepted),
                       shipping_fee=basket.shipping_fee)
