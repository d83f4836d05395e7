"""The nightly RFM refresh continues from the previous one instead of ranking every scope again.

A quantile score is a step function of the value: with the scope's values sorted from worst to
best, ``a[0..n-1]``, and ``K_s = ceil((s - 1) * n / 5)``, a customer scores at least ``s``
exactly when their value is strictly better than ``a[K_s - 1]`` (``model.score_by_rank`` on the
competition rank says the same: ``1 + 5 * (rank - 1) // n >= s`` iff at least ``K_s`` values
are worse). So a scope is described by four *cut points* per dimension: the value class of
``a[K_s - 1]`` (``(lo, hi]``: one value for frequency and monetary, one whole day before the end
of the as-of day for recency) with ``B`` = the customers below the class and ``C`` = those up
to its end. Scores are then ``1 + #{cut points whose hi the value exceeds}``.

A refresh after the previous one (``refresh``) takes the customers whose figures changed
(``rfm_changed_customers``, kept by a trigger) and those who bought between the two as-of
moments, computes their values in every scope from their figures and their own orders, writes
the values that changed, moves ``B`` and ``C`` of every cut point by what those customers left
and brought, and walks the scope's index from the old cut point to the new ``K_s``-th value
when it no longer falls in the class (a few rows: the index on ``(scope, value)``). Scores are
not stored (``rfm_read`` computes them from the cut points kept with the scope's refresh row):
only the changed values are written. Rows whose score can have changed are the changed
customers and those whose value lies between an old and a new cut point; they are read and
re-scored, and the per-segment sums behind the stored summary are adjusted by what each
re-scored row took away and added. Recency needs no rewrite when time passes: the classes are
fixed moments, and every day a whole day older adds one day to everyone's recency (only
purchases dated after the end of the last as-of day, whose recency was clamped to 0, are
counted one by one).

Everything else (a first refresh, changed thresholds, stores moving between regions or brands,
an as-of moment earlier than the last, a day that is not 24 hours long, many changed customers)
goes through the full refresh of ``service``, after which :func:`state_from_rows` records the
cut points and sums for the next night.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from operator import attrgetter
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    type_coerce,
    union_all,
)

from patron.analytics.model import SEGMENTS, RfmThresholds, segment_for
from patron.analytics.tables import rfm_changed_customers, rfm_scores

STATE_VERSION = 1
DAY = dt.timedelta(days=1)
CENT = Decimal("0.01")
DIMS = ("r", "f", "m")
# Monetary values are integer fen here (the column's own integers, read and bound without the
# Money type's Decimal conversions: a night handles a few hundred thousand of them).
COLUMNS = {"r": rfm_scores.c.last_order_at, "f": rfm_scores.c.frequency,
           "m": type_coerce(rfm_scores.c.monetary, BigInteger)}
SCORE_COLUMNS = {"r": "r_score", "f": "f_score", "m": "m_score"}
# More changed customers than this share of the scored ones: the full refresh is cheaper.
FULL_SHARE = 0.2


def recency(last_at: dt.datetime, end: dt.datetime) -> int:
    """Whole days from a purchase to ``end`` (the end of the as-of day), never negative."""
    return max(0, (end - last_at) // DAY)


def _fen(value: Decimal) -> int:
    return int((Decimal(value) * 100).to_integral_value(rounding=ROUND_HALF_UP))


# --- value classes and cut points -----------------------------------------------------------

Value = Any  # datetime (r), int (f), int fen (m)


def value_class(dim: str, x: Value, end: dt.datetime) -> tuple[Value, Value | None]:
    """``(lo, hi]``: the values tied with ``x``. For recency ``hi`` is None for the last day's
    class (recency 0), which also holds purchases after the end of the as-of day."""
    if dim != "r":  # orders, fen
        return x - 1, x
    days = recency(x, end)
    if days == 0:
        return end - DAY, None
    hi = end - days * DAY
    return hi - DAY, hi


@dataclass
class Cut:
    lo: Value
    hi: Value | None  # None: nobody is strictly better
    below: int  # B: customers with a value <= lo
    upto: int  # C: customers with a value <= hi (every customer when hi is None)


def score(x: Value, his: list[Value | None]) -> int:
    out = 1
    for h in his:
        if h is not None and x > h:
            out += 1
    return out


def threshold_his(dim: str, th: RfmThresholds, end: dt.datetime) -> list[Value] | None:
    """The owner's cut points as "better than" bounds, the same comparisons as
    ``model``'s threshold scores; None when the dimension is scored by quantiles."""
    if dim == "r" and th.recency_days:  # ascending, as every dimension's (rfm_read)
        return sorted(end - (int(c) + 1) * DAY for c in th.recency_days)
    if dim == "f" and th.frequency:
        return [math.ceil(c) - 1 for c in th.frequency]
    if dim == "m" and th.monetary:
        return [_fen(Decimal(str(c))) - 1 for c in th.monetary]
    return None


def _encode(dim: str, value: Value | None) -> Any:
    if value is None:
        return None
    if dim == "r":
        return value.astimezone(dt.UTC).isoformat()
    if dim == "m":  # yuan, as the state has always held them
        return str((Decimal(value) / 100).quantize(CENT))
    return int(value)


def _decode(dim: str, value: Any) -> Value | None:
    if value is None:
        return None
    if dim == "r":
        return dt.datetime.fromisoformat(value)
    if dim == "m":
        return _fen(Decimal(value))
    return int(value)


@dataclass
class ScopeState:
    n: int
    cuts: dict[str, list[Cut] | None]  # None for a dimension scored by the owner's thresholds
    sums: dict[str, list[int]]  # segment -> [customers, recency, frequency, fen, r, f, m]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, **self.meta, "n": self.n, "sums": self.sums,
                "cuts": {d: None if cuts is None else [
                    [_encode(d, c.lo), _encode(d, c.hi), c.below, c.upto] for c in cuts]
                    for d, cuts in self.cuts.items()}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ScopeState:
        cuts = {d: None if raw["cuts"][d] is None else [
            Cut(_decode(d, lo), _decode(d, hi), int(b), int(c))
            for lo, hi, b, c in raw["cuts"][d]] for d in DIMS}
        meta = {k: v for k, v in raw.items() if k not in ("v", "n", "sums", "cuts")}
        return cls(int(raw["n"]), cuts, {k: [int(x) for x in v] for k, v in raw["sums"].items()},
                   meta)


def state_meta(th: RfmThresholds, store_ids: tuple[int, ...] | None, tz: str
               ) -> dict[str, Any]:
    """What a state was computed under; a refresh under anything else starts from scratch."""
    return {"tz": tz, "stores": None if store_ids is None else list(store_ids),
            "thresholds": {k: None if v is None else [str(x) for x in v]
                           for k, v in asdict(th).items()}}


def stats_from_sums(sums: dict[str, list[int]]) -> dict[str, list[float]]:
    """The stored summary (``rfm_refreshes.segments``): per segment the customers and the
    averages of recency, frequency, monetary (fen) and the three scores."""
    return {seg: [int(v[0]), *(x / v[0] for x in v[1:])] for seg, v in sums.items() if v[0]}


# --- after a full refresh -------------------------------------------------------------------

def cut_positions(n: int) -> list[int]:
    """The 0-based positions, worst first, of the values the four cut points hold among ``n``
    (``K_s - 1`` for s = 2..5)."""
    return [((level - 1) * n + 4) // 5 - 1 for level in range(2, 6)]


# percentile_disc(p) takes the ceil(p * n)-th value; for p = 0.2, 0.4, 0.6, 0.8 in double
# precision that is exactly K_s for every n up to this (checked for each n).
PERCENTILE_EXACT_UPTO = 20_000_000


def cut_values(conn: Connection, key: str, n: int, dims: list[str]) -> dict[str, list[Value]]:
    """Each of ``dims``' values at the cut positions among the scope's ``n`` rows. On
    PostgreSQL one statement of ``percentile_disc`` (a sort of each column's values alone,
    not of the rows: three window sorts of every scope's rows, partitioned by scope, took
    most of a first run at a million); on SQLite read along the ``(scope, value)`` indexes."""
    if not dims or n == 0:
        return {d: [] for d in dims}
    where = rfm_scores.c.scope == key
    if conn.dialect.name == "postgresql" and n <= PERCENTILE_EXACT_UPTO:
        row = conn.execute(select(*(
            func.percentile_disc((level - 1) / 5).within_group(COLUMNS[d])
            for d in dims for level in range(2, 6))).where(where)).one()
        return {d: list(row[4 * i:4 * i + 4]) for i, d in enumerate(dims)}
    return {d: [conn.execute(select(COLUMNS[d]).where(where).order_by(COLUMNS[d])
                             .offset(k).limit(1)).scalar_one() for k in cut_positions(n)]
            for d in dims}


def _position_sql(col: Any, bounds: list[Value]) -> Any:
    """How many of ``bounds`` (ascending, distinct) the value is strictly above."""
    if not bounds:
        return literal(0)
    return case(*((col > b, i + 1) for i, b in reversed(list(enumerate(bounds)))), else_=0)


def state_from_rows(conn: Connection, key: str, n: int, end: dt.datetime, th: RfmThresholds,
                    meta: dict[str, Any], days: Any) -> ScopeState:
    """The cut points and segment sums of a scope as its ``n`` rows now stand (after a full
    refresh; ``days``: SQL for a row's recency). The values at the cut positions
    (:func:`cut_values`) give each cut point's value class; then one grouped scan of the
    scope's rows places every value among the classes' bounds (at most nine positions per
    dimension), which gives the scores, the segment sums and the customers below and up to
    each cut point without ranking the rows."""
    fixed = {d: threshold_his(d, th, end) for d in DIMS}
    quantile = [d for d in DIMS if fixed[d] is None]
    classes = {d: [value_class(d, v, end) for v in values]
               for d, values in cut_values(conn, key, n, quantile).items()}
    bounds: dict[str, list[Value]] = {}
    for d in DIMS:
        his = fixed[d]
        bounds[d] = sorted(set(his) if his is not None else
                           {x for pair in classes[d] for x in pair if x is not None})
    s = rfm_scores.c
    placed = select(*(_position_sql(COLUMNS[d], bounds[d]).label(d) for d in DIMS),
                    days.label("rec"), s.frequency, COLUMNS["m"].label("fen")
                    ).where(s.scope == key).subquery("placed")
    p = placed.c
    groups = conn.execute(select(p.r, p.f, p.m, func.count(), func.sum(p.rec),
                                 func.sum(p.frequency), func.sum(p.fen))
                          .group_by(p.r, p.f, p.m)).all()

    def above(d: str, pos: int, bound: Value) -> bool:  # the position's values > bound
        return pos > 0 and bound <= bounds[d][pos - 1]

    his_of_dim = {d: fixed[d] if fixed[d] is not None else [hi for _lo, hi in classes[d]]
                  for d in DIMS}
    sums: dict[str, list[int]] = {}
    per_position: dict[str, dict[int, int]] = {d: {} for d in DIMS}
    for g in groups:
        count = int(g[3])
        r, f, m = (1 + sum(1 for h in his_of_dim[d] if h is not None and above(d, int(pos), h))
                   for d, pos in zip(DIMS, g[:3], strict=True))
        _add(sums, segment_for(r, f, m), [count, int(g[4]), int(g[5]), int(g[6]), r * count,
                                          f * count, m * count], 1)
        for d, pos in zip(DIMS, g[:3], strict=True):
            per_position[d][int(pos)] = per_position[d].get(int(pos), 0) + count
    total = sum(v[0] for v in sums.values())
    cuts: dict[str, list[Cut] | None] = {d: None for d in DIMS}
    for d in quantile:
        spread = per_position[d]
        cuts[d] = [Cut(lo, hi,
                       sum(c for pos, c in spread.items() if not above(d, pos, lo)),
                       total if hi is None else
                       sum(c for pos, c in spread.items() if not above(d, pos, hi)))
                   for lo, hi in classes[d]]
    return ScopeState(total, cuts, sums, meta)


def his_of(state: ScopeState, th: RfmThresholds, end: dt.datetime
           ) -> dict[str, list[Value | None]]:
    """The scope's cut points as "better than" bounds per dimension (what the refresh row's
    cut columns hold: ``rfm_read``)."""
    out: dict[str, list[Value | None]] = {}
    for dim in DIMS:
        fixed = threshold_his(dim, th, end)
        cuts = state.cuts.get(dim)
        out[dim] = (list(fixed) if fixed is not None
                    else [c.hi for c in cuts] if cuts else [None] * 4)
    return out


# --- the nightly path -----------------------------------------------------------------------

def take_changed_customers(conn: Connection) -> set[int]:
    """The customers noted since the last refresh of every scope, taken out of the note (the
    rows this transaction sees: one noted by a transaction still running stays for the next
    refresh)."""
    return {int(c) for c in conn.execute(
        delete(rfm_changed_customers).returning(rfm_changed_customers.c.customer_id)
    ).scalars().all()}


def clear_changed_customers(conn: Connection) -> None:
    conn.execute(delete(rfm_changed_customers))


_ATTR = {"r": "last_at", "f": "frequency", "m": "monetary"}
VALUE_OF = {d: attrgetter(a) for d, a in _ATTR.items()}


@dataclass(slots=True)
class Row:
    last_at: dt.datetime
    frequency: int
    monetary: int  # fen
    r: int = 1
    f: int = 1
    m: int = 1
    segment: str = "lost"

    def values(self) -> tuple[Any, ...]:
        return self.last_at, self.frequency, self.monetary

    def value(self, dim: str) -> Value:
        return getattr(self, _ATTR[dim])

    def contribution(self, end: dt.datetime) -> list[int]:
        return [1, recency(self.last_at, end), self.frequency, self.monetary, self.r,
                self.f, self.m]


def _add(sums: dict[str, list[int]], segment: str, part: list[int], sign: int) -> None:
    into = sums.setdefault(segment, [0] * 7)
    for i, v in enumerate(part):
        into[i] += sign * v


# What a refresh reads of a stored row (not ``computed_at``; monetary in fen).
ROW_COLUMNS = (rfm_scores.c.scope, rfm_scores.c.customer_id, rfm_scores.c.last_order_at,
               rfm_scores.c.frequency, COLUMNS["m"].label("monetary"))


def _row(r: Any) -> Row:
    """A stored row: its values (its scores are the old cut points', :func:`_rescore`)."""
    return Row(r[2], r[3], r[4])


@dataclass
class ScopeWork:
    """One scope's refresh: what was, what comes, and the rows to write."""
    key: str
    state: ScopeState
    old_end: dt.datetime
    end: dt.datetime
    old: dict[int, Row]  # the changed customers' rows as they were
    new: dict[int, Row]  # their values now (customers still in the scope)
    old_his: dict[str, list[Value | None]]  # the cut points the stored rows are scored by
    write: dict[int, Row] = field(default_factory=dict)
    gone: list[int] = field(default_factory=list)
    written: int = 0
    # set by plan: the customers after this refresh, the new cut points as "better than"
    # bounds and as cuts; the other rows re-scored (between an old and a new cut point)
    n: int = 0
    his: dict[str, list[Value | None]] = field(default_factory=dict)
    new_cuts: dict[str, list[Cut] | None] = field(default_factory=dict)
    others: dict[int, Row] = field(default_factory=dict)
    between: Any = None  # SQL: the scope's rows between an old and a new cut point


def last_day_rows(conn: Connection, old_ends: dict[str, dt.datetime]
                  ) -> dict[str, list[Row]]:
    """Per scope, the segment and last purchase of the rows bought after the end of its old
    as-of day (a till clock ahead: recency 0 at the last refresh, clamped), read before
    anything is written: one statement, a range of the ``(scope, last_order_at)`` index per
    scope, empty on most nights. (A purchase on the old last day itself had recency 0 and
    has ``days`` now, exactly what shifting every row of the sums by ``days`` gives it.)"""
    s = rfm_scores.c
    out: dict[str, list[Row]] = {key: [] for key in old_ends}
    parts = [select(*ROW_COLUMNS).where(
        s.scope == key, s.last_order_at > old_end) for key, old_end in old_ends.items()]
    if parts:
        for r in conn.execute(union_all(*parts)).all():
            out[r[0]].append(_row(r))
    return out


def old_his(state: ScopeState, th: RfmThresholds, old_end: dt.datetime
            ) -> dict[str, list[Value | None]]:
    """The cut points the stored rows are scored by (those of the last refresh)."""
    return his_of(state, th, old_end)


def prepare(key: str, state: ScopeState, old_end: dt.datetime, end: dt.datetime,
            old: dict[int, Row], new: dict[int, Row], last_day: list[Row],
            th: RfmThresholds) -> ScopeWork:
    """Shift the sums to the new as-of day and keep the values that changed (before anything
    is written). ``last_day``: the scope's rows of :func:`last_day_rows`."""
    his = old_his(state, th, old_end)
    work = ScopeWork(key, state, old_end, end, old, new, his)
    for row in old.values():
        _rescore(row, his)
    days = (end - old_end) // DAY
    if days:
        for part in state.sums.values():
            part[1] += days * part[0]
        # Purchases after the end of the old as-of day had recency 0 (clamped): each of those
        # rows is aged by what its own purchase time says.
        for row in last_day:
            _rescore(row, his)
            state.sums[row.segment][1] += recency(row.last_at, end) - days
    for cid in sorted(set(old) | set(new)):
        before, after = old.get(cid), new.get(cid)
        if before is not None and (after is None or after.values() != before.values()):
            _add(state.sums, before.segment, before.contribution(end), -1)
        if after is None:
            work.gone.append(cid)
        elif before is None or after.values() != before.values():
            work.write[cid] = after
    return work


WINDOW = 64  # rows read past a moved cut point, enough to see its whole class most nights


@dataclass
class View:
    """A scope's values as they will be once this refresh is written, read before anything is:
    the stored rows of the customers not touched (``untouched``: a SQL condition on
    ``rfm_scores``) and the touched customers' new values, sorted per dimension."""
    key: str
    untouched: Any
    fresh: dict[str, list[Value]]

    def rows(self, *conds: Any) -> list[Any]:
        return [rfm_scores.c.scope == self.key, self.untouched, *conds]

    def count(self, conn: Connection, dim: str, lo: Value | None, hi: Value | None) -> int:
        col = COLUMNS[dim]
        conds = self.rows()
        if lo is not None:
            conds.append(col > lo)
        if hi is not None:
            conds.append(col <= hi)
        fresh = self.fresh[dim]
        start = 0 if lo is None else bisect.bisect_right(fresh, lo)
        stop = len(fresh) if hi is None else bisect.bisect_right(fresh, hi)
        return int(conn.execute(select(func.count()).where(*conds)).scalar_one()) + max(
            0, stop - start)

    def above(self, conn: Connection, dim: str, after: Value | None, limit: int
              ) -> tuple[list[Value], bool]:
        """The smallest ``limit`` or more values greater than ``after`` (all when None),
        ascending, and whether they are all there are."""
        col = COLUMNS[dim]
        conds = self.rows() if after is None else self.rows(col > after)
        stored = conn.execute(select(col).where(*conds).order_by(col)
                              .limit(limit)).scalars().all()
        fresh = self.fresh[dim]
        fresh = fresh[0 if after is None else bisect.bisect_right(fresh, after):]
        complete = len(stored) < limit
        if not complete:  # beyond the last stored value read, the order is not known
            fresh = fresh[:bisect.bisect_right(fresh, stored[-1])]
        return sorted(stored + fresh), complete

    def below(self, conn: Connection, dim: str, upto: Value, limit: int
              ) -> tuple[list[Value], bool]:
        """The largest ``limit`` or more values up to ``upto``, descending, and whether they
        are all there are."""
        col = COLUMNS[dim]
        stored = conn.execute(select(col).where(*self.rows(col <= upto))
                              .order_by(col.desc()).limit(limit)).scalars().all()
        fresh = self.fresh[dim]
        fresh = fresh[:bisect.bisect_right(fresh, upto)]
        complete = len(stored) < limit
        if not complete:
            fresh = fresh[bisect.bisect_left(fresh, stored[-1]):]
        return sorted(stored + fresh, reverse=True), complete


def _walk(conn: Connection, view: View, dim: str, cut: Cut | None, target: int, n: int,
          end: dt.datetime) -> Cut:
    """The cut point holding the ``target``-th value (0-based, worst first), from the old one:
    the rows between them are read from the index (with a few more, to count the new value
    class without another query when it is small)."""
    if cut is None:  # no usable old cut point: from the bottom
        seen, _complete = view.above(conn, dim, None, target + 1)
        lo, hi = value_class(dim, seen[target], end)
        below = view.count(conn, dim, None, lo)
        return Cut(lo, hi, below, n if hi is None else below + view.count(conn, dim, lo, hi))
    if cut.below <= target < cut.upto:
        return cut
    if target >= cut.upto:
        skip = target - cut.upto  # rows above the old class before the target
        seen, complete = view.above(conn, dim, cut.hi, skip + 1 + WINDOW)
        lo, hi = value_class(dim, seen[skip], end)
        if complete or (hi is not None and seen[-1] > hi):
            below = cut.upto + sum(1 for x in seen if x <= lo)
            upto = n if hi is None else cut.upto + sum(1 for x in seen if x <= hi)
            return Cut(lo, hi, below, upto)
        below = cut.upto + view.count(conn, dim, cut.hi, lo)
        return Cut(lo, hi, below, n if hi is None else below + view.count(conn, dim, lo, hi))
    skip = cut.below - 1 - target  # rows below the old class above the target
    seen, complete = view.below(conn, dim, cut.lo, skip + 1 + WINDOW)
    lo, hi = value_class(dim, seen[skip], end)
    assert hi is not None  # below an old class, never the last day's
    if complete or seen[-1] <= lo:
        upto = cut.below - sum(1 for x in seen if x > hi)
        return Cut(lo, hi, upto - sum(1 for x in seen if lo < x <= hi), upto)
    upto = cut.below - view.count(conn, dim, hi, cut.lo)
    return Cut(lo, hi, upto - view.count(conn, dim, lo, hi), upto)


def _moved(came: list[Value], left: list[Value], x: Value) -> int:
    """How many more of a scope's values are <= x than before (both lists sorted)."""
    return bisect.bisect_right(came, x) - bisect.bisect_right(left, x)


def plan(conn: Connection, work: ScopeWork, th: RfmThresholds, untouched: Any) -> None:
    """The scope's new cut points (walked on the values as they will be, nothing written yet),
    and as ``work.between`` the condition on ``rfm_scores`` of the rows whose value lies
    between an old and a new cut point (they may score otherwise now), for
    :func:`candidates`."""
    state, end = work.state, work.end
    n = state.n - sum(1 for cid in work.old if cid not in work.new) + sum(
        1 for cid in work.new if cid not in work.old)
    view = View(work.key, untouched,
                {d: sorted(map(VALUE_OF[d], work.new.values())) for d in DIMS})
    his: dict[str, list[Value | None]] = {}
    ranges: list[Any] = []
    new_cuts: dict[str, list[Cut] | None] = {}
    for dim in DIMS:
        col = COLUMNS[dim]
        fixed = threshold_his(dim, th, end)
        before_his = work.old_his[dim]
        if fixed is not None:
            new_cuts[dim] = None
            his[dim] = list(fixed)
        else:
            cuts = state.cuts[dim] or []
            moved = []
            left = sorted(map(VALUE_OF[dim], work.old.values()))
            came = view.fresh[dim]

            for level, cut in zip(range(2, 6), cuts or [None] * 4, strict=True):
                usable = cut
                if cut is not None:
                    b = cut.below + _moved(came, left, cut.lo)
                    c = (cut.upto - len(left) + len(came) if cut.hi is None
                         else cut.upto + _moved(came, left, cut.hi))
                    usable = Cut(cut.lo, cut.hi, b, c)
                    if cut.hi is None and end != work.old_end:
                        usable = None  # the last day's class has split into days
                if n == 0:
                    continue
                target = ((level - 1) * n + 4) // 5 - 1
                moved.append(_walk(conn, view, dim, usable, target, n, end))
            new_cuts[dim] = moved
            his[dim] = [c.hi for c in moved] if moved else [None] * 4
        for a, b in zip(before_his, his[dim], strict=True):
            if a == b:
                continue
            low = b if a is None else a if b is None else min(a, b)
            high = None if a is None or b is None else max(a, b)
            ranges.append(and_(col > low, col <= high) if high is not None else col > low)
    work.n, work.his, work.new_cuts = n, his, new_cuts
    if ranges and n:
        work.between = and_(rfm_scores.c.scope == work.key, or_(*ranges))


def _scores_of(positions: tuple[int, ...], bounds: dict[str, list[Value]],
               his: dict[str, list[Value | None]]) -> tuple[int, int, int]:
    """The scores of a value placed at ``positions`` among ``bounds`` (:func:`_position_sql`:
    how many of them it is strictly above), by the cut points ``his``."""
    out = []
    for d, pos in zip(DIMS, positions, strict=True):
        top = bounds[d][pos - 1] if pos else None
        out.append(1 + sum(1 for h in his[d] if h is not None and top is not None and h <= top))
    return out[0], out[1], out[2]


def _bounds(his: dict[str, list[Value | None]]) -> dict[str, list[Value]]:
    return {d: sorted({h for h in his[d] if h is not None}) for d in DIMS}


def candidates(conn: Connection, works: list[ScopeWork], untouched: Any, days: Any) -> None:
    """The rows of every scope whose value lies between an old and a new cut point (not of the
    customers it touched, who are re-scored one by one), grouped by their old and new scores
    in one statement (``days``: SQL for a row's recency at the new as-of day): each group
    whose scores or segment moved takes its count and sums out of the old segment and into
    the new one. Nothing is read row by row (some 24k rows at a million customers)."""
    by_key = {w.key: w for w in works if w.between is not None}
    if not by_key:
        return
    s = rfm_scores.c
    parts, placing = [], {}
    for key, work in by_key.items():
        old_b, new_b = _bounds(work.old_his), _bounds(work.his)
        placing[key] = (old_b, new_b)
        parts.append(select(
            s.scope, *(_position_sql(COLUMNS[d], old_b[d]).label(f"o{d}") for d in DIMS),
            *(_position_sql(COLUMNS[d], new_b[d]).label(f"n{d}") for d in DIMS),
            days.label("rec"), s.frequency, COLUMNS["m"].label("fen")
        ).where(work.between, untouched))
    placed = union_all(*parts).subquery("placed")
    p = placed.c
    keys = [p.scope, *(p[f"o{d}"] for d in DIMS), *(p[f"n{d}"] for d in DIMS)]
    for g in conn.execute(select(*keys, func.count(), func.sum(p.rec), func.sum(p.frequency),
                                 func.sum(p.fen)).group_by(*keys)).all():
        work = by_key[g[0]]
        old_b, new_b = placing[g[0]]
        before = _scores_of(tuple(g[1:4]), old_b, work.old_his)
        after = _scores_of(tuple(g[4:7]), new_b, work.his)
        old_segment, new_segment = segment_for(*before), segment_for(*after)
        if (before, old_segment) == (after, new_segment):
            continue
        n, part = int(g[7]), [int(g[8]), int(g[9]), int(g[10])]
        _add(work.state.sums, old_segment, [n, *part, *(x * n for x in before)], -1)
        _add(work.state.sums, new_segment, [n, *part, *(x * n for x in after)], 1)


def finish(work: ScopeWork) -> None:
    """The touched customers re-scored by the new cut points and the sums adjusted by the rows
    whose segment or scores moved (the other rows between cut points: :func:`candidates`);
    only new values are written (scores are computed on read from the cut points)."""
    state, end, his = work.state, work.end, work.his
    others = work.others
    for cid, after in work.new.items():
        if cid in work.write:  # new or changed values: its old part is out of the sums
            _rescore(after, his)
            _add(state.sums, after.segment, after.contribution(end), 1)
        else:  # the same values as before: like any other row
            others[cid] = work.old[cid]
    for row in others.values():
        before = row.contribution(end), row.segment
        if _rescore(row, his):
            _add(state.sums, before[1], before[0], -1)
            _add(state.sums, row.segment, row.contribution(end), 1)
    state.n = work.n
    state.cuts = work.new_cuts
    state.sums = {seg: v for seg, v in state.sums.items() if v[0]}
    work.written = len(work.write)


def _rescore(row: Row, his: dict[str, list[Value | None]]) -> bool:
    """Score ``row`` by the cut points; whether anything changed."""
    r, f, m = score(row.last_at, his["r"]), score(row.frequency, his["f"]), score(
        row.monetary, his["m"])
    segment = segment_for(r, f, m)
    changed = (r, f, m, segment) != (row.r, row.f, row.m, row.segment)
    row.r, row.f, row.m, row.segment = r, f, m, segment
    return changed


# --- bulk writes ----------------------------------------------------------------------------

_PG_WRITE = text("""
INSERT INTO rfm_scores (scope, customer_id, last_order_at, frequency, monetary,
                        computed_at)
SELECT e->>1, (e->>0)::bigint, (e->>2)::timestamptz, (e->>3)::int, (e->>4)::bigint,
       CAST(:now AS timestamptz)
FROM json_array_elements(CAST(:rows AS json)) AS e
ON CONFLICT (scope, customer_id) DO UPDATE SET
  last_order_at = excluded.last_order_at, frequency = excluded.frequency,
  monetary = excluded.monetary, computed_at = excluded.computed_at
""")

_SQLITE_WRITE = text("""
INSERT INTO rfm_scores (scope, customer_id, last_order_at, frequency, monetary,
                        computed_at)
SELECT json_extract(value, '$[1]'), json_extract(value, '$[0]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), :now
FROM json_each(:rows) WHERE true
ON CONFLICT (scope, customer_id) DO UPDATE SET
  last_order_at = excluded.last_order_at, frequency = excluded.frequency,
  monetary = excluded.monetary, computed_at = excluded.computed_at
""")


def _same(moment: dt.datetime) -> dt.datetime:
    return moment


def _stamp(conn: Connection, moment: dt.datetime) -> str:
    utc = moment.astimezone(dt.UTC)
    if conn.dialect.name == "postgresql":
        return utc.isoformat()
    return utc.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def write_rows(conn: Connection, works: list[ScopeWork], now: dt.datetime) -> None:
    """Every scope's rows to write in one statement, and the rows that left the scopes. In
    key order (customer, then scope): a touched customer's rows of every scope are written
    one after the other, on the same page of the key."""
    keys = sorted((cid, w.key, row) for w in works for cid, row in w.write.items())
    if keys:
        if conn.dialect.name == "postgresql":  # orjson writes the UTC moments as ISO 8601
            sql, stamp = _PG_WRITE, _same
        else:
            sql, stamp = _SQLITE_WRITE, partial(_stamp, conn)
        rows = [[cid, key, stamp(row.last_at), row.frequency, row.monetary]
                for cid, key, row in keys]
        conn.execute(sql, {"rows": orjson.dumps(rows).decode(), "now": _stamp(conn, now)})
    s = rfm_scores.c
    for w in works:
        if w.gone:
            conn.execute(delete(rfm_scores).where(s.scope == w.key, s.customer_id.in_(w.gone)))


__all__ = ["SEGMENTS", "ScopeState", "ScopeWork", "Row", "prepare", "plan", "candidates",
           "finish", "write_rows", "last_day_rows",
           "state_from_rows", "his_of", "take_changed_customers", "clear_changed_customers",
           "stats_from_sums", "state_meta", "recency"]
