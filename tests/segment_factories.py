"""Generated customers with every fact a segment can test, written straight into the tables,
and a Python recomputation of a segment definition over the same records (the oracle the SQL
compiler is checked against).

The rows are random but consistent (figures are the sums of the orders, a tier belongs to its
program); the oracle reads the same records the generator wrote, never the database.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select

from patron.analytics.churn_tables import churn_model_runs, customer_churn_scores
from patron.analytics.clv_tables import clv_model_runs, customer_predictions
from patron.analytics.model import segment_for
from patron.analytics.tables import lifecycle_stages, rfm_refreshes, rfm_scores
from patron.customers.protect import identity_row, normalize_name, profile_values, surname_of
from patron.customers.tables import (
    custom_field_defs,
    customer_figures,
    customers,
    identities,
)
from patron.db import UnitOfWork
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_members,
    loyalty_programs,
    loyalty_tiers,
)
from patron.orders.tables import order_lines, orders
from patron.org.tables import brands, categories, channels, regions, stores
from patron.protection.fields import Sealed
from patron.segments import model as m
from patron.storedvalue.tables import sv_accounts
from patron.tags.tables import customer_tags, tags

TZ = ZoneInfo("Asia/Shanghai")
AS_OF = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai
TODAY = AS_OF.astimezone(TZ).date()
STORES = {"SH01": ("B1", "EAST"), "BJ01": ("B1", "NORTH"), "GZ01": ("B2", "SOUTH")}
CHANNELS = ("pos", "meituan", "mini_program")
CATEGORIES = ("coffee", "tea", "bakery")
SKUS = {"coffee": ("LATTE", "MOCHA"), "tea": ("OOLONG",), "bakery": ("CROISSANT", "BAGEL")}
TAGS = ("vip", "student", "coffee_only")
PROGRAMS = {"BB": ("B1", ("SILVER", "GOLD")), "CC": ("B2", ("BASIC",))}
SCOPES = ("overall", "store:SH01")
DAY = dt.timedelta(days=1)
# Every scope's cut points (patron.analytics.rfm_read): a last purchase RFM_DAY0 + r days,
# r orders and r yuan score r.
RFM_DAY0 = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
RFM_CUTS = {**{f"r_cut{k}": RFM_DAY0 + (k - 1) * DAY for k in (2, 3, 4, 5)},
            **{f"f_cut{k}": k - 1 for k in (2, 3, 4, 5)},
            **{f"m_cut{k}": (k - 1) * 100 for k in (2, 3, 4, 5)}}


@dataclass
class Order:
    id: int
    customer_id: int
    store: str | None
    channel: str
    purchased_at: dt.datetime
    total: int  # fen
    refunded: int
    lines: list[tuple[str, str, int, int]]  # (category, sku, quantity, returned)


@dataclass
class Customer:
    id: int
    name: str | None
    phone: str | None
    email: str | None
    member_code: str | None
    gender: str | None
    is_member: bool
    birthday: dt.date | None
    created_at: dt.datetime
    reg_store: str | None
    reg_channel: str | None
    custom: dict[str, Any]
    merged_into: int | None = None
    identities: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    orders: list[Order] = field(default_factory=list)
    rfm: dict[str, tuple[int, int, int, str]] = field(default_factory=dict)
    language: str | None = None
    stage: str | None = None
    p_alive: float | None = None
    clv: int | None = None  # fen
    churn: float | None = None
    # program -> (status, tier, points, sv balance fen or None, {kind: [granted...]})
    members: dict[str, tuple[str, str | None, int, int | None, dict[str, list[bool]]]] = field(
        default_factory=dict)

    @property
    def order_count(self) -> int:
        return len(self.orders)

    @property
    def net_spend(self) -> int:
        return sum(o.total - o.refunded for o in self.orders)

    @property
    def last_order_at(self) -> dt.datetime | None:
        return max((o.purchased_at for o in self.orders), default=None)


@dataclass
class World:
    customers: list[Customer]
    store_ids: dict[str, int]


def _rand_time(rng: random.Random, days: int) -> dt.datetime:
    return (AS_OF - dt.timedelta(days=rng.randint(0, days), hours=rng.randint(0, 23),
                                 minutes=rng.randint(0, 59))).replace(microsecond=0)


def generate(uow: UnitOfWork, *, count: int = 80, seed: int = 7) -> World:
    rng = random.Random(seed)
    conn = uow.c
    now = AS_OF
    conn.execute(insert(rfm_refreshes), [
        {"scope": scope, "as_of": now, "computed_at": now, "customers": 0, "changed": 0,
         **RFM_CUTS} for scope in SCOPES])
    brand_ids = {code: conn.execute(insert(brands).values(code=code, name=code)
                                    .returning(brands.c.id)).scalar_one()
                 for code in ("B1", "B2")}
    region_ids = {code: conn.execute(insert(regions).values(code=code, name=code)
                                     .returning(regions.c.id)).scalar_one()
                  for code in ("EAST", "NORTH", "SOUTH")}
    store_ids = {code: conn.execute(insert(stores).values(
        code=code, name=code, brand_id=brand_ids[b], region_id=region_ids[r])
        .returning(stores.c.id)).scalar_one() for code, (b, r) in STORES.items()}
    channel_ids = dict(conn.execute(select(channels.c.code, channels.c.id)).all())
    for code in CATEGORIES:
        conn.execute(insert(categories).values(code=code, name=code))
    for key, type_, options in (("school", "text", []), ("shoe", "number", []),
                                ("joined", "date", []),
                                ("hobbies", "multi_choice", ["run", "read", "cook"])):
        conn.execute(insert(custom_field_defs).values(key=key, label_zh=key, label_en=key,
                                                      type=type_, options=options,
                                                      created_at=now))
    tag_ids = {code: conn.execute(insert(tags).values(
        code=code, name=code, kind="manual", created_at=now, created_by="test",
        updated_at=now).returning(tags.c.id)).scalar_one() for code in TAGS}
    program_ids: dict[str, int] = {}
    tier_ids: dict[tuple[str, str], int] = {}
    for code, (brand, tier_codes) in PROGRAMS.items():
        pid = conn.execute(insert(loyalty_programs).values(
            code=code, brand_id=brand_ids[brand], name=code, status="active",
            storeless_channels=[], timezone="Asia/Shanghai", expiry_mode="end_of_next_year",
            pending_days=0, reminder_days=30, hold_minutes=15, redeem_points_per_yuan=100,
            clawback_policy="owe", tier_basis="growth", tier_grace_days=30,
            tier_max_downgrade=1, privacy_version="1", created_at=now, updated_at=now)
            .returning(loyalty_programs.c.id)).scalar_one()
        program_ids[code] = pid
        for rank, tier in enumerate(tier_codes):
            tier_ids[(code, tier)] = conn.execute(insert(loyalty_tiers).values(
                program_id=pid, code=tier, name=tier, rank=rank, min_growth=rank * 100,
                min_spend=0, points_multiplier=Decimal(1), benefits={})
                .returning(loyalty_tiers.c.id)).scalar_one()
    run_clv = conn.execute(insert(clv_model_runs).values(
        fitted_at=now, calibration_end=TODAY, period="day", customers=count, bgnbd={},
        purpose="predict", actor="test").returning(clv_model_runs.c.id)).scalar_one()
    run_churn = conn.execute(insert(churn_model_runs).values(
        fitted_at=now, purpose="score", cutoff=TODAY, horizon_days=90, train_customers=1,
        train_churn_rate=0.5, model={}, actor="test").returning(churn_model_runs.c.id)
    ).scalar_one()

    people: list[Customer] = []
    order_id = line_id = 0
    for i in range(1, count + 1):
        born = (None if rng.random() < 0.2 else
                TODAY - dt.timedelta(days=rng.randint(0, 60 * 365)))
        if born is not None and rng.random() < 0.15:  # near today, and the odd 29 February
            born = rng.choice([dt.date(2000, 2, 29), dt.date(1996, 3, 1),
                               TODAY.replace(year=1990) + dt.timedelta(days=rng.randint(-3, 9))])
        custom: dict[str, Any] = {}
        if rng.random() < 0.6:
            custom["school"] = rng.choice(["Fudan", "Tongji", "SJTU", ""])
        if rng.random() < 0.6:
            custom["shoe"] = rng.choice([36, 38, 40.5, 42, 44])
        if rng.random() < 0.5:
            custom["joined"] = (TODAY - dt.timedelta(days=rng.randint(0, 900))).isoformat()
        if rng.random() < 0.6:
            custom["hobbies"] = rng.sample(["run", "read", "cook"], rng.randint(0, 3))
        c = Customer(
            id=i, name=rng.choice([None, "王小明", "Li Lei", "张伟", "Anna_%"]),
            phone=rng.choice([None, f"+86138{i:08d}", f"+86139{i:08d}"]),
            email=rng.choice([None, f"u{i}@example.com"]),
            member_code=rng.choice([None, f"M{i:06d}"]), gender=rng.choice([None, "F", "M", "U"]),
            is_member=rng.random() < 0.5, birthday=born,
            created_at=_rand_time(rng, 800), reg_store=rng.choice([None, *STORES]),
            reg_channel=rng.choice([None, *CHANNELS]), custom=custom,
            # by number, not drawn: the draws of every other field stay as they were
            language=(None, "zh", "en")[i % 3])
        people.append(c)
        conn.execute(insert(customers).values(
            id=c.id, **profile_values(c.id, {"name": c.name, "birthday": c.birthday,
                                             "phone": c.phone, "email": c.email}),
            gender=c.gender, language=c.language, member_code=c.member_code,
            is_member=c.is_member, registration_store_id=store_ids.get(c.reg_store or ""),
            registration_channel_id=channel_ids.get(c.reg_channel or ""),
            custom_fields=c.custom, created_at=c.created_at, updated_at=c.created_at))
        for kind in m.IDENTITY_KINDS:
            if rng.random() < 0.35:
                c.identities.add(kind)
                conn.execute(insert(identities).values(**identity_row(
                    customer_id=c.id, kind=kind, namespace="", value=f"{kind}-{i}",
                    created_at=now)))
        for code in TAGS:
            if rng.random() < 0.3:
                c.tags.add(code)
                conn.execute(insert(customer_tags).values(tag_id=tag_ids[code], customer_id=c.id,
                                                          added_at=now, added_by="test"))
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 5, 8])):
            order_id += 1
            store = rng.choice([None, *STORES])
            chan = "pos" if store and rng.random() < 0.7 else rng.choice(CHANNELS[1:])
            at = _rand_time(rng, 500)
            lines = []
            for _n in range(rng.randint(1, 3)):
                cat = rng.choice(CATEGORIES)
                qty = rng.randint(1, 3)
                lines.append((cat, rng.choice(SKUS[cat]), qty,
                              rng.choice([0, 0, 0, qty, 1 if qty > 1 else 0])))
            total = rng.randint(500, 30000)
            refunded = rng.choice([0, 0, 0, 0, total, total // 3])
            o = Order(order_id, c.id, store, chan, at, total, refunded, lines)
            c.orders.append(o)
            conn.execute(insert(orders).values(
                id=o.id, channel_id=channel_ids[chan],
                scope_store_id=store_ids[store] if store else 0, external_id=f"E{o.id}",
                store_id=store_ids.get(store or ""), customer_id=c.id, purchased_at=at,
                gross_amount=Decimal(total) / 100, discount_amount=Decimal(0),
                total_amount=Decimal(total) / 100, refunded_amount=Decimal(refunded) / 100,
                line_count=len(lines), identifiers=Sealed((o.id,), []), content_hash="x",
                source="api",
                created_at=at))
            for no, (cat, sku, qty, ret) in enumerate(lines, 1):
                line_id += 1
                conn.execute(insert(order_lines).values(
                    id=line_id, order_id=o.id, line_no=no, sku=sku, category=cat,
                    quantity=Decimal(qty), unit_price=Decimal(1), discount=Decimal(0),
                    amount=Decimal(qty), returned_quantity=Decimal(ret)))
        if c.orders:
            hours: dict[str, list[int]] = {}
            for o in c.orders:
                key = f"{o.purchased_at.astimezone(TZ).hour:02d}"
                hours.setdefault(key, [0, 0])[0] += 1
            conn.execute(insert(customer_figures).values(
                customer_id=c.id, order_count=c.order_count, purchase_days=c.order_count,
                total_spend=Decimal(sum(o.total for o in c.orders)) / 100,
                refunded=Decimal(sum(o.refunded for o in c.orders)) / 100,
                net_spend=Decimal(c.net_spend) / 100,
                first_order_at=min(o.purchased_at for o in c.orders),
                last_order_at=c.last_order_at, counters={"hour": hours}))
            for scope in SCOPES:
                if rng.random() < 0.8:
                    # Scores are computed from the scope's cut points (RFM_CUTS): values
                    # chosen to score (r, f, m).
                    r, f_, mm = rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 5)
                    c.rfm[scope] = (r, f_, mm, segment_for(r, f_, mm))
                    conn.execute(insert(rfm_scores).values(
                        scope=scope, customer_id=c.id, last_order_at=RFM_DAY0 + r * DAY,
                        frequency=f_, monetary=Decimal(mm), computed_at=now))
            c.stage = rng.choice(m.LIFECYCLE_STAGES)
            conn.execute(insert(lifecycle_stages).values(customer_id=c.id, stage=c.stage,
                                                         since=TODAY, updated_at=now))
            c.p_alive = rng.choice([None, 0.1, 0.25, 0.5, 0.75, 0.9])
            c.clv = rng.choice([None, 0, 5000, 12345, 99900])
            conn.execute(insert(customer_predictions).values(
                customer_id=c.id, run_id=run_clv, fitted_at=now, calibration_end=TODAY,
                probability_alive=c.p_alive,
                clv_12m=None if c.clv is None else Decimal(c.clv) / 100))
            c.churn = rng.choice([0.05, 0.3, 0.5, 0.8])
            conn.execute(insert(customer_churn_scores).values(
                customer_id=c.id, run_id=run_churn, scored_at=now, as_of=TODAY,
                horizon_days=90, probability=c.churn, days_since_last_purchase=1,
                usual_interval_days=10.0))
        for code, (_brand, tier_codes) in PROGRAMS.items():
            if rng.random() < 0.45:
                status = "active" if rng.random() < 0.85 else "closed"
                tier = rng.choice([None, *tier_codes])
                pts = rng.choice([0, 50, 100, 999, 1000, 5000])
                mid = conn.execute(insert(loyalty_members).values(
                    program_id=program_ids[code], customer_id=c.id,
                    member_code=f"{code}{c.id:06d}", status=status, enrolled_at=now,
                    enrolled_channel="pos", points_available=pts,
                    tier_id=tier_ids.get((code, tier or "")), updated_at=now)
                    .returning(loyalty_members.c.id)).scalar_one()
                sv: int | None = None
                if rng.random() < 0.5:
                    principal, bonus = rng.choice([0, 10000, 50000]), rng.choice([0, 500, 5000])
                    sv = principal + bonus
                    conn.execute(insert(sv_accounts).values(
                        program_id=program_ids[code], member_id=mid,
                        principal=Decimal(principal) / 100, bonus=Decimal(bonus) / 100,
                        opened_at=now, updated_at=now))
                consents: dict[str, list[bool]] = {}
                for kind in m.CONSENT_CHANNELS:
                    for _k in range(rng.choice([0, 1, 1, 2, 3])):
                        granted = rng.random() < 0.6
                        consents.setdefault(kind, []).append(granted)
                        conn.execute(insert(loyalty_consents).values(
                            member_id=mid, kind=kind, granted=granted, source="pos",
                            at=now, actor="test"))
                c.members[code] = (status, tier, pts, sv, consents)
    # A few merged profiles: they never match, whatever their data.
    for c in people[-4:]:
        c.merged_into = people[0].id
        conn.execute(customers.update().where(customers.c.id == c.id)
                     .values(merged_into_id=people[0].id))
    uow.commit()
    return World(people, store_ids)


# --- the oracle -----------------------------------------------------------------------------

def _start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), TZ).astimezone(dt.UTC)


def _in_window(at: dt.datetime, w: m.Window | None) -> bool:
    if w is None:
        return True
    first, last = w.local_days(TODAY)
    return _start(first) <= at < _start(last + dt.timedelta(days=1))


def _text(op: str, x: Any, value: Any) -> bool:
    if op == "is_set":
        return x is not None and x != ""
    if op == "is_not_set":
        return x is None or x == ""
    if op == "eq":
        return x is not None and x == value
    if op == "neq":
        return x is None or x != value
    if op == "in":
        return x is not None and x in value
    if op == "not_in":
        return x is None or x not in value
    if op == "contains":
        return x is not None and value in x
    if op == "starts_with":
        return x is not None and x.startswith(value)
    if op == "surname":
        return x is not None and surname_of(normalize_name(x)) == surname_of(normalize_name(value))
    raise AssertionError(op)


def _date(op: str, x: dt.date | None, value: Any) -> bool:
    if op == "is_set":
        return x is not None
    if op == "is_not_set":
        return x is None
    if x is None:
        return False
    if op == "before":
        return x < m.parse_date(value)
    if op == "after":
        return x > m.parse_date(value)
    if op == "between":
        return m.parse_date(value[0]) <= x <= m.parse_date(value[1])
    if op == "within_last_days":
        return TODAY - dt.timedelta(days=int(value) - 1) <= x <= TODAY
    raise AssertionError(op)


def _num(op: str, value: Any, x: Any) -> bool:
    return m.number_test(op, tuple(value) if isinstance(value, list) else value, x)


def matches(c: Customer, d: m.Definition | m.Group) -> bool:
    results = [_node(c, n) for n in d.conditions]
    if not results:
        return True
    return all(results) if d.match == "all" else any(results)


def selected(world: World, definition: Any) -> set[int]:
    d = m.parse(definition)
    return {c.id for c in world.customers if c.merged_into is None and matches(c, d)}


def _active(c: Customer, program: str | None) -> list[tuple[Any, ...]]:
    return [v for code, v in c.members.items()
            if v[0] == "active" and (program is None or code == program)]


def _node(c: Customer, n: Any) -> bool:  # noqa: C901 - one branch per condition type
    t = n.type
    if t == "group":
        return matches(c, n)
    if t == "profile":
        kind = m.PROFILE_FIELDS[n.field]
        if n.field == "age":
            if n.op in ("is_set", "is_not_set"):
                return (c.birthday is not None) == (n.op == "is_set")
            age = None if c.birthday is None else m.age_on(c.birthday, TODAY)
            return _num(n.op, n.value, age)
        if kind == "bool":
            return c.is_member == (n.op == "is_true")
        if n.field == "created_at":
            local = c.created_at.astimezone(TZ).date()
            return _date(n.op, local, n.value)
        if kind == "date":
            return _date(n.op, getattr(c, n.field), n.value)
        return _text(n.op, getattr(c, n.field), n.value)
    if t == "custom_field":
        x = c.custom.get(n.key)
        if n.op in ("has", "has_not"):
            has = isinstance(x, list) and n.value in x
            return has if n.op == "has" else not has
        text = None if x is None else (x if isinstance(x, str) else
                                       (f"{x:g}" if isinstance(x, float) else str(x)))
        if isinstance(x, list):
            text = "<list>"
        if n.op in ("is_set", "is_not_set"):
            return _text(n.op, text, None)
        if n.op in ("before", "after"):
            return text is not None and (text < n.value if n.op == "before" else text > n.value)
        numeric = isinstance(n.value, int | float) or (
            n.op == "between" and all(isinstance(v, int | float) for v in n.value))
        if n.op in ("gt", "gte", "lt", "lte", "between") or (n.op in ("eq", "neq") and numeric):
            if numeric:
                return isinstance(x, int | float) and _num(n.op, n.value, x)
            if text is None:
                return False
            if n.op == "between":
                return str(n.value[0]) <= text <= str(n.value[1])
            return {"gt": text > n.value, "gte": text >= n.value, "lt": text < n.value,
                    "lte": text <= n.value}[n.op]
        return _text(n.op, text, n.value)
    if t == "identity":
        return (n.kind in c.identities) == (n.op == "present")
    if t == "tag":
        if n.op == "has_any":
            return bool(c.tags & set(n.tags))
        if n.op == "has_all":
            return set(n.tags) <= c.tags
        return not (c.tags & set(n.tags))
    if t == "tier":
        member = c.members.get(n.program)
        inside = member is not None and member[0] == "active" and member[1] in n.tiers
        return inside if n.op == "in" else not inside
    if t == "points":
        rows = _active(c, n.program)
        return bool(rows) and n.test(sum(r[2] for r in rows))
    if t == "stored_value":
        rows = [r for r in _active(c, n.program) if r[3] is not None]
        return bool(rows) and n.test(Decimal(sum(r[3] for r in rows)) / 100)
    if t == "rfm_score":
        row = c.rfm.get(n.scope)
        return row is not None and n.test({"r": row[0], "f": row[1], "m": row[2]}[n.score])
    if t == "rfm_segment":
        row = c.rfm.get(n.scope)
        inside = row is not None and row[3] in n.segments
        return inside if n.op == "in" else not inside
    if t == "lifecycle":
        inside = c.stage in n.stages
        return inside if n.op == "in" else not inside
    if t == "probability_active":
        return n.test(c.p_alive)
    if t == "clv":
        return c.clv is not None and n.test(Decimal(c.clv) / 100)
    if t == "churn_risk":
        return n.test(c.churn)
    if t == "purchases":
        chosen = [o for o in c.orders if _in_window(o.purchased_at, n.window)
                  and (n.stores is None or o.store in n.stores)
                  and (n.channels is None or o.channel in n.channels)]
        spend = Decimal(sum(o.total - o.refunded for o in chosen)) / 100
        if n.measure == "orders":
            return n.test(len(chosen))
        if n.measure == "spend":
            return n.test(spend)
        return bool(chosen) and n.test(spend / len(chosen))
    if t == "recency":
        last = c.last_order_at
        return last is not None and n.test((TODAY - last.astimezone(TZ).date()).days)
    if t == "bought":
        hit = any(_in_window(o.purchased_at, n.window) and returned < qty
                  and ((n.categories is not None and cat in n.categories)
                       or (n.skus is not None and sku in n.skus))
                  for o in c.orders for cat, sku, qty, returned in o.lines)
        return hit if n.op == "bought" else not hit
    if t in ("store", "region", "brand", "channel"):
        codes = set(getattr(n, f"{t}s"))

        def at(store: str | None, channel: str | None) -> bool:
            if t == "channel":
                return channel in codes
            if store is None:
                return False
            brand, region = STORES[store]
            return {"store": store, "region": region, "brand": brand}[t] in codes

        if n.op in ("registered", "not_registered"):
            inside = at(c.reg_store, c.reg_channel)
            return inside if n.op == "registered" else not inside
        hit = any(_in_window(o.purchased_at, n.window) and at(o.store, o.channel)
                  for o in c.orders)
        return hit if n.op == "purchased" else not hit
    if t == "hour_slot":
        if not c.orders:
            return False
        hours = set(m.slot_hours(n.slot))
        inside = sum(1 for o in c.orders if o.purchased_at.astimezone(TZ).hour in hours)
        return Decimal(inside) / len(c.orders) >= n.min_share
    if t == "birthday":
        return c.birthday is not None and (
            c.birthday.month * 100 + c.birthday.day) in m.birthday_keys(TODAY, n.within_days)
    if t == "consent":
        granted = any(v[4].get(n.channel) and v[4][n.channel][-1] for v in c.members.values())
        return granted if n.op == "granted" else not granted
    raise AssertionError(t)
