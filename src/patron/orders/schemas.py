"""Request and response shapes for purchases (API, file import and the generator share them)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from patron.customers.schemas import LanguageCode

PAYMENT_METHODS = ("cash", "bank_card", "wechat_pay", "alipay", "stored_value", "points",
                   "coupon", "other")
PaymentMethod = Literal["cash", "bank_card", "wechat_pay", "alipay", "stored_value", "points",
                        "coupon", "other"]

Money = Decimal


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CustomerHint(Strict):
    """Profile facts an order may carry for a customer Patron has not seen yet."""

    name: str | None = Field(default=None, max_length=120)
    gender: Literal["F", "M", "U"] | None = None
    birthday: dt.date | None = None
    # The language of the messages Patron sends the customer (docs/customers.md#language).
    language: LanguageCode | None = None


class OrderLineIn(Strict):
    sku: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=64)
    quantity: Decimal = Field(gt=0, max_digits=12, decimal_places=3)
    unit_price: Money = Field(ge=0, max_digits=14, decimal_places=2)
    discount: Money = Field(default=Decimal("0"), ge=0, max_digits=14, decimal_places=2)
    # Optional; when given it must equal quantity x unit_price - discount, to the fen.
    amount: Money | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)


class PaymentIn(Strict):
    method: PaymentMethod
    amount: Money = Field(ge=0, max_digits=14, decimal_places=2)


class OrderIn(Strict):
    external_id: str = Field(min_length=1, max_length=64)
    channel: str = Field(min_length=1, max_length=32)
    store: str | None = Field(default=None, max_length=32)
    # With an offset, or naive and then read as the store's local time (Asia/Shanghai when the
    # order has no store), the way tills report it.
    purchased_at: dt.datetime
    identifiers: dict[str, str] = Field(default_factory=dict)
    customer: CustomerHint | None = None
    lines: list[OrderLineIn] = Field(default_factory=list, max_length=500)
    payments: list[PaymentIn] = Field(default_factory=list, max_length=20)
    discount: Money = Field(default=Decimal("0"), ge=0, max_digits=14, decimal_places=2)
    # Required when there are no lines; otherwise optional and checked against them.
    total: Money | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)


class OrderBatchIn(BaseModel):
    # Each order is validated on its own so that one malformed order is rejected alone.
    orders: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class OrderOutcome(BaseModel):
    index: int
    status: Literal["created", "duplicate", "conflict", "rejected"]
    external_id: str | None = None
    order_id: int | None = None
    customer_id: int | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)
    differences: list[dict[str, Any]] = Field(default_factory=list)


_OUTCOME_FIELDS = ("index", "status", "external_id", "order_id", "customer_id", "errors",
                   "differences")
_new_object = object.__new__
_set_attribute = object.__setattr__


def trusted_outcome(index: int, status: str, external_id: str | None, order_id: int | None,
                    customer_id: int | None, errors: list[dict[str, Any]],
                    differences: list[dict[str, Any]]) -> OrderOutcome:
    """``OrderOutcome.model_construct(...)`` with every field given, for values that are
    already valid (recording builds one per order): the same instance (fields, fields set,
    no extra, no private attributes) without model_construct's generic walk over the fields,
    which cost as much again as the rest of an outcome. ``tests/unit/test_order_outcome.py``
    holds it equal to model_construct's."""
    m = _new_object(OrderOutcome)
    _set_attribute(m, "__dict__", {
        "index": index, "status": status, "external_id": external_id, "order_id": order_id,
        "customer_id": customer_id, "errors": errors, "differences": differences})
    _set_attribute(m, "__pydantic_fields_set__", set(_OUTCOME_FIELDS))
    _set_attribute(m, "__pydantic_extra__", None)
    _set_attribute(m, "__pydantic_private__", None)
    return m


class ReturnLineIn(Strict):
    line_no: int | None = Field(default=None, ge=1)
    sku: str | None = Field(default=None, max_length=64)
    quantity: Decimal = Field(gt=0, max_digits=12, decimal_places=3)
    # Defaults to the line's paid amount in proportion to the quantity returned.
    amount: Money | None = Field(default=None, ge=0, max_digits=14, decimal_places=2)


class ReturnIn(Strict):
    external_id: str = Field(min_length=1, max_length=64)
    channel: str = Field(min_length=1, max_length=32)
    store: str | None = Field(default=None, max_length=32)
    order_external_id: str = Field(min_length=1, max_length=64)
    returned_at: dt.datetime
    full: bool = False
    lines: list[ReturnLineIn] = Field(default_factory=list, max_length=500)
    reason: str | None = Field(default=None, max_length=500)
