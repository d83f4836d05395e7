"""Realistic synthetic purchases for demos, tests and benchmarks. Plain Python, no database.

What it models (see ``docs/demo-data.md``):

* people who differ: each has a purchase rate drawn from a gamma distribution and, after every
  purchase, a chance to stop buying for good drawn from a beta distribution (the BG/NBD story),
  a spend level, a favourite category, a home store and their own mix of channels;
* members (member code and phone), guests (no identifier at all) and digital-only customers
  (an openid or a platform buyer id), some of whom are seen through several identifiers and a
  few of whom later link two of them in one order, so that profiles merge;
* when they buy: weekday and hour-of-day shapes per vertical and channel, and the Chinese retail
  calendar (Spring Festival, 618, Double 11 ...) through a non-homogeneous Poisson process
  (thinning);
* what they buy: baskets anchored on a category with real affinities (coffee and a croissant,
  serum and lipstick, snacks and drinks), list prices, member discounts and coupons;
* about 2% refunds, full or partial.

Everything is drawn from one ``random.Random(seed)`` in a fixed order, so a seed gives the same
data every time. Orders come out in time order and lazily: memory grows with the number of
customers active at the same time (a few hundred bytes each), not with the number of orders.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from patron.demo import people, seasons
from patron.demo.catalogue import (
    BRAND_BY_CODE,
    BRANDS,
    PRODUCTS_BY_CATEGORY,
    STORES_BY_BRAND,
    Brand,
    Product,
    Store,
)

FEN = Decimal("0.01")
DEFAULT_TZ = "Asia/Shanghai"

# The canonical order file's columns (the contract shared with the file importer).
CSV_COLUMNS = (
    "order_id", "channel", "store", "purchased_at", "total", "discount", "payment_method",
    "phone", "member_code", "wechat_openid", "wechat_unionid", "alipay_user_id",
    "platform_buyer_id", "email", "customer_name", "gender", "birthday",
    "sku", "product_name", "category", "quantity", "unit_price", "line_discount",
)
RETURN_CSV_COLUMNS = ("return_id", "order_id", "channel", "store", "returned_at", "full",
                      "line_no", "quantity", "reason")

PLATFORMS = frozenset({"meituan", "eleme", "jd", "tmall", "douyin"})
DELIVERY = frozenset({"meituan", "eleme"})
# Channels whose orders a store fulfils (and therefore name it), per vertical.
STORE_CHANNELS = {
    "cafe": frozenset({"pos", "mini_program", "app", "meituan", "eleme"}),
    "grocery": frozenset({"pos", "mini_program", "app", "meituan", "eleme"}),
    "beauty": frozenset({"pos"}),
}
ORDER_ID_PREFIX = {"pos": "POS", "mini_program": "MP", "app": "APP", "online_mall": "OM",
                   "meituan": "MT", "eleme": "ELM", "jd": "JD", "tmall": "TM", "douyin": "DY"}
# Refunds relative to the overall rate: rare at the till, common on e-commerce platforms.
REFUND_WEIGHT = {"pos": 0.6, "mini_program": 0.8, "app": 0.8, "meituan": 1.6, "eleme": 1.6,
                 "online_mall": 2.0, "jd": 2.6, "tmall": 2.6, "douyin": 2.6}
RETURN_REASONS = ("不想要了 Changed my mind", "商品破损 Damaged", "配送超时 Late delivery",
                  "色号不合适 Wrong shade", "质量问题 Quality problem", "少送了 Item missing")
PAYMENTS: dict[str, tuple[tuple[str, float], ...]] = {
    "pos": (("wechat_pay", 0.48), ("alipay", 0.30), ("bank_card", 0.07), ("cash", 0.05),
            ("stored_value", 0.10)),
    "mini_program": (("wechat_pay", 0.85), ("stored_value", 0.15)),
    "app": (("alipay", 0.45), ("wechat_pay", 0.40), ("stored_value", 0.15)),
    "online_mall": (("wechat_pay", 0.5), ("alipay", 0.5)),
    "meituan": (("wechat_pay", 0.55), ("alipay", 0.30), ("other", 0.15)),
    "eleme": (("alipay", 0.75), ("wechat_pay", 0.25)),
    "tmall": (("alipay", 1.0),),
    "jd": (("other", 0.6), ("bank_card", 0.25), ("wechat_pay", 0.15)),
    "douyin": (("other", 0.5), ("wechat_pay", 0.3), ("alipay", 0.2)),
}
SEGMENTS = ("member", "guest", "digital")
RATE_SHAPE = 1.3  # of the gamma distribution of purchase rates: a long tail of regulars


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    start: dt.datetime  # timezone-aware, inclusive
    end: dt.datetime  # timezone-aware, exclusive
    customers: int = 3000
    seed: int = 42
    # Scales purchase rates up and dropout down together: more orders per customer.
    intensity: float = 1.0
    member_share: float = 0.50
    guest_share: float = 0.30  # POS walk-ins without any identifier; the rest shop digitally
    existing_share: float = 0.40  # customers already active when the window opens
    refund_rate: float = 0.02
    timezone: str = DEFAULT_TZ

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.customers < 0:
            raise ValueError("customers must not be negative")


def window(start: dt.date, end: dt.date, *, tz: str = DEFAULT_TZ,
           now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """From the first to the last day (both included), in local time; a window reaching today
    ends now, so that no order lies in the future."""
    zone = ZoneInfo(tz)
    first = dt.datetime.combine(start, dt.time(0), zone)
    last = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), zone)
    if now is not None:
        last = min(last, now.astimezone(zone))
    return first, last


def plan(*, start: dt.datetime, end: dt.datetime, customers: int | None = None,
         orders: int | None = None, seed: int = 42, **options: Any) -> GeneratorConfig:
    """A configuration for about ``orders`` orders and/or exactly ``customers`` people.

    Given orders only, the number of people follows from a small pilot simulation of how many
    orders a person places in the window; given both, the intensity is tuned (a few pilot runs)
    so that the people place about that many orders.
    """
    base = GeneratorConfig(start=start, end=end, customers=customers or 3000, seed=seed,
                           **options)
    if orders is None:
        return base
    if orders <= 0:
        return replace(base, customers=0)
    if customers is None:
        per_person = _orders_per_person(base)
        return replace(base, customers=max(1, round(orders / max(per_person, 1e-9))))
    config = base
    for _ in range(4):
        per_person = _orders_per_person(config)
        want = orders / max(customers, 1)
        if per_person <= 0 or abs(per_person - want) / want < 0.02:
            break
        config = replace(config, intensity=config.intensity * want / per_person)
    return config


def _orders_per_person(config: GeneratorConfig, sample: int = 3000) -> float:
    sim = _Simulation(replace(config, seed=config.seed * 7919 + 1))
    total = 0
    n = sample  # independent of the size asked for, so that small runs calibrate as well
    existing = round(n * config.existing_share)
    for k in range(n):
        t0 = 0.0 if k < existing else sim.rng.random() * sim.horizon
        person = sim.new_person(k)
        t = sim.first_purchase(person, t0, existing=k < existing)
        while t is not None:
            total += 1
            if sim.rng.random() < person.drop:
                break
            t = sim.next_purchase(person, t, person.rate)
    return total / n


def generate(config: GeneratorConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """Orders and returns in time order: ``("order", OrderIn-shaped dict)`` and
    ``("return", ReturnIn-shaped dict)``; a return always comes after its order."""
    return _Simulation(config).events()


def generate_orders(config: GeneratorConfig) -> Iterator[dict[str, Any]]:
    """Only the orders, as dicts that ``OrderIn`` (and ``record_orders``) accept."""
    return (payload for kind, payload in generate(config) if kind == "order")


def generate_csv_rows(config: GeneratorConfig) -> Iterator[dict[str, str]]:
    """Rows of the canonical order file, one per order line, keyed by ``CSV_COLUMNS``."""
    for order in generate_orders(config):
        yield from order_csv_rows(order)


def order_csv_rows(order: dict[str, Any]) -> list[dict[str, str]]:
    ids = order.get("identifiers", {})
    hint = order.get("customer") or {}
    pays = order.get("payments") or []
    head = {
        "order_id": order["external_id"], "channel": order["channel"],
        "store": order.get("store") or "", "purchased_at": order["purchased_at"],
        "total": order["total"], "discount": order["discount"] if order["discount"] != "0.00"
        else "", "payment_method": pays[0]["method"] if pays else "",
        **{k: ids.get(k, "") for k in ("phone", "member_code", "wechat_openid",
                                       "wechat_unionid", "alipay_user_id",
                                       "platform_buyer_id", "email")},
        "customer_name": hint.get("name", ""), "gender": hint.get("gender", ""),
        "birthday": hint.get("birthday", ""),
    }
    return [{**head, "sku": ln["sku"], "product_name": ln["name"], "category": ln["category"],
             "quantity": ln["quantity"], "unit_price": ln["unit_price"],
             "line_discount": ln["discount"] if ln["discount"] != "0.00" else ""}
            for ln in order["lines"]]


def return_csv_rows(ret: dict[str, Any]) -> list[dict[str, str]]:
    head = {"return_id": ret["external_id"], "order_id": ret["order_external_id"],
            "channel": ret["channel"], "store": ret.get("store") or "",
            "returned_at": ret["returned_at"], "full": "true" if ret["full"] else "false",
            "reason": ret.get("reason") or ""}
    if ret["full"]:
        return [{**head, "line_no": "", "quantity": ""}]
    return [{**head, "line_no": str(ln["line_no"]), "quantity": ln["quantity"]}
            for ln in ret["lines"]]


class _Person:
    """One simulated customer. Slots keep millions of them affordable."""

    __slots__ = ("k", "brand", "other_brand", "store", "other_store", "segment", "rate", "drop",
                 "channels", "spend", "favourite", "link_at", "name", "gender", "birthday")

    k: int
    brand: Brand
    other_brand: Brand | None
    store: Store
    other_store: Store | None
    segment: str
    rate: float  # purchases per day while active, before seasonal factors
    drop: float  # chance to stop buying after each purchase
    channels: tuple[tuple[str, ...], tuple[float, ...]]  # codes, cumulative weights
    spend: float
    favourite: int
    link_at: float  # day from which digital orders also carry the member's identifiers
    name: str | None
    gender: str | None
    birthday: dt.date | None


def _cumulative(pairs: Any) -> tuple[tuple[str, ...], tuple[float, ...]]:
    codes, weights = zip(*pairs, strict=True)
    return tuple(codes), tuple(itertools.accumulate(weights))


def _pick(rng: random.Random, cum: tuple[float, ...]) -> int:
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def _money(value: Decimal) -> Decimal:
    return value.quantize(FEN, rounding=ROUND_HALF_UP)


class _Simulation:
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.zone = ZoneInfo(config.timezone)
        start_local = config.start.astimezone(self.zone)
        self.first_day = start_local.date()
        self.origin = dt.datetime.combine(self.first_day, dt.time(0), self.zone)
        self.horizon = (config.end - self.origin).total_seconds() / 86400
        days = max(1, math.ceil(self.horizon))
        self.factors = {v: seasons.day_factors(v, self.first_day, days)
                        for v in seasons.WEEKDAY}
        self.peak = {v: max(f) for v, f in self.factors.items()}
        self.cumulative = {v: [0.0, *itertools.accumulate(f)] for v, f in self.factors.items()}
        self.brand_cum = tuple(itertools.accumulate(b.customer_share for b in BRANDS))
        self.store_cum = {b.code: tuple(itertools.accumulate(s.size for s in STORES_BY_BRAND[
            b.code])) for b in BRANDS}
        self.product_cum = {c: tuple(itertools.accumulate(1 / (i + 1) ** 0.8
                                                          for i in range(len(ps))))
                            for c, ps in PRODUCTS_BY_CATEGORY.items()}
        self.payment_cum = {ch: _cumulative(p) for ch, p in PAYMENTS.items()}
        self.seq = 0  # orders made, for order ids
        self.tie = itertools.count()  # a stable order for events at the same instant

    # -- people -----------------------------------------------------------------------------

    def new_person(self, k: int, *, brand: Brand | None = None, rate: float | None = None
                   ) -> _Person:
        rng, cfg = self.rng, self.config
        p = _Person()
        p.k = k
        p.brand = brand or BRANDS[_pick(rng, self.brand_cum)]
        p.store = self._store(p.brand, None)
        x = rng.random()
        p.segment = ("member" if x < cfg.member_share else
                     "guest" if x < cfg.member_share + cfg.guest_share else "digital")
        p.other_brand = p.other_store = None
        if p.segment == "member" and rng.random() < 0.12:
            p.other_brand = rng.choice([b for b in BRANDS if b is not p.brand])
            p.other_store = self._store(p.other_brand, p.store)
        p.rate = rate if rate is not None else rng.gammavariate(
            RATE_SHAPE, self.mean_rate(p.brand) / RATE_SHAPE)
        mean_drop = min(0.95, 1.0 / p.brand.mean_purchases_before_dropout / cfg.intensity)
        p.drop = min(0.98, rng.betavariate(1.5, 1.5 * (1 - mean_drop) / mean_drop))
        p.spend = rng.lognormvariate(0.0, 0.35)
        p.favourite = _pick(rng, tuple(itertools.accumulate(w for _c, _n, w in
                                                              p.brand.categories)))
        p.channels = self._channel_mix(p.brand, p.segment, personal=True)
        p.link_at = -math.inf
        if p.segment == "member":
            y = rng.random()
            if y < 0.15:  # links their platform accounts some months in: profiles merge
                p.link_at = rng.random() * min(self.horizon, 365.0)
            elif y < 0.45:
                p.link_at = math.inf  # never does: fragments stay fragments
        p.gender, p.birthday = people.gender_and_birthday(rng, p.brand.vertical,
                                                          self.first_day.year)
        p.name = people.chinese_name(rng, p.gender) if p.segment != "guest" else None
        return p

    def _store(self, brand: Brand, near: Store | None) -> Store:
        stores = STORES_BY_BRAND[brand.code]
        if near is not None:
            same = [s for s in stores if s.city == near.city] or [
                s for s in stores if s.region == near.region]
            if same:
                return self.rng.choice(same)
        return stores[_pick(self.rng, self.store_cum[brand.code])]

    def _channel_mix(self, brand: Brand, segment: str, *, personal: bool
                     ) -> tuple[tuple[str, ...], tuple[float, ...]]:
        if segment == "guest":
            return ("pos",), (1.0,)
        pairs = [(c, w) for c, w in brand.channels if segment == "member" or c != "pos"]
        if personal:  # everyone has their own habits around the brand's mix
            pairs = [(c, w * self.rng.gammavariate(1.5, 1.0)) for c, w in pairs]
        return _cumulative(pairs)

    def mean_rate(self, brand: Brand) -> float:
        return brand.purchases_per_year * self.config.intensity / 365.0

    # -- when -------------------------------------------------------------------------------

    def first_purchase(self, person: _Person, t0: float, *, existing: bool) -> float | None:
        # Someone already a customer returns at their own rate; a new customer's first
        # purchase follows within days of hearing of the brand, busier days drawing more.
        return self.next_purchase(person, t0, person.rate if existing else 0.5)

    def next_purchase(self, person: _Person, t: float, rate: float) -> float | None:
        """The next purchase after ``t`` (in days), by thinning: candidates at the peak rate,
        each kept with the day's share of the peak."""
        factors = self.factors[person.brand.vertical]
        peak = self.peak[person.brand.vertical]
        rng = self.rng
        while True:
            t += rng.expovariate(rate * peak)
            if t >= self.horizon:
                return None
            if rng.random() * peak < factors[int(t)]:
                return t

    # -- the stream -------------------------------------------------------------------------

    def _arrivals(self) -> Iterator[tuple[float, bool, Brand | None, float | None]]:
        """People entering the stream, in time order: (day, already a customer, brand, rate).

        New customers are acquired uniformly over the window (sorted uniforms, drawn one at a
        time) and buy soon after. Those already customers when the window opens are met at
        their first purchase in it: with gamma-distributed rates that time follows a Lomax
        distribution in the calendar's own time, so it too can be drawn in sorted order, and
        the person's rate then from its posterior. No one is held before being met.
        """
        n = self.config.customers
        existing = round(n * self.config.existing_share)
        streams: list[Iterator[tuple[float, bool, Brand | None, float | None]]] = []
        shares = list(itertools.accumulate(b.customer_share for b in BRANDS))
        done = 0
        for b, upto in zip(BRANDS, shares, strict=True):
            count = round(existing * upto / shares[-1]) - done
            done += count
            streams.append(self._existing(b, count))
        streams.append(self._acquired(n - existing))
        return heapq.merge(*streams, key=lambda a: a[0])

    def _acquired(self, count: int) -> Iterator[tuple[float, bool, Brand | None, float | None]]:
        u = 0.0
        for i in range(count):
            u += (1.0 - u) * (1.0 - self.rng.random() ** (1.0 / (count - i)))
            yield u * self.horizon, False, None, None

    def _existing(self, brand: Brand, count: int
                  ) -> Iterator[tuple[float, bool, Brand | None, float | None]]:
        vertical = brand.vertical
        beta = RATE_SHAPE / self.mean_rate(brand)  # the gamma's rate, per day
        limit = self.calendar_time(vertical, self.horizon)
        u = 0.0
        for i in range(count):
            u += (1.0 - u) * (1.0 - self.rng.random() ** (1.0 / (count - i)))
            x = beta * (max(1.0 - u, 1e-300) ** (-1.0 / RATE_SHAPE) - 1.0)
            if x >= limit:
                return  # everyone left buys only after the window
            rate = self.rng.gammavariate(RATE_SHAPE + 1, 1.0 / (beta + x))
            yield self.real_time(vertical, x), True, brand, rate

    def calendar_time(self, vertical: str, t: float) -> float:
        """Days weighted by how busy they are: a person's expected purchases per unit rate."""
        cum, factors = self.cumulative[vertical], self.factors[vertical]
        d = min(int(t), len(factors) - 1)
        return cum[d] + factors[d] * (t - d)

    def real_time(self, vertical: str, x: float) -> float:
        cum, factors = self.cumulative[vertical], self.factors[vertical]
        d = min(bisect.bisect_right(cum, x) - 1, len(factors) - 1)
        return d + (x - cum[d]) / factors[d]

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        heap: list[tuple[float, int, _Person]] = []
        arrivals = self._arrivals()
        nxt = next(arrivals, None)
        people_met = 0
        day = 0
        today: list[tuple[dt.datetime, int, str, dict[str, Any]]] = []
        refunds: list[tuple[dt.datetime, int, str, dict[str, Any]]] = []
        while True:
            if nxt is not None and (not heap or nxt[0] <= heap[0][0]):
                t0, existing, brand, rate = nxt
                k = people_met
                people_met += 1
                person = self.new_person(k, brand=brand, rate=rate)
                t = t0 if existing else self.first_purchase(person, t0, existing=False)
                if t is not None and t < self.horizon:
                    heapq.heappush(heap, (t, k, person))
                nxt = next(arrivals, None)
                continue
            if not heap:
                break
            t, k, person = heapq.heappop(heap)
            if int(t) != day:
                yield from self._flush(today, refunds, self.origin + dt.timedelta(days=int(t)))
                day = int(t)
            made = self.order(person, t)
            if made is not None:
                order, ret, at = made
                today.append((at, next(self.tie), "order", order))
                if ret is not None:
                    heapq.heappush(refunds, (dt.datetime.fromisoformat(ret["returned_at"]),
                                             next(self.tie), "return", ret))
            if self.rng.random() >= person.drop:
                t = self.next_purchase(person, t, person.rate)
                if t is not None:
                    heapq.heappush(heap, (t, k, person))
        yield from self._flush(today, refunds, None)

    @staticmethod
    def _flush(today: list[Any], refunds: list[Any], before: dt.datetime | None
               ) -> Iterator[tuple[str, dict[str, Any]]]:
        while refunds and (before is None or refunds[0][0] < before):
            today.append(heapq.heappop(refunds))
        today.sort(key=lambda e: (e[0], e[1]))
        for _at, _tie, kind, payload in today:
            yield kind, payload
        today.clear()

    # -- one order --------------------------------------------------------------------------

    def order(self, person: _Person, t: float
              ) -> tuple[dict[str, Any], dict[str, Any] | None, dt.datetime] | None:
        rng, cfg = self.rng, self.config
        day = int(t)
        date = self.first_day + dt.timedelta(days=day)
        brand, store, mix = person.brand, person.store, person.channels
        if person.other_brand is not None and person.other_store and rng.random() < 0.25:
            brand, store = person.other_brand, person.other_store
            mix = self._channel_mix(brand, person.segment, personal=False)
        channel = self._channel(mix, date)
        vertical = brand.vertical
        if channel == "pos" and rng.random() < 0.15:
            store = self._store(brand, store)  # shopping near work, or travelling
        hours = seasons.hour_profile(vertical, channel, date)
        second = _pick(rng, hours) * 3600 + rng.randrange(3600)
        at = self.origin + dt.timedelta(days=day, seconds=second)
        if at < cfg.start or at >= cfg.end:
            return None
        self.seq += 1
        ids = self._identifiers(person, channel, t)
        lines = self._basket(person, brand, channel, favourite=person.favourite
                             if brand is person.brand else -1)
        member = "member_code" in ids
        if member and channel in ("pos", "mini_program", "app") and rng.random() < 0.12:
            ln = lines[0]  # member-day price on one item
            ln[3] = _money(ln[1] * ln[2] / 10)
        subtotal = sum((_money(q * p) - d for _prod, q, p, d in lines), Decimal(0))
        discount = min(subtotal, self._coupon(vertical, channel, subtotal, date))
        total = subtotal - discount
        order: dict[str, Any] = {
            "external_id": f"{ORDER_ID_PREFIX[channel]}{cfg.seed}-{self.seq:09d}",
            "channel": channel,
            "purchased_at": at.isoformat(timespec="seconds"),
            "identifiers": ids,
            "lines": [{"sku": prod.sku, "name": prod.name, "category": prod.category,
                       "quantity": _quantity_text(q), "unit_price": str(_money(p)),
                       "discount": str(_money(d))} for prod, q, p, d in lines],
            "discount": str(_money(discount)),
            "total": str(_money(total)),
            "payments": [],
        }
        if store is not None and channel in STORE_CHANNELS[vertical]:
            order["store"] = store.code
        if total > 0:
            method = self._payment(channel, member)
            order["payments"] = [{"method": method, "amount": str(_money(total))}]
        if member or (person.name and "phone" in ids):
            hint: dict[str, Any] = {"name": person.name, "gender": person.gender}
            if person.birthday:
                hint["birthday"] = person.birthday.isoformat()
            order["customer"] = hint
        ret = None
        if rng.random() < cfg.refund_rate * REFUND_WEIGHT[channel]:
            ret = self._refund(order, lines, at)
        return order, ret, at

    def _channel(self, mix: tuple[tuple[str, ...], tuple[float, ...]], date: dt.date) -> str:
        codes, cum = mix
        boost = seasons.online_boost(date)
        if boost > 1.0 and any(c in seasons.ONLINE_CHANNELS for c in codes):
            weights = [w - (cum[i - 1] if i else 0.0) for i, w in enumerate(cum)]
            weights = [w * boost if c in seasons.ONLINE_CHANNELS else w
                       for c, w in zip(codes, weights, strict=True)]
            cum = tuple(itertools.accumulate(weights))
        return codes[_pick(self.rng, cum)]

    def _identifiers(self, person: _Person, channel: str, t: float) -> dict[str, str]:
        seed, k, rng = self.config.seed, person.k, self.rng
        if person.segment == "guest":
            return {}
        member = person.segment == "member"
        linked = member and t >= person.link_at
        ids: dict[str, str] = {}
        if channel == "pos":  # only members show anything at the till
            x = rng.random()
            if x < 0.75:
                ids["phone"] = people.mobile_number(seed, k)
            if x >= 0.60:
                ids["member_code"] = people.member_code(seed, k)
        elif channel == "mini_program":
            ids["wechat_openid"] = people.wechat_openid(seed, k)
        elif channel in ("app", "online_mall"):
            ids["phone"] = people.mobile_number(seed, k)
            if member:
                ids["member_code"] = people.member_code(seed, k)
            if channel == "online_mall" and rng.random() < 0.3:
                ids["email"] = people.email(seed, k)
        else:
            ids["platform_buyer_id"] = people.platform_buyer_id(seed, k, channel)
        if linked and channel != "pos":
            ids.setdefault("phone", people.mobile_number(seed, k))
            if channel not in PLATFORMS:
                ids.setdefault("member_code", people.member_code(seed, k))
        return ids

    def _basket(self, person: _Person, brand: Brand, channel: str, *, favourite: int
                ) -> list[list[Any]]:
        """[product, quantity, unit price, line discount] per line, anchored on a category."""
        rng = self.rng
        weights = [w * (3.0 if i == favourite else 1.0)
                   for i, (_c, _n, w) in enumerate(brand.categories)]
        anchor = brand.categories[_pick(rng, tuple(itertools.accumulate(weights)))][0]
        chosen: dict[str, list[Any]] = {}

        def add(category: str) -> None:
            products = PRODUCTS_BY_CATEGORY[category]
            prod = products[_pick(rng, self.product_cum[category])]
            qty = _quantity(rng, prod, brand.vertical)
            if prod.sku in chosen:
                chosen[prod.sku][1] += qty
            else:
                chosen[prod.sku] = [prod, qty, prod.list_price, Decimal(0)]

        add(anchor)
        for category, chance in brand.affinities.get(anchor, ()):
            if rng.random() < min(0.95, chance * person.spend):
                add(category)
        if brand.vertical == "grocery":  # more of the same shopping mission
            mission = ((anchor, 1.0), *brand.affinities.get(anchor, ()))
            cum = tuple(itertools.accumulate(w for _c, w in mission))
            for _ in range(_poisson(rng, 1.5 * person.spend)):
                add(mission[_pick(rng, cum)][0])
        if brand.vertical == "cafe" and channel in DELIVERY and rng.random() < 0.25:
            first = next(iter(chosen.values()))
            first[1] += rng.randint(1, 4)  # a round of coffees for the office
        return list(chosen.values())

    def _coupon(self, vertical: str, channel: str, subtotal: Decimal, date: dt.date) -> Decimal:
        rng = self.rng
        off = Decimal(0)
        if channel in DELIVERY and subtotal >= 30 and rng.random() < 0.35:
            off += Decimal(8)  # platform subsidy: 30 off 8
        if vertical == "beauty" and seasons.online_boost(date) > 1 and rng.random() < 0.7:
            off += Decimal(50) * int(subtotal // 400)  # festival: 50 off every 400
        elif vertical == "beauty" and subtotal >= 300 and rng.random() < 0.10:
            off += Decimal(30)
        elif vertical == "cafe" and subtotal >= 20 and rng.random() < 0.10:
            off += Decimal(5)
        elif vertical == "grocery" and subtotal >= 99 and rng.random() < 0.12:
            off += Decimal(10)
        return off

    def _payment(self, channel: str, member: bool) -> str:
        codes, cum = self.payment_cum[channel]
        while True:
            method = codes[_pick(self.rng, cum)]
            if method != "stored_value" or member:
                return method

    def _refund(self, order: dict[str, Any], lines: list[list[Any]], at: dt.datetime
                ) -> dict[str, Any] | None:
        rng, channel = self.rng, order["channel"]
        if channel in DELIVERY:
            hours = rng.uniform(0.2, 2.0)
        elif channel in seasons.ONLINE_CHANNELS:
            hours = rng.uniform(24.0, 240.0)
        else:
            hours = rng.uniform(0.05, 48.0)
        returned = at + dt.timedelta(hours=hours)
        if returned >= self.config.end or Decimal(order["total"]) <= 0:
            return None
        ret: dict[str, Any] = {
            "external_id": f"R{order['external_id']}", "channel": channel,
            "order_external_id": order["external_id"],
            "returned_at": returned.isoformat(timespec="seconds"),
            "full": True, "lines": [], "reason": rng.choice(RETURN_REASONS),
        }
        if order.get("store"):
            ret["store"] = order["store"]
        whole_units = [i for i, ln in enumerate(lines) if not ln[0].by_weight]
        partial = rng.random() < 0.4 and (len(lines) > 1 or (whole_units and lines[0][1] > 1))
        total = Decimal(order["total"])
        paid = [_money(q * p) - d for _prod, q, p, d in lines]
        subtotal = sum(paid, Decimal(0))
        if not partial and total == subtotal:
            return ret  # a full refund: the order's lines, as paid
        # An order-level discount is shared by the lines in proportion, so the refund names
        # each line's amount (a full refund then lists every line).
        ret["full"] = False
        if partial:
            i = rng.choice(whole_units) if whole_units else rng.randrange(len(lines))
            qty = Decimal(1) if i in whole_units else lines[i][1]
            amount = _money(paid[i] * qty / lines[i][1] * total / subtotal)
            ret["lines"] = [{"line_no": i + 1, "quantity": _quantity_text(qty),
                             "amount": str(amount)}]
            return ret
        left = total
        for i, ln in enumerate(lines):
            amount = left if i == len(lines) - 1 else _money(paid[i] * total / subtotal)
            left -= amount
            ret["lines"].append({"line_no": i + 1, "quantity": _quantity_text(ln[1]),
                                 "amount": str(amount)})
        return ret


def _quantity(rng: random.Random, product: Product, vertical: str) -> Decimal:
    if product.by_weight:
        return Decimal(rng.randint(250, 1800)) / 1000  # kilograms, to the gram
    x = rng.random()
    if vertical == "grocery" and product.category in ("snacks", "beverages", "dairy"):
        return Decimal(1 if x < 0.65 else 2 if x < 0.9 else 3)
    return Decimal(1 if x < 0.84 else 2 if x < 0.97 else 3)


def _quantity_text(q: Decimal) -> str:
    return format(q.normalize(), "f") if q == q.to_integral_value() else format(q, "f")


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: fine for the small means of basket sizes.
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


__all__ = ["CSV_COLUMNS", "RETURN_CSV_COLUMNS", "GeneratorConfig", "generate",
           "generate_csv_rows", "generate_orders", "order_csv_rows", "plan", "return_csv_rows",
           "window", "BRAND_BY_CODE"]
