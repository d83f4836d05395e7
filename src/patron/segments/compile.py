"""A segment definition compiled to one SQL query (SQLAlchemy Core), for SQLite and PostgreSQL.

Every condition becomes a boolean expression on the ``customers`` row, mostly
``customers.id IN (SELECT customer_id FROM ... WHERE ...)`` over the table that holds the
fact, so that the database plans the whole definition as one statement and nothing is read
into Python. Groups become AND / OR. A test that also holds for a customer the table knows
nothing about (``orders <= 2`` also holds for no orders) is written the other way round:
``customers.id NOT IN (SELECT ... WHERE NOT test)``.

Times: local days are the default time zone's (``PATRON_DEFAULT_TIMEZONE``, Asia/Shanghai), a
window's days run from the start of its first day to the end of its last.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from patron.analytics import rfm_read
from patron.analytics.churn_tables import customer_churn_scores
from patron.analytics.clv_tables import customer_predictions
from patron.analytics.tables import lifecycle_stages, rfm_scores
from patron.customers.queries import visible_clause
from patron.customers.tables import customer_figures, customers, identities
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_members,
    loyalty_programs,
    loyalty_tiers,
)
from patron.orders.tables import order_lines, orders
from patron.org.tables import brands, channels, regions, stores
from patron.security.model import Actor
from patron.segments import model as m
from patron.storedvalue.tables import sv_accounts
from patron.tags.tables import customer_tags, tags

# --- dialect-specific pieces ----------------------------------------------------------------


class json_array_has(FunctionElement[bool]):  # noqa: N801 - reads as SQL
    """json_array_has(json column, key, value): the column's ``key`` holds a JSON array with
    the text ``value`` in it."""

    type = Boolean()
    inherit_cache = True


@compiles(json_array_has, "sqlite")
def _has_sqlite(element: json_array_has, compiler: Any, **kw: Any) -> str:
    col, key, value = (compiler.process(c, **kw) for c in element.clauses)
    # every part is a bound parameter or a column name rendered by SQLAlchemy
    return (f"EXISTS (SELECT 1 FROM json_each({col}, '$.\"' || {key} || '\"') "  # noqa: S608
            f"WHERE json_each.value = {value})")


@compiles(json_array_has, "postgresql")
def _has_pg(element: json_array_has, compiler: Any, **kw: Any) -> str:
    col, key, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"COALESCE((CAST({col} AS JSONB) -> {key}) ? {value}, false)"


@compiles(json_array_has, "duckdb")
def _has_duckdb(element: json_array_has, compiler: Any, **kw: Any) -> str:
    """The audience replica (patron.segments.replica): an array holding the text, or the text
    itself (as SQLite's json_each and PostgreSQL's ``?`` take a lone string)."""
    from patron.segments.replica import _json_path

    col_el, key_el, value_el = element.clauses
    col, value = compiler.process(col_el, **kw), compiler.process(value_el, **kw)
    key = key_el.value
    whole = _json_path(key)  # '$."key"'
    every = whole[:-1] + "[*]'"
    return (f"COALESCE(list_contains(json_extract_string({col}, {every}), {value}) "
            f"OR json_extract_string({col}, {whole}) = {value}, false)")


# --- context --------------------------------------------------------------------------------


class _Context:
    def __init__(self, as_of: dt.datetime, tz: str) -> None:
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        self.as_of = as_of
        self.zone = ZoneInfo(tz)
        self.today = as_of.astimezone(self.zone).date()

    def start(self, day: dt.date) -> dt.datetime:
        """The UTC moment a local day begins."""
        return dt.datetime.combine(day, dt.time(), self.zone).astimezone(dt.UTC)

    def window(self, w: m.Window | None) -> tuple[dt.datetime, dt.datetime] | None:
        if w is None:
            return None
        first, last = w.local_days(self.today)
        return self.start(first), self.start(last + dt.timedelta(days=1))


def default_timezone() -> str:
    from patron.config import get_settings

    return get_settings().default_timezone


def member_ids_select(definition: m.Definition | Any, *, scope: Actor,
                      as_of: dt.datetime | None = None, tz: str | None = None
                      ) -> Select[Any]:
    """``SELECT customers.id AS customer_id`` of every customer the definition selects among
    those ``scope`` may see (merged profiles never). See docs/segments.md."""
    from patron.db import utcnow

    d = m.parse(definition)
    ctx = _Context(as_of or utcnow(), tz or default_timezone())
    return (select(customers.c.id.label("customer_id"))
            .where(customers.c.merged_into_id.is_(None), visible_clause(scope),
                   _group(ctx, d.match, d.conditions), _personalisation(d)))


def condition(definition: m.Definition | Any, *, as_of: dt.datetime | None = None,
              tz: str | None = None) -> ColumnElement[bool]:
    """The definition as a boolean expression over ``customers`` (no scope, merged included):
    for callers composing their own query."""
    from patron.db import utcnow

    d = m.parse(definition)
    return and_(_group(_Context(as_of or utcnow(), tz or default_timezone()), d.match,
                       d.conditions), _personalisation(d))


# Conditions on automated scores (models and scoring rules): a person who opted out of
# personalised marketing (PIPL article 24, docs/privacy.md) is never selected by them.
SCORED = frozenset({"rfm_score", "rfm_segment", "probability_active", "clv", "churn_risk"})


def uses_scores(nodes: list[Any]) -> bool:
    return any(n.type in SCORED or (n.type == "group" and uses_scores(n.conditions))
               for n in nodes)


def _personalisation(d: m.Definition) -> ColumnElement[bool]:
    if not uses_scores(d.conditions):
        return true()
    from patron.privacy.service import personalisation_opted_out

    return CID.not_in(personalisation_opted_out())


def _group(ctx: _Context, match: str, nodes: list[Any]) -> ColumnElement[bool]:
    if not nodes:
        return true()
    parts = [_node(ctx, n) for n in nodes]
    return and_(*parts) if match == "all" else or_(*parts)


CID = customers.c.id


def _node(ctx: _Context, n: Any) -> ColumnElement[bool]:
    handler = _HANDLERS[n.type]
    return handler(ctx, n)


# --- helpers --------------------------------------------------------------------------------

def _fen(value: Decimal) -> int:
    return int((Decimal(value) * 100).to_integral_value())


def _num_sql(op: str, value: Any, col: Any, *, scale: int = 1, as_float: bool = False
             ) -> ColumnElement[bool]:
    """``col op value``, the value multiplied by ``scale`` (100 for yuan against fen)."""
    def lit(v: Any) -> Any:
        if as_float:
            return literal(float(v), Float())
        return literal(int((Decimal(v) * scale).to_integral_value()), BigInteger())

    if op == "between":
        return and_(col >= lit(value[0]), col <= lit(value[1]))
    v = lit(value)
    return {"eq": col == v, "neq": col != v, "gt": col > v, "gte": col >= v, "lt": col < v,
            "lte": col <= v}[op]


def _num_times(op: str, value: Any, total: Any, count: Any) -> ColumnElement[bool]:
    """``total / count op value`` written without a division: ``total op value * count``
    (count > 0), all integers (value in yuan, total in fen)."""
    def scaled(v: Any) -> Any:
        return literal(_fen(Decimal(v)), BigInteger()) * count

    if op == "between":
        return and_(total >= scaled(value[0]), total <= scaled(value[1]))
    v = scaled(value)
    return {"eq": total == v, "neq": total != v, "gt": total > v, "gte": total >= v,
            "lt": total < v, "lte": total <= v}[op]


def integer_range(op: str, value: Any) -> tuple[int | None, int | None] | None:
    """The whole numbers x with ``x op value`` as [low, high] (None: unbounded); None for
    ``neq``. An empty range comes back as low > high."""
    def ceil(v: Any) -> int:
        return int(Decimal(v).to_integral_value(rounding=ROUND_CEILING))

    def floor(v: Any) -> int:
        return int(Decimal(v).to_integral_value(rounding=ROUND_FLOOR))

    if op == "between":
        return ceil(value[0]), floor(value[1])
    return {"gte": (ceil(value), None), "gt": (floor(value) + 1, None),
            "lte": (None, floor(value)), "lt": (None, ceil(value) - 1),
            "eq": (ceil(value), floor(value)), "neq": None}[op]


def _in(sub: Select[Any]) -> ColumnElement[bool]:
    return CID.in_(sub)


def _not_in(sub: Select[Any]) -> ColumnElement[bool]:
    return CID.not_in(sub)


def _time_bounds(col: Any, bounds: tuple[dt.datetime, dt.datetime] | None) -> list[Any]:
    if bounds is None:
        return []
    return [col >= bounds[0], col < bounds[1]]


def _store_ids(codes: list[str]) -> Select[Any]:
    return select(stores.c.id).where(stores.c.code.in_(codes))


def _channel_ids(codes: list[str]) -> Select[Any]:
    return select(channels.c.id).where(channels.c.code.in_(codes))


# --- conditions -----------------------------------------------------------------------------

def _profile(ctx: _Context, n: m.ProfileCondition) -> ColumnElement[bool]:
    kind = m.PROFILE_FIELDS[n.field]
    if n.field in ENCRYPTED:
        return _encrypted(n)
    col = customers.c[n.field]
    if kind == "bool":
        return col.is_(True) if n.op == "is_true" else col.is_not(True)
    if kind == "date":
        if n.field == "created_at":
            return _moment_test(ctx, col, n.op, n.value)
        return _date_test(ctx, col, n.op, n.value)
    return _text_test(col, n.op, n.value)


# Encrypted in the database (docs/data-protection.md#personal-data-at-rest): presence always;
# equality of a whole name, a surname, a phone or an email through their blind indexes;
# "birthday within N days" through customers.birth_md (the birthday condition). The model
# offers only those operators (model.PROFILE_OPS); anything else is refused here as well.
ENCRYPTED = ("name", "phone", "email", "birthday", "age")


def _encrypted(n: m.ProfileCondition) -> ColumnElement[bool]:
    from patron.customers.model import IdentifierError, normalize_identity
    from patron.customers.protect import identity_index, name_indexes, normalize_name, surname_of
    from patron.errors import FieldError, ValidationFailed
    from patron.protection.fields import blind

    col = customers.c["birthday" if n.field == "age" else n.field]
    if n.op == "is_set":
        return col.is_not(None)
    if n.op == "is_not_set":
        return col.is_(None)
    values = n.value if isinstance(n.value, list) else [n.value]
    if n.field == "name" and n.op == "surname":
        # a compound surname (欧阳) is indexed by its first character, as names are
        surname = surname_of(normalize_name(str(n.value))) or ""
        return customers.c.surname_index == blind("surname", surname)
    if n.field == "name" and n.op in ("eq", "in", "neq", "not_in"):
        wanted = [name_indexes(str(v))["name_index"] for v in values]
        hit = customers.c.name_index.in_([w for w in wanted if w])
        return hit if n.op in ("eq", "in") else or_(col.is_(None), not_(hit))
    if n.field in ("phone", "email") and n.op in ("eq", "in", "neq", "not_in"):
        indexes = []
        for v in values:
            try:
                indexes.append(identity_index(normalize_identity(n.field, str(v)).value))
            except IdentifierError:
                continue
        hit = exists().where(identities.c.customer_id == CID, identities.c.kind == n.field,
                             identities.c.value_index.in_(indexes))
        return hit if n.op in ("eq", "in") else not_(hit)
    raise ValidationFailed("validation_failed", fields=[FieldError(
        f"profile.{n.field}", "segment_field_encrypted", {"field": n.field, "op": n.op})])


def _text_test(col: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "is_set":
        return and_(col.is_not(None), col != "")
    if op == "is_not_set":
        return or_(col.is_(None), col == "")
    if op == "eq":
        return col == value
    if op == "neq":
        return or_(col.is_(None), col != value)
    if op == "in":
        return col.in_(value)
    if op == "not_in":
        return or_(col.is_(None), col.not_in(value))
    if op == "contains":
        return col.contains(value, autoescape=True)
    if op == "starts_with":
        return col.startswith(value, autoescape=True)
    raise ValueError(op)


def _date_test(ctx: _Context, col: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "is_set":
        return col.is_not(None)
    if op == "is_not_set":
        return col.is_(None)
    if op == "before":
        return col < m.parse_date(value)
    if op == "after":
        return col > m.parse_date(value)
    if op == "between":
        return and_(col >= m.parse_date(value[0]), col <= m.parse_date(value[1]))
    if op == "within_last_days":
        return and_(col >= ctx.today - dt.timedelta(days=int(value) - 1), col <= ctx.today)
    raise ValueError(op)


def _moment_test(ctx: _Context, col: Any, op: str, value: Any) -> ColumnElement[bool]:
    """A UTC moment column tested against local dates."""
    one = dt.timedelta(days=1)
    if op == "is_set":
        return col.is_not(None)
    if op == "is_not_set":
        return col.is_(None)
    if op == "before":
        return col < ctx.start(m.parse_date(value))
    if op == "after":
        return col >= ctx.start(m.parse_date(value) + one)
    if op == "between":
        return and_(col >= ctx.start(m.parse_date(value[0])),
                    col < ctx.start(m.parse_date(value[1]) + one))
    if op == "within_last_days":
        return and_(col >= ctx.start(ctx.today - dt.timedelta(days=int(value) - 1)),
                    col < ctx.start(ctx.today + one))
    raise ValueError(op)


def _custom_field(ctx: _Context, n: m.CustomFieldCondition) -> ColumnElement[bool]:
    doc = customers.c.custom_fields[n.key]
    text = doc.as_string()
    op, value = n.op, n.value
    if op == "is_set":
        return and_(text.is_not(None), text != "")
    if op == "is_not_set":
        return or_(text.is_(None), text == "")
    if op in ("has", "has_not"):
        has = json_array_has(customers.c.custom_fields, literal(n.key, String()),
                             literal(str(value), String()))
        return has if op == "has" else not_(has)
    if op in ("before", "after"):
        return text < str(value) if op == "before" else text > str(value)
    numeric = _is_number(value) or (op == "between" and all(_is_number(v) for v in value))
    if op in ("gt", "gte", "lt", "lte", "between") or (op in ("eq", "neq") and numeric):
        if numeric:
            num = doc.as_float()
            test = _num_sql(op, tuple(value) if op == "between" else value, num, as_float=True)
            return and_(num.is_not(None), test)
        # dates as ISO text compare in order
        if op == "between":
            return and_(text >= str(value[0]), text <= str(value[1]))
        return {"gt": text > str(value), "gte": text >= str(value), "lt": text < str(value),
                "lte": text <= str(value)}[op]
    return _text_test(text, op, value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _identity(ctx: _Context, n: m.IdentityCondition) -> ColumnElement[bool]:
    has = exists().where(identities.c.customer_id == CID, identities.c.kind == n.kind)
    return has if n.op == "present" else not_(has)


def _tagged(codes: list[str]) -> Select[Any]:
    return (select(customer_tags.c.customer_id)
            .where(customer_tags.c.tag_id.in_(select(tags.c.id).where(tags.c.code.in_(codes)))))


def _tag(ctx: _Context, n: m.TagCondition) -> ColumnElement[bool]:
    if n.op == "has_any":
        return _in(_tagged(list(n.tags)))
    if n.op == "has_none":
        return _not_in(_tagged(list(n.tags)))
    return and_(*(_in(_tagged([code])) for code in sorted(set(n.tags))))


def _active_members(program: str | None) -> Any:
    q = loyalty_members.c.status == "active"
    if program is None:
        return q
    return and_(q, loyalty_members.c.program_id.in_(
        select(loyalty_programs.c.id).where(loyalty_programs.c.code == program)))


def _tier(ctx: _Context, n: m.TierCondition) -> ColumnElement[bool]:
    lm, tt = loyalty_members.c, loyalty_tiers.c
    sub = (select(lm.customer_id).join(loyalty_tiers, tt.id == lm.tier_id)
           .where(_active_members(n.program), tt.code.in_(list(n.tiers))))
    return _in(sub) if n.op == "in" else _not_in(sub)


def _points(ctx: _Context, n: m.PointsCondition) -> ColumnElement[bool]:
    lm = loyalty_members.c
    total = func.sum(type_coerce(lm.points_available, BigInteger()))
    sub = (select(lm.customer_id).where(_active_members(n.program)).group_by(lm.customer_id)
           .having(_num_sql(n.op, n.value, total)))
    return _in(sub)


def _stored_value(ctx: _Context, n: m.StoredValueCondition) -> ColumnElement[bool]:
    lm, sv = loyalty_members.c, sv_accounts.c
    balance = func.sum(type_coerce(sv.principal, BigInteger())
                       + type_coerce(sv.bonus, BigInteger()))
    sub = (select(lm.customer_id).join(sv_accounts, sv.member_id == lm.id)
           .where(_active_members(n.program)).group_by(lm.customer_id)
           .having(_num_sql(n.op, n.value, balance, scale=100)))
    return _in(sub)


def _rfm_score(ctx: _Context, n: m.RfmScoreCondition) -> ColumnElement[bool]:
    # Scores are computed from the scope's cut points (patron.analytics.rfm_read): the
    # levels the test accepts become value ranges between cut points.
    levels = [level for level in range(1, 6) if _num_test(n.op, n.value, level)]
    sub = select(rfm_scores.c.customer_id).where(
        rfm_scores.c.scope == n.scope,
        rfm_read.levels_condition(n.score, levels, rfm_read.scalar_cuts(n.scope)[n.score]))
    return _in(sub)


def _num_test(op: str, value: Any, x: int) -> bool:
    """:func:`_num_sql`'s test in Python."""
    if op == "between":
        return Decimal(value[0]) <= x <= Decimal(value[1])
    v = Decimal(value)
    return {"eq": x == v, "neq": x != v, "gt": x > v, "gte": x >= v, "lt": x < v,
            "lte": x <= v}[op]


def _rfm_segment(ctx: _Context, n: m.RfmSegmentCondition) -> ColumnElement[bool]:
    sub = select(rfm_scores.c.customer_id).where(
        rfm_scores.c.scope == n.scope,
        rfm_read.segment_condition(n.segments, rfm_read.scalar_cuts(n.scope)))
    return _in(sub) if n.op == "in" else _not_in(sub)


def _lifecycle(ctx: _Context, n: m.LifecycleCondition) -> ColumnElement[bool]:
    sub = select(lifecycle_stages.c.customer_id).where(
        lifecycle_stages.c.stage.in_(list(n.stages)))
    return _in(sub) if n.op == "in" else _not_in(sub)


def _probability_active(ctx: _Context, n: m.ProbabilityActiveCondition) -> ColumnElement[bool]:
    p = customer_predictions.c
    return _in(select(p.customer_id).where(
        _num_sql(n.op, n.value, p.probability_alive, as_float=True)))


def _clv(ctx: _Context, n: m.ClvCondition) -> ColumnElement[bool]:
    p = customer_predictions.c
    return _in(select(p.customer_id).where(
        _num_sql(n.op, n.value, type_coerce(p.clv_12m, BigInteger()), scale=100)))


def _churn_risk(ctx: _Context, n: m.ChurnRiskCondition) -> ColumnElement[bool]:
    s = customer_churn_scores.c
    return _in(select(s.customer_id).where(
        _num_sql(n.op, n.value, s.probability, as_float=True)))


def _holds_for_nothing(n: m.PurchasesCondition) -> bool:
    """Whether the test holds for a customer with no orders (0 orders, 0 spend)."""
    return n.measure != "aov" and n.test(Decimal(0))


def _purchases(ctx: _Context, n: m.PurchasesCondition) -> ColumnElement[bool]:
    if n.window is None and n.stores is None and n.channels is None:
        f = customer_figures.c
        spend = type_coerce(f.net_spend, BigInteger())
        count = f.order_count
        test = {"spend": lambda: _num_sql(n.op, n.value, spend, scale=100),
                "orders": lambda: _num_sql(n.op, n.value, count),
                "aov": lambda: and_(count > 0, _num_times(n.op, n.value, spend, count)),
                }[n.measure]()
        if _holds_for_nothing(n):
            return _not_in(select(f.customer_id).where(not_(test)))
        return _in(select(f.customer_id).where(test))
    o = orders.c
    where: list[Any] = [o.customer_id.is_not(None)]
    where += _time_bounds(o.purchased_at, ctx.window(n.window))
    if n.stores is not None:
        where.append(o.store_id.in_(_store_ids(list(n.stores))))
    if n.channels is not None:
        where.append(o.channel_id.in_(_channel_ids(list(n.channels))))
    spend = func.sum(type_coerce(o.total_amount, BigInteger())
                     - type_coerce(o.refunded_amount, BigInteger()))
    count = func.count()
    test = {"spend": lambda: _num_sql(n.op, n.value, spend, scale=100),
            "orders": lambda: _num_sql(n.op, n.value, count),
            "aov": lambda: _num_times(n.op, n.value, spend, count)}[n.measure]()
    base = select(o.customer_id).where(*where).group_by(o.customer_id)
    if _holds_for_nothing(n):
        return _not_in(base.having(not_(test)))
    return _in(base.having(test))


def _recency(ctx: _Context, n: m.RecencyCondition) -> ColumnElement[bool]:
    f = customer_figures.c
    col = f.last_order_at
    one = dt.timedelta(days=1)

    def days_range(rng: tuple[int | None, int | None]) -> ColumnElement[bool]:
        low, high = rng
        if low is not None and high is not None and low > high:
            return false()
        parts: list[Any] = [col.is_not(None)]
        if low is not None:  # today - day(last) >= low
            parts.append(col < ctx.start(ctx.today - dt.timedelta(days=low) + one))
        if high is not None:  # today - day(last) <= high
            parts.append(col >= ctx.start(ctx.today - dt.timedelta(days=high)))
        return and_(*parts)

    value = n.value
    if n.op == "neq":
        eq = integer_range("eq", value)
        assert eq is not None
        return _in(select(f.customer_id).where(col.is_not(None), not_(days_range(eq))))
    rng = integer_range(n.op, value)
    assert rng is not None
    return _in(select(f.customer_id).where(days_range(rng)))


def _bought(ctx: _Context, n: m.BoughtCondition) -> ColumnElement[bool]:
    o, ln = orders.c, order_lines.c
    what = (ln.category.in_(list(n.categories)) if n.categories is not None
            else ln.sku.in_(list(n.skus or [])))
    sub = (select(o.customer_id).select_from(orders.join(order_lines, ln.order_id == o.id))
           .where(o.customer_id.is_not(None), what,
                  type_coerce(ln.returned_quantity, BigInteger())
                  < type_coerce(ln.quantity, BigInteger()),
                  *_time_bounds(o.purchased_at, ctx.window(n.window))))
    return _in(sub) if n.op == "bought" else _not_in(sub)


def _place(ctx: _Context, n: Any, store_ids: Select[Any] | None,
           channel_ids: Select[Any] | None) -> ColumnElement[bool]:
    if n.op in ("registered", "not_registered"):
        if store_ids is not None:
            test = customers.c.registration_store_id.in_(store_ids)
            col = customers.c.registration_store_id
        else:
            assert channel_ids is not None
            test = customers.c.registration_channel_id.in_(channel_ids)
            col = customers.c.registration_channel_id
        return test if n.op == "registered" else or_(col.is_(None), not_(test))
    o = orders.c
    where: list[Any] = [o.customer_id.is_not(None),
                        *_time_bounds(o.purchased_at, ctx.window(n.window))]
    if store_ids is not None:
        where.append(o.store_id.in_(store_ids))
    if channel_ids is not None:
        where.append(o.channel_id.in_(channel_ids))
    sub = select(o.customer_id).where(*where)
    return _in(sub) if n.op == "purchased" else _not_in(sub)


def _store(ctx: _Context, n: m.StoreCondition) -> ColumnElement[bool]:
    return _place(ctx, n, _store_ids(list(n.stores)), None)


def _region(ctx: _Context, n: m.RegionCondition) -> ColumnElement[bool]:
    ids = select(stores.c.id).where(stores.c.region_id.in_(
        select(regions.c.id).where(regions.c.code.in_(list(n.regions)))))
    return _place(ctx, n, ids, None)


def _brand(ctx: _Context, n: m.BrandCondition) -> ColumnElement[bool]:
    ids = select(stores.c.id).where(stores.c.brand_id.in_(
        select(brands.c.id).where(brands.c.code.in_(list(n.brands)))))
    return _place(ctx, n, ids, None)


def _channel(ctx: _Context, n: m.ChannelCondition) -> ColumnElement[bool]:
    return _place(ctx, n, None, _channel_ids(list(n.channels)))


def _hour_slot(ctx: _Context, n: m.HourSlotCondition) -> ColumnElement[bool]:
    f = customer_figures.c
    in_slot: Any = literal(0, BigInteger())
    for hour in m.slot_hours(n.slot):
        in_slot = in_slot + func.coalesce(f.counters[("hour", f"{hour:02d}", 0)].as_integer(),
                                          0)
    # share >= min_share, as integers: in_slot * 10000 >= min_share * 10000 * orders
    need = int((n.min_share * 10000).to_integral_value(rounding=ROUND_CEILING))
    return _in(select(f.customer_id).where(
        f.order_count > 0, in_slot * 10000 >= literal(need, BigInteger()) * f.order_count))


def _birthday(ctx: _Context, n: m.BirthdayCondition) -> ColumnElement[bool]:
    keys = sorted(m.birthday_keys(ctx.today, n.within_days))
    # birthdays are encrypted; their month and day are kept apart (customers.birth_md)
    return customers.c.birth_md.in_(keys)


def _consent(ctx: _Context, n: m.ConsentCondition) -> ColumnElement[bool]:
    c, lm = loyalty_consents.c, loyalty_members.c
    latest = loyalty_consents.alias("latest")
    newest = (select(func.max(latest.c.id))
              .where(latest.c.member_id == c.member_id, latest.c.kind == n.channel)
              .scalar_subquery())
    sub = (select(lm.customer_id).select_from(loyalty_consents.join(
        loyalty_members, lm.id == c.member_id))
        .where(c.kind == n.channel, c.granted.is_(True), c.id == newest))
    return _in(sub) if n.op == "granted" else _not_in(sub)


_HANDLERS: dict[str, Any] = {
    "group": lambda ctx, n: _group(ctx, n.match, n.conditions),
    "profile": _profile, "custom_field": _custom_field, "identity": _identity, "tag": _tag,
    "tier": _tier, "points": _points, "stored_value": _stored_value, "rfm_score": _rfm_score,
    "rfm_segment": _rfm_segment, "lifecycle": _lifecycle,
    "probability_active": _probability_active, "clv": _clv, "churn_risk": _churn_risk,
    "purchases": _purchases, "recency": _recency, "bought": _bought, "store": _store,
    "region": _region, "brand": _brand, "channel": _channel, "hour_slot": _hour_slot,
    "birthday": _birthday, "consent": _consent,
}
assert set(_HANDLERS) == {"group", *m.CONDITION_TYPES}
