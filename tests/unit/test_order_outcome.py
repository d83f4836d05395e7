"""``trusted_outcome`` builds the same OrderOutcome as ``model_construct`` (recording builds one
per order without either's validation)."""

from __future__ import annotations

import pytest

from patron.orders.schemas import _OUTCOME_FIELDS, OrderOutcome, trusted_outcome


def test_it_covers_every_field_and_nothing_else() -> None:
    assert tuple(OrderOutcome.model_fields) == _OUTCOME_FIELDS
    assert not OrderOutcome.__pydantic_post_init__
    assert not OrderOutcome.__private_attributes__
    assert OrderOutcome.model_config.get("extra") in (None, "ignore")


@pytest.mark.parametrize("values", [
    (0, "created", "B1", 10, 20, [], []),
    (3, "rejected", None, None, None, [{"field": "lines", "code": "x", "params": {}}], []),
    (1, "conflict", "B2", 11, None, [], [{"field": "total", "recorded": "1", "sent": "2"}]),
])
def test_same_instance_as_model_construct(values: tuple) -> None:  # type: ignore[type-arg]
    fast = trusted_outcome(*values)
    slow = OrderOutcome.model_construct(**dict(zip(_OUTCOME_FIELDS, values, strict=True)))
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert fast.model_dump(mode="json") == slow.model_dump(mode="json")
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    assert type(fast) is OrderOutcome
    fast.order_id = 5  # an ordinary, mutable instance
    assert fast.order_id == 5
