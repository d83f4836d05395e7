"""RFM scores and segments computed on read from each scope's cut points.

``rfm_scores`` keeps each customer's values in a scope (last purchase, orders, net spend);
the scores are a step function of those values (``rfm_refresh``: ``1 + #{cut points the value
is strictly above}``), and each scope's refresh row (``rfm_refreshes``) keeps its twelve cut
points as columns (``r_cut2`` .. ``m_cut5``; NULL: nobody scores that high). A night whose
day of trading moved a cut point then writes only its buyers' values, not every row between
the old and the new cut point (docs/analytics.md, "How it is computed").

Readers either know a scope's cut points (read with its refresh row: :func:`cuts_of`) and
turn a score or a segment into value ranges over the ``(scope, value)`` indexes
(:func:`segment_condition`, :func:`levels_condition`), or compute the scores in SQL
(:func:`score_sql` with the refresh row's columns or scalar subqueries).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    and_,
    case,
    false,
    literal,
    or_,
    select,
    true,
    type_coerce,
)

from patron.analytics.model import SEGMENT_GRID, SEGMENTS, segment_for
from patron.analytics.tables import rfm_refreshes, rfm_scores
from patron.db import UTCDateTime

DIMS = ("r", "f", "m")
LEVELS = (2, 3, 4, 5)
CUT_COLUMNS = {d: tuple(f"{d}_cut{level}" for level in LEVELS) for d in DIMS}
# The values as the cut points compare them (monetary in integer fen, like its cut points).
VALUES: dict[str, Any] = {"r": rfm_scores.c.last_order_at, "f": rfm_scores.c.frequency,
                          "m": type_coerce(rfm_scores.c.monetary, BigInteger)}
_TYPES = {"r": UTCDateTime(), "f": Integer(), "m": BigInteger()}

Cuts = dict[str, list[Any]]  # dim -> 4 cut points (Python values or SQL), None: nobody above


def cuts_of(refresh: Any) -> Cuts:
    """A scope's cut points from its ``rfm_refreshes`` row (None when never refreshed:
    every value scores 1)."""
    if refresh is None:
        return {d: [None] * 4 for d in DIMS}
    return {d: [getattr(refresh, c) for c in CUT_COLUMNS[d]] for d in DIMS}


def cut_values(his: dict[str, list[Any]]) -> dict[str, Any]:
    """The refresh row's cut columns from "better than" bounds (``rfm_refresh``'s ``his``:
    datetimes, orders, fen)."""
    return {col: his[d][i] for d in DIMS for i, col in enumerate(CUT_COLUMNS[d])}


def scalar_cuts(scope: Any) -> Cuts:
    """The cut points of ``scope`` as scalar subqueries (for SQL that does not read the
    refresh row first: the segment compiler, the audience replica)."""
    rr = rfm_refreshes.c
    return {d: [select(rr[c]).where(rr.scope == scope).scalar_subquery()
                for c in CUT_COLUMNS[d]] for d in DIMS}


def column_cuts(refreshes: Any) -> Cuts:
    """The cut points as columns of a joined ``rfm_refreshes`` (or an alias of it)."""
    return {d: [refreshes.c[c] for c in CUT_COLUMNS[d]] for d in DIMS}


def score(value: Any, cuts: Sequence[Any]) -> int:
    """One value's score in Python."""
    return 1 + sum(1 for c in cuts if c is not None and value > c)


def scores(values: tuple[Any, Any, Any], cuts: Cuts) -> tuple[int, int, int, str]:
    """``(r, f, m, segment)`` of ``(last purchase, orders, net spend in fen)``."""
    r, f, m = (score(v, cuts[d]) for v, d in zip(values, DIMS, strict=True))
    return r, f, m, segment_for(r, f, m)


def _bound(dim: str, cut: Any) -> Any:
    if isinstance(cut, ColumnElement) or hasattr(cut, "__clause_element__"):
        return cut
    return literal(cut, _TYPES[dim])


def score_sql(dim: str, cuts: Sequence[Any], value: Any = None) -> ColumnElement[Any]:
    """A dimension's score in SQL: 1 + the cut points the value is above (a NULL cut point
    counts for nothing)."""
    x = VALUES[dim] if value is None else value
    parts = [case((x > _bound(dim, c), 1), else_=0) for c in cuts if c is not None]
    return sum(parts, literal(1))


def segment_sql(r: Any, f: Any, m: Any) -> ColumnElement[Any]:
    """SQL for :func:`patron.analytics.model.segment_for`, generated from the grid."""
    cell = r * 10 + (f + m + 1) // 2
    whens = [(cell == row * 10 + col, name)
             for row, names in SEGMENT_GRID.items() for col, name in enumerate(names, start=1)]
    return case(*whens, else_="lost")


def _runs(levels: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for level in sorted(set(levels)):
        if out and out[-1][1] == level - 1:
            out[-1] = (out[-1][0], level)
        else:
            out.append((level, level))
    return out


def levels_condition(dim: str, levels: Iterable[int], cuts: Sequence[Any],
                     value: Any = None) -> ColumnElement[bool]:
    """The rows whose ``dim`` score is one of ``levels``, as value ranges: score >= a when the
    value is above the a-th cut point, <= b when it is not above the (b+1)-th (or that one is
    NULL). Python cut points give plain ranges an index can serve."""
    x = VALUES[dim] if value is None else value
    parts: list[Any] = []
    for lo, hi in _runs(levels):
        conds: list[Any] = []
        if lo > 1:
            c = cuts[lo - 2]
            if c is None:
                continue  # nobody scores that high
            conds.append(x > _bound(dim, c))
        if hi < 5:
            c = cuts[hi - 1]
            if isinstance(c, ColumnElement) or hasattr(c, "__clause_element__"):
                conds.append(or_(x <= c, c.is_(None)))
            elif c is not None:
                conds.append(x <= _bound(dim, c))
        parts.append(and_(*conds) if conds else true())
    if not parts:
        return false()
    return parts[0] if len(parts) == 1 else or_(*parts)


def segment_cells(segments: Iterable[str]) -> dict[int, dict[int, set[int]]]:
    """Per R score, per F score, the M scores of the cells of ``segments``."""
    wanted = set(segments)
    out: dict[int, dict[int, set[int]]] = {}
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                if segment_for(r, f, m) in wanted:
                    out.setdefault(r, {}).setdefault(f, set()).add(m)
    return out


def segment_condition(segments: Iterable[str], cuts: Cuts) -> ColumnElement[bool]:
    """The rows of a scope in one of ``segments``: R ranges (rows of the grid with the same
    cells merged) each with their (F, M) ranges."""
    by_fm: dict[tuple[tuple[int, tuple[int, ...]], ...], list[int]] = {}
    for r, fs in segment_cells(segments).items():
        key = tuple(sorted((f, tuple(sorted(ms))) for f, ms in fs.items()))
        by_fm.setdefault(key, []).append(r)
    parts = []
    for key, rs in by_fm.items():
        fm = [and_(levels_condition("f", [f], cuts["f"]), levels_condition("m", ms, cuts["m"]))
              for f, ms in key]
        parts.append(and_(levels_condition("r", rs, cuts["r"]),
                          fm[0] if len(fm) == 1 else or_(*fm)))
    if not parts:
        return false()
    return parts[0] if len(parts) == 1 else or_(*parts)


def segment_envelope(segments: Iterable[str], cuts: Cuts) -> ColumnElement[bool]:
    """One value range per dimension around every cell of ``segments`` (from its lowest to
    its highest score there): implied by :func:`segment_condition`, so adding it changes no
    answer, but it is what an index can start from and stop at. A page of a segment walked
    best spend first begins at the segment's highest spend instead of the scope's (the
    low-spending segments' first page read 400k rows of a million to find 20)."""
    cells = segment_cells(segments)
    if not cells:
        return false()
    levels = {"r": set(cells), "f": {f for fs in cells.values() for f in fs},
              "m": {m for fs in cells.values() for ms in fs.values() for m in ms}}
    return and_(*(levels_condition(d, range(min(levels[d]), max(levels[d]) + 1), cuts[d])
                  for d in DIMS))


def scored(cuts: Cuts | None = None, *, scope: Any = None) -> Any:
    """``rfm_scores`` with ``r_score``, ``f_score``, ``m_score`` and ``segment`` computed from
    the cut points (``cuts``: one scope's, Python or SQL; without them each row's own scope's
    refresh row is joined), as a subquery named ``scored``; ``scope`` restricts it."""
    s = rfm_scores.c
    cols = [s.scope, s.customer_id, s.last_order_at, s.frequency, s.monetary, s.computed_at]
    if cuts is None:
        q = select(*cols, *(score_sql(d, column_cuts(rfm_refreshes)[d]).label(f"{d}_score")
                            for d in DIMS)).select_from(
            rfm_scores.outerjoin(rfm_refreshes, rfm_refreshes.c.scope == s.scope))
    else:
        q = select(*cols, *(score_sql(d, cuts[d]).label(f"{d}_score") for d in DIMS))
    if scope is not None:
        q = q.where(s.scope == scope)
    inner = q.subquery("scores")
    c = inner.c
    return select(*c, segment_sql(c.r_score, c.f_score, c.m_score).label("segment")
                  ).subquery("scored")


__all__ = ["CUT_COLUMNS", "DIMS", "SEGMENTS", "cuts_of", "cut_values", "scalar_cuts",
           "column_cuts", "score", "scores", "score_sql", "segment_sql", "levels_condition",
           "segment_condition", "segment_cells", "segment_envelope", "scored"]
