"""Stored value through the POS checkout, which composes the area's inner functions in its own
transaction: a sale paid partly by the card spends it once, whatever the retries, and a full
refund of the sale gives the money back to the card."""

from __future__ import annotations

from decimal import Decimal

from patron.checkout import service as checkout
from patron.checkout.schemas import CommitIn, RefundIn
from patron.security.model import SYSTEM
from patron.storedvalue import service
from patron.storedvalue.schemas import SettingsIn, TopUpIn
from patron.storedvalue.verify import verify
from tests.checkout_factories import NOW, sale, setup_member


def card(uow, member_id):
    out = service.balance(uow.c, actor=SYSTEM, member_id=member_id, now=NOW)
    return str(out["principal"]), str(out["bonus"])


def test_a_sale_paid_by_the_card_spends_it_once_and_its_refund_gives_it_back(uow):
    member = setup_member(uow, points=0)
    service.configure(uow=uow, actor=SYSTEM, code="BB", now=NOW,
                      body=SettingsIn(spend_order="principal_first"))
    service.topup(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                  body=TopUpIn(idempotency_key="t1", amount=Decimal("100"), store="SH01"))
    body = CommitIn.model_validate(sale(member["member_code"], "sale-1", "R-0001",
                                        tender=3390, stored_value_fen=3000))
    first = checkout.commit(uow=uow, actor=SYSTEM, body=body, now=NOW)
    again = checkout.commit(uow=uow, actor=SYSTEM, body=body, now=NOW)
    assert again["replayed"] and again["checkout_id"] == first["checkout_id"]
    assert card(uow, member["id"]) == ("70.00", "0.00")
    checkout.refund(uow=uow, actor=SYSTEM, checkout_id=first["checkout_id"], now=NOW,
                    body=RefundIn(idempotency_key="back-1", full=True))
    assert card(uow, member["id"]) == ("100.00", "0.00")
    assert verify(uow.c)["differences"] == []
