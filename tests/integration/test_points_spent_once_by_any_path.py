"""Points can be spent through several kinds of document: a checkout, a two-phase checkout hold,
a plain redemption, a loyalty hold and the rewards catalog. Whatever the path, a point is spent
once: what one path spent is gone for every other path, and a hold's points cannot be spent again
by committing the hold through a second path. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from patron.checkout import service as checkout
from patron.checkout.schemas import CommitIn
from patron.checkout.schemas import HoldIn as CheckoutHoldIn
from patron.errors import Conflict, PatronError
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import HoldIn, RedeemIn
from patron.loyalty.verify import verify
from patron.rewards import service as rewards
from patron.rewards.schemas import ItemIn, RedemptionIn
from patron.security.model import SYSTEM
from tests.checkout_factories import NOW, sale, setup_member

LATER = NOW + dt.timedelta(minutes=5)
# 71.00 yuan paid 8.00 in points and 63.00 in cash earns 62 points: 1 per yuan paid otherwise
# than in points, each line rounded down (49.69 + 13.31).
EARNED = 62


def _available(uow, member_id: int) -> int:
    return int(loyalty.member_out(uow.c, loyalty._member(uow.c, SYSTEM, member_id))
               ["points"]["available"])


_ITEM_NUMBERS = itertools.count(1)


def _other_paths_refuse_more_than_is_left(uow, member: dict, left: int) -> None:
    """The member has exactly ``left`` points (what the sales earned); every spending path
    refuses one point more."""
    assert _available(uow, member["id"]) == left
    wanted = left + 1
    item = rewards.create_item(
        uow=uow, actor=SYSTEM, program_code="BB", now=NOW,
        data=ItemIn.model_validate({"code": f"PIN{next(_ITEM_NUMBERS)}", "name": "Pin",
                                    "points_price": wanted, "stock": 5}))
    attempts = {
        "redeem": lambda: loyalty.redeem(
            uow=uow, actor=SYSTEM, member_id=member["id"], now=LATER,
            body=RedeemIn(idempotency_key="other-redeem", points=wanted, store="SH01")),
        "hold": lambda: loyalty.hold(
            uow=uow, actor=SYSTEM, member_id=member["id"], now=LATER,
            body=HoldIn(idempotency_key="other-hold", points=wanted, store="SH01")),
        "reward": lambda: rewards.redeem(
            uow=uow, actor=SYSTEM, item_id=item["id"], now=LATER,
            body=RedemptionIn(idempotency_key="other-reward", member_id=member["id"],
                              store="SH01")),
        "checkout": lambda: checkout.commit(
            uow=uow, actor=SYSTEM, now=LATER,
            body=CommitIn.model_validate(sale(member["member_code"], "other-sale", "R-OTHER",
                                              tender=7100 - wanted, redeem_points=wanted))),
    }
    for name, attempt in attempts.items():
        with pytest.raises(PatronError) as refused:
            attempt()
        uow.rollback()
        assert refused.value.message == "insufficient_points", (name, refused.value.message)
    assert _available(uow, member["id"]) == left


def test_points_spent_at_a_checkout_cannot_be_spent_again_through_any_other_document(uow):
    member = setup_member(uow, points=800, gold=False)
    checkout.commit(uow=uow, actor=SYSTEM, now=NOW,
                    body=CommitIn.model_validate(sale(member["member_code"], "k-sale", "R-1",
                                                      tender=6300, redeem_points=800)))
    _other_paths_refuse_more_than_is_left(uow, member, EARNED)
    assert verify(uow.c)["differences"] == []


def test_points_held_by_the_loyalty_api_are_spent_once_whichever_path_commits_them(uow):
    member = setup_member(uow, points=800, gold=False)
    held = loyalty.hold(uow=uow, actor=SYSTEM, member_id=member["id"], now=NOW,
                        body=HoldIn(idempotency_key="k-hold", points=800, store="SH01"))
    hold_id = held["id"]
    assert held["status"] == "held" and held["balance"]["held"] == 800
    # While held, the points are not available to anyone else.
    _other_paths_refuse_more_than_is_left(uow, member, 0)
    loyalty._finish_hold(uow=uow, actor=SYSTEM, hold_id=hold_id, action="commit", now=NOW)
    # A second commit replays the first; a release after the commit is refused.
    again = loyalty._finish_hold(uow=uow, actor=SYSTEM, hold_id=hold_id, action="commit",
                                 now=LATER)
    assert again["replayed"] and again["status"] == "committed"
    with pytest.raises(Conflict) as refused:
        loyalty._finish_hold(uow=uow, actor=SYSTEM, hold_id=hold_id, action="release",
                             now=LATER)
    uow.rollback()
    assert refused.value.message == "hold_not_open"
    assert _available(uow, member["id"]) == 0
    _other_paths_refuse_more_than_is_left(uow, member, 0)
    assert verify(uow.c)["differences"] == []


def test_a_checkout_hold_pays_one_sale_and_its_points_cannot_pay_another(uow):
    member = setup_member(uow, points=800, gold=False)
    body = {k: v for k, v in sale(member["member_code"], "k-h", "unused",
                                   redeem_points=800).items() if k != "order_number"}
    hold = checkout.create_hold(uow=uow, actor=SYSTEM, now=NOW,
                                body=CheckoutHoldIn.model_validate(body))
    first = sale(member["member_code"], "k-pay-1", "R-10", tender=6300,
                 redeem_points=800, hold_id=hold["id"])
    checkout.commit(uow=uow, actor=SYSTEM, now=NOW, body=CommitIn.model_validate(first))
    second = sale(member["member_code"], "k-pay-2", "R-11", tender=6300,
                  redeem_points=800, hold_id=hold["id"])
    with pytest.raises(PatronError):
        checkout.commit(uow=uow, actor=SYSTEM, now=NOW, body=CommitIn.model_validate(second))
    uow.rollback()
    _other_paths_refuse_more_than_is_left(uow, member, EARNED)
    assert verify(uow.c)["differences"] == []
