"""A segment definition: nested AND/OR groups of conditions, as a JSON document.

Plain rules, no database: the document's shape (a Pydantic discriminated union on ``type``),
the operators each kind of value accepts, time windows and the arithmetic on dates that the SQL
compiler (:mod:`patron.segments.compile`) and the tests' Python recomputation share. References
to things in the database (tags, stores, categories, tiers, custom fields) are checked by
:func:`patron.segments.service.validate` when it is given a connection.

The reference of every condition is docs/segments.md.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from patron import i18n as _i18n

MAX_DEPTH = 6
MAX_CONDITIONS = 200
MAX_LIST = 500
MAX_WINDOW_DAYS = 3660

NumberOp = Literal["eq", "neq", "gt", "gte", "lt", "lte", "between"]
NUMBER_OPS: tuple[str, ...] = ("eq", "neq", "gt", "gte", "lt", "lte", "between")
TEXT_OPS: tuple[str, ...] = ("eq", "neq", "in", "not_in", "contains", "starts_with", "is_set",
                             "is_not_set")
DATE_OPS: tuple[str, ...] = ("before", "after", "between", "within_last_days", "is_set",
                             "is_not_set")
CHOICE_OPS: tuple[str, ...] = ("in", "not_in", "is_set", "is_not_set")
BOOL_OPS: tuple[str, ...] = ("is_true", "is_false")

# Profile fields and the kind of value each holds (which decides its operators).
PROFILE_FIELDS: dict[str, str] = {
    "name": "text", "phone": "text", "email": "text", "member_code": "text",
    "gender": "choice", "is_member": "bool", "birthday": "date", "created_at": "date",
    "age": "number", "language": "choice",
}
# Name, phone, email and birthday are encrypted at rest (docs/data-protection.md): the database
# can test them only through their blind indexes (a whole name, a surname, a whole phone or
# email) or for presence, so those fields offer only the operators it can answer. Birthdays
# within N days are the birthday condition (customers.birth_md); age needs the birth year,
# which is not kept beside the ciphertext, so age offers presence only.
PROFILE_OPS: dict[str, tuple[str, ...]] = {
    "name": ("eq", "neq", "in", "not_in", "surname", "is_set", "is_not_set"),
    "phone": ("eq", "neq", "in", "not_in", "is_set", "is_not_set"),
    "email": ("eq", "neq", "in", "not_in", "is_set", "is_not_set"),
    "birthday": ("is_set", "is_not_set"),
    "age": ("is_set", "is_not_set"),
}
GENDERS = ("F", "M", "U")
# A customer's message language (customers.language; unset: the default language): Patron's
# own languages, by the same codes.
LANGUAGES: tuple[str, ...] = tuple(_i18n.LANGUAGES)
OPS_BY_KIND: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS, "choice": CHOICE_OPS, "bool": BOOL_OPS, "date": DATE_OPS,
    "number": (*NUMBER_OPS, "is_set", "is_not_set"),
    # custom fields: the definition's type (custom_field_defs.type)
    "multi_choice": ("has", "has_not", "is_set", "is_not_set"),
}
IDENTITY_KINDS = ("phone", "member_code", "wechat_openid", "wechat_unionid", "alipay_user_id",
                  "platform_buyer_id", "email")
RFM_SEGMENTS = ("champions", "loyal", "potential_loyalists", "new", "promising",
                "need_attention", "about_to_sleep", "at_risk", "cant_lose_them", "hibernating",
                "lost")
LIFECYCLE_STAGES = ("new", "active", "dormant", "churn_risk", "churned", "reactivated")
CONSENT_CHANNELS = ("sms", "email", "wechat", "app")
# (slot, first hour, end hour): local hours [first, end); every other hour is "night"
# (the same slots as the analytics preferences).
HOUR_SLOTS: tuple[tuple[str, int, int], ...] = (
    ("morning", 6, 11), ("lunch", 11, 14), ("afternoon", 14, 17), ("evening", 17, 22))
SLOTS = ("morning", "lunch", "afternoon", "evening", "night")
Code = Annotated[str, Field(min_length=1, max_length=64)]
Codes = Annotated[list[Code], Field(min_length=1, max_length=MAX_LIST)]


def slot_hours(slot: str) -> tuple[int, ...]:
    """The local hours (0-23) of an hour slot."""
    for name, first, end in HOUR_SLOTS:
        if name == slot:
            return tuple(range(first, end))
    taken = {h for _n, first, end in HOUR_SLOTS for h in range(first, end)}
    return tuple(h for h in range(24) if h not in taken)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- values and tests -----------------------------------------------------------------------

class Window(_Strict):
    """A time window in local days: the last N days up to the as-of moment (today counts as one
    of them), or from one local date to another, both included."""

    last_days: int | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS)
    from_: dt.date | None = Field(default=None, alias="from")
    to: dt.date | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        dated = self.from_ is not None or self.to is not None
        if self.last_days is not None and dated:
            raise PydanticCustomError("window_ambiguous",
                                      "give either last_days or from/to, not both")
        if self.last_days is None and not dated:
            raise PydanticCustomError("window_empty", "give last_days or from and to")
        if dated and (self.from_ is None or self.to is None):
            raise PydanticCustomError("window_incomplete", "a dated window needs from and to")
        if self.from_ is not None and self.to is not None:
            if self.from_ > self.to:
                raise PydanticCustomError("window_reversed", "from is after to")
            if (self.to - self.from_).days > MAX_WINDOW_DAYS:
                raise PydanticCustomError("window_too_long",
                                          "a window spans at most {max} days",
                                          {"max": MAX_WINDOW_DAYS})
        return self

    def local_days(self, today: dt.date) -> tuple[dt.date, dt.date]:
        """First and last local day of the window (both included)."""
        if self.last_days is not None:
            return today - dt.timedelta(days=self.last_days - 1), today
        assert self.from_ is not None and self.to is not None
        return self.from_, self.to


class NumberTest(_Strict):
    """``op`` and ``value``: a number, or ``[low, high]`` (both included) for ``between``."""

    op: NumberOp
    value: Decimal | tuple[Decimal, Decimal]

    @model_validator(mode="after")
    def _shape(self) -> NumberTest:
        _check_number_value(self.op, self.value)
        return self

    def test(self, x: Decimal | float | int | None) -> bool:
        return number_test(self.op, self.value, x)


def _check_number_value(op: str, value: Any) -> None:
    if op == "between":
        if not isinstance(value, tuple):
            raise PydanticCustomError("between_needs_pair", "between needs [low, high]")
        if value[0] > value[1]:
            raise PydanticCustomError("between_reversed", "low is above high")
    elif isinstance(value, tuple):
        raise PydanticCustomError("number_expected", "{op} needs one number", {"op": op})


def number_test(op: str, value: Any, x: Any) -> bool:
    """Python's reading of a number test (what the SQL computes); ``None`` never matches."""
    if x is None:
        return False
    x = Decimal(str(x))
    if op == "between":
        return Decimal(value[0]) <= x <= Decimal(value[1])
    v = Decimal(value)
    return {"eq": x == v, "neq": x != v, "gt": x > v, "gte": x >= v, "lt": x < v,
            "lte": x <= v}[op]


def _in_range(value: Any, low: Decimal, high: Decimal) -> None:
    for v in value if isinstance(value, tuple) else (value,):
        if not low <= v <= high:
            raise PydanticCustomError("number_out_of_range",
                                      "the value must be between {low} and {high}",
                                      {"low": str(low), "high": str(high)})


# --- conditions -----------------------------------------------------------------------------

class ProfileCondition(_Strict):
    """A profile field: text, choice (gender, message language), yes/no (is_member), date
    (birthday, created_at: local dates) or number (age in whole years at the as-of day)."""

    type: Literal["profile"]
    field: Literal["name", "phone", "email", "member_code", "gender", "is_member", "birthday",
                   "created_at", "age", "language"]
    op: str
    value: Any = None

    @model_validator(mode="after")
    def _op_fits(self) -> ProfileCondition:
        kind = PROFILE_FIELDS[self.field]
        choices = {"gender": GENDERS, "language": LANGUAGES}.get(self.field)
        check_op_value(kind, self.op, self.value, choices=choices,
                       allowed=PROFILE_OPS.get(self.field))
        return self


class CustomFieldCondition(_Strict):
    """A custom field an owner defined; its type (text, number, date, choice, multi_choice)
    decides the operators, checked against the field's definition by the service."""

    type: Literal["custom_field"]
    key: Code
    op: Literal["eq", "neq", "in", "not_in", "contains", "starts_with", "gt", "gte", "lt",
                "lte", "between", "before", "after", "has", "has_not", "is_set", "is_not_set"]
    value: Any = None


class IdentityCondition(_Strict):
    type: Literal["identity"]
    kind: Literal["phone", "member_code", "wechat_openid", "wechat_unionid", "alipay_user_id",
                  "platform_buyer_id", "email"]
    op: Literal["present", "absent"] = "present"


class TagCondition(_Strict):
    type: Literal["tag"]
    op: Literal["has_any", "has_all", "has_none"]
    tags: Codes


class TierCondition(_Strict):
    """Member of ``program`` at one of ``tiers`` (``in``), or not (``not_in``: the negation,
    so non-members match it)."""

    type: Literal["tier"]
    program: Code
    op: Literal["in", "not_in"]
    tiers: Codes


class PointsCondition(NumberTest):
    """Available points in ``program`` (in all the customer's programs together when absent).
    Customers with no membership have no balance and match no points test."""

    type: Literal["points"]
    program: Code | None = None


class StoredValueCondition(NumberTest):
    """Stored-value balance in yuan (principal + bonus, money on hold excluded); without an
    account, no match."""

    type: Literal["stored_value"]
    program: Code | None = None


class RfmScoreCondition(NumberTest):
    type: Literal["rfm_score"]
    scope: Annotated[str, Field(min_length=1, max_length=48)] = "overall"
    score: Literal["r", "f", "m"]
    @model_validator(mode="after")
    def _range(self) -> Any:
        _in_range(self.value, Decimal(1), Decimal(5))
        return self

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        return check_rfm_scope(v)


class RfmSegmentCondition(_Strict):
    type: Literal["rfm_segment"]
    scope: Annotated[str, Field(min_length=1, max_length=48)] = "overall"
    op: Literal["in", "not_in"]
    segments: Annotated[list[Literal["champions", "loyal", "potential_loyalists", "new",
                                     "promising", "need_attention", "about_to_sleep",
                                     "at_risk", "cant_lose_them", "hibernating", "lost"]],
                        Field(min_length=1)]

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        return check_rfm_scope(v)


class LifecycleCondition(_Strict):
    type: Literal["lifecycle"]
    op: Literal["in", "not_in"]
    stages: Annotated[list[Literal["new", "active", "dormant", "churn_risk", "churned",
                                   "reactivated"]], Field(min_length=1)]


class ProbabilityActiveCondition(NumberTest):
    type: Literal["probability_active"]

    @model_validator(mode="after")
    def _range(self) -> Any:
        _in_range(self.value, Decimal(0), Decimal(1))
        return self


class ClvCondition(NumberTest):
    """Predicted 12-month customer lifetime value in yuan."""

    type: Literal["clv"]


class ChurnRiskCondition(NumberTest):
    type: Literal["churn_risk"]

    @model_validator(mode="after")
    def _range(self) -> Any:
        _in_range(self.value, Decimal(0), Decimal(1))
        return self


class PurchasesCondition(NumberTest):
    """Net spend (yuan, after refunds), number of orders or average order value within an
    optional window, at optional stores and channels. Customers without orders there count
    0 orders and 0 spend, and have no average order value."""

    type: Literal["purchases"]
    measure: Literal["spend", "orders", "aov"]
    window: Window | None = None
    stores: Codes | None = None
    channels: Codes | None = None


class RecencyCondition(NumberTest):
    """Whole local days since the last purchase (0: bought today); never bought, no match."""

    type: Literal["recency"]
    @model_validator(mode="after")
    def _range(self) -> Any:
        _in_range(self.value, Decimal(0), Decimal(36600))
        return self


class BoughtCondition(_Strict):
    """Bought (or never bought) any of ``categories`` or ``skus`` within an optional window; a
    line returned in full does not count."""

    type: Literal["bought"]
    op: Literal["bought", "not_bought"]
    categories: Codes | None = None
    skus: Codes | None = None
    window: Window | None = None

    @model_validator(mode="after")
    def _one_list(self) -> BoughtCondition:
        if (self.categories is None) == (self.skus is None):
            raise PydanticCustomError("categories_or_skus", "give categories or skus (one)")
        return self


class _PlaceCondition(_Strict):
    """``registered`` there, or ``purchased`` there (within an optional window)."""

    op: Literal["registered", "not_registered", "purchased", "not_purchased"]
    window: Window | None = None

    @model_validator(mode="after")
    def _window_for_purchases(self) -> _PlaceCondition:
        if self.window is not None and self.op in ("registered", "not_registered"):
            raise PydanticCustomError("window_not_allowed",
                                      "a window applies to purchases only")
        return self


class StoreCondition(_PlaceCondition):
    type: Literal["store"]
    stores: Codes


class RegionCondition(_PlaceCondition):
    type: Literal["region"]
    regions: Codes


class BrandCondition(_PlaceCondition):
    type: Literal["brand"]
    brands: Codes


class ChannelCondition(_PlaceCondition):
    type: Literal["channel"]
    channels: Codes


class HourSlotCondition(_Strict):
    """At least ``min_share`` of the customer's orders fall in the local hour slot."""

    type: Literal["hour_slot"]
    slot: Literal["morning", "lunch", "afternoon", "evening", "night"]
    min_share: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)


class BirthdayCondition(_Strict):
    """The birthday falls within the next ``within_days`` local days (0: today). Born on
    29 February: the 28th in other years."""

    type: Literal["birthday"]
    within_days: int = Field(ge=0, le=365)


class ConsentCondition(_Strict):
    """The customer's latest marketing consent for ``channel`` is a grant in at least one
    membership (what the message outbox checks before sending)."""

    type: Literal["consent"]
    channel: Literal["sms", "email", "wechat", "app"]
    op: Literal["granted", "not_granted"] = "granted"


class Group(_Strict):
    type: Literal["group"]
    match: Literal["all", "any"] = "all"
    conditions: Annotated[list[Node], Field(min_length=1)]


Condition = Union[  # noqa: UP007 - a discriminated union reads better this way
    ProfileCondition, CustomFieldCondition, IdentityCondition, TagCondition, TierCondition,
    PointsCondition, StoredValueCondition, RfmScoreCondition, RfmSegmentCondition,
    LifecycleCondition, ProbabilityActiveCondition, ClvCondition, ChurnRiskCondition,
    PurchasesCondition, RecencyCondition, BoughtCondition, StoreCondition, RegionCondition,
    BrandCondition, ChannelCondition, HourSlotCondition, BirthdayCondition, ConsentCondition,
]
Node = Annotated[Union[Group, Condition], Field(discriminator="type")]  # noqa: UP007
CONDITION_TYPES: tuple[str, ...] = (
    "profile", "custom_field", "identity", "tag", "tier", "points", "stored_value",
    "rfm_score", "rfm_segment", "lifecycle", "probability_active", "clv", "churn_risk",
    "purchases", "recency", "bought", "store", "region", "brand", "channel", "hour_slot",
    "birthday", "consent")


class Definition(_Strict):
    """The root group: ``{"match": "all" | "any", "conditions": [...]}``. No condition at all
    selects every customer."""

    match: Literal["all", "any"] = "all"
    conditions: Annotated[list[Node], Field(max_length=MAX_CONDITIONS)] = []

    @model_validator(mode="after")
    def _size(self) -> Definition:
        count = 0
        for _path, _node, depth in walk(self):
            count += 1
            if depth > MAX_DEPTH:
                raise PydanticCustomError("too_deep", "groups nest at most {max} deep",
                                          {"max": MAX_DEPTH})
        if count > MAX_CONDITIONS:
            raise PydanticCustomError("too_many_conditions",
                                      "at most {max} conditions", {"max": MAX_CONDITIONS})
        return self

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Group.model_rebuild()
Definition.model_rebuild()


def walk(root: Definition | Group, prefix: str = "conditions",
         depth: int = 1) -> list[tuple[str, Any, int]]:
    """Every node under ``root`` with its path (``conditions.1.conditions.0``) and depth."""
    out: list[tuple[str, Any, int]] = []
    for i, node in enumerate(root.conditions):
        path = f"{prefix}.{i}"
        out.append((path, node, depth))
        if isinstance(node, Group):
            out.extend(walk(node, f"{path}.conditions", depth + 1))
    return out


# --- operators and values by kind -----------------------------------------------------------

def check_op_value(kind: str, op: str, value: Any, *, choices: tuple[str, ...] | None = None,
                   allowed: tuple[str, ...] | None = None) -> None:
    """Refuse an operator the kind of value does not have (or, given ``allowed``, the field
    does not offer), or a value that does not fit it."""
    allowed = allowed or OPS_BY_KIND[kind]
    if op not in allowed:
        raise PydanticCustomError("op_not_for_type",
                                  "'{op}' does not apply to a {kind} field; use one of "
                                  "{allowed}", {"op": op, "kind": kind,
                                                "allowed": ", ".join(allowed)})
    if op in ("is_set", "is_not_set", "is_true", "is_false"):
        if value is not None:
            raise PydanticCustomError("value_not_allowed", "{op} takes no value", {"op": op})
        return
    if op == "within_last_days":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 36600:
            raise PydanticCustomError("days_expected", "a whole number of days (1-36600)")
        return
    if kind == "number" or (kind in ("text", "choice") and op in NUMBER_OPS
                            and op not in ("eq", "neq")):
        _number_value(op, value)
        return
    if kind == "date":
        _date_value(op, value)
        return
    if op in ("in", "not_in", "has", "has_not"):
        many = value if op in ("in", "not_in") else [value]
        if op in ("in", "not_in") and (not isinstance(value, list) or not value
                                       or len(value) > MAX_LIST):
            raise PydanticCustomError("list_expected", "a list of 1 to {max} values",
                                      {"max": MAX_LIST})
        for v in many:
            if not isinstance(v, str) or not v:
                raise PydanticCustomError("text_expected", "a non-empty text value")
            if choices is not None and v not in choices:
                raise PydanticCustomError("choice_unknown", "'{value}' is not one of {choices}",
                                          {"value": v, "choices": ", ".join(choices)})
        return
    if not isinstance(value, str) or not value or len(value) > 200:
        raise PydanticCustomError("text_expected", "a non-empty text value")


def _number_value(op: str, value: Any) -> None:
    def num(v: Any) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, int | float | str | Decimal):
            raise PydanticCustomError("number_expected", "{op} needs a number", {"op": op})
        try:
            d = Decimal(str(v))
        except ArithmeticError as exc:
            raise PydanticCustomError("number_expected", "{op} needs a number",
                                      {"op": op}) from exc
        if not d.is_finite():
            raise PydanticCustomError("number_expected", "{op} needs a number", {"op": op})
        return d

    if op == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise PydanticCustomError("between_needs_pair", "between needs [low, high]")
        if num(value[0]) > num(value[1]):
            raise PydanticCustomError("between_reversed", "low is above high")
        return
    num(value)


def parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise PydanticCustomError("date_expected", "a date as YYYY-MM-DD") from exc


def _date_value(op: str, value: Any) -> None:
    if op == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise PydanticCustomError("between_needs_pair", "between needs [low, high]")
        if parse_date(value[0]) > parse_date(value[1]):
            raise PydanticCustomError("between_reversed", "low is above high")
        return
    parse_date(value)


def check_rfm_scope(scope: str) -> str:
    if scope == "overall":
        return scope
    kind, _, code = scope.partition(":")
    if kind not in ("store", "region", "brand") or not code:
        raise PydanticCustomError("rfm_scope", "scope is overall, store:CODE, region:CODE or "
                                               "brand:CODE")
    return scope


# --- dates ----------------------------------------------------------------------------------

def years_before(day: dt.date, years: int) -> dt.date:
    """The same calendar day ``years`` earlier (28 February for a 29th)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def age_on(birthday: dt.date, day: dt.date) -> int:
    """Whole years of age on ``day``."""
    years = day.year - birthday.year
    if (day.month, day.day) < (birthday.month, birthday.day):
        years -= 1
    return years


def birthday_keys(today: dt.date, within_days: int) -> set[int]:
    """Month * 100 + day of every birthday celebrated from today to ``within_days`` days later.
    A 29 February birthday is celebrated on the 28th in a year without one."""
    keys: set[int] = set()
    for i in range(within_days + 1):
        day = today + dt.timedelta(days=i)
        keys.add(day.month * 100 + day.day)
        if day.month == 2 and day.day == 28:
            try:
                dt.date(day.year, 2, 29)
            except ValueError:
                keys.add(229)
    return keys


# --- errors ---------------------------------------------------------------------------------

def error_path(loc: tuple[Any, ...]) -> str:
    """A readable path to the bad part: ``conditions.1.conditions.0.window.last_days``. The
    discriminated union's tag (the condition's type) is left out of Pydantic's location."""
    parts: list[str] = []
    prev: Any = None
    for p in loc:
        if isinstance(p, str) and isinstance(prev, int) and (p in CONDITION_TYPES
                                                             or p == "group"):
            prev = p
            continue
        if isinstance(p, str) and p.startswith("function-after["):
            prev = p
            continue
        parts.append(str(p))
        prev = p
    return ".".join(parts)


def parse(document: Any) -> Definition:
    """The definition, or :class:`ValidationError` (see :func:`error_path`)."""
    if isinstance(document, Definition):
        return document
    return Definition.model_validate(document)


__all__ = ["Definition", "Group", "ValidationError", "Window", "parse", "walk"]
