"""A shop for the staff loyalty pages' tests: the test program (BB on brand B1, SH01 and BJ01)
with benefit tiers, stored value with a bonus rule, a coupon template, a GOLD member with
points, a coupon and a stored-value top-up, and a second member registered at SH01 (seen by
the SH01 manager)."""

from __future__ import annotations

from typing import Any

from patron.db import UnitOfWork, get_engine, utcnow
from patron.security.model import SYSTEM
from patron.storedvalue import service as storedvalue
from patron.storedvalue.schemas import BonusRulesIn, SettingsIn, TopUpIn
from tests.checkout_factories import TIERS, setup_member
from tests.coupon_factories import give, make_template
from tests.loyalty_factories import START, enrol, make_program

PHONE_A = "13812345678"
PHONE_B = "13900000001"


def make_shop(db_url: str) -> dict[str, Any]:
    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow, tiers=TIERS, now=START)
        storedvalue.configure(uow=uow, actor=SYSTEM, code="BB",
                              body=SettingsIn(spend_order="proportional", hold_minutes=15),
                              now=START)
        storedvalue.add_bonus_rules(uow=uow, actor=SYSTEM, code="BB", body=BonusRulesIn
                                    .model_validate({"tiers": [{"min": "500", "bonus": "50"}]}),
                                    now=START)
        a = setup_member(uow, with_org=False, points=800, gold=True, phone=PHONE_A)
        b = enrol(uow, PHONE_B, store="SH01", now=START)
        template = make_template(uow, "TEN", now=START)
        issued = give(uow, template["id"], [a["id"]], "give-a", now=utcnow())
        storedvalue.topup(uow=uow, actor=SYSTEM, member_id=a["id"], body=TopUpIn
                          .model_validate({"idempotency_key": "top-a", "amount": "500",
                                           "store": "SH01"}))
    return {"a": a, "b": b, "coupon": issued["coupons"][0]["code"],
            "template": template}
