"""Loyalty rules in plain Python: earning, lots and their expiry, clawback, tiers, member codes.

Nothing here touches a database or HTTP. The service loads a member's state, applies these rules
and persists what they decided; the property tests check them against a naive reference model
(tests/unit/test_loyalty_lots_properties.py). docs/loyalty.md explains every rule.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

FEN = Decimal("0.01")

# --- vocabulary ---------------------------------------------------------------------------------

ENTRY_KINDS = ("earn", "activate", "redeem", "hold", "release", "expire", "clawback", "adjust",
               "transfer")
# Each entry moves points in or out of one bucket of the member's account. The spendable balance
# is the sum of the 'available' entries; 'pending' points wait for the return window to pass;
# 'held' points are reserved by a two-phase redemption; 'growth' is the tier currency, never
# spendable.
BUCKETS = ("available", "pending", "held", "growth")
CAUSE_TYPES = ("order", "return", "operation", "lot", "review")
MARKETING_CHANNELS = ("sms", "wechat", "app", "email")
CONSENT_KINDS = ("privacy", *MARKETING_CHANNELS)
# Where a member gave or withdrew consent.
CONSENT_SOURCES = ("pos", "mini_program", "app", "online_mall", "web", "api", "self_service",
                   "phone", "paper")
EXPIRY_MODES = ("rolling_months", "end_of_next_year")
# deduct_from_refund: the points a refund cannot take back are deducted from its money
# (docs/loyalty.md, "Refunds and clawback").
CLAWBACK_POLICIES = ("owe", "write_off", "deduct_from_refund")
TIER_BASES = ("growth", "spend_12m")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_EXCLUDED_PAYMENTS = ("points", "stored_value")
MAX_MULTIPLIER = Decimal(100)


# --- member codes -------------------------------------------------------------------------------

def luhn_check_digit(digits: str) -> str:
    """The Luhn digit that makes ``digits + check`` valid (catches any single mistyped digit
    and most swaps of neighbours at the till)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(code: str) -> bool:
    return code.isdigit() and len(code) >= 2 and luhn_check_digit(code[:-1]) == code[-1]


def new_member_code(prefix: str = "", body_digits: int = 10) -> str:
    """A random numeric code with a Luhn check digit: unguessable in sequence, easy to key in."""
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(body_digits))
    return body + luhn_check_digit(body)


# --- earning rules ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DateMultiplier:
    start: dt.date
    end: dt.date  # inclusive
    factor: Decimal


@dataclass(frozen=True, slots=True)
class EarningRules:
    """One version of a program's earning rules (docs/loyalty.md, "Earning")."""

    points_per_yuan: Decimal = Decimal(1)
    growth_per_yuan: Decimal = Decimal(1)
    min_spend: Decimal = Decimal(0)
    category_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    sku_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    store_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    channel_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    weekday_multipliers: Mapping[str, Decimal] = field(default_factory=dict)
    date_multipliers: tuple[DateMultiplier, ...] = ()
    excluded_categories: frozenset[str] = frozenset()
    excluded_skus: frozenset[str] = frozenset()
    excluded_payment_methods: frozenset[str] = frozenset(DEFAULT_EXCLUDED_PAYMENTS)
    cap_per_order: int | None = None
    cap_per_day: int | None = None
    tier_multiplier: bool = True

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> EarningRules:
        mult = raw.get("multipliers") or {}
        excl = raw.get("exclude") or {}
        caps = raw.get("caps") or {}

        def factors(d: Mapping[str, Any] | None) -> dict[str, Decimal]:
            return {str(k): Decimal(str(v)) for k, v in (d or {}).items()}

        return cls(
            points_per_yuan=Decimal(str(raw.get("points_per_yuan", "1"))),
            growth_per_yuan=Decimal(str(raw.get("growth_per_yuan", "1"))),
            min_spend=Decimal(str(raw.get("min_spend", "0"))),
            category_multipliers=factors(mult.get("category")),
            sku_multipliers=factors(mult.get("sku")),
            store_multipliers=factors(mult.get("store")),
            channel_multipliers=factors(mult.get("channel")),
            weekday_multipliers=factors(mult.get("weekday")),
            date_multipliers=tuple(
                DateMultiplier(_date(d["from"]), _date(d["to"]), Decimal(str(d["factor"])))
                for d in mult.get("dates") or []),
            excluded_categories=frozenset(excl.get("categories") or ()),
            excluded_skus=frozenset(excl.get("skus") or ()),
            excluded_payment_methods=frozenset(
                excl["payment_methods"] if excl.get("payment_methods") is not None
                else DEFAULT_EXCLUDED_PAYMENTS),
            cap_per_order=caps.get("per_order"),
            cap_per_day=caps.get("per_day"),
            tier_multiplier=bool(raw.get("tier_multiplier", True)),
        )

    def to_json(self) -> dict[str, Any]:
        def factors(d: Mapping[str, Decimal]) -> dict[str, str]:
            return {k: str(v) for k, v in sorted(d.items())}

        return {
            "points_per_yuan": str(self.points_per_yuan),
            "growth_per_yuan": str(self.growth_per_yuan),
            "min_spend": str(self.min_spend),
            "multipliers": {
                "category": factors(self.category_multipliers),
                "sku": factors(self.sku_multipliers),
                "store": factors(self.store_multipliers),
                "channel": factors(self.channel_multipliers),
                "weekday": factors(self.weekday_multipliers),
                "dates": [{"from": d.start.isoformat(), "to": d.end.isoformat(),
                           "factor": str(d.factor)} for d in self.date_multipliers],
            },
            "exclude": {"categories": sorted(self.excluded_categories),
                        "skus": sorted(self.excluded_skus),
                        "payment_methods": sorted(self.excluded_payment_methods)},
            "caps": {"per_order": self.cap_per_order, "per_day": self.cap_per_day},
            "tier_multiplier": self.tier_multiplier,
        }


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class LineFacts:
    line_no: int
    sku: str
    category: str | None
    amount: Decimal  # after the line's discount, before the order-level discount


@dataclass(frozen=True, slots=True)
class OrderFacts:
    total: Decimal
    lines: tuple[LineFacts, ...]
    payments: tuple[tuple[str, Decimal], ...]
    store_code: str | None
    channel_code: str
    local_time: dt.datetime  # in the store's time zone


@dataclass(frozen=True, slots=True)
class EarnedLine:
    line_no: int
    paid: Decimal  # what the customer paid for the line (order discount spread over lines)
    eligible: Decimal  # the part of it that earns points
    points: int


@dataclass(frozen=True, slots=True)
class Earning:
    points: int
    growth: int
    eligible: Decimal
    lines: tuple[EarnedLine, ...]
    uncapped: int  # before the caps per order and per day


def spread(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """``total`` split over ``weights`` in proportion, to the fen, summing exactly to it (largest
    remainders get the odd fen). The same split the orders area uses for what a returned line
    was paid, so that clawback and refund agree on every line's amount."""
    if not weights:
        return []
    base = sum(weights, Decimal(0))
    if base == 0:
        return [Decimal("0.00")] * (len(weights) - 1) + [total]
    raw = [total * w / base for w in weights]
    floored = [r.quantize(FEN, rounding=ROUND_FLOOR) for r in raw]
    left = int((total - sum(floored, Decimal(0))) * 100)
    order = sorted(range(len(raw)), key=lambda i: raw[i] - floored[i], reverse=True)
    for i in order[:left]:
        floored[i] += FEN
    return floored


def spread_points(total: int, weights: Sequence[Decimal]) -> list[int]:
    """An integer number of points split in proportion to ``weights`` (largest remainders, the
    earlier line on a tie), summing exactly to ``total``."""
    if not weights:
        return []
    base = sum(weights, Decimal(0))
    if base <= 0:
        return [0] * (len(weights) - 1) + [total]
    raw = [Decimal(total) * w / base for w in weights]
    floored = [int(r.to_integral_value(rounding=ROUND_FLOOR)) for r in raw]
    left = total - sum(floored)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - floored[i]), i))
    for i in order[:left]:
        floored[i] += 1
    return floored


def order_factor(rules: EarningRules, facts: OrderFacts) -> Decimal:
    """Multipliers that apply to the whole order: store, channel, weekday and the best matching
    date range, multiplied together."""
    factor = Decimal(1)
    if facts.store_code is not None:
        factor *= rules.store_multipliers.get(facts.store_code, Decimal(1))
    factor *= rules.channel_multipliers.get(facts.channel_code, Decimal(1))
    factor *= rules.weekday_multipliers.get(WEEKDAYS[facts.local_time.weekday()], Decimal(1))
    day = facts.local_time.date()
    dated = [d.factor for d in rules.date_multipliers if d.start <= day <= d.end]
    if dated:
        factor *= max(dated)
    return factor


def line_factor(rules: EarningRules, line: LineFacts) -> Decimal:
    """A SKU's own multiplier wins over its category's (the more specific rule)."""
    if line.sku in rules.sku_multipliers:
        return rules.sku_multipliers[line.sku]
    if line.category is not None:
        return rules.category_multipliers.get(line.category, Decimal(1))
    return Decimal(1)


def earn_for_order(facts: OrderFacts, rules: EarningRules, *, tier_multiplier: Decimal,
                   earned_today: int = 0) -> Earning:
    """Points and growth value an order earns (docs/loyalty.md, "Earning").

    1. Each line's paid amount: the order-level discount spread over the lines' amounts.
    2. The share paid with excluded methods (points, stored value unless configured) earns
       nothing: every line's paid amount is scaled by the share paid otherwise.
    3. Lines of excluded categories or SKUs earn nothing. What remains is the eligible amount.
    4. Growth value = eligible amount x growth per yuan, rounded down (no multipliers, no caps).
    5. Below the minimum spend (on the eligible amount) no points. Otherwise each line earns
       eligible x points per yuan x line factor x order factor x tier multiplier; the order
       earns the sum rounded down, then capped per order and by what is left of the day's cap.
    6. The final points are spread over the lines in proportion (for clawback on returns).
    """
    lines = facts.lines or (LineFacts(0, "", None, facts.total),)
    paid = spread(facts.total, [ln.amount for ln in lines])
    excluded_paid = sum((a for m, a in facts.payments if m in rules.excluded_payment_methods),
                        Decimal(0))
    share = (Decimal(0) if facts.total <= 0
             else max(Decimal(0), facts.total - excluded_paid) / facts.total)
    eligible = []
    for ln, p in zip(lines, paid, strict=True):
        if (ln.category is not None and ln.category in rules.excluded_categories) or (
                ln.sku in rules.excluded_skus):
            eligible.append(Decimal("0.00"))
        else:
            eligible.append((p * share).quantize(FEN, rounding=ROUND_DOWN))
    total_eligible = sum(eligible, Decimal(0))
    growth = int((total_eligible * rules.growth_per_yuan).to_integral_value(rounding=ROUND_FLOOR))
    raw: list[Decimal] = [Decimal(0)] * len(lines)
    if total_eligible > 0 and total_eligible >= rules.min_spend:
        of = order_factor(rules, facts) * (tier_multiplier if rules.tier_multiplier
                                           else Decimal(1))
        raw = [e * rules.points_per_yuan * line_factor(rules, ln) * of
               for ln, e in zip(lines, eligible, strict=True)]
    uncapped = int(sum(raw, Decimal(0)).to_integral_value(rounding=ROUND_FLOOR))
    points = uncapped
    if rules.cap_per_order is not None:
        points = min(points, rules.cap_per_order)
    if rules.cap_per_day is not None:
        points = min(points, max(0, rules.cap_per_day - earned_today))
    per_line = spread_points(points, raw) if points else [0] * len(lines)
    return Earning(points=points, growth=growth, eligible=total_eligible, uncapped=uncapped,
                   lines=tuple(EarnedLine(ln.line_no, p, e, n) for ln, p, e, n in
                               zip(lines, paid, eligible, per_line, strict=True)))


def points_for_returned(lines: Sequence[EarnedLine], returned: Mapping[int, Decimal]) -> int:
    """The points attributable to the cumulative returned amounts per line: each line gives
    back its points in proportion to the share of its paid amount refunded (rounded half up),
    so a line returned in several parts gives back exactly its points in the end."""
    total = 0
    for ln in lines:
        back = returned.get(ln.line_no, Decimal(0))
        if ln.points == 0 or back <= 0:
            continue
        if ln.paid <= 0 or back >= ln.paid:
            total += ln.points
            continue
        total += int((Decimal(ln.points) * back / ln.paid).to_integral_value(
            rounding=ROUND_HALF_UP))
    return total


def growth_for_returned(growth: int, paid_total: Decimal, returned_total: Decimal) -> int:
    """Growth value given back for a cumulative refunded amount, in proportion."""
    if growth == 0 or returned_total <= 0:
        return 0
    if paid_total <= 0 or returned_total >= paid_total:
        return growth
    return int((Decimal(growth) * returned_total / paid_total).to_integral_value(
        rounding=ROUND_HALF_UP))


# --- lot dates ----------------------------------------------------------------------------------

def add_months(value: dt.datetime, months: int) -> dt.datetime:
    month0 = value.month - 1 + months
    year, month = value.year + month0 // 12, month0 % 12 + 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


def lot_expiry(earned_at: dt.datetime, *, mode: str, months: int | None, tz: str) -> dt.datetime:
    """When points earned at ``earned_at`` expire: N months later to the minute (rolling), or at
    the end of the following year in the program's time zone. Always in UTC."""
    local = earned_at.astimezone(ZoneInfo(tz))
    if mode == "rolling_months":
        assert months is not None and 1 <= months <= 120
        return add_months(local, months).astimezone(dt.UTC)
    if mode == "end_of_next_year":
        return dt.datetime(local.year + 2, 1, 1, tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)
    raise ValueError(f"unknown expiry mode {mode!r}")


def redemption_value(points: int, points_per_yuan: int) -> Decimal:
    """The cash value of redeemed points, rounded down to the fen."""
    return (Decimal(points) / Decimal(points_per_yuan)).quantize(FEN, rounding=ROUND_DOWN)


# --- the lot engine -----------------------------------------------------------------------------

class InsufficientPoints(Exception):
    def __init__(self, wanted: int, available: int) -> None:
        super().__init__(f"wanted {wanted}, available {available}")
        self.wanted = wanted
        self.available = available


@dataclass(slots=True)
class Lot:
    """Points earned together, expiring together. ``ref`` is the database id, or a negative
    temporary key for a lot created by the operation being planned."""

    ref: int
    points: int
    remaining: int
    earned_at: dt.datetime
    available_at: dt.datetime
    expires_at: dt.datetime
    activated: bool
    order_id: int | None = None
    store_id: int | None = None
    created_by: int | None = None  # the entry key that creates it (new lots only)
    orig_remaining: int = -1
    orig_activated: bool = False

    def __post_init__(self) -> None:
        if self.orig_remaining == -1:
            self.orig_remaining = self.remaining if self.ref > 0 else 0
            self.orig_activated = self.activated

    def spendable(self, now: dt.datetime) -> bool:
        return self.activated and self.remaining > 0 and self.expires_at > now


@dataclass(slots=True)
class Entry:
    key: int
    member_id: int
    kind: str
    bucket: str
    points: int
    cause_type: str
    cause_id: str
    moves: dict[int, int] = field(default_factory=dict)  # lot ref -> change of its remaining
    cause_lot: int | None = None  # cause_type 'lot': the lot ref (its id once persisted)
    order_id: int | None = None
    store_id: int | None = None
    rule_version_id: int | None = None
    reason: str | None = None


def spend_order(lots: Iterable[Lot], now: dt.datetime) -> list[Lot]:
    """Spendable lots in the order they are consumed: soonest expiry first, then the oldest."""
    return sorted((lt for lt in lots if lt.spendable(now)),
                  key=lambda lt: (lt.expires_at, lt.earned_at, lt.ref))


@dataclass
class ClawbackOutcome:
    clawed: int = 0  # points taken back into the ledger (from the order's lot, other lots, debt)
    owed: int = 0  # of which a debt the member now owes
    excused: int = 0  # already expired: nothing to take back
    written_off: int = 0  # spent, not available, and the policy writes it off
    growth: int = 0  # growth value taken back


class Wallet:
    """One member's points, growth value and lots, and the entries that change them.

    Operations mutate the lots and the cached figures exactly as the database rows will be, and
    append the entries to write. The invariants (docs/loyalty.md, "Invariants"):
    ``available`` = sum of spendable-or-not-yet-expired activated lots' remaining points,
    ``pending`` = sum of pending lots' remaining, ``available`` and ``owed`` never both positive,
    nothing ever negative, and every figure = the sum of its bucket's entries.
    """

    def __init__(self, member_id: int, *, keys: Iterator[int] | None = None, available: int = 0,
                 owed: int = 0, pending: int = 0, held: int = 0, growth: int = 0,
                 lots: Iterable[Lot] = ()) -> None:
        self.member_id = member_id
        self.keys = keys if keys is not None else itertools.count(-1, -1)
        self.available, self.owed, self.pending = available, owed, pending
        self.held, self.growth = held, growth
        self.initial = (available, owed, pending, held, growth)
        self.lots: dict[int, Lot] = {lt.ref: lt for lt in lots}
        self.entries: list[Entry] = []

    # -- bookkeeping

    def _entry(self, kind: str, bucket: str, points: int, cause: tuple[str, str],
               **extra: Any) -> Entry:
        e = Entry(next(self.keys), self.member_id, kind, bucket, points, cause[0], cause[1],
                  **extra)
        self.entries.append(e)
        return e

    def deltas(self) -> tuple[int, int, int, int, int]:
        now = (self.available, self.owed, self.pending, self.held, self.growth)
        return tuple(a - b for a, b in zip(now, self.initial, strict=True))  # type: ignore[return-value]

    def spendable(self, now: dt.datetime) -> int:
        return sum(lt.remaining for lt in self.lots.values() if lt.spendable(now))

    def _take(self, points: int, now: dt.datetime, *, partial: bool = False
              ) -> list[tuple[Lot, int]]:
        picked, left = [], points
        for lt in spend_order(self.lots.values(), now):
            if left == 0:
                break
            n = min(left, lt.remaining)
            picked.append((lt, n))
            left -= n
        if left and not partial:
            raise InsufficientPoints(points, points - left)
        for lt, n in picked:
            lt.remaining -= n
        return picked

    def _repay(self, entry: Entry, lots: Sequence[Lot], now: dt.datetime) -> None:
        """Points arriving in the available bucket pay the member's debt first."""
        for lt in sorted(lots, key=lambda x: (x.expires_at, x.earned_at, x.ref)):
            if self.owed == 0:
                return
            n = min(self.owed, lt.remaining)
            if n:
                lt.remaining -= n
                entry.moves[lt.ref] = entry.moves.get(lt.ref, 0) - n
                self.owed -= n
                self.available -= n

    def _new_lot(self, entry: Entry, points: int, *, earned_at: dt.datetime,
                 available_at: dt.datetime, expires_at: dt.datetime, activated: bool,
                 order_id: int | None = None, store_id: int | None = None) -> Lot:
        lot = Lot(next(self.keys), points, points, earned_at, available_at, expires_at,
                  activated, order_id=order_id, store_id=store_id, created_by=entry.key)
        self.lots[lot.ref] = lot
        return lot

    # -- operations

    def earn(self, points: int, growth: int, *, cause: tuple[str, str], earned_at: dt.datetime,
             available_at: dt.datetime, expires_at: dt.datetime, now: dt.datetime,
             order_id: int | None = None, store_id: int | None = None,
             rule_version_id: int | None = None) -> Lot | None:
        """Earned points form a lot: pending until ``available_at``, then available."""
        lot = None
        if points > 0:
            pending = available_at > now
            e = self._entry("earn", "pending" if pending else "available", points, cause,
                            order_id=order_id, store_id=store_id,
                            rule_version_id=rule_version_id)
            lot = self._new_lot(e, points, earned_at=earned_at, available_at=available_at,
                                expires_at=expires_at, activated=not pending,
                                order_id=order_id, store_id=store_id)
            if pending:
                self.pending += points
            else:
                self.available += points
                self._repay(e, [lot], now)
        if growth > 0:
            self._entry("earn", "growth", growth, cause, order_id=order_id, store_id=store_id,
                        rule_version_id=rule_version_id)
            self.growth += growth
        return lot

    def activate_due(self, now: dt.datetime) -> int:
        """Pending lots whose return window has passed become available."""
        moved = 0
        for lt in sorted(self.lots.values(), key=lambda x: (x.available_at, x.ref)):
            if lt.activated or lt.available_at > now:
                continue
            lt.activated = True
            if lt.remaining == 0:
                continue
            cause = ("lot", str(lt.ref))
            self._entry("activate", "pending", -lt.remaining, cause, cause_lot=lt.ref,
                        order_id=lt.order_id)
            e = self._entry("activate", "available", lt.remaining, cause, cause_lot=lt.ref,
                            order_id=lt.order_id)
            self.pending -= lt.remaining
            self.available += lt.remaining
            moved += lt.remaining
            self._repay(e, [lt], now)
        return moved

    def expire_due(self, now: dt.datetime) -> int:
        """Available lots past their expiry lose what remains of them."""
        gone = 0
        for lt in sorted(self.lots.values(), key=lambda x: (x.expires_at, x.ref)):
            if not lt.activated or lt.remaining == 0 or lt.expires_at > now:
                continue
            n = lt.remaining
            self._entry("expire", "available", -n, ("lot", str(lt.ref)), cause_lot=lt.ref,
                        moves={lt.ref: -n}, order_id=lt.order_id)
            lt.remaining = 0
            self.available -= n
            gone += n
        return gone

    def redeem(self, points: int, *, cause: tuple[str, str], now: dt.datetime,
               store_id: int | None = None) -> list[tuple[Lot, int]]:
        picked = self._take(points, now)
        self._entry("redeem", "available", -points, cause, store_id=store_id,
                    moves={lt.ref: -n for lt, n in picked})
        self.available -= points
        return picked

    def hold(self, points: int, *, cause: tuple[str, str], now: dt.datetime,
             store_id: int | None = None) -> list[tuple[Lot, int]]:
        picked = self._take(points, now)
        self._entry("hold", "available", -points, cause, store_id=store_id,
                    moves={lt.ref: -n for lt, n in picked})
        self._entry("hold", "held", points, cause, store_id=store_id)
        self.available -= points
        self.held += points
        return picked

    def release(self, taken: Mapping[int, int], *, cause: tuple[str, str], now: dt.datetime,
                store_id: int | None = None) -> None:
        """Held points go back to the lots they came from (and pay a debt first)."""
        points = sum(taken.values())
        self._entry("release", "held", -points, cause, store_id=store_id)
        e = self._entry("release", "available", points, cause, store_id=store_id,
                        moves=dict(taken))
        for ref, n in taken.items():
            self.lots[ref].remaining += n
        self.held -= points
        self.available += points
        self._repay(e, [self.lots[r] for r in taken], now)

    def commit(self, points: int, *, cause: tuple[str, str], store_id: int | None = None) -> None:
        self._entry("redeem", "held", -points, cause, store_id=store_id)
        self.held -= points

    def credit(self, points: int, *, kind: str, cause: tuple[str, str], now: dt.datetime,
               expires_at: dt.datetime, reason: str | None = None,
               store_id: int | None = None) -> Lot:
        """Points given by hand (an adjustment): a new available lot."""
        e = self._entry(kind, "available", points, cause, reason=reason, store_id=store_id)
        lot = self._new_lot(e, points, earned_at=now, available_at=now, expires_at=expires_at,
                            activated=True, store_id=store_id)
        self.available += points
        self._repay(e, [lot], now)
        return lot

    def debit(self, points: int, *, kind: str, cause: tuple[str, str], now: dt.datetime,
              reason: str | None = None, store_id: int | None = None) -> list[tuple[Lot, int]]:
        """Points taken by hand or transferred out, soonest-expiring first; never more than the
        member has."""
        picked = self._take(points, now)
        self._entry(kind, "available", -points, cause, reason=reason, store_id=store_id,
                    moves={lt.ref: -n for lt, n in picked})
        self.available -= points
        return picked

    def transfer_in(self, picked: Sequence[tuple[Lot, int]], *, cause: tuple[str, str],
                    now: dt.datetime, store_id: int | None = None) -> None:
        """Points received keep the expiry dates they had: one new lot per source expiry."""
        points = sum(n for _, n in picked)
        e = self._entry("transfer", "available", points, cause, store_id=store_id)
        by_expiry: dict[dt.datetime, int] = {}
        for lt, n in picked:
            by_expiry[lt.expires_at] = by_expiry.get(lt.expires_at, 0) + n
        lots = [self._new_lot(e, n, earned_at=now, available_at=now, expires_at=exp,
                              activated=True, store_id=store_id)
                for exp, n in sorted(by_expiry.items())]
        self.available += points
        self._repay(e, lots, now)

    def adjust_growth(self, points: int, *, cause: tuple[str, str], reason: str | None) -> None:
        if self.growth + points < 0:
            raise InsufficientPoints(-points, self.growth)
        self._entry("adjust", "growth", points, cause, reason=reason)
        self.growth += points

    def clawback(self, points: int, growth: int, *, cause: tuple[str, str], lot: Lot | None,
                 expired_on_lot: int, excused_before: int, policy: str, now: dt.datetime,
                 order_id: int | None = None) -> ClawbackOutcome:
        """Take back ``points`` earned by an order being returned (docs/loyalty.md, "Refunds").

        From the order's own lot first (pending or available). What was already spent from it
        is taken from the member's other available points, soonest-expiring first; what expired
        is excused (the member lost it already); what is still missing becomes a debt
        (``owe``) or is written off (``write_off``, and ``deduct_from_refund``, whose caller
        settles those points at once: see ``earning.settle_refund_deduction``)."""
        out = ClawbackOutcome()
        if growth > 0:
            g = min(growth, self.growth)
            if g:
                self._entry("clawback", "growth", -g, cause, order_id=order_id)
                self.growth -= g
                out.growth = g
        if points <= 0:
            return out
        left = points
        if lot is not None and not lot.activated:
            n = min(left, lot.remaining)
            if n:
                self._entry("clawback", "pending", -n, cause, order_id=order_id,
                            moves={lot.ref: -n})
                lot.remaining -= n
                self.pending -= n
                out.clawed += n
                left -= n
        moves: dict[int, int] = {}
        taken = 0
        if left and lot is not None and lot.activated and lot.remaining > 0 and (
                lot.expires_at > now):
            n = min(left, lot.remaining)
            lot.remaining -= n
            moves[lot.ref] = -n
            taken += n
            left -= n
        if left and lot is not None:
            out.excused = min(left, max(0, expired_on_lot - excused_before))
            left -= out.excused
        if left:
            for lt, n in self._take(left, now, partial=True):
                moves[lt.ref] = moves.get(lt.ref, 0) - n
                taken += n
                left -= n
        if left and policy == "owe":
            out.owed = left
        else:
            out.written_off = left
        if taken + out.owed:
            self._entry("clawback", "available", -(taken + out.owed), cause, order_id=order_id,
                        moves=moves)
            self.available -= taken
            self.owed += out.owed
            out.clawed += taken + out.owed
        return out


# --- tiers --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TierDef:
    id: int
    code: str
    rank: int
    min_growth: int
    min_spend: Decimal
    multiplier: Decimal


def qualifying_tier(tiers: Sequence[TierDef], *, basis: str, growth: int,
                    spend: Decimal) -> TierDef | None:
    """The highest tier whose threshold the member meets (every threshold counts: a tier's
    minimum is never skipped)."""
    best = None
    for t in sorted(tiers, key=lambda x: x.rank):
        met = growth >= t.min_growth if basis == "growth" else spend >= t.min_spend
        if met:
            best = t
    return best


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    to_tier: TierDef | None
    reason: str  # keep_manual | keep_grace | keep | downgrade | upgrade


def review_tier(tiers: Sequence[TierDef], *, current: TierDef | None, qualifies: TierDef | None,
                tier_since: dt.datetime | None, manual_until: dt.datetime | None,
                as_of: dt.datetime, grace_days: int, max_levels: int) -> ReviewDecision:
    """The periodic review: upgrades are always applied; a downgrade only when no manual grant
    is in force, the member has held the tier for the grace period, and by at most
    ``max_levels`` ranks. A manual grant that has ended is no floor and has no grace."""
    cur_rank = current.rank if current else -1
    q_rank = qualifies.rank if qualifies else -1
    if q_rank > cur_rank:
        return ReviewDecision(qualifies, "upgrade")
    if q_rank == cur_rank:
        return ReviewDecision(current, "keep")
    if manual_until is not None and manual_until > as_of:
        return ReviewDecision(current, "keep_manual")
    if manual_until is None and tier_since is not None and (
            as_of < tier_since + dt.timedelta(days=grace_days)):
        return ReviewDecision(current, "keep_grace")
    floor_rank = max(q_rank, cur_rank - max_levels)
    by_rank = {t.rank: t for t in tiers}
    target = qualifies
    for rank in range(floor_rank, cur_rank):
        if rank in by_rank:
            target = by_rank[rank]
            break
    return ReviewDecision(target, "downgrade")


def tier_at(history: Sequence[tuple[dt.datetime, int | None]], at: dt.datetime) -> int | None:
    """The tier id in force at ``at`` from (effective_at, tier_id) rows sorted by time."""
    current = None
    for effective_at, tier_id in history:
        if effective_at > at:
            break
        current = tier_id
    return current
