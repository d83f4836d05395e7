"""Store, region, brand, channel, category and time dashboards: refresh and read.

``refresh_dashboards`` (the nightly job's last step, ``POST .../dashboards/refresh``, the CLI)
rebuilds the rollups of :mod:`patron.analytics.dashboards_refresh`: incrementally for the
customers and guest days that changed since the last refresh, or in full. Readers answer from
the rollups only, never from the orders:

* sums (sales, refunds, orders, per member / non-member / guest) from the daily tables;
* distinct customers, new and repeat customers from precomputed cells when the question is
  about one kind of key (the chain, a store, region, brand, channel or category), counted over
  any period by the "previous purchase day" marks: whole months from monthly cells, the
  partial months at either end from the per-customer rows (a month at most on each side);
* other combinations (a manager's several stores, a channel within a region, ...) by an exact
  per-customer query over the rows of the period and scope. The drill-down lists use that same
  query for one cell, so a list always has as many customers as the figure it comes from.

Definitions of every figure: docs/dashboards.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Select,
    case,
    delete,
    distinct,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    type_coerce,
    update,
)

from patron.analytics import dashboards as rules
from patron.analytics import dashboards_refresh as build
from patron.analytics import rfm_read
from patron.analytics import service as analytics
from patron.analytics.dashboards import (
    BY,
    DIMENSIONS,
    MEMBER_FILTERS,
    NO_DAY,
    TIME_GRAINS,
    Bucket,
    Period,
    Reach,
    Sums,
    day_number,
    invalid,
)
from patron.analytics.dashboards_tables import (
    dashboard_activity,
    dashboard_category_activity,
    dashboard_category_daily,
    dashboard_cohorts,
    dashboard_reach_buckets,
    dashboard_reach_month_days,
    dashboard_reach_months,
    dashboard_refreshes,
    dashboard_sales_daily,
    dashboard_structure,
    promotions,
)
from patron.analytics.model import SEGMENTS, STAGES
from patron.analytics.tables import lifecycle_stages, rfm_refreshes, rfm_scores
from patron.config import get_settings
from patron.customers.model import mask_name, mask_phone
from patron.customers.tables import customers
from patron.db import UnitOfWork, utcnow
from patron.errors import Forbidden, NotFound
from patron.i18n import t
from patron.org.tables import brands, categories, channels, regions, stores
from patron.security import audit
from patron.security.model import Actor

log = logging.getLogger(__name__)

NONE_KEY = "-"  # the key of "no store / region / brand / category"
MARGIN = dt.timedelta(hours=1)  # orders committed late by a long transaction are still seen
FULL_SHARE = 0.3  # above this share of customers changed, a full rebuild is cheaper
LOCK_KEY = 0x5041545244  # PostgreSQL advisory lock: one refresh at a time
MAX_PAGE_SIZE = 200


def _need(actor: Actor, permission: str = "dashboard.read") -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


def _today(as_of: dt.datetime | None) -> dt.date:
    return analytics.local_date(analytics._as_of(as_of))


# --- refresh --------------------------------------------------------------------------------

def refresh_dashboards(*, uow: UnitOfWork, actor: Actor, as_of: dt.datetime | None = None,
                       full: bool = False) -> dict[str, Any]:
    """Bring every dashboard rollup up to date with the orders, in one transaction.

    Incremental when a previous refresh exists and the stores (region, brand, time zone) did
    not change: only customers whose orders, returns or profile changed since the previous
    refresh's ``as_of`` (less an hour's margin) are candidates; their rows are recomputed and
    compared with the stored ones, and only those that differ have their contributions taken
    away and added back (``customers`` counts them); the days of changed guest orders are
    recomputed. ``full`` (or a first run) rebuilds everything. ``as_of`` (default now) is the
    moment this refresh stands for: the next one looks for changes from there.
    Returns scalars only: mode, customers and guest days recomputed, milliseconds."""
    analytics._need_refresher(actor)
    conn = uow.c
    moment = analytics._as_of(as_of)
    started_at = utcnow()
    clock = time.perf_counter()
    default_tz = get_settings().default_timezone
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    last = conn.execute(select(dashboard_refreshes).where(
        dashboard_refreshes.c.finished_at.is_not(None))
        .order_by(dashboard_refreshes.c.id.desc()).limit(1)).first()
    stores_now = build.store_signature(conn, default_tz)
    mode = "full"
    if not full and last is not None and (last.signature or {}).get("stores") == stores_now:
        mode = "incremental"
    steps: build.Timings = {}
    build.create_temp_tables(conn)
    touched = guest_days = 0
    if mode == "incremental":
        assert last is not None
        with build.timed(steps, "changes"):
            touched, guest_days = build.mark_touched(conn, last.as_of - MARGIN, default_tz)
            population = conn.execute(select(func.count()).select_from(customers)
                                      ).scalar_one()
        if touched > 1000 and touched > FULL_SHARE * int(population):
            mode = "full"
    if mode == "full":
        with build.timed(steps, "clear"):
            build.clear_all(conn)
        with build.timed(steps, "customer rows"):
            build.insert_activity(conn, build.ALL_CUSTOMERS, default_tz)
        with build.timed(steps, "category rows"):
            build.insert_category_activity(conn, build.ALL_CUSTOMERS, default_tz)
        build.add_contributions(conn, build.ALL_CUSTOMERS, 1, steps)
        with build.timed(steps, "guests"):
            build.rebuild_guest_days(conn, default_tz, every_day=True)
        with build.timed(steps, "statistics"):
            build.analyze(conn)
        touched = int(conn.execute(select(func.count(distinct(
            dashboard_activity.c.customer_id)))).scalar_one())
        guest_days = -1
    else:
        if touched and conn.dialect.name == "postgresql":
            # Many short statements: compiling each to machine code costs more than it saves.
            conn.execute(text("SET LOCAL jit = off"))
        if touched:
            with build.timed(steps, "customer rows"):
                build.compute_new_rows(conn, default_tz)
            with build.timed(steps, "changes"):
                touched = build.keep_changed(conn)
        if touched:
            build.add_contributions(conn, build.ALL_CUSTOMERS, -1, steps, build.TOUCHED_ROWS)
            with build.timed(steps, "customer rows"):
                build.store_new_rows(conn)
            build.add_contributions(conn, build.ALL_CUSTOMERS, 1, steps, build.TOUCHED_ROWS)
        with build.timed(steps, "guests"):
            if guest_days:
                build.rebuild_guest_days(conn, default_tz, every_day=False)
            if touched:
                build.drop_empty_cells(conn)
    structure_now = build.structure_signature(conn)
    if mode == "full" or last is None or (last.signature or {}).get("structure") != structure_now:
        with build.timed(steps, "structure"):
            build.rebuild_structure(conn)
    build.drop_temp_tables(conn)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(steps.items(),
                                                           key=lambda kv: -kv[1]))
    log.info("dashboards refresh (%s): %s", mode, timings)
    millis = int((time.perf_counter() - clock) * 1000)
    conn.execute(insert(dashboard_refreshes).values(
        as_of=moment, started_at=started_at, finished_at=utcnow(), mode=mode,
        customers=touched, guest_days=max(guest_days, 0), duration_ms=millis,
        signature={"stores": stores_now, "structure": structure_now}, actor=actor.name))
    audit.record(conn, actor, "dashboards.refreshed", entity="dashboards",
                 details={"mode": mode, "as_of": moment.isoformat(), "customers": touched,
                          "guest_days": guest_days, "duration_ms": millis,
                          "steps": timings})
    uow.commit()
    return {"mode": mode, "as_of": moment.isoformat(), "customers": touched,
            "guest_days": guest_days, "duration_ms": millis, "steps": timings}


def refresh_status(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    _need(actor)
    r = dashboard_refreshes.c
    last = conn.execute(select(dashboard_refreshes).where(r.finished_at.is_not(None))
                        .order_by(r.id.desc()).limit(1)).first()
    if last is None:
        return {"refreshed": False, "as_of": None, "finished_at": None, "mode": None,
                "duration_ms": None}
    return {"refreshed": True, "as_of": last.as_of, "finished_at": last.finished_at,
            "mode": last.mode, "duration_ms": int(last.duration_ms),
            "customers": int(last.customers)}


def _refreshed_at(conn: Connection) -> dt.datetime | None:
    r = dashboard_refreshes.c
    return conn.execute(select(r.as_of).where(r.finished_at.is_not(None))
                        .order_by(r.id.desc()).limit(1)).scalar()


# --- filters --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filters:
    """What a dashboard counts: a scope (the chain, a store, region or brand), narrowed to the
    actor's stores, optionally one channel and members, non-member customers or guests."""

    scope: str  # "overall" or "<kind>:<code>"
    scope_kind: str  # overall | store | region | brand
    scope_id: int | None
    store_ids: tuple[int, ...] | None  # None: every store and orders without one
    narrowed: bool  # the actor's stores cut the scope down
    channel: str | None
    channel_id: int | None
    member: str | None

    def describe(self) -> dict[str, Any]:
        return {"scope": self.scope, "channel": self.channel, "member": self.member}


def resolve_filters(conn: Connection, actor: Actor, *, scope: str | None = "overall",
                    channel: str | None = None, member: str | None = None) -> Filters:
    if member in ("", None):
        member = None
    elif member not in MEMBER_FILTERS:
        raise invalid("member", "literal_error", expected=", ".join(MEMBER_FILTERS))
    channel_id = None
    if channel:
        channel_id = conn.execute(select(channels.c.id).where(channels.c.code == channel)
                                  ).scalar()
        if channel_id is None:
            raise invalid("channel", "unknown_channel", value=channel)
    parsed = analytics.parse_scope(conn, scope or "overall")
    kind, _, code = parsed.key.partition(":")
    scope_id = None
    if kind != "overall":
        table = {"store": stores, "region": regions, "brand": brands}[kind]
        scope_id = int(conn.execute(select(table.c.id).where(table.c.code == code)).scalar_one())
    store_ids = parsed.store_ids
    narrowed = False
    if actor.store_ids is not None:
        own = set(actor.store_ids)
        wanted = own if store_ids is None else own & set(store_ids)
        if not wanted:
            raise Forbidden("dashboard_scope_forbidden", params={"scope": parsed.key})
        narrowed = store_ids is None or wanted != set(store_ids)
        store_ids = tuple(sorted(wanted))
    return Filters(parsed.key, kind, scope_id, store_ids, narrowed, channel or None,
                   None if channel_id is None else int(channel_id), member)


def _member_values(member: str | None) -> tuple[int, ...]:
    return {"member": (1,), "non_member": (0,), "guest": ()}.get(member or "", (0, 1))


def _row_filters(t: Any, f: Filters) -> list[Any]:
    conds: list[Any] = []
    if f.store_ids is not None:
        conds.append(t.c.store_id.in_(f.store_ids))
    if f.channel_id is not None:
        conds.append(t.c.channel_id == f.channel_id)
    values = _member_values(f.member)
    if not values:
        conds.append(false())
    elif len(values) == 1:
        conds.append(t.c.member == values[0])
    return conds


# --- reach: fast path -----------------------------------------------------------------------

def _activity_for(kind: str) -> tuple[Any, Any, Any, Any]:
    """The per-customer table of a kind of key, its key column, and its p1 / p2 marks."""
    if kind == "category":
        t = dashboard_category_activity
        return t, t.c.category, t.c.category_p1, t.c.category_p2
    t = dashboard_activity
    key = {"all": literal(""), "store": t.c.store_id, "region": t.c.region_id,
           "brand": t.c.brand_id, "channel": t.c.channel_id}[kind]
    return t, key, t.c[f"{kind}_p1"], t.c[f"{kind}_p2"]


def _int(value: Any) -> int:
    return int(value or 0)


def _fast_reach(conn: Connection, kind: str, keys: list[str] | None, lo: int, hi: int,
                members: tuple[int, ...]) -> dict[str, Reach]:
    """Distinct customers per key of ``kind`` over days ``lo..hi`` (see the module doc)."""
    out: dict[str, Reach] = {}
    if hi < lo or not members or keys == []:
        return out
    pieces = rules.split_range(lo, hi)
    t, key, p1, p2 = _activity_for(kind)
    if pieces.day_runs:
        conds = [or_(*[t.c.day.between(a, b) for a, b in pieces.day_runs])]
        if keys is not None and kind != "all":
            conds.append(key.in_([_key_value(kind, k) for k in keys]))
        if len(members) == 1:
            conds.append(t.c.member == members[0])
        group = [key] if kind != "all" else []
        rows = conn.execute(select(
            *( [key.label("key")] if kind != "all" else [literal("").label("key")] ),
            func.sum(case((p1 < lo, 1), else_=0)), func.sum(case((p1 == NO_DAY, 1), else_=0)),
            func.sum(case((p2 < lo, 1), else_=0)))
            .where(*conds).group_by(*group)).all()
        for r in rows:
            first, new, second = _int(r[1]), _int(r[2]), _int(r[3])
            out.setdefault(str(r.key), Reach()).add(first, new, second - first)
    if pieces.months:
        m_lo, m_hi = pieces.months[0], pieces.months[-1]
        f_month = rules.month_index(rules.day_of(lo))
        rm = dashboard_reach_months.c
        conds = [rm.kind == kind, rm.month.between(m_lo, m_hi), rm.ref_month < f_month]
        if keys is not None:
            conds.append(rm.key.in_(keys))
        if len(members) == 1:
            conds.append(rm.member == members[0])
        by_ref: dict[str, dict[str, int]] = {}
        for r in conn.execute(select(rm.key, rm.ref, func.sum(rm.customers),
                                     func.sum(case((rm.ref_month == NO_DAY, rm.customers),
                                                   else_=0)))
                              .where(*conds).group_by(rm.key, rm.ref)):
            slot = by_ref.setdefault(str(r.key), {"p1": 0, "p2": 0, "m": 0, "new": 0})
            slot[r.ref] += _int(r[2])
            if r.ref == "p1":
                slot["new"] += _int(r[3])
        month_start = day_number(rules.month_first(f_month))
        if lo > month_start:
            fd = dashboard_reach_month_days.c
            conds = [fd.kind == kind, fd.ref_day >= month_start, fd.ref_day < lo,
                     fd.month.between(m_lo, m_hi)]
            if keys is not None:
                conds.append(fd.key.in_(keys))
            if len(members) == 1:
                conds.append(fd.member == members[0])
            for r in conn.execute(select(fd.key, fd.ref, func.sum(fd.customers))
                                  .where(*conds).group_by(fd.key, fd.ref)):
                slot = by_ref.setdefault(str(r.key), {"p1": 0, "p2": 0, "m": 0, "new": 0})
                slot[r.ref] += _int(r[2])
        for k, s in by_ref.items():
            out.setdefault(k, Reach()).add(s["p1"], s["new"], s["p2"] - s["p1"] + s["m"])
    return out


def _key_value(kind: str, key: str) -> Any:
    return key if kind == "category" else int(key)


def _bucket_reach(conn: Connection, kind: str, key: str, grain: str, starts: list[int],
                  members: tuple[int, ...]) -> dict[int, Reach]:
    """Whole calendar days, weeks or months from their cells."""
    out: dict[int, Reach] = {}
    if not starts or not members:
        return out
    rb = dashboard_reach_buckets.c
    conds = [rb.kind == kind, rb.grain == grain[0], rb.key == key,
             rb.bucket.between(min(starts), max(starts))]
    if len(members) == 1:
        conds.append(rb.member == members[0])
    for r in conn.execute(select(rb.bucket, func.sum(rb.customers), func.sum(rb.new_customers),
                                 func.sum(rb.repeat_customers)).where(*conds)
                          .group_by(rb.bucket)):
        out.setdefault(int(r.bucket), Reach()).add(_int(r[1]), _int(r[2]), _int(r[3]))
    return out


def _plan(by: str, f: Filters) -> tuple[str, list[str] | None] | None:
    """The precomputed kind of key (and keys) that answers customers for ``by`` under ``f``
    exactly, or None when only the per-customer query can."""
    time_like = by == "total" or by in TIME_GRAINS
    if f.channel_id is not None:
        if f.store_ids is None and (by == "channel" or time_like):
            return "channel", [str(f.channel_id)]
        return None
    if by == "store":
        return "store", None if f.store_ids is None else [str(i) for i in f.store_ids]
    if f.store_ids is None:
        return ("all", [""]) if time_like else (by, None)
    if time_like:
        if not f.narrowed and f.scope_kind in rules.SCOPE_KINDS:
            return f.scope_kind, [str(f.scope_id)]
        if len(f.store_ids) == 1:
            return "store", [str(f.store_ids[0])]
        return None
    if by == f.scope_kind and not f.narrowed:
        return by, [str(f.scope_id)]
    return None


# --- reach: the per-customer query (exact for any combination; drill-down lists) -------------

def _group_column(t: Any, by: str) -> Any:
    if by == "category":
        return t.c.category
    if by in ("store", "region", "brand", "channel"):
        return t.c[f"{by}_id"]
    if by == "day":
        return t.c.day
    if by == "week":
        return t.c.day - (t.c.day + 3) % 7
    if by == "month":
        return t.c.month
    return literal(0)


def per_customer(by: str, lo: int, hi: int, f: Filters, value: Any = None,
                 kind: str | None = None) -> Any:
    """One row per (group, customer) of the period: first and last purchase day in it (two
    or more purchase days: they differ), orders, net spend (fen), membership, and whether the
    customer had bought in the group before (``returning``). MIN and MAX rather than a count
    of distinct days, so that PostgreSQL can hash the grouping. With ``kind`` (the cells'
    kind of key for exactly this grouping and filter, see :func:`_plan`) "bought before" is
    read from the rows' marks (a first purchase there ever carries p1 = -1) instead of a
    lookup per customer."""
    t = dashboard_category_activity if by == "category" else dashboard_activity
    g = _group_column(t, by)
    conds = [t.c.day.between(lo, hi), *_row_filters(t, f)]
    if value is not None:
        conds.append(g == value)
    if by == "month":
        start: Any = func.min(t.c.mstart)
    elif by in ("day", "week"):
        start = g
    else:
        start = literal(lo)
    start = case((start < lo, lo), else_=start)
    net = (t.c.amount if t is dashboard_category_activity else t.c.sales) - t.c.refunds
    marks = [] if kind is None else [func.min(_activity_for(kind)[2]).label("min_p1")]
    cur = (select(g.label("g"), t.c.customer_id.label("customer_id"),
                  func.min(t.c.member).label("member"), *marks,
                  func.min(t.c.day).label("first_day"), func.max(t.c.day).label("last_day"),
                  type_coerce(func.sum(t.c.orders), BigInteger).label("orders"),
                  type_coerce(func.sum(net), BigInteger).label("net"), start.label("start"))
           .where(*conds).group_by(g, t.c.customer_id)).subquery("cur")
    if kind is not None:
        return cur, cur.c.min_p1 != NO_DAY
    b = t.alias("b")
    before = [b.c.customer_id == cur.c.customer_id, b.c.day < cur.c.start,
              *_row_filters(b, f)]
    if by in DIMENSIONS:
        before.append(_group_column(b, by) == cur.c.g)
    returning = exists(select(literal(1)).select_from(b).where(*before))
    return cur, returning


def _slow_reach(conn: Connection, by: str, lo: int, hi: int, f: Filters) -> dict[str, Reach]:
    out: dict[str, Reach] = {}
    if hi < lo or not _member_values(f.member):
        return out
    cur, returning = per_customer(by, lo, hi, f)
    rows = conn.execute(select(cur.c.g, func.count(),
                               func.sum(case((returning, 0), else_=1)),
                               func.sum(case((cur.c.first_day < cur.c.last_day, 1),
                                             else_=0)))
                        .group_by(cur.c.g))
    for r in rows:
        out.setdefault(str(r[0]), Reach()).add(_int(r[1]), _int(r[2]), _int(r[3]))
    return out


# --- sums -----------------------------------------------------------------------------------

def _sums(conn: Connection, by: str, lo: int, hi: int, f: Filters) -> dict[str, Sums]:
    out: dict[str, Sums] = {}
    if hi < lo:
        return out
    category = by == "category"
    sd = dashboard_category_daily if category else dashboard_sales_daily
    amount = sd.c.amount if category else sd.c.sales
    source: Any = sd
    if by in ("region", "brand"):
        source = sd.outerjoin(stores, stores.c.id == sd.c.store_id)
        g: Any = func.coalesce(stores.c[f"{by}_id"], 0)
    elif by in ("store", "channel"):
        g = sd.c[f"{by}_id"]
    elif category:
        g = sd.c.category
    elif by == "day":
        g = sd.c.day
    elif by == "week":
        g = sd.c.day - (sd.c.day + 3) % 7
    elif by == "month":
        g = sd.c.month
    else:
        g = literal(0)
    conds = [sd.c.day.between(lo, hi), sd.c.buyer.in_(rules.buyers_for(f.member))]
    if f.store_ids is not None:
        conds.append(sd.c.store_id.in_(f.store_ids))
    if f.channel_id is not None:
        conds.append(sd.c.channel_id == f.channel_id)
    rows = conn.execute(select(g.label("g"), sd.c.buyer,
                               type_coerce(func.sum(sd.c.orders), BigInteger),
                               type_coerce(func.sum(amount), BigInteger),
                               type_coerce(func.sum(sd.c.refunds), BigInteger))
                        .select_from(source).where(*conds).group_by(g, sd.c.buyer))
    for r in rows:
        out.setdefault(str(r.g), Sums()).add(r.buyer, _int(r[2]), _int(r[3]), _int(r[4]))
    return out


# --- labels ---------------------------------------------------------------------------------

def _labels(conn: Connection, by: str, f: Filters, lang: str) -> dict[str, tuple[str, str]]:
    """Every key the breakdown lists even without sales (stores, regions, brands, channels of
    the scope), as raw key -> (API key, label)."""
    none = (NONE_KEY, t("dashboard.none", lang))
    if by == "store":
        q = select(stores.c.id, stores.c.code, stores.c.name)
        if f.store_ids is not None:
            q = q.where(stores.c.id.in_(f.store_ids))
        out = {str(r.id): (r.code, r.name) for r in conn.execute(q.order_by(stores.c.code))}
        return {**out, "0": none}
    if by in ("region", "brand"):
        table = regions if by == "region" else brands
        column = stores.c[f"{by}_id"]
        q = select(table.c.id, table.c.code, table.c.name)
        if f.store_ids is not None:
            q = q.where(table.c.id.in_(select(column).where(stores.c.id.in_(f.store_ids))))
        out = {str(r.id): (r.code, r.name) for r in conn.execute(q.order_by(table.c.code))}
        return {**out, "0": none}
    if by == "channel":
        q = select(channels.c.id, channels.c.code, channels.c.name)
        if f.channel_id is not None:
            q = q.where(channels.c.id == f.channel_id)
        return {str(r.id): (r.code, r.name) for r in conn.execute(q.order_by(channels.c.code))}
    if by == "category":
        names = {r.code: r.name for r in conn.execute(select(categories.c.code,
                                                             categories.c.name))}
        return {"": none, **{code: (code, name) for code, name in names.items()}}
    return {}


_LISTED_EMPTY = ("store", "region", "brand", "channel")


# --- breakdown ------------------------------------------------------------------------------

def breakdown(conn: Connection, *, actor: Actor, by: str, date_from: dt.date | None,
              date_to: dt.date | None, scope: str | None = "overall",
              channel: str | None = None, member: str | None = None,
              as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Figures per store, region, brand, channel, category, day, week or month for a period,
    and the whole period's total (every figure: docs/dashboards.md)."""
    _need(actor)
    if by not in BY:
        raise invalid("by", "dashboard_dimension_unknown", value=str(by)[:20])
    period = rules.check_period(date_from, date_to, _today(as_of))
    f = resolve_filters(conn, actor, scope=scope, channel=channel, member=member)
    lang = actor.language
    members = _member_values(f.member)
    lo, hi = period.lo, period.hi
    rows: list[dict[str, Any]] = []
    exact_scan = False
    if by in TIME_GRAINS:
        parts = rules.buckets(by, period)
        sums = _sums(conn, by, lo, hi, f)
        reach, exact_scan = _time_reach(conn, by, parts, f, members)
        for b in parts:
            raw = str(b.start)
            rows.append({"key": b.key, "label": b.key, "from": rules.day_of(b.lo),
                         "to": rules.day_of(b.hi),
                         **rules.figures(sums.get(raw, Sums()), reach.get(raw, Reach()),
                                         rules.buyers_for(f.member))})
    else:
        sums = _sums(conn, by, lo, hi, f)
        plan = _plan(by, f)
        if period.empty:
            reach = {}
        elif plan is None:
            exact_scan = True
            reach = _slow_reach(conn, by, lo, hi, f)
        else:
            reach = _fast_reach(conn, plan[0], plan[1], lo, hi, members)
        labels = _labels(conn, by, f, lang)
        listed = [k for k in labels if by in _LISTED_EMPTY and k != "0"]
        keys = rules.unique([*listed, *sorted(set(sums) | set(reach))])
        for raw in keys:
            key, label = labels.get(raw, (raw, raw))
            if by == "category" and raw == "":
                key, label = labels[""]
            rows.append({"key": key, "label": label,
                         **rules.figures(sums.get(raw, Sums()), reach.get(raw, Reach()),
                                         rules.buyers_for(f.member))})
        if by not in _LISTED_EMPTY:
            rows.sort(key=lambda r: (-r["net_sales"], r["key"]))
    total = _total(conn, period, f, members)
    return {"by": by, "from": period.date_from, "to": period.date_to,
            "effective_to": period.effective_to if not period.empty else None,
            **f.describe(), "refreshed_at": _refreshed_at(conn), "exact_scan": exact_scan,
            "rows": rows, "total": total}


def _time_reach(conn: Connection, by: str, parts: list[Bucket], f: Filters,
                members: tuple[int, ...]) -> tuple[dict[str, Reach], bool]:
    if not parts:
        return {}, False
    plan = _plan(by, f)
    if plan is None:
        got = _slow_reach(conn, by, parts[0].lo, parts[-1].hi, f)
        return got, True
    kind, keys = plan
    key = (keys or [""])[0]
    whole = [b.start for b in parts if b.whole]
    out = {str(k): v for k, v in _bucket_reach(conn, kind, key, by, whole, members).items()}
    for b in parts:
        if not b.whole:
            out[str(b.start)] = _fast_reach(conn, kind, [key], b.lo, b.hi, members).get(
                key, Reach())
    return out, False


def _total_reach(conn: Connection, period: Period, f: Filters,
                 members: tuple[int, ...]) -> Reach:
    if period.empty or not members:
        return Reach()
    plan = _plan("total", f)
    if plan is None:
        return _slow_reach(conn, "total", period.lo, period.hi, f).get("0", Reach())
    kind, keys = plan
    key = (keys or [""])[0]
    return _fast_reach(conn, kind, [key], period.lo, period.hi, members).get(key, Reach())


def _total(conn: Connection, period: Period, f: Filters,
           members: tuple[int, ...]) -> dict[str, Any]:
    sums = _sums(conn, "total", period.lo, period.hi, f).get("0", Sums())
    return rules.figures(sums, _total_reach(conn, period, f, members),
                         rules.buyers_for(f.member))


# --- members and promotions -----------------------------------------------------------------

GROUPS = (("member", "m", 1), ("non_member", "n", 0), ("guest", "g", None))


def _groups(conn: Connection, lo_day: dt.date, hi_day: dt.date, today: dt.date,
            f: Filters) -> dict[str, dict[str, Any]]:
    period = Period(lo_day, hi_day, today)
    sums = _sums(conn, "total", period.lo, period.hi, f).get("0", Sums())
    out: dict[str, dict[str, Any]] = {}
    wanted = rules.buyers_for(f.member)
    for name, buyer, member in GROUPS:
        if buyer not in wanted:
            continue
        reach = Reach() if member is None else _total_reach(conn, period, f, (member,))
        out[name] = rules.group_figures(sums, reach, buyer)
    out["all"] = rules.figures(sums, _total_reach(conn, period, f, _member_values(f.member)),
                               wanted)
    return out


def members_report(conn: Connection, *, actor: Actor, date_from: dt.date | None,
                   date_to: dt.date | None, scope: str | None = "overall",
                   channel: str | None = None, as_of: dt.datetime | None = None
                   ) -> dict[str, Any]:
    """Members against non-member customers and guest orders for a period: orders, sales,
    average order value, customers, frequency, repurchase rate."""
    _need(actor)
    period = rules.check_period(date_from, date_to, _today(as_of))
    f = resolve_filters(conn, actor, scope=scope, channel=channel)
    groups = _groups(conn, period.date_from, period.effective_to, period.today, f)
    return {"from": period.date_from, "to": period.date_to,
            "effective_to": period.effective_to if not period.empty else None,
            **f.describe(), "refreshed_at": _refreshed_at(conn), "groups": groups}


def _promotion_row(conn: Connection, row: Any) -> dict[str, Any]:
    store = brand = None
    if row.store_id is not None:
        store = conn.execute(select(stores.c.code).where(stores.c.id == row.store_id)).scalar()
    if row.brand_id is not None:
        brand = conn.execute(select(brands.c.code).where(brands.c.id == row.brand_id)).scalar()
    return {"id": int(row.id), "name": row.name, "starts_on": row.starts_on,
            "ends_on": row.ends_on, "store": store, "brand": brand,
            "scope": f"store:{store}" if store else (f"brand:{brand}" if brand else "overall"),
            "created_by": row.created_by, "updated_at": row.updated_at}


def _visible_promotion(actor: Actor, row: Any, conn: Connection) -> bool:
    if actor.store_ids is None:
        return True
    if row.store_id is not None:
        return int(row.store_id) in actor.store_ids
    if row.brand_id is not None:
        ids = {int(i) for i in conn.execute(select(stores.c.id).where(
            stores.c.brand_id == row.brand_id)).scalars()}
        return bool(ids & set(actor.store_ids))
    return True


def list_promotions(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    _need(actor)
    rows = conn.execute(select(promotions).order_by(promotions.c.starts_on.desc(),
                                                    promotions.c.id.desc())).all()
    return {"items": [_promotion_row(conn, r) for r in rows if _visible_promotion(actor, r,
                                                                                    conn)]}


def _promotion(conn: Connection, actor: Actor, promotion_id: int) -> Any:
    row = conn.execute(select(promotions).where(promotions.c.id == promotion_id)).first()
    if row is None or not _visible_promotion(actor, row, conn):
        raise NotFound("promotion_not_found", params={"id": promotion_id})
    return row


def get_promotion(conn: Connection, *, actor: Actor, promotion_id: int) -> dict[str, Any]:
    _need(actor)
    return _promotion_row(conn, _promotion(conn, actor, promotion_id))


def _scope_ids(conn: Connection, store: str | None, brand: str | None
               ) -> tuple[int | None, int | None]:
    rules.promotion_scope_check(store, brand)
    store_id = brand_id = None
    if store:
        store_id = conn.execute(select(stores.c.id).where(stores.c.code == store)).scalar()
        if store_id is None:
            raise invalid("store", "unknown_store", value=store)
    if brand:
        brand_id = conn.execute(select(brands.c.id).where(brands.c.code == brand)).scalar()
        if brand_id is None:
            raise invalid("brand", "promotion_brand_unknown", value=brand)
    return store_id, brand_id


def create_promotion(*, uow: UnitOfWork, actor: Actor, name: str, starts_on: dt.date,
                     ends_on: dt.date, store: str | None = None, brand: str | None = None
                     ) -> dict[str, Any]:
    """A promotion window (local dates, inclusive), chain-wide or for one store or brand."""
    _need(actor, "admin.org")
    conn = uow.c
    clean = rules.check_name(name)
    rules.check_promotion_dates(starts_on, ends_on)
    store_id, brand_id = _scope_ids(conn, store, brand)
    now = utcnow()
    new_id = conn.execute(insert(promotions).values(
        name=clean, starts_on=starts_on, ends_on=ends_on, store_id=store_id, brand_id=brand_id,
        created_at=now, created_by=actor.name, updated_at=now, updated_by=actor.name,
    ).returning(promotions.c.id)).scalar_one()
    audit.record(conn, actor, "promotion.created", entity="promotion", entity_id=new_id,
                 details={"name": clean, "starts_on": starts_on.isoformat(),
                          "ends_on": ends_on.isoformat(), "store": store, "brand": brand})
    uow.commit()
    return get_promotion(conn, actor=actor, promotion_id=int(new_id))


UNSET: Any = object()


def update_promotion(*, uow: UnitOfWork, actor: Actor, promotion_id: int, name: Any = UNSET,
                     starts_on: Any = UNSET, ends_on: Any = UNSET, store: Any = UNSET,
                     brand: Any = UNSET) -> dict[str, Any]:
    """Change some of a promotion's fields (``None`` for store or brand: chain-wide)."""
    _need(actor, "admin.org")
    conn = uow.c
    row = _promotion(conn, actor, promotion_id)
    current = _promotion_row(conn, row)
    values: dict[str, Any] = {}
    if name is not UNSET:
        values["name"] = rules.check_name(name)
    start = row.starts_on if starts_on is UNSET or starts_on is None else starts_on
    end = row.ends_on if ends_on is UNSET or ends_on is None else ends_on
    rules.check_promotion_dates(start, end)
    values.update(starts_on=start, ends_on=end)
    if store is not UNSET or brand is not UNSET:
        new_store = current["store"] if store is UNSET else store
        new_brand = current["brand"] if brand is UNSET else brand
        if store is not UNSET and store and brand is UNSET:
            new_brand = None
        if brand is not UNSET and brand and store is UNSET:
            new_store = None
        values["store_id"], values["brand_id"] = _scope_ids(conn, new_store, new_brand)
    values.update(updated_at=utcnow(), updated_by=actor.name)
    conn.execute(update(promotions).where(promotions.c.id == promotion_id).values(**values))
    changed = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in values.items()
               if k not in ("updated_at", "updated_by")}
    audit.record(conn, actor, "promotion.updated", entity="promotion", entity_id=promotion_id,
                 details={"before": {k: (v.isoformat() if isinstance(v, dt.date) else v)
                                     for k, v in current.items() if k != "updated_at"},
                          "after": changed})
    uow.commit()
    return get_promotion(conn, actor=actor, promotion_id=promotion_id)


def delete_promotion(*, uow: UnitOfWork, actor: Actor, promotion_id: int) -> None:
    _need(actor, "admin.org")
    conn = uow.c
    row = _promotion(conn, actor, promotion_id)
    conn.execute(delete(promotions).where(promotions.c.id == promotion_id))
    audit.record(conn, actor, "promotion.deleted", entity="promotion", entity_id=promotion_id,
                 details={"name": row.name, "starts_on": row.starts_on.isoformat(),
                          "ends_on": row.ends_on.isoformat()})
    uow.commit()


def promotion_comparison(conn: Connection, *, actor: Actor, promotion_id: int,
                         as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Members, non-members and guests during the promotion against the same number of days
    just before it, within the promotion's scope (and the actor's stores)."""
    _need(actor)
    row = _promotion(conn, actor, promotion_id)
    info = _promotion_row(conn, row)
    today = _today(as_of)
    windows = rules.promotion_windows(row.starts_on, row.ends_on, today)
    f = resolve_filters(conn, actor, scope=info["scope"])
    out: dict[str, Any] = {**info, "status": windows.status, "refreshed_at":
                           _refreshed_at(conn)}
    if windows.during is None or windows.before is None:
        return {**out, "during": None, "before": None, "change": None}
    during = _groups(conn, *windows.during, today, f)
    before = _groups(conn, *windows.before, today, f)
    return {**out,
            "during": {"from": windows.during[0], "to": windows.during[1], "groups": during},
            "before": {"from": windows.before[0], "to": windows.before[1], "groups": before},
            "change": rules.compare_groups(before, during)}


# --- cohorts --------------------------------------------------------------------------------

def cohorts(conn: Connection, *, actor: Actor, scope: str | None = "overall",
            channel: str | None = None, member: str | None = None,
            month_from: str | None = None, month_to: str | None = None, horizon: int = 12,
            as_of: dt.datetime | None = None) -> dict[str, Any]:
    """Monthly acquisition cohorts (first purchase in the scope) and the share of each that
    bought there again in each following month."""
    _need(actor)
    today = _today(as_of)
    current = rules.month_index(today)
    last = rules.parse_month(month_to, "to") if month_to else current
    first = rules.parse_month(month_from, "from") if month_from else last - 11
    if last < first:
        raise invalid("to", "date_range_reversed")
    if last - first + 1 > rules.MAX_COHORT_MONTHS:
        raise invalid("from", "dashboard_too_many_months", months=rules.MAX_COHORT_MONTHS)
    if not 0 <= int(horizon) <= rules.MAX_COHORT_MONTHS:
        raise invalid("months", "dashboard_horizon_invalid", max=rules.MAX_COHORT_MONTHS)
    f = resolve_filters(conn, actor, scope=scope, channel=channel, member=member)
    last = min(last, current)
    counts = _cohort_counts(conn, f, first, last, current)
    return {**f.describe(), "from": rules.month_label(first), "to": rules.month_label(last),
            "months": int(horizon), "refreshed_at": _refreshed_at(conn),
            "cohorts": [rules.retention(counts.get(c, {}), c, current, int(horizon))
                        for c in range(first, last + 1)]}


def _cohort_plan(f: Filters) -> tuple[str, str] | None:
    plan = _plan("total", f)
    if plan is None or plan[1] is None:
        return None
    return plan[0], plan[1][0]


def _cohort_counts(conn: Connection, f: Filters, first: int, last: int, current: int
                   ) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    members = _member_values(f.member)
    if not members or last < first:
        return out
    plan = _cohort_plan(f)
    if plan is not None:
        dc = dashboard_cohorts.c
        conds = [dc.kind == plan[0], dc.key == plan[1], dc.cohort.between(first, last),
                 dc.cohort + dc.k <= current]
        if len(members) == 1:
            conds.append(dc.member == members[0])
        rows = conn.execute(select(dc.cohort, dc.k, func.sum(dc.customers)).where(*conds)
                            .group_by(dc.cohort, dc.k))
    else:
        a = dashboard_activity
        base = [*_row_filters(a, f)]
        firsts = (select(a.c.customer_id, func.min(a.c.month).label("cohort"))
                  .where(*base).group_by(a.c.customer_id)).subquery("firsts")
        rows = conn.execute(
            select(firsts.c.cohort, (a.c.month - firsts.c.cohort).label("k"),
                   func.count(distinct(a.c.customer_id)))
            .join(firsts, firsts.c.customer_id == a.c.customer_id)
            .where(*base, firsts.c.cohort.between(first, last), a.c.month <= current)
            .group_by(firsts.c.cohort, a.c.month - firsts.c.cohort))
    for cohort, k, n in rows:
        out.setdefault(int(cohort), {})[int(k)] = _int(n)
    return out


# --- RFM segment x lifecycle stage ----------------------------------------------------------

def _structure_scope(conn: Connection, actor: Actor, scope: str | None) -> str:
    key = analytics.parse_scope(conn, scope or "overall").key
    if actor.store_ids is None:
        return key
    codes = {r.id: r.code for r in conn.execute(select(stores.c.id, stores.c.code).where(
        stores.c.id.in_(sorted(actor.store_ids))).order_by(stores.c.code))}
    if key == "overall" and len(codes) == 1:
        return f"store:{next(iter(codes.values()))}"
    if key.startswith("store:") and key[6:] in codes.values():
        return key
    raise Forbidden("dashboard_scope_forbidden", params={"scope": key})


def structure(conn: Connection, *, actor: Actor, scope: str | None = "overall",
              member: str | None = None) -> dict[str, Any]:
    """Customers per RFM segment (within the scope) and lifecycle stage, as of the last
    analytics refresh. Managers read the scope of one of their stores."""
    _need(actor)
    key = _structure_scope(conn, actor, scope)
    if member not in (None, "", "member", "non_member"):
        raise invalid("member", "literal_error", expected="member, non_member")
    ds = dashboard_structure.c
    conds = [ds.scope == key]
    if member:
        conds.append(ds.member == (1 if member == "member" else 0))
    cells = {(r.segment, r.stage): _int(r[2]) for r in conn.execute(
        select(ds.segment, ds.stage, func.sum(ds.customers)).where(*conds)
        .group_by(ds.segment, ds.stage))}
    stages = list(STAGES) + (["none"] if any(s == "none" for _, s in cells) else [])
    lang = actor.language
    total = sum(cells.values())
    rows = []
    for seg in SEGMENTS:
        counts = [cells.get((seg, st), 0) for st in stages]
        rows.append({"segment": seg, "label": t(f"analytics.segment.{seg}", lang),
                     "customers": sum(counts), "share": rules.ratio(sum(counts), total),
                     "stages": dict(zip(stages, counts, strict=True))})
    return {"scope": key, "member": member or None, "refreshed_at": _refreshed_at(conn),
            "customers": total,
            "stages": [{"stage": st, "label": t(f"analytics.stage.{st}", lang)
                        if st != "none" else t("dashboard.no_stage", lang),
                        "customers": sum(cells.get((seg, st), 0) for seg in SEGMENTS)}
                       for st in stages],
            "segments": rows}


# --- drill-down -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """The figure a customer list comes from."""

    view: str
    metric: str
    filters: Filters
    by: str | None = None
    key: str | None = None
    lo: int | None = None
    hi: int | None = None
    cohort: int | None = None
    k: int | None = None
    segment: str | None = None
    stage: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"view": self.view, "metric": self.metric,
                               **self.filters.describe()}
        if self.view == "breakdown":
            out.update(by=self.by, key=self.key,
                       **{"from": None if self.lo is None else rules.day_of(self.lo).isoformat(),
                          "to": None if self.hi is None else rules.day_of(self.hi).isoformat()})
        elif self.view == "cohort":
            out.update(cohort=rules.month_label(self.cohort or 0), k=self.k)
        else:
            out.update(segment=self.segment, stage=self.stage)
        return out


def parse_cell(conn: Connection, actor: Actor, params: dict[str, Any],
               as_of: dt.datetime | None = None) -> Cell:
    """A drill-down cell from request parameters: ``view`` (breakdown, cohort, structure) and
    the same parameters as the figure's own request, plus ``key`` and ``metric``."""
    _need(actor)
    view = params.get("view") or "breakdown"
    if view not in rules.VIEWS:
        raise invalid("view", "literal_error", expected=", ".join(rules.VIEWS))
    metric = params.get("metric") or "customers"
    if metric not in rules.METRIC_CUSTOMERS:
        raise invalid("metric", "literal_error", expected=", ".join(rules.METRIC_CUSTOMERS))
    listed = rules.METRIC_CUSTOMERS[metric]
    if view == "structure":
        key = _structure_scope(conn, actor, params.get("scope"))
        segment, stage = params.get("segment"), params.get("stage")
        if segment is not None and segment not in SEGMENTS:
            raise invalid("segment", "analytics_segment_unknown", segment=str(segment)[:30])
        if stage is not None and stage not in (*STAGES, "none"):
            raise invalid("stage", "literal_error", expected=", ".join((*STAGES, "none")))
        member = params.get("member")
        if member not in (None, "", "member", "non_member"):
            raise invalid("member", "literal_error", expected="member, non_member")
        f = Filters(key, key.partition(":")[0], None, None, False, None, None, member or None)
        return Cell("structure", "customers", f, segment=segment, stage=stage)
    f = resolve_filters(conn, actor, scope=params.get("scope"), channel=params.get("channel"),
                        member=params.get("member"))
    if view == "cohort":
        cohort = rules.parse_month(params.get("cohort") or "", "cohort")
        try:
            k = int(params.get("k") or 0)
        except (TypeError, ValueError):
            raise invalid("k", "int_parsing") from None
        if not 0 <= k <= 10 * 12:
            raise invalid("k", "dashboard_horizon_invalid", max=120)
        return Cell("cohort", "customers", f, cohort=cohort, k=k)
    by = params.get("by") or "total"
    if by not in (*BY, "total"):
        raise invalid("by", "dashboard_dimension_unknown", value=str(by)[:20])
    period = rules.check_period(_date(params.get("from"), "from"), _date(params.get("to"), "to"),
                                _today(as_of))
    key = params.get("key")
    lo, hi = period.lo, period.hi
    if by in TIME_GRAINS:
        found = [b for b in rules.buckets(by, period) if b.key == key]
        if not found:
            raise invalid("key", "dashboard_key_unknown", value=str(key)[:40])
        lo, hi = found[0].lo, found[0].hi
    elif by in DIMENSIONS and not key:
        raise invalid("key", "missing")
    return Cell("breakdown", listed, f, by=by, key=key, lo=lo, hi=hi)


def _date(value: Any, field_name: str) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise invalid(field_name, "date_parsing") from None


def _dimension_value(conn: Connection, by: str, key: str) -> Any:
    if by == "category":
        return "" if key == NONE_KEY else key
    if key == NONE_KEY:
        return 0
    table = {"store": stores, "region": regions, "brand": brands, "channel": channels}[by]
    found = conn.execute(select(table.c.id).where(table.c.code == key)).scalar()
    if found is None:
        raise invalid("key", "dashboard_key_unknown", value=key[:40])
    return int(found)


def cell_customers(conn: Connection, cell: Cell) -> Select[Any]:
    """The customers behind a cell: ``customer_id`` with ``orders`` and ``net`` (fen) in
    the period where they apply."""
    if cell.view == "structure":
        r = rfm_scores.c
        conds: list[Any] = [r.scope == cell.filters.scope]
        if cell.segment:
            cuts = rfm_read.cuts_of(conn.execute(select(rfm_refreshes).where(
                rfm_refreshes.c.scope == cell.filters.scope)).first())
            conds.append(rfm_read.segment_condition([cell.segment], cuts))
        if cell.filters.member:
            conds.append(customers.c.is_member.is_(cell.filters.member == "member"))
        q = (select(r.customer_id.label("customer_id"), r.frequency.label("orders"),
                    type_coerce(r.monetary, BigInteger).label("net"))
             .join(customers, customers.c.id == r.customer_id)
             .outerjoin(lifecycle_stages, lifecycle_stages.c.customer_id == r.customer_id))
        if cell.stage == "none":
            conds.append(lifecycle_stages.c.stage.is_(None))
        elif cell.stage:
            conds.append(lifecycle_stages.c.stage == cell.stage)
        return q.where(*conds)
    f = cell.filters
    if cell.view == "cohort":
        assert cell.cohort is not None and cell.k is not None
        month = cell.cohort + cell.k
        m_lo = day_number(rules.month_first(month))
        m_hi = day_number(rules.month_last(month))
        a = dashboard_activity
        plan = _cohort_plan(f)
        conds = [a.c.day.between(m_lo, m_hi), *_row_filters(a, f)]
        if plan is not None:
            kind, key = plan
            conds.append(a.c[f"{kind}_c"] == cell.cohort)
            if kind != "all":
                conds.append(a.c[f"{kind}_id"] == int(key))
        else:
            b = a.alias("b")
            c_lo = day_number(rules.month_first(cell.cohort))
            c_hi = day_number(rules.month_last(cell.cohort))
            conds.append(~exists(select(literal(1)).select_from(b).where(
                b.c.customer_id == a.c.customer_id, b.c.day < c_lo, *_row_filters(b, f))))
            conds.append(exists(select(literal(1)).select_from(b).where(
                b.c.customer_id == a.c.customer_id, b.c.day.between(c_lo, c_hi),
                *_row_filters(b, f))))
        return (select(a.c.customer_id.label("customer_id"),
                       type_coerce(func.sum(a.c.orders), BigInteger).label("orders"),
                       type_coerce(func.sum(a.c.sales - a.c.refunds), BigInteger).label("net"))
                .where(*conds).group_by(a.c.customer_id))
    assert cell.by is not None and cell.lo is not None and cell.hi is not None
    by = cell.by if cell.by in DIMENSIONS else "total"
    value = None
    if by in DIMENSIONS:
        value = _dimension_value(conn, by, cell.key or "")
    if cell.hi < cell.lo:
        return select(literal(0).label("customer_id"), literal(0).label("orders"),
                      literal(0).label("net")).where(false())
    plan = _plan(by, f)
    cur, returning = per_customer(by, cell.lo, cell.hi, f, value,
                                  None if plan is None else plan[0])
    metric_cond: Any = {"customers": true(), "new_customers": ~returning,
                        "returning_customers": returning,
                        "repeat_customers": cur.c.first_day < cur.c.last_day,
                        "one_time_customers": cur.c.first_day == cur.c.last_day}[cell.metric]
    return select(cur.c.customer_id, cur.c.orders, cur.c.net).where(metric_cond)


def _purchase_days(conn: Connection, cell: Cell, ids: list[int]) -> dict[int, int]:
    """The listed customers' purchase days within the cell (a page at a time)."""
    if cell.view == "structure" or not ids:
        return {}
    f = cell.filters
    if cell.view == "cohort":
        assert cell.cohort is not None and cell.k is not None
        t = dashboard_activity
        lo = day_number(rules.month_first(cell.cohort + cell.k))
        hi = day_number(rules.month_last(cell.cohort + cell.k))
        conds = [*_row_filters(t, f)]
        plan = _cohort_plan(f)
        if plan is not None and plan[0] != "all":
            conds.append(t.c[f"{plan[0]}_id"] == int(plan[1]))
    else:
        assert cell.by is not None and cell.lo is not None and cell.hi is not None
        by = cell.by if cell.by in DIMENSIONS else "total"
        t = dashboard_category_activity if by == "category" else dashboard_activity
        lo, hi = cell.lo, cell.hi
        conds = [*_row_filters(t, f)]
        if by in DIMENSIONS:
            conds.append(_group_column(t, by) == _dimension_value(conn, by, cell.key or ""))
    rows = conn.execute(select(t.c.customer_id, func.count(distinct(t.c.day)))
                        .where(t.c.customer_id.in_(ids), t.c.day.between(lo, hi), *conds)
                        .group_by(t.c.customer_id))
    return {int(cid): int(n) for cid, n in rows}


def drill_customers(conn: Connection, *, actor: Actor, params: dict[str, Any], page: int = 1,
                    page_size: int = 20, as_of: dt.datetime | None = None) -> dict[str, Any]:
    """One page of the customers behind a dashboard figure (masked as the customer list is),
    highest net spend in the cell first; ``total`` is their number, equal to the figure."""
    cell = parse_cell(conn, actor, params, as_of)
    page, page_size = max(1, int(page)), max(1, min(int(page_size), MAX_PAGE_SIZE))
    # The page and the number of customers from one evaluation of the cell's query.
    ranked = select(*cell_customers(conn, cell).subquery("cell").c).subquery("ranked")
    page_rows = (select(ranked, func.count().over().label("total"))
                 .order_by(ranked.c.net.desc(), ranked.c.customer_id)
                 .limit(page_size).offset((page - 1) * page_size)).subquery("page")
    rows = conn.execute(
        select(customers.c.id, customers.c.member_code, customers.c.is_member, customers.c.name,
               customers.c.phone, page_rows.c.orders, page_rows.c.net,
               page_rows.c.total)
        .join(page_rows, page_rows.c.customer_id == customers.c.id)
        .order_by(page_rows.c.net.desc(), customers.c.id)).all()
    if rows:
        total = int(rows[0].total)
    else:  # past the last page (or none at all)
        inner = cell_customers(conn, cell).subquery("cell")
        total = conn.execute(select(func.count()).select_from(inner)).scalar_one()
    days = _purchase_days(conn, cell, [int(r.id) for r in rows])
    return {"cell": cell.describe(), "total": int(total), "page": page, "page_size": page_size,
            "items": [{"id": int(r.id), "member_code": r.member_code,
                       "is_member": bool(r.is_member), "name": mask_name(r.name),
                       "phone": mask_phone(r.phone),
                       "purchase_days": days.get(int(r.id)),
                       "orders": None if r.orders is None else int(r.orders),
                       "net_spend": None if r.net is None else rules.yuan(int(r.net))}
                      for r in rows]}


def export_cell_customers(*, uow: UnitOfWork, actor: Actor, params: dict[str, Any], fmt: str,
                          unmasked: bool = False, as_of: dt.datetime | None = None) -> Path:
    """The customers behind a figure as CSV or XLSX, through the audited customer export (the
    audit entry names the cell)."""
    from patron.customers import export

    cell = parse_cell(uow.c, actor, params, as_of)
    inner = cell_customers(uow.c, cell).subquery("cell")
    return export.export_customers(uow=uow, actor=actor, filters=None, fmt=fmt,  # type: ignore[arg-type]
                                   unmasked=unmasked, among=select(inner.c.customer_id),
                                   among_audit={"drill_down": cell.describe()})


__all__ = ["refresh_dashboards", "breakdown", "members_report", "cohorts", "structure",
           "drill_customers", "export_cell_customers", "promotion_comparison"]
