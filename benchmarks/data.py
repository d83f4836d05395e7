"""A deterministic synthetic order stream for the benchmarks.

Order ``n`` depends only on ``(seed, n)``, so the import, its raw-insert anchor and the API load
all see the same orders without keeping them in memory. Customers buy again and again (a few
regulars buy most), every identified order carries the customer's anchor identifier (phone, or
the member code for the few without one), so identity resolution mostly finds an existing
customer and never has to merge. Swap for ``patron.demo.generator`` once it settles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

FEN = Decimal("0.01")
START = dt.datetime(2025, 1, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
SPAN_SECONDS = 600 * 86400  # purchases spread over ~20 months, all in the past
MOBILE_PREFIXES = ("38", "39", "50", "51", "52", "58", "59", "86", "87", "88", "35", "36", "37")
NAMES = ("王芳", "李娜", "张伟", "刘洋", "陈静", "杨磊", "赵敏", "黄婷", "周杰", "吴倩")

# sku, name, category, unit price, sold by weight
CATALOG: tuple[tuple[str, str, str, str, bool], ...] = (
    ("LATTE", "拿铁", "coffee", "28.00", False),
    ("AMERICANO", "美式", "coffee", "22.00", False),
    ("FLATWHITE", "澳白", "coffee", "30.00", False),
    ("MOCHA", "摩卡", "coffee", "32.00", False),
    ("OOLONG", "乌龙茶", "tea", "18.00", False),
    ("MATCHA", "抹茶拿铁", "tea", "29.00", False),
    ("CROISSANT", "可颂", "bakery", "16.50", False),
    ("BAGEL", "贝果", "bakery", "14.00", False),
    ("MUFFIN", "玛芬", "bakery", "12.00", False),
    ("COOKIE", "曲奇", "snacks", "8.80", False),
    ("NUTS", "每日坚果", "snacks", "39.90", False),
    ("SERUM", "精华液", "beauty", "299.00", False),
    ("MASK", "面膜", "beauty", "19.90", False),
    ("CREAM", "面霜", "beauty", "188.00", False),
    ("APPLES", "苹果", "grocery", "12.80", True),
    ("BANANAS", "香蕉", "grocery", "6.90", True),
    ("BEANS250", "咖啡豆 250g", "grocery", "89.00", False),
    ("MILK", "鲜牛奶", "grocery", "15.50", False),
)
PAY_METHODS = ("wechat_pay", "wechat_pay", "alipay", "alipay", "bank_card", "cash")


def fen(value: Decimal) -> Decimal:
    return value.quantize(FEN, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class Customer:
    number: int
    phone: str | None  # national mobile number as a till sends it
    member_code: str | None
    openid: str | None

    @property
    def phone_e164(self) -> str | None:
        return f"+86{self.phone}" if self.phone else None


class OrderStream:
    """``order(n)``: the n-th order as an ``OrderIn``-compatible dict."""

    def __init__(self, *, customers: int, stores: list[str], seed: int = 20260301,
                 prefix: str = "B") -> None:
        self.customers = max(customers, 10)
        self.stores = stores
        self.seed = seed
        self.prefix = prefix

    @classmethod
    def for_orders(cls, orders: int, stores: list[str], **kw: Any) -> OrderStream:
        # About four orders per customer on average, most of them from the regulars.
        return cls(customers=max(50, orders // 4), stores=stores, **kw)

    def customer(self, number: int) -> Customer:
        phone = None
        if number % 10 != 9:
            prefix = MOBILE_PREFIXES[number % len(MOBILE_PREFIXES)]
            phone = f"1{prefix}{(number * 7919 + 1234567) % 10**8:08d}"
        member = f"M{number:08d}" if (number % 5 < 3 or phone is None) else None
        openid = f"oWX{number:012d}" if number % 2 == 0 else None
        return Customer(number, phone, member, openid)

    def customer_of(self, n: int) -> Customer | None:
        rng = random.Random(self.seed * 1_000_003 + n)
        return self._pick_customer(rng)

    def raw_customer_id(self, n: int) -> int | None:
        """A customer id for order ``n``'s raw anchor row: the customer's number + 1, None for
        a walk-in. Patron numbers profiles in order of first purchase, the generator by how
        regular the customer is; either way a regular's orders land among the old ids of the
        index and a newcomer's at its end."""
        cust = self.customer_of(n)
        return None if cust is None else cust.number + 1

    def _pick_customer(self, rng: random.Random) -> Customer | None:
        if rng.random() < 0.10:
            return None  # an anonymous walk-in
        # Squaring skews towards low numbers: regulars buy far more often than the rest.
        return self.customer(int(self.customers * rng.random() ** 2))

    def order(self, n: int, *, prefix: str | None = None) -> dict[str, Any]:
        rng = random.Random(self.seed * 1_000_003 + n)
        cust = self._pick_customer(rng)
        roll = rng.random()
        channel = "pos" if roll < 0.7 else ("mini_program" if roll < 0.9 else "meituan")
        store = self.stores[rng.randrange(len(self.stores))]
        identifiers: dict[str, str] = {}
        if cust is not None:
            anchor = ("phone", cust.phone) if cust.phone else ("member_code", cust.member_code)
            identifiers[anchor[0]] = anchor[1]  # type: ignore[assignment]
            if channel == "pos" and cust.member_code and rng.random() < 0.8:
                identifiers["member_code"] = cust.member_code
            elif channel == "mini_program" and cust.openid:
                identifiers["wechat_openid"] = cust.openid
            elif channel == "meituan":
                identifiers["platform_buyer_id"] = f"mt{cust.number}"
        seconds = (n * 20 + rng.randrange(20)) % SPAN_SECONDS
        lines = []
        total = Decimal(0)
        for _ in range(rng.choice((1, 1, 2, 2, 2, 3, 3, 4))):
            sku, name, category, price, by_weight = CATALOG[rng.randrange(len(CATALOG))]
            qty = Decimal(rng.choice(("0.35", "0.5", "0.82", "1.2"))) if by_weight else Decimal(
                rng.choice((1, 1, 1, 2, 3)))
            unit_price = Decimal(price)
            discount = Decimal("2.00") if (rng.random() < 0.15 and unit_price > 10) else Decimal(0)
            amount = fen(qty * unit_price) - discount
            total += amount
            line: dict[str, Any] = {"sku": sku, "name": name, "category": category,
                                    "quantity": str(qty), "unit_price": price}
            if discount:
                line["discount"] = str(discount)
            lines.append(line)
        body: dict[str, Any] = {
            "external_id": f"{prefix or self.prefix}{n:09d}",
            "channel": channel,
            "store": store,
            "purchased_at": (START + dt.timedelta(seconds=seconds)).isoformat(),
            "identifiers": identifiers,
            "lines": lines,
            "payments": [{"method": PAY_METHODS[rng.randrange(len(PAY_METHODS))],
                          "amount": str(total)}],
        }
        if cust is not None and rng.random() < 0.3:
            body["customer"] = {"name": NAMES[cust.number % len(NAMES)]}
        return body


def raw_rows(body: dict[str, Any], *, order_id: int, channel_ids: dict[str, int],
             store_ids: dict[str, int], now: dt.datetime, customer_id: int | None = None
             ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same order as plain ``orders`` and ``order_lines`` rows (same columns, same values
    where it matters), for the raw-insert anchor. No validation, no identity resolution: the
    caller gives the customer id (:meth:`OrderStream.raw_customer_id`), so that the rows
    reach the ``(customer_id, purchased_at)`` index where Patron's do."""
    lines = []
    gross = Decimal(0)
    total = Decimal(0)
    for i, ln in enumerate(body["lines"], start=1):
        qty, price = Decimal(ln["quantity"]), Decimal(ln["unit_price"])
        discount = Decimal(ln.get("discount", "0"))
        before = fen(qty * price)
        gross += before
        total += before - discount
        lines.append({"order_id": order_id, "line_no": i, "sku": ln["sku"], "name": ln["name"],
                      "category": ln["category"], "quantity": qty, "unit_price": price,
                      "discount": discount, "amount": before - discount})
    store_id = store_ids[body["store"]]
    scope = store_id if body["channel"] == "pos" else 0
    order = {
        "id": order_id, "channel_id": channel_ids[body["channel"]], "scope_store_id": scope,
        "external_id": body["external_id"], "store_id": store_id, "customer_id": customer_id,
        "purchased_at": dt.datetime.fromisoformat(body["purchased_at"]),
        "gross_amount": gross, "discount_amount": gross - total, "total_amount": total,
        "line_count": len(lines),
        "identifiers": [[k, "", v] for k, v in sorted(body["identifiers"].items())],
        "content_hash": hashlib.sha256(body["external_id"].encode()).hexdigest(),
        "source": "import", "created_at": now,
    }
    return order, lines
