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
    true,
)
from sqlalchemy.sql.elements import ColumnElement

from patron.analytics.model import (
    DEFAULT_POPULATION_INTERVAL,
    LAPSED,
    SEGMENT_GRID,
    SEGMENTS,
    STAGES,
    LifecycleThresholds,
    RfmThresholds,
    check_cut_points,
    usual_interval,
)
from patron.analytics.tables import (
    analytics_settings,
    lifecycle_stages,
    lifecycle_transitions,
    rfm_refreshes,
    rfm_scores,
)
from patron.config import get_settings
from patron.customers.model import mask_name, mask_phone
from patron.customers.queries import visible_clause, visible_customer
from patron.customers.tables import customer_figures, customers
from patron.db import Money, UnitOfWork, UTCDateTime, upsert, utcnow
from patron.errors import FieldError, Forbidden, NotFound, ValidationFailed
from patron.i18n import t
from patron.orders.tables import orders
from patron.org.tables import brands, regions, stores
from patron.security import audit
from patron.security.model import Actor

REFRESH_WORK_MEM = "256MB"
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


def _whole_days(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """Whole elapsed days, never negative (a purchase after ``as_of`` counts as today)."""
    days = func.floor(_days_between(conn, later, earlier))
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

def _score(rank_col: Any, count_col: Any) -> ColumnElement[Any]:
    """SQL for :func:`patron.analytics.model.score_by_rank`."""
    return literal(1) + (literal(5) * (rank_col - 1)) // count_col


def _threshold_score(value: Any, cuts: tuple[float, ...], *, recency: bool) -> Any:
    if recency:  # SQL for recency_score_by_thresholds
        return literal(5) - sum((case((value > c, 1), else_=0) for c in cuts), literal(0))
    return literal(1) + sum((case((value >= c, 1), else_=0) for c in cuts), literal(0))


def _segment_case(r: Any, f: Any, m: Any) -> ColumnElement[Any]:
    """SQL for :func:`patron.analytics.model.segment_for`, generated from the grid."""
    cell = r * 10 + (f + m + 1) // 2
    whens = [(cell == row * 10 + col, name)
             for row, names in SEGMENT_GRID.items() for col, name in enumerate(names, start=1)]
    return case(*whens, else_="lost")


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


def _drop_store_totals(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_store_totals.name}")


def _build_store_totals(conn: Connection, as_of: dt.datetime) -> None:
    o = orders.c
    _drop_store_totals(conn)
    _store_totals.create(conn)
    conn.execute(insert(_store_totals).from_select(
        ["store_id", "customer_id", "last_at", "frequency", "monetary"],
        select(o.store_id, o.customer_id, func.max(o.purchased_at), func.count(),
               func.sum(o.total_amount - o.refunded_amount))
        .where(o.store_id.is_not(None), o.customer_id.is_not(None), _live(o.customer_id),
               o.purchased_at <= _moment(conn, as_of))
        .group_by(o.store_id, o.customer_id)))
    # Indexed once filled: one bulk build instead of an update per row.
    conn.exec_driver_sql(f"CREATE INDEX {_store_totals.name}_store "
                         f"ON {_store_totals.name} (store_id)")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {_store_totals.name}")


def _rfm_source(conn: Connection, scope: Scope) -> Any:
    """customer_id, last purchase, frequency (orders), monetary (net spend, fen). A store,
    region or brand scope reads the per-store totals built by :func:`_build_store_totals`."""
    if scope.store_ids is None:
        fig = customer_figures.c
        return (select(fig.customer_id.label("customer_id"),
                       fig.last_order_at.label("last_at"),
                       fig.order_count.label("frequency"),
                       fig.net_spend.label("monetary"))
                .where(_live(fig.customer_id), fig.order_count > 0,
                       fig.last_order_at.is_not(None))).subquery("src")
    t = _store_totals.c
    if len(scope.store_ids) == 1:
        return (select(t.customer_id, t.last_at, t.frequency, t.monetary)
                .where(t.store_id == scope.store_ids[0])).subquery("src")
    return (select(t.customer_id, func.max(t.last_at).label("last_at"),
                   func.sum(t.frequency).label("frequency"),
                   func.sum(t.monetary).label("monetary"))
            .where(t.store_id.in_(scope.store_ids))
            .group_by(t.customer_id)).subquery("src")


_RFM_VALUES = ("last_order_at", "frequency", "monetary", "r_score", "f_score", "m_score",
               "segment")


def _refresh_scope(conn: Connection, scope: Scope, as_of: dt.datetime, th: RfmThresholds,
                   now: dt.datetime) -> tuple[int, int]:
    """Score every customer of the scope; write the rows that are new or changed and delete
    those of customers no longer in it. Returns (customers scored, rows written)."""
    src = _rfm_source(conn, scope)
    days = _whole_days(conn, _moment(conn, end_of_local_day(as_of)), src.c.last_at)
    base = select(src.c.customer_id, src.c.last_at, days.label("recency_days"),
                  src.c.frequency, src.c.monetary).subquery("base")
    # Counted beforehand: a window over the whole scope makes PostgreSQL keep every row, and a
    # scalar subquery is planned once per score.
    n = literal(max(1, int(conn.execute(select(func.count()).select_from(src)).scalar_one())))
    r = (_threshold_score(base.c.recency_days, th.recency_days, recency=True)
         if th.recency_days else
         _score(func.rank().over(order_by=base.c.recency_days.desc()), n))
    f = (_threshold_score(base.c.frequency, th.frequency, recency=False) if th.frequency else
         _score(func.rank().over(order_by=base.c.frequency), n))
    # yuan: the comparison binds them through the column's Money type
    m = (_threshold_score(base.c.monetary, tuple(Decimal(str(v)) for v in th.monetary),
                          recency=False)
         if th.monetary else _score(func.rank().over(order_by=base.c.monetary), n))
    scored = select(base.c.customer_id, base.c.last_at, base.c.frequency,
                    base.c.monetary, r.label("r_score"), f.label("f_score"),
                    m.label("m_score")).subquery("scored")
    rows = select(literal(scope.key).label("scope"), scored.c.customer_id,
                  scored.c.last_at, scored.c.frequency, scored.c.monetary,
                  scored.c.r_score, scored.c.f_score, scored.c.m_score,
                  _segment_case(scored.c.r_score, scored.c.f_score, scored.c.m_score)
                  .label("segment"), literal(now, UTCDateTime).label("computed_at")
                  # in key order: the primary key and the customer index fill page by page
                  ).order_by(scored.c.customer_id)
    columns = ["scope", "customer_id", *_RFM_VALUES, "computed_at"]
    s = rfm_scores.c
    first = conn.execute(select(s.customer_id).where(s.scope == scope.key).limit(1)).first()
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
    # (SQLite's driver reports no row count for INSERT ... SELECT)
    total, written = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((s.computed_at == _moment(conn, now),
                                                           1), else_=0)), 0))
        .where(s.scope == scope.key)).one()
    conn.execute(delete(rfm_refreshes).where(rfm_refreshes.c.scope == scope.key))
    conn.execute(insert(rfm_refreshes).values(
        scope=scope.key, as_of=as_of, computed_at=now, customers=int(total),
        changed=int(written), segments=_segment_stats(conn, scope.key, as_of, None)))
    return int(total), int(written)


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
    partial = any(s.store_ids is not None for s in scopes)
    if partial:
        _build_store_totals(conn, moment)
    done = {s.key: _refresh_scope(conn, s, moment, th, now) for s in scopes}
    if partial:
        _drop_store_totals(conn)
    scored = {key: total for key, (total, _written) in done.items()}
    written = {key: n for key, (_total, n) in done.items()}
    audit.record(conn, actor, "analytics.rfm_refreshed", entity="rfm_scores",
                 details={"scope": scope, "as_of": moment.isoformat(), "customers": scored,
                          "rows_written": sum(written.values())})
    uow.commit()
    return {"as_of": moment, "scopes": scored, "written": written}


# --- lifecycle refresh ----------------------------------------------------------------------

def _population_interval(conn: Connection) -> float:
    """The middle usual interval of repeat buyers: one-time buyers are judged by it."""
    fig = customer_figures.c
    interval = (_days_between(conn, fig.last_order_at, fig.first_order_at)
                / (fig.purchase_days - 1))
    repeat = and_(fig.purchase_days > 1, _live(fig.customer_id))
    count = conn.execute(select(func.count()).select_from(customer_figures).where(repeat)
                         ).scalar_one()
    if not count:
        return DEFAULT_POPULATION_INTERVAL
    value = conn.execute(select(interval).select_from(customer_figures).where(repeat)
                         .order_by(interval).offset(int(count) // 2).limit(1)).scalar()
    return float(value) if value is not None else DEFAULT_POPULATION_INTERVAL


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
    prefixes=["TEMPORARY"],
)


def refresh_lifecycle(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None
                      ) -> dict[str, Any]:
    """Decide every customer's stage as of ``as_of`` (default now) and record the changes.

    Set-based: one ``INSERT ... SELECT`` decides every stage in SQL (:func:`_stage_case`) and
    keeps the customers whose stage changed in a temporary table; their transitions and new
    stage rows are written from it."""
    _need_refresher(actor)
    conn = uow.c
    moment = _as_of(as_of)
    _check_after_first_purchase(conn, moment)
    today = local_date(moment)
    th = lifecycle_thresholds(conn)
    _tune(conn)
    population = _population_interval(conn)
    now = utcnow()
    fig, st = customer_figures.c, lifecycle_stages.c
    at = _moment(conn, end_of_local_day(moment))
    # Merged profiles have no stage any more (their history stays).
    conn.execute(delete(lifecycle_stages).where(st.customer_id.in_(
        select(customers.c.id).where(customers.c.merged_into_id.is_not(None)))))
    decided = (select(fig.customer_id, fig.last_order_at, st.stage.label("previous"),
                      _stage_case(
                          conn, since_first=_whole_days(conn, at, fig.first_order_at),
                          since_last=_whole_days(conn, at, fig.last_order_at),
                          purchase_days=fig.purchase_days,
                          span=_days_between(conn, fig.last_order_at, fig.first_order_at),
                          previous=st.stage,
                          bought_since=case((fig.last_order_at > st.entered_last_order_at, 1),
                                            else_=0),
                          population=population, th=th).label("stage"))
               .outerjoin(lifecycle_stages, st.customer_id == fig.customer_id)
               .where(_live(fig.customer_id), fig.purchase_days > 0,
                      fig.last_order_at.is_not(None))).subquery("decided")
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_stage_changes.name}")
    _stage_changes.create(conn)
    ch = _stage_changes.c
    conn.execute(insert(_stage_changes).from_select(
        ["customer_id", "from_stage", "to_stage", "last_order_at"],
        select(decided.c.customer_id, decided.c.previous, decided.c.stage,
               decided.c.last_order_at)
        .where(or_(decided.c.previous.is_(None), decided.c.previous != decided.c.stage))))
    changed = int(conn.execute(select(func.count()).select_from(_stage_changes)).scalar_one())
    if changed:
        conn.execute(insert(lifecycle_transitions).from_select(
            ["customer_id", "from_stage", "to_stage", "changed_on", "recorded_at"],
            select(ch.customer_id, ch.from_stage, ch.to_stage, literal(today, Date),
                   literal(now, UTCDateTime)).order_by(ch.customer_id)))
        conn.execute(delete(lifecycle_stages).where(st.customer_id.in_(
            select(ch.customer_id).where(ch.from_stage.is_not(None)))))
        conn.execute(insert(lifecycle_stages).from_select(
            ["customer_id", "stage", "since", "entered_last_order_at", "updated_at"],
            select(ch.customer_id, ch.to_stage, literal(today, Date), ch.last_order_at,
                   literal(now, UTCDateTime))))
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_stage_changes.name}")
    counts = _stage_counts(conn, None)
    audit.record(conn, actor, "analytics.lifecycle_refreshed", entity="lifecycle_stages",
                 details={"as_of": moment.isoformat(), "changed": changed})
    uow.commit()
    return {"as_of": moment, "date": today, "changed": changed, "transitions": changed,
            "population_interval_days": round(population, 1), "stages": counts}


# --- readers --------------------------------------------------------------------------------

def _label(kind: str, name: str | None, lang: str) -> str | None:
    return None if name is None else t(f"analytics.{kind}.{name}", lang)


def _fen_average(value: Any) -> Decimal:
    """An average of fen as yuan, to the fen."""
    if value is None:
        return Decimal("0.00")
    return (Decimal(str(round(float(value)))) / 100).quantize(Decimal("0.01"))


def _visible_only(query: Any, customer_id: Any, actor: Actor | None) -> Any:
    """Restrict to the customers the actor may see. Owners and analysts of every store see
    everyone: no join with the million customers then."""
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
    days = (end_of_local_day(as_of) - last_order_at).total_seconds() // 86400
    return max(0, int(days))


_STATS = ("customers", "recency", "freq", "money", "r", "f", "m")


def _segment_stats(conn: Connection, key: str, as_of: dt.datetime | None,
                   actor: Actor | None) -> dict[str, list[float]]:
    """Per segment of a scope: customers and the average recency (days to the end of the
    as-of day), frequency, monetary (fen) and scores, among the customers the actor sees."""
    s = rfm_scores.c
    recency = _whole_days(conn, _moment(conn, end_of_local_day(as_of or utcnow())),
                          s.last_order_at)
    rows = conn.execute(_visible_only(
        select(s.segment, func.count().label("customers"), func.avg(recency).label("recency"),
               func.avg(s.frequency).label("freq"),
               func.avg(cast(s.monetary, Integer)).label("money"),
               func.avg(s.r_score).label("r"), func.avg(s.f_score).label("f"),
               func.avg(s.m_score).label("m"))
        .where(s.scope == key), s.customer_id, actor)
        .group_by(s.segment)).all()
    return {r.segment: [int(r.customers), *(float(getattr(r, k)) for k in _STATS[1:])]
            for r in rows}


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
        stats = _segment_stats(conn, key, refresh.as_of if refresh is not None else None,
                               actor)
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
    members = _visible_only(select(s.customer_id).where(s.scope == key, s.segment == segment),
                            s.customer_id, actor)
    total = conn.execute(select(func.count()).select_from(members.subquery())).scalar_one()
    recency = _recency_sql(conn, _scope_refresh(conn, key)).label("recency_days")
    # The page is chosen among the scores first; only its customers are read.
    order = (s.monetary.desc(), s.frequency.desc(), s.customer_id)
    chosen = (members.add_columns(recency, s.frequency, s.monetary, s.r_score, s.f_score,
                                  s.m_score).order_by(*order)
              .limit(page_size).offset((page - 1) * page_size)).subquery("chosen")
    rows = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.is_member,
               customers.c.name, customers.c.phone, chosen.c.recency_days, chosen.c.frequency,
               chosen.c.monetary, chosen.c.r_score, chosen.c.f_score, chosen.c.m_score)
        .join(customers, customers.c.id == chosen.c.customer_id)
        .order_by(chosen.c.monetary.desc(), chosen.c.frequency.desc(),
                  chosen.c.customer_id)).all()
    return {
        "scope": key, "segment": segment, "label": _label("segment", segment, actor.language),
        "total": int(total), "page": page, "page_size": page_size,
        "items": [{"id": int(r.id), "member_code": r.member_code, "is_member": bool(r.is_member),
                   "name": mask_name(r.name), "phone": mask_phone(r.phone),
                   "recency_days": int(r.recency_days), "frequency": int(r.frequency),
                   "monetary": r.monetary, "r": int(r.r_score), "f": int(r.f_score),
                   "m": int(r.m_score)} for r in rows],
    }


def _stage_counts(conn: Connection, actor: Actor | None) -> dict[str, int]:
    q = _visible_only(select(lifecycle_stages.c.stage, func.count()),
                      lifecycle_stages.c.customer_id, actor).group_by(lifecycle_stages.c.stage)
    found = {stage: int(n) for stage, n in conn.execute(q)}
    return {stage: found.get(stage, 0) for stage in STAGES}


def lifecycle_summary(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    _need(actor, "dashboard.read")
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
    tr = lifecycle_transitions.c
    rows = conn.execute(_visible_only(
        select(tr.from_stage, tr.to_stage, func.count().label("n"))
        .where(tr.changed_on >= date_from, tr.changed_on <= date_to), tr.customer_id, actor)
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
    scores = [{"scope": r.scope, "segment": r.segment,
               "label": _label("segment", r.segment, lang), "r": int(r.r_score),
               "f": int(r.f_score), "m": int(r.m_score),
               "recency_days": recency_days(r.last_order_at, r.as_of or r.computed_at),
               "frequency": int(r.frequency), "monetary": r.monetary,
               "computed_at": r.refreshed_at or r.computed_at}
              for r in conn.execute(
                  select(rfm_scores, rr.as_of, rr.computed_at.label("refreshed_at"))
                  .outerjoin(rfm_refreshes, rr.scope == s.scope)
                  .where(s.customer_id == customer_id).order_by(s.scope))]
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


def refresh_all(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None
                ) -> dict[str, Any]:
    """What the scheduler and ``POST /analytics/refresh`` run: every RFM scope, then the
    lifecycle stages (two transactions)."""
    rfm = refresh_rfm(uow=uow, actor=actor, as_of=as_of, scope="all")
    lifecycle = refresh_lifecycle(uow=uow, actor=actor, as_of=as_of)
    return {"rfm": rfm, "lifecycle": lifecycle}
