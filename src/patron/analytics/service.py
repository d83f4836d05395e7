"""RFM scores and lifecycle stages: refreshed set-based on a schedule or on demand, and read.

RFM (docs/analytics.md): per scope ("overall", "store:CODE", "region:CODE", "brand:CODE") one
``INSERT ... SELECT`` ranks every customer with window functions and writes scores and segment;
the scope's previous rows are deleted first, in the same transaction. Overall figures come from
``customer_figures``; a store, region or brand scope aggregates the customer's orders there.

Lifecycle: one query per page of customers computes, in SQL, the days since the first and last
purchase and the span between them; the stage is decided by the pure rule
(:func:`patron.analytics.model.decide_stage`) and only customers whose stage changed are
written, each with a ``lifecycle_transitions`` row dated with the refresh's local date. A second
refresh on the same day finds nothing changed and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.schema import AddConstraint, DropConstraint
from sqlalchemy.sql.elements import ColumnElement

from patron.analytics import rfm_read, rfm_refresh
from patron.analytics.model import (
    DEFAULT_POPULATION_INTERVAL,
    LAPSED,
    SEGMENTS,
    STAGES,
    LifecycleThresholds,
    RfmThresholds,
    check_cut_points,
    segment_for,
    usual_interval,
)
from patron.analytics.tables import (
    analytics_settings,
    lifecycle_changed_customers,
    lifecycle_flow_counts,
    lifecycle_intervals,
    lifecycle_refreshes,
    lifecycle_stages,
    lifecycle_transitions,
    rfm_refreshes,
    rfm_scores,
)
from patron.config import get_settings
from patron.customers.model import mask_name, mask_phone
from patron.customers.queries import visible_clause, visible_customer, visible_ids
from patron.customers.tables import customer_figures, customers
from patron.db import Money, UnitOfWork, UTCDateTime, upsert, utcnow
from patron.errors import FieldError, Forbidden, NotFound, ValidationFailed
from patron.i18n import t
from patron.orders.tables import orders
from patron.org.tables import brands, regions, stores
from patron.security import audit
from patron.security.model import Actor

REFRESH_WORK_MEM = "256MB"
RFM_LOCK_KEY = 7_305_001  # pg_advisory_xact_lock key of the RFM refresh
LIFECYCLE_LOCK_KEY = 7_305_002  # ... and of the lifecycle refresh
MAX_PAGE_SIZE = 200
SCOPE_KINDS = ("store", "region", "brand")


def _need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


REFRESHERS = ("owner", "analyst")


def _need_refresher(actor: Actor) -> None:
    """Refreshing rewrites everyone's scores: owners and analysts (and the scheduler) only."""
    if actor.role not in REFRESHERS or actor.store_ids is not None:
        raise Forbidden("forbidden", params={"permission": "analytics.refresh"})


def _invalid(field_name: str, reason: str, **params: Any) -> ValidationFailed:
    return ValidationFailed("validation_failed", fields=[FieldError(field_name, reason, params)])


def _as_of(as_of: dt.datetime | None) -> dt.datetime:
    if as_of is None:
        return utcnow()
    if as_of.tzinfo is None:
        raise _invalid("as_of", "analytics_naive_datetime")
    return as_of.astimezone(dt.UTC)


def local_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(ZoneInfo(get_settings().default_timezone)).date()


def first_purchase(conn: Connection) -> dt.datetime | None:
    """The moment of the first recorded order (guests' included), from its index."""
    return conn.execute(select(func.min(orders.c.purchased_at))).scalar()


def first_purchase_day(conn: Connection) -> dt.date | None:
    """The local day of the first recorded order; None in an empty store."""
    first = first_purchase(conn)
    return None if first is None else local_date(first)


def _check_after_first_purchase(conn: Connection, moment: dt.datetime) -> None:
    """Scores and stages as of a moment before anyone bought would describe the present
    figures with a past clock (every recency 0, everyone new): refused with the date."""
    first = first_purchase(conn)
    if first is not None and moment < first:
        raise _invalid("as_of", "analytics_as_of_before_first_purchase",
                       first=local_date(first).isoformat())


def end_of_local_day(moment: dt.datetime) -> dt.datetime:
    """The next local midnight: days are counted from there, so that whole days since a
    purchase are calendar days and every refresh of one day sees the same numbers."""
    zone = ZoneInfo(get_settings().default_timezone)
    day = moment.astimezone(zone).date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.UTC)


# --- SQL helpers ----------------------------------------------------------------------------

def _days_between(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """Elapsed days (fractional) from ``earlier`` to ``later``, on either database."""
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", later - earlier) / 86400.0
    return func.julianday(later) - func.julianday(earlier)


def _moment(conn: Connection, value: dt.datetime) -> ColumnElement[Any]:
    return literal(value, UTCDateTime)


def _micros(stamp: Any) -> ColumnElement[Any]:
    """Microseconds since 1970 of a time as SQLite stores it ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    seconds = cast(func.strftime("%s", func.substr(stamp, 1, 19)), Integer)
    return seconds * 1000000 + cast(func.substr(stamp, 21, 6), Integer)


def floor_days(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """Elapsed days rounded down (negative when ``earlier`` is later). Exact on SQLite too:
    in integer microseconds, not by julianday's floating day numbers (a purchase at exactly
    local midnight would otherwise fall on either side)."""
    if conn.dialect.name == "postgresql":
        return cast(func.floor(_days_between(conn, later, earlier)), Integer)
    micros = _micros(later) - _micros(earlier)
    day = 86400000000
    return case((micros >= 0, micros // day), else_=-((day - 1 - micros) // day))


def _whole_days(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """Whole elapsed days, never negative (a purchase after ``as_of`` counts as today)."""
    days = floor_days(conn, later, earlier)
    return cast(case((days < 0, 0), else_=days), Integer)


def _live(customer_id: Any) -> ColumnElement[Any]:
    """Not merged into another profile. As an anti-join on the (few, indexed) merged profiles
    rather than a join with every customer: a million-row hash saved per refresh query."""
    merged = customers.c
    return ~select(merged.id).where(merged.id == customer_id,
                                    merged.merged_into_id.is_not(None)).exists()


# --- settings -------------------------------------------------------------------------------

def _setting(conn: Connection, key: str) -> dict[str, Any]:
    value = conn.execute(select(analytics_settings.c.value).where(
        analytics_settings.c.key == key)).scalar()
    return dict(value or {})


def rfm_thresholds(conn: Connection) -> RfmThresholds:
    raw = _setting(conn, "rfm")
    return RfmThresholds(**{k: tuple(v) for k, v in raw.items() if v is not None})


def lifecycle_thresholds(conn: Connection) -> LifecycleThresholds:
    return LifecycleThresholds(**_setting(conn, "lifecycle"))


def get_thresholds(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    _need(actor, "dashboard.read")
    rfm = asdict(rfm_thresholds(conn))
    life = asdict(lifecycle_thresholds(conn))
    life.pop("fixed", None)
    return {"rfm": rfm, "lifecycle": life}


RFM_FIELDS = ("recency_days", "frequency", "monetary")
LIFECYCLE_FIELDS = ("new_days", "k_dormant", "k_churn_risk", "k_churned", "max_days",
                    "min_interval_days", "dormant_days", "churn_risk_days", "churned_days")


def set_thresholds(*, uow: UnitOfWork, actor: Actor, rfm: dict[str, Any] | None = None,
                   lifecycle: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replace the owner's thresholds (a ``None`` value or a missing key means the default).
    Checked in full before anything is written."""
    _need(actor, "admin.org")
    conn = uow.c
    changes: dict[str, dict[str, Any]] = {}
    if rfm is not None:
        clean: dict[str, Any] = {}
        for key, value in rfm.items():
            if key not in RFM_FIELDS:
                raise _invalid(f"rfm.{key}", "extra_forbidden")
            if value is None:
                continue
            try:
                points = check_cut_points([float(v) for v in value])
            except (TypeError, ValueError) as exc:
                raise _invalid(f"rfm.{key}", "analytics_cut_points_invalid") from exc
            clean[key] = [int(p) for p in points] if key != "monetary" else list(points)
        changes["rfm"] = clean
    if lifecycle is not None:
        unknown = sorted(set(lifecycle) - set(LIFECYCLE_FIELDS))
        if unknown:
            raise _invalid(f"lifecycle.{unknown[0]}", "extra_forbidden")
        clean = {k: v for k, v in lifecycle.items() if v is not None}
        try:
            LifecycleThresholds(**clean)
        except (TypeError, ValueError) as exc:
            raise _invalid("lifecycle", "analytics_lifecycle_thresholds_invalid") from exc
        changes["lifecycle"] = clean
    now = utcnow()
    for key, value in changes.items():
        conn.execute(delete(analytics_settings).where(analytics_settings.c.key == key))
        conn.execute(insert(analytics_settings).values(key=key, value=value, updated_at=now,
                                                        updated_by=actor.name))
        audit.record(conn, actor, "analytics.thresholds_set", entity="analytics_settings",
                     entity_id=key, details=value)
    uow.commit()
    return get_thresholds(conn, actor=actor)


# --- scopes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    key: str  # "overall" or "<kind>:<code>"
    store_ids: tuple[int, ...] | None  # None: every store (and orders without one)


def parse_scope(conn: Connection, scope: str) -> Scope:
    scope = (scope or "overall").strip()
    if scope == "overall":
        return Scope("overall", None)
    kind, _, code = scope.partition(":")
    if kind not in SCOPE_KINDS or not code:
        raise _invalid("scope", "analytics_scope_invalid", value=scope)
    table = {"store": stores, "region": regions, "brand": brands}[kind]
    found = conn.execute(select(table.c.id).where(table.c.code == code)).scalar()
    if found is None:
        raise _invalid("scope", "analytics_scope_unknown", value=scope)
    if kind == "store":
        ids = [int(found)]
    else:
        column = stores.c.region_id if kind == "region" else stores.c.brand_id
        ids = [int(i) for i in conn.execute(select(stores.c.id).where(column == found)
                                            .order_by(stores.c.id)).scalars()]
    return Scope(f"{kind}:{code}", tuple(ids))


def all_scopes(conn: Connection) -> list[Scope]:
    out = [Scope("overall", None)]
    for kind in SCOPE_KINDS:
        table = {"store": stores, "region": regions, "brand": brands}[kind]
        for code in conn.execute(select(table.c.code).order_by(table.c.code)).scalars():
            out.append(parse_scope(conn, f"{kind}:{code}"))
    return out


# --- RFM refresh ----------------------------------------------------------------------------

# Orders aggregated per store and customer once per refresh; every store, region and brand
# scope reads this instead of the orders (one pass over the orders instead of one per scope).
_scratch = MetaData()
_store_totals = Table(
    "tmp_rfm_store_totals", _scratch,
    Column("store_id", BigInteger, nullable=False),
    Column("customer_id", BigInteger, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),
    Column("frequency", Integer, nullable=False),
    Column("monetary", Money, nullable=False),
    prefixes=["TEMPORARY"],
)


def _tune(conn: Connection) -> None:
    """A refresh sorts and hashes a million rows at a time: on PostgreSQL give this one
    transaction the memory to do it without spilling to disk (the default 4 MB is sized for
    many small concurrent queries; refreshes run one at a time)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{REFRESH_WORK_MEM}'")


def _tune_for_few(conn: Connection) -> None:
    """A nightly refresh reads a few thousand customers out of a million through indexes: the
    default random_page_cost (4, for spinning disks) made the planner hash whole tables
    (orders, figures, stages) against them instead, so from here on this transaction prices
    an index page as SSDs and a warm cache cost it. (A full refresh reads whole tables and
    keeps the default.)"""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")


def _drop_store_totals(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_store_totals.name}")


def _build_store_totals(conn: Connection, as_of: dt.datetime) -> None:
    o = orders.c
    _drop_store_totals(conn)
    _store_totals.create(conn)
    conds = [o.store_id.is_not(None), o.customer_id.is_not(None), _live(o.customer_id),
             o.purchased_at <= _moment(conn, as_of)]
    conn.execute(insert(_store_totals).from_select(
        ["store_id", "customer_id", "last_at", "frequency", "monetary"],
        select(o.store_id, o.customer_id, func.max(o.purchased_at), func.count(),
               func.sum(o.total_amount - o.refunded_amount))
        .where(*conds)
        .group_by(o.store_id, o.customer_id)))
    # Indexed once filled: one bulk build instead of an update per row.
    conn.exec_driver_sql(f"CREATE INDEX {_store_totals.name}_store "
                         f"ON {_store_totals.name} (store_id)")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {_store_totals.name}")


def _rfm_source(conn: Connection, scope: Scope, *, only: Any = None) -> Any:
    """customer_id, last purchase, frequency (orders), monetary (net spend, fen). A store,
    region or brand scope reads the per-store totals built by :func:`_build_store_totals`;
    ``only`` restricts the overall scope's figures to a subquery of customer ids."""
    if scope.store_ids is None:
        fig = customer_figures.c
        conds = [_live(fig.customer_id), fig.order_count > 0, fig.last_order_at.is_not(None)]
        if only is not None:
            conds.append(fig.customer_id.in_(only))
        return (select(fig.customer_id.label("customer_id"),
                       fig.last_order_at.label("last_at"),
                       fig.order_count.label("frequency"),
                       fig.net_spend.label("monetary"))
                .where(*conds)).subquery("src")
    t = _store_totals.c
    if len(scope.store_ids) == 1:
        return (select(t.customer_id, t.last_at, t.frequency, t.monetary)
                .where(t.store_id == scope.store_ids[0])).subquery("src")
    return (select(t.customer_id, func.max(t.last_at).label("last_at"),
                   func.sum(t.frequency).label("frequency"),
                   func.sum(t.monetary).label("monetary"))
            .where(t.store_id.in_(scope.store_ids))
            .group_by(t.customer_id)).subquery("src")


_RFM_VALUES = ("last_order_at", "frequency", "monetary")


def _refresh_scope(conn: Connection, scope: Scope, as_of: dt.datetime, now: dt.datetime,
                   *, empty: bool = False, count: int | None = None) -> tuple[int, int | None]:
    """Every customer's values in the scope: write the rows that are new or changed and
    delete those of customers no longer in it (scores are computed on read from the cut
    points, :mod:`patron.analytics.rfm_read`). Returns the scope's customers and the rows
    written, None when the scope had none (all were written). ``empty``: the table is known
    to be empty; ``count``: the scope's customers when known."""
    src = _rfm_source(conn, scope)
    if count is None:
        count = int(conn.execute(select(func.count()).select_from(src)).scalar_one())
    rows = select(literal(scope.key).label("scope"), src.c.customer_id, src.c.last_at,
                  src.c.frequency, src.c.monetary,
                  literal(now, UTCDateTime).label("computed_at"))
    if not empty:
        # in key order: the primary key fills page by page (into an empty table the key is
        # built afterwards, by a sort of its own: no sort of each scope's rows first)
        rows = rows.order_by(src.c.customer_id)
    columns = ["scope", "customer_id", *_RFM_VALUES, "computed_at"]
    s = rfm_scores.c
    first = None if empty else conn.execute(
        select(s.customer_id).where(s.scope == scope.key).limit(1)).first()
    written: int | None = None
    if first is None:
        conn.execute(insert(rfm_scores).from_select(columns, rows))
    else:
        gone = select(src.c.customer_id).where(src.c.customer_id == s.customer_id)
        conn.execute(delete(rfm_scores).where(s.scope == scope.key, ~gone.exists()))
        # SQLite reads "SELECT ... ON CONFLICT" as a join unless the SELECT has a WHERE.
        stmt = upsert(conn, rfm_scores).from_select(columns, rows.where(true()))
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["scope", "customer_id"],
            set_={c: new[c] for c in (*_RFM_VALUES, "computed_at")},
            where=or_(*(s[c] != new[c] for c in _RFM_VALUES)))
        conn.execute(stmt)
        # (SQLite's driver reports no row count for INSERT ... SELECT, nor psycopg's here)
        written = int(conn.execute(
            select(func.count()).where(s.scope == scope.key,
                                       s.computed_at == _moment(conn, now))).scalar_one())
    return count, written


def _score_scope(conn: Connection, scope: Scope, as_of: dt.datetime, th: RfmThresholds,
                 now: dt.datetime, count: int, written: int | None) -> tuple[int, int]:
    """A fully refreshed scope's cut points and sums recorded (from its ``count`` rows as
    stored, :func:`rfm_refresh.state_from_rows`); (customers, rows written: all of them
    when ``written`` is None, a first refresh)."""
    end = end_of_local_day(as_of)
    days = _whole_days(conn, _moment(conn, end), rfm_scores.c.last_order_at)
    state = rfm_refresh.state_from_rows(conn, scope.key, count, end, th,
                                        _state_meta(th, scope), days)
    written = state.n if written is None else written
    _save_refresh(conn, scope.key, as_of, now, state, written, th)
    return state.n, written


def _drop_indexes_of_empty(conn: Connection, tables: list[Table], *,
                           keys_too: tuple[Table, ...] = ()) -> list[Index | Table]:
    """The secondary indexes of those ``tables`` that are empty, dropped: a first refresh
    fills them with a million rows or more, and building an index once afterwards (one sort)
    costs a fraction of inserting every row into it. On PostgreSQL the primary keys of the
    ``keys_too`` among them go too (rows that do not arrive in key order; nothing refers to
    those keys). Dropped and built in the refresh's transaction (readers wait for it: there
    is nothing to read yet)."""
    rebuilt: list[Index | Table] = []
    for table in tables:
        if conn.execute(select(literal(1)).select_from(table).limit(1)).first() is None:
            if table in keys_too and conn.dialect.name == "postgresql":
                rebuilt.append(table)
            rebuilt += sorted((i for i in table.indexes if not i.unique),
                              key=lambda i: str(i.name))
    if rebuilt and conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{REFRESH_WORK_MEM}'")
    for item in rebuilt:
        if isinstance(item, Table):
            conn.execute(DropConstraint(item.primary_key))
        else:
            item.drop(conn)
    return rebuilt


def _create_indexes(conn: Connection, rebuilt: list[Index | Table]) -> None:
    tables = set()
    for item in rebuilt:
        if isinstance(item, Table):
            conn.execute(AddConstraint(item.primary_key))
            tables.add(item.name)
        else:
            item.create(conn)
            tables.add(str(item.table.name))  # type: ignore[union-attr]
    if conn.dialect.name == "postgresql":
        for name in sorted(tables):
            conn.exec_driver_sql(f"ANALYZE {name}")


def _refresh_all_scopes(conn: Connection, scopes: list[Scope], as_of: dt.datetime,
                        th: RfmThresholds, now: dt.datetime) -> dict[str, tuple[int, int]]:
    """Every scope recomputed in full. Into an empty table (the first refresh: five million
    rows at a million customers) the rows go without the secondary indexes, which are built
    once afterwards (a sort each instead of five million inserts into each); the drop and
    the build are in the refresh's transaction, like the rows."""
    partial = any(s.store_ids is not None for s in scopes)
    if partial:
        _build_store_totals(conn, as_of)
    counts: dict[int, int] = {}
    if partial:
        # Every store scope's customers in one pass (a count per store scope was a query each).
        t = _store_totals.c
        counts = {int(sid): int(n) for sid, n in conn.execute(
            select(t.store_id, func.count()).group_by(t.store_id))}
    rebuilt = _drop_indexes_of_empty(conn, [rfm_scores], keys_too=(rfm_scores,))
    empty = bool(rebuilt)
    done = {s.key: _refresh_scope(
        conn, s, as_of, now, empty=empty,
        count=counts.get(s.store_ids[0], 0) if s.store_ids is not None
        and len(s.store_ids) == 1 else None) for s in scopes}
    _create_indexes(conn, rebuilt)
    if partial:
        _drop_store_totals(conn)
    return {s.key: _score_scope(conn, s, as_of, th, now, *done[s.key]) for s in scopes}


def _state_meta(th: RfmThresholds, scope: Scope) -> dict[str, Any]:
    return rfm_refresh.state_meta(th, scope.store_ids, get_settings().default_timezone)


def _save_refresh(conn: Connection, key: str, as_of: dt.datetime, now: dt.datetime,
                  state: rfm_refresh.ScopeState, written: int, th: RfmThresholds) -> None:
    _save_refreshes(conn, [(key, state, written)], as_of, now, th)


def _save_refreshes(conn: Connection, done: list[tuple[str, rfm_refresh.ScopeState, int]],
                    as_of: dt.datetime, now: dt.datetime, th: RfmThresholds) -> None:
    """Each scope's refresh row (as-of, customers, rows written, summary, state, and the cut
    points every reader scores by): one delete and one insert for all of them."""
    end = end_of_local_day(as_of)
    conn.execute(delete(rfm_refreshes).where(rfm_refreshes.c.scope.in_([k for k, *_ in done])))
    conn.execute(insert(rfm_refreshes), [
        {"scope": key, "as_of": as_of, "computed_at": now, "customers": state.n,
         "changed": written, "segments": rfm_refresh.stats_from_sums(state.sums),
         "state": state.to_json(),
         **rfm_read.cut_values(rfm_refresh.his_of(state, th, end))}
        for key, state, written in done])


_touched = Table("tmp_rfm_touched", _scratch,
                 Column("customer_id", BigInteger, primary_key=True), prefixes=["TEMPORARY"])


def _fill_ids(conn: Connection, table: Table, ids: set[int]) -> None:
    """Customer ids into a temporary table: on PostgreSQL one statement with the ids as one
    array parameter (a row per id through ``executemany`` took 190 ms for 7k ids)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} (customer_id) "  # noqa: S608 - our own table name
            "SELECT unnest(%(ids)s::bigint[]) ORDER BY 1", {"ids": sorted(ids)})
        return
    conn.execute(insert(table), [{"customer_id": c} for c in sorted(ids)])


def _refresh_changes_only(conn: Connection, scopes: list[Scope], as_of: dt.datetime,
                          th: RfmThresholds, now: dt.datetime, changed: set[int]
                          ) -> dict[str, tuple[int, int]] | None:
    """Every scope continued from its last refresh (:mod:`patron.analytics.rfm_refresh`):
    only the changed customers and those whose quantile moved are read and written. None
    when a scope cannot continue (no state yet, other thresholds or stores, an as-of moment
    before the last, a day that is not 24 hours long, too many changes): the caller then
    refreshes in full."""
    end = end_of_local_day(as_of)
    previous = {r.scope: r for r in conn.execute(select(rfm_refreshes).where(
        rfm_refreshes.c.scope.in_([s.key for s in scopes])))}
    states: dict[str, tuple[rfm_refresh.ScopeState, dt.datetime]] = {}
    for scope in scopes:
        prev = previous.get(scope.key)
        if prev is None or not prev.state or prev.state.get("v") != rfm_refresh.STATE_VERSION:
            return None
        meta = _state_meta(th, scope)
        if any(prev.state.get(k) != v for k, v in meta.items()) or as_of < prev.as_of:
            return None
        old_end = end_of_local_day(prev.as_of)
        if (end - old_end) % rfm_refresh.DAY:
            return None
        states[scope.key] = (rfm_refresh.ScopeState.from_json(prev.state), old_end)
    o = orders.c
    since = min(previous[s.key].as_of for s in scopes)
    touched = set(changed)
    if as_of > since:
        # Bought after the last as-of moment but recorded before it (a till clock ahead):
        # the store scopes count their orders only now.
        touched.update(int(c) for c in conn.execute(
            select(o.customer_id).distinct().where(
                o.purchased_at > _moment(conn, since), o.purchased_at <= _moment(conn, as_of),
                o.customer_id.is_not(None))).scalars())
    scored = max((st.n for st, _end in states.values()), default=0)
    if len(touched) > max(1000, rfm_refresh.FULL_SHARE * scored):
        return None
    _tune_for_few(conn)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_touched.name}")
    _touched.create(conn)
    if touched:
        _fill_ids(conn, _touched, touched)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {_touched.name}")
    only = select(_touched.c.customer_id)
    s = rfm_scores.c
    old: dict[str, dict[int, rfm_refresh.Row]] = {}
    for r in conn.execute(select(*rfm_refresh.ROW_COLUMNS).where(
            s.customer_id.in_(only))).all():
        old.setdefault(r[0], {})[r[1]] = rfm_refresh._row(r)
    new = _touched_values(conn, scopes, as_of, only)
    last_day = rfm_refresh.last_day_rows(conn, {k: old_end for k, (_st, old_end)
                                                 in states.items()})
    works = []
    for scope in scopes:
        state, old_end = states[scope.key]
        works.append(rfm_refresh.prepare(scope.key, state, old_end, end,
                                         old.get(scope.key, {}), new.get(scope.key, {}),
                                         last_day[scope.key], th))
    # Nothing is written before every cut point has moved: the walks read the stored rows of
    # the customers not touched and merge the touched ones' new values, so that each row is
    # written once, with its final values and scores.
    untouched = ~select(_touched.c.customer_id).where(
        _touched.c.customer_id == s.customer_id).exists()
    for work in works:
        rfm_refresh.plan(conn, work, th, untouched)
    rfm_refresh.candidates(conn, works, untouched,
                           _whole_days(conn, _moment(conn, end), s.last_order_at))
    for work in works:
        rfm_refresh.finish(work)
    rfm_refresh.write_rows(conn, works, now)
    for scope, work in zip(scopes, works, strict=True):
        work.state.meta = _state_meta(th, scope)
    _save_refreshes(conn, [(w.key, w.state, w.written) for w in works], as_of, now, th)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_touched.name}")
    return {w.key: (w.state.n, w.written) for w in works}


def _touched_values(conn: Connection, scopes: list[Scope], as_of: dt.datetime, only: Any
                    ) -> dict[str, dict[int, rfm_refresh.Row]]:
    """The touched customers' values in every scope: overall from their figures, the others
    from their orders per store (one statement through the orders' customer index), rolled up
    here per region and brand: the same sums as :func:`_rfm_source`'s."""
    out: dict[str, dict[int, rfm_refresh.Row]] = {s.key: {} for s in scopes}
    overall = [s for s in scopes if s.store_ids is None]
    for scope in overall:
        src = _rfm_source(conn, scope, only=only)
        out[scope.key] = {cid: rfm_refresh.Row(last_at, frequency, fen)
                          for cid, last_at, frequency, fen in conn.execute(
                              select(src.c.customer_id, src.c.last_at, src.c.frequency,
                                     type_coerce(src.c.monetary, BigInteger))).all()}
    partial = [s for s in scopes if s.store_ids is not None]
    if not partial:
        return out
    o = orders.c
    per_store: dict[int, list[tuple[int, Any, int, int]]] = {}
    for store_id, cid, last_at, frequency, monetary in conn.execute(
            select(o.store_id, o.customer_id, func.max(o.purchased_at), func.count(),
                   type_coerce(func.sum(o.total_amount - o.refunded_amount), BigInteger))
            .where(o.store_id.is_not(None), o.customer_id.in_(only), _live(o.customer_id),
                   o.purchased_at <= _moment(conn, as_of))
            .group_by(o.store_id, o.customer_id)).all():
        per_store.setdefault(store_id, []).append((cid, last_at, frequency, int(monetary)))
    for scope in partial:
        rows = out[scope.key]
        for store_id in scope.store_ids or ():
            for cid, last_at, frequency, monetary in per_store.get(store_id, ()):
                row = rows.get(cid)
                if row is None:
                    rows[cid] = rfm_refresh.Row(last_at, frequency, monetary)
                else:
                    row.last_at = max(row.last_at, last_at)
                    row.frequency += frequency
                    row.monetary += monetary
    return out


def refresh_rfm(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None,
                scope: str = "overall") -> dict[str, Any]:
    """Recompute the RFM scores of one scope, or of every scope with ``scope="all"``.
    Returns the number of customers scored per scope."""
    _need_refresher(actor)
    conn = uow.c
    moment = _as_of(as_of)
    _check_after_first_purchase(conn, moment)
    scopes = all_scopes(conn) if scope == "all" else [parse_scope(conn, scope)]
    th = rfm_thresholds(conn)
    now = utcnow()
    _tune(conn)
    if conn.dialect.name == "postgresql":
        # One RFM refresh at a time: each continues from the state the last one left.
        conn.execute(select(func.pg_advisory_xact_lock(RFM_LOCK_KEY)))
    done = None
    if scope == "all":
        # Every scope is refreshed: the noted customers are taken whichever way it goes.
        changed = rfm_refresh.take_changed_customers(conn)
        done = _refresh_changes_only(conn, scopes, moment, th, now, changed)
    mode = "changes" if done is not None else "full"
    if done is None:
        done = _refresh_all_scopes(conn, scopes, moment, th, now)
    scored = {key: total for key, (total, _written) in done.items()}
    written = {key: n for key, (_total, n) in done.items()}
    audit.record(conn, actor, "analytics.rfm_refreshed", entity="rfm_scores",
                 details={"scope": scope, "as_of": moment.isoformat(), "customers": scored,
                          "rows_written": sum(written.values()), "mode": mode})
    uow.commit()
    return {"as_of": moment, "scopes": scored, "written": written, "mode": mode}


# --- lifecycle refresh ----------------------------------------------------------------------

def _interval_sql(conn: Connection) -> ColumnElement[Any]:
    fig = customer_figures.c
    return _days_between(conn, fig.last_order_at, fig.first_order_at) / (fig.purchase_days - 1)


def _refresh_intervals(conn: Connection, only: Any = None
                       ) -> tuple[list[float], list[float]]:
    """Bring ``lifecycle_intervals`` up to date with the figures: every live repeat buyer's
    usual interval (the same SQL the population interval has always been computed with), for
    the customers of ``only`` (a subquery of ids) or for everyone. Returns the intervals taken
    out and put in when ``only`` is given (for :func:`_population_interval`)."""
    li, fig = lifecycle_intervals.c, customer_figures.c
    conds = [fig.purchase_days > 1, _live(fig.customer_id)]
    fill = insert(lifecycle_intervals)
    if only is None:
        conn.execute(delete(lifecycle_intervals))
        conn.execute(fill.from_select(
            ["customer_id", "usual_interval"],
            select(fig.customer_id, _interval_sql(conn)).where(*conds)
            .order_by(fig.customer_id)))
        return [], []
    conds.append(fig.customer_id.in_(only))
    out = [float(v) for v in conn.execute(delete(lifecycle_intervals).where(
        li.customer_id.in_(only)).returning(li.usual_interval)).scalars()]
    # (SQLite reads "INSERT ... SELECT ... RETURNING" only with a WHERE, which it has)
    put = [float(v) for v in conn.execute(fill.from_select(
        ["customer_id", "usual_interval"],
        select(fig.customer_id, _interval_sql(conn)).where(*conds)
        .order_by(fig.customer_id)).returning(li.usual_interval)).scalars()]
    return out, put


def _population_interval(conn: Connection, previous: dict[str, Any] | None = None,
                         out: list[float] = (), put: list[float] = ()  # type: ignore[assignment]
                         ) -> tuple[float, dict[str, Any]]:
    """The middle usual interval of repeat buyers (the ``count // 2``-th, 0-based, in
    ascending order): one-time buyers are judged by it. Returns it with what the next refresh
    continues from: the count, the middle value ``m``, and how many intervals lie below ``m``
    and up to it. ``previous`` (that state of the last refresh) with the intervals taken
    ``out`` and ``put`` in since: the middle moves by what changed, walked on the index from
    the old one (a few rows); without it, read through the index from the bottom."""
    li = lifecycle_intervals.c
    col = li.usual_interval

    def count(*conds: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(lifecycle_intervals)
                                .where(*conds)).scalar_one())

    def state(n: int, m: float | None, below: int, upto: int) -> tuple[float, dict[str, Any]]:
        value = DEFAULT_POPULATION_INTERVAL if m is None else m
        return value, {"n": n, "middle": m, "below": below, "upto": upto}

    if previous is not None and previous.get("middle") is not None:
        m = float(previous["middle"])
        n = int(previous["n"]) - len(out) + len(put)
        below = (int(previous["below"]) - sum(1 for x in out if x < m)
                 + sum(1 for x in put if x < m))
        upto = (int(previous["upto"]) - sum(1 for x in out if x <= m)
                + sum(1 for x in put if x <= m))
        target = n // 2
        if n == 0:
            return state(0, None, 0, 0)
        if below <= target < upto:
            return state(n, m, below, upto)
        if target >= upto:
            seen = [float(v) for v in conn.execute(
                select(col).where(col > m).order_by(col).limit(target - upto + 1)).scalars()]
            v = seen[-1]
            below = upto + sum(1 for x in seen if x < v)
            return state(n, v, below, below + count(col == v))
        seen = [float(v) for v in conn.execute(
            select(col).where(col < m).order_by(col.desc()).limit(below - target)).scalars()]
        v = seen[-1]
        upto = below - sum(1 for x in seen if x > v)
        return state(n, v, upto - count(col == v), upto)
    n = count()
    if not n:
        return state(0, None, 0, 0)
    value = conn.execute(select(col).order_by(col).offset(n // 2).limit(1)).scalar()
    if value is None:
        return state(0, None, 0, 0)
    m = float(value)
    below = count(col < m)
    return state(n, m, below, below + count(col == m))


def _stage_case(conn: Connection, *, since_first: Any, since_last: Any, purchase_days: Any,
                span: Any, previous: Any, bought_since: Any, population: float,
                th: LifecycleThresholds) -> ColumnElement[Any]:
    """SQL for :func:`patron.analytics.model.decide_stage`, operation for operation in double
    precision so that it decides exactly as the Python rule does (the unit tests hold both to
    the same cases)."""
    def real(value: float) -> Any:
        return literal(float(value), Float)

    span_f = cast(span, Float)
    if th.fixed:
        limits = [real(th.churned_days), real(th.churn_risk_days),  # type: ignore[arg-type]
                  real(th.dormant_days)]  # type: ignore[arg-type]
    else:
        own = case((span_f > 0, span_f), else_=real(0.0)) / cast(purchase_days - 1, Float)
        interval = case((purchase_days >= 2, own), else_=real(population))
        base = case((interval > real(th.min_interval_days), interval),
                    else_=real(th.min_interval_days))
        limits = [real(th.k_churned) * base, real(th.k_churn_risk) * base,
                  real(th.k_dormant) * base]
    days = cast(since_last, Float)
    late = case((days > real(th.max_days), "churned"), (days > limits[0], "churned"),
                (days > limits[1], "churn_risk"), (days > limits[2], "dormant"),
                else_="active")
    return case(
        (and_(purchase_days <= 1, since_first <= th.new_days), "new"),
        (late != "active", late),
        (previous.in_(sorted(LAPSED)), "reactivated"),
        (and_(previous == "reactivated", bought_since == 0), "reactivated"),
        else_="active")


_stage_changes = Table(
    "tmp_lifecycle_changes", _scratch,
    Column("customer_id", BigInteger, primary_key=True),
    Column("from_stage", String(16), nullable=True),
    Column("to_stage", String(16), nullable=False),
    Column("last_order_at", UTCDateTime, nullable=True),
    Column("due_day", Integer, nullable=True),
    prefixes=["TEMPORARY"],
)
_candidates = Table("tmp_lifecycle_candidates", _scratch,
                    Column("customer_id", BigInteger, primary_key=True),
                    prefixes=["TEMPORARY"])
_NEVER = 1_000_000_000  # "no day": larger than any day offset
LIFECYCLE_STATE_VERSION = 2


def _day_number(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def _limits(th: LifecycleThresholds, base: float) -> list[float]:
    """churned, churn risk, dormant: the same double-precision products as :func:`_stage_case`."""
    if th.fixed:
        return [float(th.churned_days), float(th.churn_risk_days),  # type: ignore[arg-type]
                float(th.dormant_days)]  # type: ignore[arg-type]
    return [float(th.k_churned) * base, float(th.k_churn_risk) * base,
            float(th.k_dormant) * base]


def _due_sql(conn: Connection, *, since_first: Any, since_last: Any, purchase_days: Any,
             span: Any, th: LifecycleThresholds, today: dt.date) -> ColumnElement[Any]:
    """The first later local day on which one of the rule's comparisons (``since > limit``)
    turns, if the customer buys nothing: the stage can only change then. ``since_*``: days
    as they grow, not yet raised to 0 for a purchase after the end of the as-of day. A limit
    taken from the population's interval (one-time buyers, adaptive rule) is left out: the
    nightly refresh finds those customers by their last purchase instead."""
    def real(value: float) -> Any:
        return literal(float(value), Float)

    def ahead(since: Any, limit: Any) -> Any:
        """Days until ``since`` exceeds ``limit`` (``since`` grows by one a day)."""
        first = cast(func.floor(limit), Integer) + 1
        return case((since < first, first - since), else_=_NEVER)

    offsets = [case((and_(purchase_days <= 1, since_first <= th.new_days),
                     th.new_days + 1 - since_first), else_=_NEVER),
               ahead(since_last, real(th.max_days))]
    if th.fixed:
        offsets += [ahead(since_last, real(v)) for v in _limits(th, 0.0)]
    else:
        span_f = cast(span, Float)
        own = case((span_f > 0, span_f), else_=real(0.0)) / cast(purchase_days - 1, Float)
        base = case((own > real(th.min_interval_days), own), else_=real(th.min_interval_days))
        for k in (th.k_churned, th.k_churn_risk, th.k_dormant):
            offsets.append(case((purchase_days >= 2, ahead(since_last, real(k) * base)),
                                else_=_NEVER))
    least = func.least if conn.dialect.name == "postgresql" else func.min
    soonest = least(*offsets)
    return case((soonest >= _NEVER, None), else_=soonest + _day_number(today))


def _fixed_offset(zone_name: str, around: dt.datetime) -> bool:
    """Whether the zone keeps one UTC offset for two years either side (no daylight saving):
    whole days since a purchase then grow by exactly one a day, which due days rely on."""
    zone = ZoneInfo(zone_name)
    offsets = {zone.utcoffset(around + dt.timedelta(days=d)) for d in range(-730, 731, 15)}
    return len(offsets) == 1


def _lifecycle_state(th: LifecycleThresholds, population: float, counts: dict[str, int],
                     intervals: dict[str, Any]) -> dict[str, Any]:
    return {"v": LIFECYCLE_STATE_VERSION, "tz": get_settings().default_timezone,
            "thresholds": {k: v for k, v in asdict(th).items() if k != "fixed"},
            "population": population, "stages": counts, "intervals": intervals}


def _take(conn: Connection, table: Table) -> set[int]:
    return {int(c) for c in conn.execute(
        delete(table).returning(table.c.customer_id)).scalars()}


def _lifecycle_candidates(conn: Connection, *, previous: Any, moment: dt.datetime,
                          th: LifecycleThresholds, changed: set[int]) -> set[int] | None:
    """The customers whose stage can have changed since the last refresh, or None when this
    refresh must look at everyone (no state, other thresholds or time zone, an earlier as-of,
    a zone with daylight saving, many changes)."""
    if previous is None:
        return None
    state = previous.state or {}
    tz = get_settings().default_timezone
    if (state.get("v") != LIFECYCLE_STATE_VERSION or state.get("tz") != tz
            or state.get("thresholds") != {k: v for k, v in asdict(th).items() if k != "fixed"}
            or moment < previous.as_of or not _fixed_offset(tz, moment)):
        return None
    total = sum(int(v) for v in (state.get("stages") or {}).values())
    if len(changed) > max(1000, rfm_refresh.FULL_SHARE * total):
        return None
    return changed


def refresh_lifecycle(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None,
                      full: bool = False) -> dict[str, Any]:
    """Decide every customer's stage as of ``as_of`` (default now) and record the changes.

    Set-based: one ``INSERT ... SELECT`` decides the stages in SQL (:func:`_stage_case`) and
    keeps the customers whose stage changed in a temporary table; their transitions and new
    stage rows are written from it. After a first refresh only the customers whose stage can
    have changed are decided again (docs/analytics.md, "Refreshing at night"): those whose
    figures changed, those due (``lifecycle_stages.due_day``) and one-time buyers whose last
    purchase is as old as one of the population-based limits, which moves with time and with
    the population's interval. ``full``: decide everyone's stage again."""
    _need_refresher(actor)
    conn = uow.c
    moment = _as_of(as_of)
    _check_after_first_purchase(conn, moment)
    today = local_date(moment)
    th = lifecycle_thresholds(conn)
    _tune(conn)
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(LIFECYCLE_LOCK_KEY)))
    now = utcnow()
    fig, st = customer_figures.c, lifecycle_stages.c
    end = end_of_local_day(moment)
    at = _moment(conn, end)
    previous = conn.execute(select(lifecycle_refreshes).where(
        lifecycle_refreshes.c.key == "lifecycle")).first()
    changed_ids = _take(conn, lifecycle_changed_customers)
    candidates = None if full else _lifecycle_candidates(
        conn, previous=previous, moment=moment, th=th, changed=changed_ids)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_candidates.name}")
    only = None
    rebuilt = [] if candidates is not None else _drop_indexes_of_empty(
        conn, [lifecycle_stages, lifecycle_transitions, lifecycle_intervals])
    if candidates is not None:
        _tune_for_few(conn)
        _candidates.create(conn)
        if candidates:
            _fill_ids(conn, _candidates, candidates)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {_candidates.name}")
        only = select(_candidates.c.customer_id)
    out, put = _refresh_intervals(conn, only)
    population, intervals = _population_interval(
        conn, None if only is None or previous is None else previous.state.get("intervals"),
        out, put)
    merged = select(customers.c.id).where(customers.c.merged_into_id.is_not(None))
    if only is not None:
        assert previous is not None
        old_end = end_of_local_day(previous.as_of)
        old_population = float(previous.state["population"])
        more = select(st.customer_id).where(st.due_day <= _day_number(today))
        if not th.fixed:
            # One-time buyers are late against the population's interval: those whose last
            # purchase lies between where a limit stood at the last refresh and where it
            # stands now (both time and the population move it) may have changed.
            old_base = max(old_population, th.min_interval_days)
            base = max(population, th.min_interval_days)
            ranges = []
            for old_limit, limit in zip(_limits(th, old_base), _limits(th, base), strict=True):
                was = old_end - (math.floor(old_limit) + 1) * rfm_refresh.DAY
                now_at = end - (math.floor(limit) + 1) * rfm_refresh.DAY
                if was != now_at:
                    ranges.append(and_(fig.last_order_at > _moment(conn, min(was, now_at)),
                                       fig.last_order_at <= _moment(conn, max(was, now_at))))
            if ranges:
                more = more.union(select(fig.customer_id).where(
                    fig.purchase_days <= 1, or_(*ranges)))
        extra = more.subquery("extra")
        known = select(_candidates.c.customer_id).where(
            _candidates.c.customer_id == extra.c.customer_id)
        conn.execute(insert(_candidates).from_select(
            ["customer_id"], select(extra.c.customer_id).where(~known.exists())))
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {_candidates.name}")
        merged = merged.where(customers.c.id.in_(only))
    # Merged profiles have no stage any more (their history stays).
    gone = {str(stage): int(n) for stage, n in conn.execute(
        select(st.stage, func.count()).where(st.customer_id.in_(merged)).group_by(st.stage))}
    conn.execute(delete(lifecycle_stages).where(st.customer_id.in_(merged)))
    conds = [_live(fig.customer_id), fig.purchase_days > 0, fig.last_order_at.is_not(None)]
    if only is not None:
        conds.append(fig.customer_id.in_(only))
    # Each customer's day counts computed once, in a subquery the planner keeps (OFFSET 0):
    # the rule and the due day refer to them some twenty times, and PostgreSQL evaluated each
    # reference again (a first refresh decided a million stages in 10-11 s).
    base = (select(fig.customer_id, fig.last_order_at, fig.purchase_days,
                   st.stage.label("previous"), st.due_day.label("previous_due"),
                   case((fig.last_order_at > st.entered_last_order_at, 1),
                        else_=0).label("bought_since"),
                   _whole_days(conn, at, fig.first_order_at).label("since_first"),
                   _whole_days(conn, at, fig.last_order_at).label("since_last"),
                   _days_between(conn, fig.last_order_at, fig.first_order_at).label("span"),
                   # Due days count from the days as they will grow: a purchase after the end
                   # of the as-of day (a till clock ahead) stays at 0 days one day longer.
                   floor_days(conn, at, fig.first_order_at).label("raw_first"),
                   floor_days(conn, at, fig.last_order_at).label("raw_last"))
            .outerjoin(lifecycle_stages, st.customer_id == fig.customer_id)
            .where(*conds).offset(0)).subquery("base")
    b = base.c
    decided = select(b.customer_id, b.last_order_at, b.previous, b.previous_due,
                     _stage_case(conn, since_first=b.since_first, since_last=b.since_last,
                                 purchase_days=b.purchase_days, span=b.span,
                                 previous=b.previous, bought_since=b.bought_since,
                                 population=population, th=th).label("stage"),
                     _due_sql(conn, since_first=b.raw_first, since_last=b.raw_last,
                              purchase_days=b.purchase_days, span=b.span, th=th,
                              today=today).label("due_day")).subquery("decided")
    d = decided.c
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_stage_changes.name}")
    _stage_changes.create(conn)
    ch = _stage_changes.c
    few = only is not None and conn.dialect.name == "postgresql"
    if few:
        # The candidates' stages through the key, not a hash of every stage: at a million
        # customers PostgreSQL hashed all of them (0.9 s of a 1.9 s statement) to join 15k.
        conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
    conn.execute(insert(_stage_changes).from_select(
        ["customer_id", "from_stage", "to_stage", "last_order_at", "due_day"],
        select(d.customer_id, d.previous, d.stage, d.last_order_at, d.due_day)
        .where(or_(d.previous.is_(None), d.previous != d.stage,
                   d.previous_due.is_distinct_from(d.due_day)))))
    if few:
        conn.exec_driver_sql("SET LOCAL enable_hashjoin = on")
    moved = ch.from_stage.is_(None) | (ch.from_stage != ch.to_stage)
    flows = {(f, t_): int(n) for f, t_, n in conn.execute(
        select(ch.from_stage, ch.to_stage, func.count()).where(moved)
        .group_by(ch.from_stage, ch.to_stage))}
    changed = sum(flows.values())
    if changed:
        conn.execute(insert(lifecycle_transitions).from_select(
            ["customer_id", "from_stage", "to_stage", "changed_on", "recorded_at"],
            select(ch.customer_id, ch.from_stage, ch.to_stage, literal(today, Date),
                   literal(now, UTCDateTime)).where(moved).order_by(ch.customer_id)))
        conn.execute(delete(lifecycle_stages).where(st.customer_id.in_(
            select(ch.customer_id).where(ch.from_stage.is_not(None), moved))))
        conn.execute(insert(lifecycle_stages).from_select(
            ["customer_id", "stage", "since", "entered_last_order_at", "updated_at",
             "due_day"],
            select(ch.customer_id, ch.to_stage, literal(today, Date), ch.last_order_at,
                   literal(now, UTCDateTime), ch.due_day).where(moved)))
    # The same stage, another due day: only the day is written.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {_stage_changes.name}")
    conn.execute(lifecycle_stages.update()
                 .where(st.customer_id.in_(select(ch.customer_id).where(~moved)))
                 .values(due_day=select(ch.due_day).where(
                     ch.customer_id == st.customer_id).scalar_subquery()))
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_stage_changes.name}")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_candidates.name}")
    _create_indexes(conn, rebuilt)
    if only is None:
        counts = _stage_counts(conn, None)
    else:
        assert previous is not None
        counts = {stage: int(previous.state["stages"].get(stage, 0)) - gone.get(stage, 0)
                  for stage in STAGES}
        for (from_stage, to_stage), n in flows.items():
            if from_stage is not None:
                counts[from_stage] -= n
            counts[to_stage] += n
    conn.execute(delete(lifecycle_refreshes).where(lifecycle_refreshes.c.key == "lifecycle"))
    conn.execute(insert(lifecycle_refreshes).values(
        key="lifecycle", as_of=moment, computed_at=now,
        state=_lifecycle_state(th, population, counts, intervals)))
    mode = "full" if only is None else "changes"
    audit.record(conn, actor, "analytics.lifecycle_refreshed", entity="lifecycle_stages",
                 details={"as_of": moment.isoformat(), "changed": changed, "mode": mode})
    uow.commit()
    return {"as_of": moment, "date": today, "changed": changed, "transitions": changed,
            "population_interval_days": round(population, 1), "stages": counts, "mode": mode}


# --- readers --------------------------------------------------------------------------------

def _label(kind: str, name: str | None, lang: str) -> str | None:
    return None if name is None else t(f"analytics.{kind}.{name}", lang)


def _fen_average(value: Any) -> Decimal:
    """An average of fen as yuan, to the fen."""
    if value is None:
        return Decimal("0.00")
    return (Decimal(str(round(float(value)))) / 100).quantize(Decimal("0.01"))


# Above this many rows to test, a store-scoped actor's customers are gathered once as a set;
# below it each row is probed. Measured at a million customers (docs/benchmarks.md): gathering
# the largest store's customers costs about 1 s, a probe 7-25 us a row.
SET_WIDE_ROWS = 40_000


def _visible_only(conn: Connection, query: Any, customer_id: Any, actor: Actor | None,
                  rows: int | None = None) -> Any:
    """Restrict to the customers the actor may see. Owners and analysts of every store see
    everyone: no join with the million customers then. For a store-scoped actor over many
    ``rows`` (None: as many as a scope holds) its customers are gathered once as a set
    (``visible_ids``) rather than tested one row at a time, and PostgreSQL is asked not to JIT
    the plan for the rest of the transaction: its estimated cost passes the thresholds at
    which it compiles and optimises the plan to machine code, 1.2 s of a 2.8 s summary at a
    million customers."""
    if actor is None or actor.store_ids is None:
        return query
    if rows is not None and rows <= SET_WIDE_ROWS:
        return _visible_probed(query, customer_id, actor)
    if actor.store_ids and conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL jit = off"))
    return query.where(customer_id.in_(visible_ids(actor)))


def _visible_probed(query: Any, customer_id: Any, actor: Actor | None) -> Any:
    """The same customers, each tested on its own (``visible_clause``): for a short page
    walked down an index, where a few probes cost less than gathering the whole set."""
    if actor is None or actor.store_ids is None:
        return query
    return query.join(customers, customers.c.id == customer_id).where(visible_clause(actor))


def _scope_refresh(conn: Connection, key: str) -> Any:
    return conn.execute(select(rfm_refreshes).where(rfm_refreshes.c.scope == key)).first()


def _recency_sql(conn: Connection, refresh: Any) -> ColumnElement[Any]:
    """Whole days from each row's last purchase to the end of the scope's as-of day."""
    as_of = refresh.as_of if refresh is not None else utcnow()
    return _whole_days(conn, _moment(conn, end_of_local_day(as_of)),
                       rfm_scores.c.last_order_at)


def recency_days(last_order_at: dt.datetime, as_of: dt.datetime) -> int:
    """The same in Python, for one row."""
    return rfm_refresh.recency(last_order_at, end_of_local_day(as_of))


_STATS = ("customers", "recency", "freq", "money", "r", "f", "m")


def _segment_stats(conn: Connection, key: str, refresh: Any,
                   actor: Actor | None) -> dict[str, list[float]]:
    """Per segment of a scope: customers and the average recency (days to the end of the
    as-of day), frequency, monetary (fen) and scores, among the customers the actor sees
    (scored by the scope's cut points). The rows are grouped by their three scores (at most
    125 groups: three short sums of cases per row) and the groups added up per segment here;
    the segment's own CASE of 125 cells per row cost more than the scan."""
    as_of = refresh.as_of if refresh is not None else None
    cuts = rfm_read.cuts_of(refresh)
    s = rfm_scores.c
    recency = _whole_days(conn, _moment(conn, end_of_local_day(as_of or utcnow())),
                          s.last_order_at)
    r, f, m = (rfm_read.score_sql(d, cuts[d]).label(f"{d}_score") for d in rfm_read.DIMS)
    groups = conn.execute(_visible_only(
        conn, select(r, f, m, func.count().label("n"),
                     func.sum(recency).label("recency"), func.sum(s.frequency).label("freq"),
                     func.sum(type_coerce(s.monetary, BigInteger)).label("money"))
        .where(s.scope == key), s.customer_id, actor)
        .group_by(r, f, m)).all()
    sums: dict[str, list[int]] = {}
    for g in groups:
        n = int(g.n)
        acc = sums.setdefault(segment_for(int(g.r_score), int(g.f_score), int(g.m_score)),
                              [0] * 7)
        for i, v in enumerate((n, g.recency, g.freq, g.money, n * g.r_score, n * g.f_score,
                               n * g.m_score)):
            acc[i] += int(v)
    return {name: [acc[0], *(acc[i] / acc[0] for i in range(1, 7))]
            for name, acc in sums.items()}


def rfm_summary(conn: Connection, *, actor: Actor, scope: str = "overall") -> dict[str, Any]:
    """Customers per segment with their average recency, frequency, monetary and scores,
    among the customers the actor may see. For owners and analysts of every store the
    refresh's own summary of the whole scope is read (a million rows need not be averaged
    again on every view); store-scoped actors get theirs computed."""
    _need(actor, "dashboard.read")
    key = parse_scope(conn, scope).key
    refresh = _scope_refresh(conn, key)
    if actor.store_ids is None and refresh is not None and refresh.segments is not None:
        stats = refresh.segments
    else:
        stats = _segment_stats(conn, key, refresh, actor)
    total = sum(int(v[0]) for v in stats.values())
    lang = actor.language
    segments = []
    for name in SEGMENTS:
        v = dict(zip(_STATS, stats[name], strict=True)) if name in stats else None
        count = int(v["customers"]) if v else 0
        segments.append({
            "segment": name, "label": _label("segment", name, lang), "customers": count,
            "share": round(count / total, 4) if total else 0.0,
            "avg_recency_days": round(v["recency"], 1) if v else None,
            "avg_frequency": round(v["freq"], 2) if v else None,
            "avg_monetary": _fen_average(v["money"]) if v else None,
            "avg_r": round(v["r"], 2) if v else None,
            "avg_f": round(v["f"], 2) if v else None,
            "avg_m": round(v["m"], 2) if v else None,
        })
    return {"scope": key, "computed_at": refresh.computed_at if refresh is not None and total
            else None, "as_of": refresh.as_of if refresh is not None else None,
            "customers": total, "segments": segments}


def segment_customers(conn: Connection, *, actor: Actor, segment: str, scope: str = "overall",
                      page: int = 1, page_size: int = 20) -> dict[str, Any]:
    """The customers of one segment, masked, best scores first, paginated."""
    _need(actor, "dashboard.read")
    if segment not in SEGMENTS:
        raise NotFound("analytics_segment_unknown", params={"segment": segment})
    key = parse_scope(conn, scope).key
    page, page_size = max(1, int(page)), max(1, min(int(page_size), MAX_PAGE_SIZE))
    s = rfm_scores.c
    refresh = _scope_refresh(conn, key)
    cuts = rfm_read.cuts_of(refresh)
    # The segment's cells as value ranges over the (scope, value) indexes, not a score
    # computed for every row of the scope; with the ranges around all of them, which the
    # page's walk down the (scope, monetary) index starts from.
    members = select(s.customer_id).where(
        s.scope == key, rfm_read.segment_envelope([segment], cuts),
        rfm_read.segment_condition([segment], cuts))
    stored = refresh.segments if refresh is not None and actor.store_ids is None else None
    if stored is not None:
        # Who sees everyone gets the count the refresh kept with the scope's summary (what
        # rfm_summary shows them), not the segment's rows counted on every page.
        total = int(stored[segment][0]) if segment in stored else 0
    else:
        # The segment's rows in the whole scope: those tested.
        among = refresh.segments if refresh is not None else None
        tested = int(among[segment][0]) if among and segment in among else None
        total = conn.execute(select(func.count()).select_from(
            _visible_only(conn, members, s.customer_id, actor, tested).subquery())
        ).scalar_one()
    recency = _recency_sql(conn, refresh).label("recency_days")
    # The page is chosen among the scores first; only its customers are read.
    order = (s.monetary.desc(), s.frequency.desc(), s.customer_id)
    # Its visibility is probed row by row down that walk, which stops after the page.
    chosen = (_visible_probed(members, s.customer_id, actor)
              .add_columns(recency, s.last_order_at, s.frequency, s.monetary,
                           type_coerce(s.monetary, BigInteger).label("fen"))
              .order_by(*order)
              .limit(page_size).offset((page - 1) * page_size)).subquery("chosen")
    rows = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.is_member,
               customers.c.name, customers.c.phone, chosen.c.recency_days,
               chosen.c.last_order_at, chosen.c.frequency, chosen.c.monetary, chosen.c.fen)
        .join(customers, customers.c.id == chosen.c.customer_id)
        .order_by(chosen.c.monetary.desc(), chosen.c.frequency.desc(),
                  chosen.c.customer_id)).all()
    scored = [(r, rfm_read.scores((r.last_order_at, r.frequency, r.fen), cuts)) for r in rows]
    return {
        "scope": key, "segment": segment, "label": _label("segment", segment, actor.language),
        "total": int(total), "page": page, "page_size": page_size,
        "items": [{"id": int(r.id), "member_code": r.member_code, "is_member": bool(r.is_member),
                   "name": mask_name(r.name), "phone": mask_phone(r.phone),
                   "recency_days": int(r.recency_days), "frequency": int(r.frequency),
                   "monetary": r.monetary, "r": sc[0], "f": sc[1], "m": sc[2]}
                  for r, sc in scored],
    }


def _stage_counts(conn: Connection, actor: Actor | None) -> dict[str, int]:
    q = _visible_only(conn, select(lifecycle_stages.c.stage, func.count()),
                      lifecycle_stages.c.customer_id, actor).group_by(lifecycle_stages.c.stage)
    found = {stage: int(n) for stage, n in conn.execute(q)}
    return {stage: found.get(stage, 0) for stage in STAGES}


def _refreshed_stage_counts(conn: Connection) -> dict[str, int] | None:
    """Customers per stage as the last lifecycle refresh left them (its state keeps them:
    counted after a full refresh, moved by each night's flows), or None before any."""
    state = conn.execute(select(lifecycle_refreshes.c.state).where(
        lifecycle_refreshes.c.key == "lifecycle")).scalar()
    stages = state.get("stages") if isinstance(state, dict) else None
    if not isinstance(stages, dict):
        return None
    return {stage: int(stages.get(stage, 0)) for stage in STAGES}


def lifecycle_summary(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    """Customers per stage among those the actor may see. Owners and analysts of every store
    read the counts the last refresh kept (only a refresh writes stages) instead of counting
    a million stages on every view; store-scoped actors get theirs counted."""
    _need(actor, "dashboard.read")
    counts = _refreshed_stage_counts(conn) if actor.store_ids is None else None
    if counts is None:
        counts = _stage_counts(conn, actor)
    total = sum(counts.values())
    updated = conn.execute(select(func.max(lifecycle_transitions.c.changed_on))).scalar()
    return {"customers": total, "last_change_on": updated, "stages": [
        {"stage": s, "label": _label("stage", s, actor.language), "customers": n,
         "share": round(n / total, 4) if total else 0.0} for s, n in counts.items()]}


def lifecycle_flows(conn: Connection, *, actor: Actor, date_from: dt.date, date_to: dt.date
                    ) -> dict[str, Any]:
    """Stage changes between two local dates (inclusive), counted per from -> to."""
    _need(actor, "dashboard.read")
    if date_to < date_from:
        raise _invalid("to", "date_range_reversed")
    if actor.store_ids is None:
        # Who sees everyone reads the counts per day the transitions' triggers keep
        # (migration 0012), not every transition of the period. "" is the first stage, None
        # again here so that it sorts as before on either database.
        fc = lifecycle_flow_counts.c
        from_stage = func.nullif(fc.from_stage, "")
        n = func.sum(fc.customers)
        rows = conn.execute(
            select(from_stage.label("from_stage"), fc.to_stage, n.label("n"))
            .where(fc.changed_on >= date_from, fc.changed_on <= date_to)
            .group_by(from_stage, fc.to_stage).having(n > 0)
            .order_by(n.desc(), from_stage, fc.to_stage)).all()
    else:
        tr, fc = lifecycle_transitions.c, lifecycle_flow_counts.c
        # The period's transitions, from the counts per day the triggers keep: those tested.
        tested = conn.execute(select(func.coalesce(func.sum(fc.customers), 0)).where(
            fc.changed_on >= date_from, fc.changed_on <= date_to)).scalar_one()
        rows = conn.execute(_visible_only(
            conn, select(tr.from_stage, tr.to_stage, func.count().label("n"))
            .where(tr.changed_on >= date_from, tr.changed_on <= date_to), tr.customer_id,
            actor, int(tested))
            .group_by(tr.from_stage, tr.to_stage)
            .order_by(func.count().desc(), tr.from_stage, tr.to_stage)).all()
    lang = actor.language
    return {"from": date_from, "to": date_to, "flows": [
        {"from_stage": r.from_stage, "from_label": _label("stage", r.from_stage, lang),
         "to_stage": r.to_stage, "to_label": _label("stage", r.to_stage, lang),
         "customers": int(r.n)} for r in rows]}


def customer_analytics(conn: Connection, *, actor: Actor, customer_id: int) -> dict[str, Any]:
    """One customer's scores per scope, stage and stage history; ``NotFound`` outside scope."""
    _need(actor, "dashboard.read")
    visible_customer(conn, actor, customer_id)
    lang = actor.language
    s, rr = rfm_scores.c, rfm_refreshes.c
    scores = []
    for r in conn.execute(
            select(rfm_scores, type_coerce(s.monetary, BigInteger).label("fen"), rr.as_of,
                   rr.computed_at.label("refreshed_at"),
                   *(rr[c] for d in rfm_read.DIMS for c in rfm_read.CUT_COLUMNS[d]))
            .outerjoin(rfm_refreshes, rr.scope == s.scope)
            .where(s.customer_id == customer_id).order_by(s.scope)):
        sc = rfm_read.scores((r.last_order_at, r.frequency, r.fen), rfm_read.cuts_of(r))
        scores.append({"scope": r.scope, "segment": sc[3],
                       "label": _label("segment", sc[3], lang), "r": sc[0], "f": sc[1],
                       "m": sc[2],
                       "recency_days": recency_days(r.last_order_at, r.as_of or r.computed_at),
                       "frequency": int(r.frequency), "monetary": r.monetary,
                       "computed_at": r.refreshed_at or r.computed_at})
    current = conn.execute(select(lifecycle_stages).where(
        lifecycle_stages.c.customer_id == customer_id)).first()
    tr = lifecycle_transitions.c
    history = [{"from_stage": r.from_stage, "to_stage": r.to_stage, "changed_on": r.changed_on,
                "to_label": _label("stage", r.to_stage, lang)}
               for r in conn.execute(select(lifecycle_transitions).where(
                   tr.customer_id == customer_id).order_by(tr.changed_on, tr.id))]
    fig = conn.execute(select(customer_figures).where(
        customer_figures.c.customer_id == customer_id)).first()
    interval = None
    if fig is not None and fig.first_order_at and fig.last_order_at:
        span = (fig.last_order_at - fig.first_order_at).total_seconds() / 86400
        found = usual_interval(span, int(fig.purchase_days))
        interval = None if found is None else round(found, 1)
    overall = next((x for x in scores if x["scope"] == "overall"), None)
    return {
        "customer_id": customer_id,
        "rfm": overall, "rfm_by_scope": scores,
        "stage": None if current is None else current.stage,
        "stage_label": None if current is None else _label("stage", current.stage, lang),
        "stage_since": None if current is None else current.since,
        "usual_interval_days": interval,
        "stage_history": history,
    }


class Alongside:
    """The lifecycle refresh run on a connection of its own while the RFM refresh runs on the
    caller's, on PostgreSQL: the two read the same figures and write different tables (each
    its own transaction and advisory lock), so the database works on both at once, one core
    each. On SQLite (one writer at a time) the lifecycle refresh runs after RFM, when asked for.

    ``start`` begins it (PostgreSQL only); ``result`` waits for it, or runs it now when it was
    not started, and returns its result or raises its error. Once only."""

    def __init__(self, engine: Any, actor: Actor, as_of: dt.datetime | None) -> None:
        self.engine, self.actor, self.as_of = engine, actor, as_of
        self._thread: threading.Thread | None = None
        self._out: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0  # how long the lifecycle refresh itself took

    def start(self) -> None:
        if self.engine.dialect.name != "postgresql" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="patron-lifecycle-refresh",
                                        daemon=True)
        self._thread.start()

    def _run(self, uow: UnitOfWork | None = None) -> None:
        started = time.perf_counter()
        try:
            if uow is not None:
                self._out = refresh_lifecycle(uow=uow, actor=self.actor, as_of=self.as_of)
                return
            with UnitOfWork(self.engine) as own:
                self._out = refresh_lifecycle(uow=own, actor=self.actor, as_of=self.as_of)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the result
            self._error = exc
        finally:
            self.seconds = time.perf_counter() - started

    def result(self, uow: UnitOfWork | None = None) -> dict[str, Any]:
        """``uow``: the transaction to run it in when it was not started (default its own)."""
        if self._thread is None:
            self._run(uow)
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


def refresh_rfm_and_lifecycle(engine: Any, *, actor: Actor, as_of: dt.datetime | None = None
                              ) -> dict[str, Any]:
    """Every RFM scope and the lifecycle stages, each in its own transaction; on PostgreSQL
    the two at once on two connections (:class:`Alongside`)."""
    _need_refresher(actor)
    moment = _as_of(as_of)
    life = Alongside(engine, actor, moment)
    life.start()
    try:
        with UnitOfWork(engine) as uow:
            rfm = refresh_rfm(uow=uow, actor=actor, as_of=moment, scope="all")
    finally:
        lifecycle = life.result()
    return {"rfm": rfm, "lifecycle": lifecycle}


def refresh_all(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None
                ) -> dict[str, Any]:
    """What ``POST /analytics/refresh`` runs: every RFM scope, then the lifecycle stages (two
    transactions). (The refresh job runs the two at once on PostgreSQL:
    :func:`refresh_rfm_and_lifecycle`.)"""
    rfm = refresh_rfm(uow=uow, actor=actor, as_of=as_of, scope="all")
    lifecycle = refresh_lifecycle(uow=uow, actor=actor, as_of=as_of)
    return {"rfm": rfm, "lifecycle": lifecycle}
