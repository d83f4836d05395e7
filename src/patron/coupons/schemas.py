"""Request shapes for the coupons API and CLI. Money is yuan with at most two decimals (sent as
strings or numbers); field constraints give the caller a 422 naming the field and the reason,
rules that need the database are checked by the service."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from patron.coupons.model import Basket, Line, Terms, TermsError, check_terms, to_fen

Yuan = Annotated[Decimal, Field(ge=0, le=Decimal("10000000"), max_digits=12, decimal_places=2)]
PositiveYuan = Annotated[Decimal, Field(gt=0, le=Decimal("10000000"), max_digits=12,
                                        decimal_places=2)]
Key = Annotated[str, Field(min_length=1, max_length=64)]
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]
Code = Annotated[str, Field(min_length=1, max_length=40)]
MemberId = Annotated[int, Field(ge=1, le=2**63 - 1)]
MAX_ISSUE = 50_000  # coupons per issuing request (members x quantity)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _aware(value: dt.datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise PydanticCustomError("timezone_required", "give the time with its offset")


class TermsIn(Strict):
    """A template's terms; a change of any of them is a new version of the template."""

    kind: Literal["amount", "percent", "threshold", "free_item", "shipping"]
    amount_off: PositiveYuan | None = None
    percent_off: Decimal | None = Field(default=None, gt=0, lt=100, max_digits=5,
                                        decimal_places=2)
    cap: PositiveYuan | None = None
    threshold: PositiveYuan | None = None
    reduction: PositiveYuan | None = None
    repeat: bool = False
    max_repeats: int | None = Field(default=None, ge=1, le=1000)
    item_sku: Key | None = None
    item_quantity: int = Field(default=1, ge=1, le=100)
    item_value: PositiveYuan | None = None
    min_spend: Yuan = Decimal(0)
    stores: list[Key] = Field(default_factory=list, max_length=2000)
    channels: list[Key] = Field(default_factory=list, max_length=100)
    categories: list[Key] = Field(default_factory=list, max_length=500)
    skus: list[Key] = Field(default_factory=list, max_length=2000)
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    valid_days: int | None = Field(default=None, ge=1, le=3660)
    restore_on_refund: bool = True
    with_coupons: bool = False
    with_tier_discount: bool = True
    with_points: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TermsIn:
        _aware(self.valid_from)
        _aware(self.valid_to)
        try:
            check_terms(self.terms())
        except TermsError as exc:
            raise PydanticCustomError(exc.reason, exc.reason) from exc
        return self

    def terms(self) -> Terms:
        def fen(v: Decimal | None) -> int:
            return 0 if v is None else to_fen(v)

        return Terms(
            kind=self.kind, amount_off=fen(self.amount_off),
            percent_off=self.percent_off or Decimal(0),
            cap=None if self.cap is None else to_fen(self.cap), threshold=fen(self.threshold),
            reduction=fen(self.reduction), repeat=self.repeat, max_repeats=self.max_repeats,
            item_sku=self.item_sku, item_quantity=self.item_quantity,
            item_value=None if self.item_value is None else to_fen(self.item_value),
            min_spend=fen(self.min_spend), stores=tuple(self.stores),
            channels=tuple(self.channels), categories=tuple(self.categories),
            skus=tuple(self.skus),
            valid_from=None if self.valid_from is None else self.valid_from.astimezone(dt.UTC),
            valid_to=None if self.valid_to is None else self.valid_to.astimezone(dt.UTC),
            valid_days=self.valid_days, restore_on_refund=self.restore_on_refund,
            with_coupons=self.with_coupons, with_tier_discount=self.with_tier_discount,
            with_points=self.with_points)


class TemplateIn(Strict):
    program: Key
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=120)
    terms: TermsIn
    total_limit: int | None = Field(default=None, ge=0, le=10**12)
    budget_value: Yuan | None = None
    per_member_limit: int | None = Field(default=None, ge=1, le=10000)


class TemplateUpdate(Strict):
    """Name, status and limits change the template in place; new terms make a new version that
    coupons issued from now on follow (coupons already issued keep theirs)."""

    name: str | None = Field(default=None, min_length=1, max_length=120)
    status: Literal["active", "paused", "ended"] | None = None
    total_limit: int | None = Field(default=None, ge=0, le=10**12)
    budget_value: Yuan | None = None
    per_member_limit: int | None = Field(default=None, ge=1, le=10000)
    terms: TermsIn | None = None
    note: str | None = Field(default=None, max_length=500)


class IssueIn(Strict):
    idempotency_key: IdempotencyKey
    member_ids: list[MemberId] = Field(min_length=1, max_length=5000)
    quantity: int = Field(default=1, ge=1, le=100)  # coupons per member
    store: Key | None = None  # store of issue (required for store-scoped callers)

    @model_validator(mode="after")
    def _size(self) -> IssueIn:
        if len(self.member_ids) * self.quantity > MAX_ISSUE:
            raise PydanticCustomError("coupon_issue_too_large",
                                      "at most {max} coupons per request", {"max": MAX_ISSUE})
        return self


class LineIn(Strict):
    line_no: int | None = Field(default=None, ge=1, le=100000)
    sku: Key
    category: Key | None = None
    quantity: Decimal = Field(gt=0, le=100000, max_digits=10, decimal_places=3)
    unit_price: Yuan


class BasketIn(Strict):
    lines: list[LineIn] = Field(min_length=1, max_length=500)
    store: Key | None = None
    channel: Key = "pos"
    shipping_fee: Yuan = Decimal(0)
    purchased_at: dt.datetime | None = None  # default: now

    @model_validator(mode="after")
    def _checks(self) -> BasketIn:
        _aware(self.purchased_at)
        numbers = [ln.line_no for ln in self.lines if ln.line_no is not None]
        if len(set(numbers)) != len(numbers):
            raise PydanticCustomError("line_no_duplicate", "two lines have the same number")
        return self

    def basket(self, now: dt.datetime) -> Basket:
        used = {ln.line_no for ln in self.lines if ln.line_no is not None}
        lines, next_no = [], 1
        for ln in self.lines:
            no = ln.line_no
            if no is None:
                while next_no in used:
                    next_no += 1
                no = next_no
                used.add(no)
            lines.append(Line(no, ln.sku, ln.category, ln.quantity, to_fen(ln.unit_price)))
        at = (self.purchased_at or now).astimezone(dt.UTC)
        return Basket(tuple(lines), self.store, self.channel, at, to_fen(self.shipping_fee))


class OrderRef(Strict):
    """The order the coupons pay for, as the till knows it (channel, store, receipt number)."""

    channel: Key = "pos"
    store: Key | None = None
    external_id: Key


class EvaluateIn(Strict):
    member_id: MemberId
    codes: list[Code] = Field(min_length=0, max_length=20)
    basket: BasketIn
    tier_discount_percent: Decimal = Field(default=Decimal(0), ge=0, lt=100, max_digits=5,
                                           decimal_places=2)
    with_points: bool = False


class RedeemIn(EvaluateIn):
    idempotency_key: IdempotencyKey
    codes: list[Code] = Field(min_length=1, max_length=20)
    order: OrderRef | None = None


class HoldIn(RedeemIn):
    minutes: int | None = Field(default=None, ge=1, le=10080)


class RevokeIn(Strict):
    reason: str = Field(min_length=3, max_length=500)
