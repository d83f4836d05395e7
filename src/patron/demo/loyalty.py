"""The demo's loyalty data, set up through the loyalty, coupon, stored-value and rewards
services.

One program per brand (1 point and 1 growth per yuan, one category at double points, three
tiers, a small points mall), opened the day before the demo's window. While the orders are
recorded, a share of the people who give a phone at a brand is enrolled in its program (with
privacy consent) a few minutes before their first order there, so that their orders earn
through the normal order hook. Afterwards some members receive coupons and top up stored value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from patron.coupons import service as coupons
from patron.coupons.schemas import IssueIn, TemplateIn
from patron.db import UnitOfWork, utcnow
from patron.demo.catalogue import BRANDS, STORES
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import EnrolIn, ProgramIn
from patron.loyalty.tables import loyalty_members, loyalty_programs
from patron.rewards import service as rewards
from patron.rewards.schemas import ItemIn
from patron.security.model import Actor
from patron.storedvalue import service as storedvalue
from patron.storedvalue.schemas import BonusRulesIn, SettingsIn, TopUpIn

ENROL_SHARE = 0.85  # of the people who give a phone at a brand's tills or apps
PRIVACY_VERSION = "2025-01"
# The category earning double points, per brand.
DOUBLE_POINTS = {"BEAN": "bakery", "GLOW": "fragrance", "FRESH": "fresh"}
# (code, name, rank, min growth, points multiplier, member discount %)
TIERS = (
    ("normal", "普通会员 Member", 0, 0, "1", "0"),
    ("silver", "银卡 Silver", 1, 800, "1.2", "3"),
    ("gold", "金卡 Gold", 2, 3000, "1.5", "5"),
)
# (code suffix, name, terms); the program code is prefixed. Amounts in yuan.
COUPONS = {
    "BEAN": (("5OFF", "咖啡立减5元 5 off", {"kind": "amount", "amount_off": "5",
                                          "valid_days": 30}),
             ("BAKERY20", "烘焙8折 20% off bakery", {"kind": "percent", "percent_off": "20",
                                                    "categories": ["bakery"],
                                                    "valid_days": 30})),
    "GLOW": (("50OFF400", "满400减50 50 off 400", {"kind": "threshold", "threshold": "400",
                                                   "reduction": "50", "valid_days": 60}),),
    "FRESH": (("10OFF99", "满99减10 10 off 99", {"kind": "threshold", "threshold": "99",
                                                 "reduction": "10", "valid_days": 14}),),
}
COUPON_SHARE = 0.5  # of each program's members receive each template's coupon
# Stored value: (top-up minimum, bonus) in yuan.
BONUS_TIERS = (("200", "20"), ("500", "60"), ("1000", "150"))
TOPUP_SHARE = 0.25  # of each program's members top up once
TOPUP_AMOUNTS = ("100", "200", "500", "1000")
# Points-mall items: (code suffix, name, points, cash in yuan, stock, limit per member).
REWARDS = {
    "BEAN": (("AMERICANO", "美式咖啡兑换券 Americano", 300, "0", None, None),
             ("MUG", "豆邻马克杯 Bean mug", 1500, "19.90", 200, 1)),
    "GLOW": (("MASK", "补水面膜 Sheet mask", 500, "0", 500, 5),
             ("LIPSTICK", "限定口红 Limited lipstick", 3000, "49", 100, 1)),
    "FRESH": (("EGGS", "土鸡蛋10枚 Eggs x10", 400, "0", None, 4),
              ("BAG", "环保购物袋 Shopping bag", 800, "0", 300, 1)),
}


def program_code(brand: str) -> str:
    return f"{brand}-CLUB"


def _draw(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) for this seed and these parts (Python's hash() is
    salted per process, so it would not repeat)."""
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def setup_programs(*, uow: UnitOfWork, actor: Actor, at: dt.datetime) -> None:
    """The programs, their tiers and earning rules, stored value, points-mall items and coupon
    templates, in force from ``at``."""
    for brand in BRANDS:
        code = program_code(brand.code)
        loyalty.create_program(uow=uow, actor=actor, now=at, data=ProgramIn.model_validate({
            "code": code, "brand": brand.code, "name": f"{brand.name.split(' ')[0]}会员",
            "privacy_version": PRIVACY_VERSION,
            "rules": {"points_per_yuan": "1", "growth_per_yuan": "1",
                      "multipliers": {"category": {DOUBLE_POINTS[brand.code]: "2"}}},
            "tiers": [{"code": c, "name": n, "rank": r, "min_growth": g,
                       "points_multiplier": m,
                       "benefits": {"member_discount_percent": d}}
                      for c, n, r, g, m, d in TIERS]}))
        storedvalue.configure(uow=uow, actor=actor, code=code, now=at,
                              body=SettingsIn(bonus_expiry_months=12))
        storedvalue.add_bonus_rules(uow=uow, actor=actor, code=code, now=at,
                                    body=BonusRulesIn.model_validate({
                                        "tiers": [{"min": m, "bonus": b}
                                                  for m, b in BONUS_TIERS],
                                        "note": "demo"}))
        for suffix, name, points, cash, stock, limit in REWARDS[brand.code]:
            rewards.create_item(uow=uow, actor=actor, program_code=code, now=at,
                                data=ItemIn.model_validate({
                                    "code": f"{brand.code}-{suffix}", "name": name,
                                    "points_price": points, "cash_price": cash, "stock": stock,
                                    "limit_per_member": limit}))
        for suffix, name, terms in COUPONS[brand.code]:
            coupons.create_template(uow=uow, actor=actor, now=at, data=TemplateIn.model_validate({
                "program": code, "code": f"{brand.code}-{suffix}", "name": name,
                "terms": terms, "per_member_limit": 5}))


@dataclass
class Enroller:
    """Enrols people as their orders stream by, before the orders are recorded."""

    uow: UnitOfWork
    actor: Actor
    seed: int
    seen: set[tuple[str, str]] = field(default_factory=set)  # (brand, phone) already decided
    enrolled: int = 0

    def __post_init__(self) -> None:
        self.brand_of = {s.code: s.brand for s in STORES}

    def before(self, order: dict[str, Any]) -> None:
        phone = order.get("identifiers", {}).get("phone")
        brand = self.brand_of.get(order.get("store") or "")
        if not phone or brand is None or (brand, phone) in self.seen:
            return
        self.seen.add((brand, phone))
        if _draw(self.seed, "enrol", brand, phone) >= ENROL_SHARE:
            return
        at = dt.datetime.fromisoformat(order["purchased_at"]) - dt.timedelta(minutes=3)
        name = (order.get("customer") or {}).get("name")
        pos = order.get("channel") == "pos"
        loyalty.enrol(uow=self.uow, actor=self.actor, program_code=program_code(brand), now=at,
                      body=EnrolIn.model_validate({
                          "phone": phone, "name": name,
                          "store": order["store"] if pos else None,
                          "source": "pos" if pos else "api",
                          "privacy": {"version": PRIVACY_VERSION},
                          "marketing": {"sms": _draw(self.seed, "sms", phone) < 0.5,
                                        "wechat": _draw(self.seed, "wechat", phone) < 0.4}}))
        self.enrolled += 1


@dataclass
class Extras:
    coupons: int = 0
    topups: int = 0


def coupons_and_topups(*, uow: UnitOfWork, actor: Actor, seed: int,
                       now: dt.datetime | None = None) -> Extras:
    """Coupons issued to about half of each program's members, a top-up by a quarter."""
    now = now or utcnow()
    extras = Extras()
    for brand in BRANDS:
        code = program_code(brand.code)
        program_id = uow.c.execute(select(loyalty_programs.c.id).where(
            loyalty_programs.c.code == code)).scalar_one()
        members = [int(m) for m in uow.c.execute(
            select(loyalty_members.c.id).where(loyalty_members.c.program_id == program_id)
            .order_by(loyalty_members.c.id)).scalars()]
        for template in coupons.list_templates(uow.c, actor=actor, program=code):
            chosen = [m for m in members if _draw(seed, "coupon", template["code"], m)
                      < COUPON_SHARE]
            for start in range(0, len(chosen), 5000):
                coupons.issue(uow=uow, actor=actor, template_id=int(template["id"]), now=now,
                              body=IssueIn(idempotency_key=f"demo-{template['code']}-{start}",
                                           member_ids=chosen[start:start + 5000]))
                extras.coupons += len(chosen[start:start + 5000])
        home = next(s.code for s in STORES if s.brand == brand.code)
        for m in members:
            if _draw(seed, "topup", m) >= TOPUP_SHARE:
                continue
            amount = TOPUP_AMOUNTS[int(_draw(seed, "amount", m) * len(TOPUP_AMOUNTS))]
            storedvalue.topup(uow=uow, actor=actor, member_id=m, now=now, body=TopUpIn(
                idempotency_key=f"demo-topup-{m}", amount=Decimal(amount), store=home,
                reference=f"DEMO-TOPUP-{m}"))
            extras.topups += 1
    return extras


def member_phone(uow: UnitOfWork) -> str | None:
    """A demo member's phone, for the member page's login: the first member enrolled."""
    from patron.customers.tables import identities

    row = uow.c.execute(
        select(identities.c.value)
        .join(loyalty_members, loyalty_members.c.customer_id == identities.c.customer_id)
        .where(identities.c.kind == "phone")
        .order_by(loyalty_members.c.id).limit(1)).first()
    return str(row[0]) if row else None
