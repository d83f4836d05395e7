"""Store, region, brand, channel, category and time dashboards: the rules, in plain Python.

What every figure means (docs/dashboards.md), how a date range is cut into the pieces the
rollups answer fastest, how distinct customers are counted from "previous purchase day" marks,
cohort retention and the promotion comparison. No SQL, no HTTP: the service computes the same
definitions set-based and these functions are what the unit tests pin down.

Days are the local calendar days of the store where a purchase happened, stored as day numbers
(days since 1970-01-01); months as ``year * 12 + month - 1``; weeks start on Monday (ISO).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from patron.errors import FieldError, ValidationFailed

EPOCH = dt.date(1970, 1, 1)
NO_DAY = -1  # "no earlier purchase": smaller than any day number
MAX_RANGE_DAYS = 3 * 366 + 1  # one request covers at most about three years
MAX_DAY_BUCKETS = 400  # by day: at most about a year of points
MAX_COHORT_MONTHS = 36

DIMENSIONS = ("store", "region", "brand", "channel", "category")
TIME_GRAINS = ("day", "week", "month")
BY = (*DIMENSIONS, *TIME_GRAINS)
MEMBER_FILTERS = ("member", "non_member", "guest")
SCOPE_KINDS = ("store", "region", "brand")

# The customer lists behind the figures (drill-down): figures about the customers who bought
# list those customers; the ratios list their numerator.
CUSTOMER_METRICS = ("customers", "new_customers", "returning_customers", "repeat_customers",
                    "one_time_customers")
METRIC_CUSTOMERS = {
    **{m: m for m in CUSTOMER_METRICS},
    "sales": "customers", "net_sales": "customers", "refunds": "customers",
    "orders": "customers", "customer_orders": "customers", "aov": "customers",
    "frequency": "customers", "repurchase_rate": "repeat_customers",
}
VIEWS = ("breakdown", "cohort", "structure")


def invalid(field_name: str, reason: str, **params: Any) -> ValidationFailed:
    return ValidationFailed("validation_failed", fields=[FieldError(field_name, reason, params)])


# --- calendar -------------------------------------------------------------------------------

def day_number(day: dt.date) -> int:
    return (day - EPOCH).days


def day_of(number: int) -> dt.date:
    return EPOCH + dt.timedelta(days=number)


def month_index(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def month_first(index: int) -> dt.date:
    return dt.date(index // 12, index % 12 + 1, 1)


def month_last(index: int) -> dt.date:
    return month_first(index + 1) - dt.timedelta(days=1)


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def parse_month(text: str, field_name: str = "month") -> int:
    """``YYYY-MM`` to a month index."""
    try:
        year, month = (int(p) for p in str(text).strip().split("-"))
        if not (1 <= month <= 12 and 1900 <= year <= 9998):
            raise ValueError
    except ValueError:
        raise invalid(field_name, "dashboard_month_invalid", value=str(text)[:20]) from None
    return year * 12 + month - 1


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def week_start_number(number: int) -> int:
    """The Monday of a day number's ISO week (1970-01-01 was a Thursday); the SQL is the same
    arithmetic: ``day - (day + 3) % 7``."""
    return number - (number + 3) % 7


# --- ranges ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Period:
    """A requested range of local dates and the part of it that can hold purchases: nothing
    after ``today`` counts (orders dated ahead, which the API accepts for till clocks up to a
    day fast, count from their own day on)."""

    date_from: dt.date
    date_to: dt.date
    today: dt.date

    @property
    def effective_to(self) -> dt.date:
        return min(self.date_to, self.today)

    @property
    def empty(self) -> bool:
        return self.date_from > self.effective_to

    @property
    def lo(self) -> int:
        return day_number(self.date_from)

    @property
    def hi(self) -> int:
        return day_number(self.effective_to)


def check_period(date_from: dt.date | None, date_to: dt.date | None, today: dt.date) -> Period:
    if date_from is None:
        raise invalid("from", "missing")
    if date_to is None:
        raise invalid("to", "missing")
    if date_to < date_from:
        raise invalid("to", "date_range_reversed")
    if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
        raise invalid("to", "dashboard_range_too_long", days=MAX_RANGE_DAYS)
    return Period(date_from, date_to, today)


@dataclass(frozen=True)
class Pieces:
    """A day range cut for the rollups: runs of days read row by row (the partial months at
    either end) and the whole months between them, read from monthly cells."""

    day_runs: tuple[tuple[int, int], ...]
    months: tuple[int, ...]


def split_range(lo: int, hi: int) -> Pieces:
    """``[lo, hi]`` (day numbers, inclusive) as partial-month day runs and whole months."""
    if hi < lo:
        return Pieces((), ())
    first, last = day_of(lo), day_of(hi)
    m_first, m_last = month_index(first), month_index(last)
    head_whole = first.day == 1
    tail_whole = last == month_last(m_last)
    if m_first == m_last:
        if head_whole and tail_whole:
            return Pieces((), (m_first,))
        return Pieces(((lo, hi),), ())
    runs: list[tuple[int, int]] = []
    months: list[int] = []
    if head_whole:
        months.append(m_first)
    else:
        runs.append((lo, day_number(month_last(m_first))))
    months.extend(range(m_first + 1, m_last))
    if tail_whole:
        months.append(m_last)
    else:
        runs.append((day_number(month_first(m_last)), hi))
    return Pieces(tuple(runs), tuple(months))


@dataclass(frozen=True)
class Bucket:
    """One point of a time breakdown: its label, its days within the period, and whether it
    is the whole calendar day / week / month (then a precomputed cell answers it)."""

    key: str
    lo: int
    hi: int
    whole: bool
    start: int  # the calendar bucket's first day (the cell's bucket number for day and week)


def buckets(by: str, period: Period) -> list[Bucket]:
    if period.empty:
        return []
    lo, hi = period.lo, period.hi
    out: list[Bucket] = []
    if by == "day":
        if hi - lo + 1 > MAX_DAY_BUCKETS:
            raise invalid("by", "dashboard_too_many_days", days=MAX_DAY_BUCKETS)
        return [Bucket(day_of(d).isoformat(), d, d, True, d) for d in range(lo, hi + 1)]
    if by == "week":
        start = week_start_number(lo)
        while start <= hi:
            b_lo, b_hi = max(start, lo), min(start + 6, hi)
            out.append(Bucket(day_of(start).isoformat(), b_lo, b_hi,
                              b_lo == start and b_hi == start + 6, start))
            start += 7
        return out
    if by == "month":
        m = month_index(day_of(lo))
        while day_number(month_first(m)) <= hi:
            m_lo, m_hi = day_number(month_first(m)), day_number(month_last(m))
            b_lo, b_hi = max(m_lo, lo), min(m_hi, hi)
            out.append(Bucket(month_label(m), b_lo, b_hi, b_lo == m_lo and b_hi == m_hi, m))
            m += 1
        return out
    raise invalid("by", "dashboard_dimension_unknown", value=by)


# --- figures --------------------------------------------------------------------------------

def ratio(numerator: int | Decimal, denominator: int | Decimal, places: int = 4) -> float | None:
    """A share or rate, or None when there is nothing to divide by (never NaN)."""
    if not denominator:
        return None
    return round(float(Decimal(numerator) / Decimal(denominator)), places)


def yuan(fen: int) -> Decimal:
    return (Decimal(int(fen)) / 100).quantize(Decimal("0.01"))


def average_yuan(fen: int, count: int) -> Decimal | None:
    """An average of fen amounts, in yuan to the fen, or None for no count."""
    if not count:
        return None
    return (Decimal(int(fen)) / Decimal(count) / 100).quantize(Decimal("0.01"),
                                                                 rounding=ROUND_HALF_UP)


@dataclass
class Sums:
    """Additive figures, fen, split by buyer: m(ember), n(on-member customer), g(uest)."""

    orders: dict[str, int] = field(default_factory=lambda: {"m": 0, "n": 0, "g": 0})
    sales: dict[str, int] = field(default_factory=lambda: {"m": 0, "n": 0, "g": 0})
    refunds: dict[str, int] = field(default_factory=lambda: {"m": 0, "n": 0, "g": 0})

    def add(self, buyer: str, orders: int, sales: int, refunds: int) -> None:
        self.orders[buyer] += int(orders)
        self.sales[buyer] += int(sales)
        self.refunds[buyer] += int(refunds)


@dataclass
class Reach:
    """Distinct customers of a cell: all of them, those whose first purchase there falls in
    the period, and those with two or more purchase days in it."""

    customers: int = 0
    new: int = 0
    repeat: int = 0

    def add(self, customers: int, new: int, repeat: int) -> None:
        self.customers += int(customers)
        self.new += int(new)
        self.repeat += int(repeat)


def buyers_for(member: str | None) -> tuple[str, ...]:
    return {"member": ("m",), "non_member": ("n",), "guest": ("g",)}.get(member or "",
                                                                        ("m", "n", "g"))


def figures(sums: Sums, reach: Reach, buyers: Sequence[str] = ("m", "n", "g")
            ) -> dict[str, Any]:
    """Every figure of one dashboard cell (definitions in docs/dashboards.md)."""
    orders = sum(sums.orders[b] for b in buyers)
    sales = sum(sums.sales[b] for b in buyers)
    refunds = sum(sums.refunds[b] for b in buyers)
    customer_orders = sum(sums.orders[b] for b in buyers if b != "g")
    return {
        "sales": yuan(sales),
        "refunds": yuan(refunds),
        "net_sales": yuan(sales - refunds),
        "orders": orders,
        "customer_orders": customer_orders,
        "guest_orders": orders - customer_orders,
        "customers": reach.customers,
        "new_customers": reach.new,
        "returning_customers": reach.customers - reach.new,
        "repeat_customers": reach.repeat,
        "repurchase_rate": ratio(reach.repeat, reach.customers),
        "aov": average_yuan(sales - refunds, orders),
        "frequency": ratio(customer_orders, reach.customers, 2),
    }


def group_figures(sums: Sums, reach: Reach, buyer: str) -> dict[str, Any]:
    """Members, non-member customers or guests. Guests are orders without a customer: they have
    orders, sales and an average order value, and no customers, frequency or repurchase."""
    out = figures(sums, reach if buyer != "g" else Reach(), (buyer,))
    if buyer == "g":
        for key in ("customers", "new_customers", "returning_customers", "repeat_customers",
                    "repurchase_rate", "frequency"):
            out[key] = None
    return out


# --- cohorts --------------------------------------------------------------------------------

def retention(counts: dict[int, int], cohort: int, current_month: int, horizon: int
              ) -> dict[str, Any]:
    """One acquisition cohort: its size (customers whose first purchase was in ``cohort``) and
    the share of them buying in each month k after it, up to ``horizon`` months and never past
    the current month (a month not reached yet is absent, not zero)."""
    size = int(counts.get(0, 0))
    last = min(horizon, current_month - cohort)
    curve = [{"k": k, "month": month_label(cohort + k), "customers": int(counts.get(k, 0)),
              "share": ratio(int(counts.get(k, 0)), size)} for k in range(0, last + 1)]
    return {"cohort": month_label(cohort), "customers": size, "retention": curve}


# --- promotions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PromotionWindows:
    status: str  # upcoming | running | ended
    during: tuple[dt.date, dt.date] | None
    before: tuple[dt.date, dt.date] | None


def promotion_windows(starts_on: dt.date, ends_on: dt.date, today: dt.date
                      ) -> PromotionWindows:
    """The promotion's days that have happened, and the same number of days just before it.
    A running promotion is compared on its days so far."""
    if starts_on > today:
        return PromotionWindows("upcoming", None, None)
    end = min(ends_on, today)
    length = (end - starts_on).days + 1
    before = (starts_on - dt.timedelta(days=length), starts_on - dt.timedelta(days=1))
    return PromotionWindows("running" if ends_on > today else "ended", (starts_on, end), before)


def change(before: Any, during: Any) -> dict[str, Any]:
    """How a figure moved: the difference and the relative change (None when either side is
    missing or the base is zero)."""
    if before is None or during is None:
        return {"absolute": None, "relative": None}
    b, d = Decimal(str(before)), Decimal(str(during))
    diff = d - b
    absolute: Any = diff if isinstance(before, Decimal) else (
        int(diff) if isinstance(before, int) and isinstance(during, int) else float(diff))
    return {"absolute": absolute, "relative": ratio(diff, b) if b else None}


COMPARED = ("orders", "net_sales", "aov", "customers", "frequency", "repurchase_rate")


def compare_groups(before: dict[str, dict[str, Any]], during: dict[str, dict[str, Any]]
                   ) -> dict[str, dict[str, Any]]:
    return {group: {name: change(before[group].get(name), during[group].get(name))
                    for name in COMPARED} for group in during}


def promotion_scope_check(store: str | None, brand: str | None) -> None:
    if store and brand:
        raise invalid("brand", "promotion_one_scope")


def check_promotion_dates(starts_on: dt.date, ends_on: dt.date) -> None:
    if ends_on < starts_on:
        raise invalid("ends_on", "date_range_reversed")
    if (ends_on - starts_on).days + 1 > MAX_RANGE_DAYS:
        raise invalid("ends_on", "dashboard_range_too_long", days=MAX_RANGE_DAYS)


def check_name(name: str | None) -> str:
    text = (name or "").strip()
    if not text:
        raise invalid("name", "missing")
    if len(text) > 120:
        raise invalid("name", "string_too_long", max_length=120)
    return text


def unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))
