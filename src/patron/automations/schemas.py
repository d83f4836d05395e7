"""An automation's definition: its trigger, conditions (a segment definition), steps (actions
and waits) or A/B variants of them, the re-entry period and the control group's share.

Checked here for shape; :mod:`patron.automations.service` checks what needs the database (the
program, coupon templates, message templates and their variables, the segment definition).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# Words the pages use as addresses (/automations/new, /campaigns/approvals, .../edit): an
# automation or campaign of that code could never be opened, so the code is refused.
RESERVED_CODES = frozenset({"new", "approvals", "edit"})


def _not_reserved(code: str) -> str:
    if code in RESERVED_CODES:
        raise PydanticCustomError("code_reserved", "'{code}' is reserved; choose another code",
                                  {"code": code})
    return code


# An automation's or a campaign's code.
Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,63}$"),
                 AfterValidator(_not_reserved)]
Share = Annotated[Decimal, Field(ge=0, le=1, max_digits=7, decimal_places=6)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- triggers -------------------------------------------------------------------------------------

class FirstPurchase(_Strict):
    type: Literal["first_purchase"]


class EveryOrder(_Strict):
    type: Literal["every_order"]


class SpendThreshold(_Strict):
    """The customer's net spend (all orders, less refunds) reaches ``amount`` with an order."""

    type: Literal["spend_threshold"]
    amount: Annotated[Decimal, Field(gt=0, le=100_000_000, decimal_places=2)]


class TierChanged(_Strict):
    type: Literal["tier_changed"]
    direction: Literal["up", "down"] = "up"
    tier: str | None = None  # the tier reached (its code); any when None


class Birthday(_Strict):
    """The customer's birthday is within ``days_before`` days (0: on the day), once a year."""

    type: Literal["birthday"]
    days_before: Annotated[int, Field(ge=0, le=60)] = 0


class DaysSinceLastPurchase(_Strict):
    """``days`` days have passed since the last purchase (once per last purchase); a lapse
    older than ``days + within_days`` is not picked up (no mailing to long-gone customers the
    day the automation starts)."""

    type: Literal["days_since_last_purchase"]
    days: Annotated[int, Field(ge=1, le=3650)]
    within_days: Annotated[int, Field(ge=1, le=3650)] = 30


Stage = Literal["new", "active", "dormant", "churn_risk", "churned", "reactivated"]


class LifecycleStage(_Strict):
    type: Literal["lifecycle_stage"]
    to: Stage
    from_: Annotated[Stage | None, Field(alias="from")] = None
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PointsExpiring(_Strict):
    type: Literal["points_expiring"]
    days: Annotated[int, Field(ge=1, le=365)]
    min_points: Annotated[int, Field(ge=1)] = 1


class CouponExpiring(_Strict):
    type: Literal["coupon_expiring"]
    days: Annotated[int, Field(ge=1, le=365)]
    coupon_template_id: int | None = None


class JoinedSegment(_Strict):
    """The customer is in the segment now and was not at the previous look (those in it when
    the automation starts are its baseline and do not enter)."""

    type: Literal["joined_segment"]
    segment: dict[str, Any]


class Schedule(_Strict):
    """Every customer matching the conditions enters at each tick of the cron expression, read
    in the program's time zone."""

    type: Literal["schedule"]
    cron: Annotated[str, Field(min_length=9, max_length=120)]


Trigger = Annotated[FirstPurchase | EveryOrder | SpendThreshold | TierChanged | Birthday
                    | DaysSinceLastPurchase | LifecycleStage | PointsExpiring | CouponExpiring
                    | JoinedSegment | Schedule, Field(discriminator="type")]
ORDER_TRIGGERS = ("first_purchase", "every_order", "spend_threshold")
SCAN_TRIGGERS = ("tier_changed", "birthday", "days_since_last_purchase", "lifecycle_stage",
                 "points_expiring", "coupon_expiring", "joined_segment")

# --- steps ----------------------------------------------------------------------------------------


class IssueCoupon(_Strict):
    action: Literal["issue_coupon"]
    coupon_template_id: int


class GrantPoints(_Strict):
    action: Literal["grant_points"]
    points: Annotated[int, Field(ge=1, le=1_000_000)]
    reason: Annotated[str, Field(min_length=3, max_length=120)] = "automation"


class AddTag(_Strict):
    action: Literal["add_tag", "remove_tag"]
    tag: Annotated[str, Field(min_length=1, max_length=64)]


class SendMessage(_Strict):
    action: Literal["send_message"]
    channel: Literal["sms", "email", "wechat", "app"]
    template: Annotated[str, Field(min_length=2, max_length=64)]


class CallWebhook(_Strict):
    """A signed POST to the webhook endpoints subscribed to ``automation.step`` (or to one
    endpoint), through Patron's webhook outbox: retried, never lost."""

    action: Literal["call_webhook"]
    endpoint_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Wait(_Strict):
    action: Literal["wait"]
    days: Annotated[int, Field(ge=0, le=365)] = 0
    hours: Annotated[int, Field(ge=0, le=23)] = 0
    minutes: Annotated[int, Field(ge=0, le=59)] = 0

    @model_validator(mode="after")
    def _not_empty(self) -> Wait:
        if not (self.days or self.hours or self.minutes):
            raise ValueError("a wait of nothing")
        return self


Step = Annotated[IssueCoupon | GrantPoints | AddTag | SendMessage | CallWebhook | Wait,
                 Field(discriminator="action")]
Steps = Annotated[list[Step], Field(min_length=1, max_length=30)]


class Variant(_Strict):
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
    share: Share
    steps: Steps


class Definition(_Strict):
    trigger: Trigger
    # A segment definition (patron.segments); None: every active member of the program.
    conditions: dict[str, Any] | None = None
    steps: Steps | None = None
    # A/B: instead of ``steps``, arms sharing the customers who are not held out.
    variants: Annotated[list[Variant], Field(min_length=2, max_length=6)] | None = None
    # A customer enters at most once per this many days (None: once ever).
    reentry_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    control_share: Annotated[Decimal, Field(ge=0, le=Decimal("0.9"), decimal_places=6)] = (
        Decimal(0))

    @model_validator(mode="after")
    def _steps_or_variants(self) -> Definition:
        if (self.steps is None) == (self.variants is None):
            raise ValueError("give either steps or variants")
        if self.variants is not None:
            if sum(v.share for v in self.variants) != 1:
                raise ValueError("the variants' shares must add up to 1")
            if len({v.code for v in self.variants}) != len(self.variants):
                raise ValueError("variant codes must differ")
            if any(v.code == "control" for v in self.variants):
                raise ValueError("'control' is the held-out group's name")
        return self

    def arms(self) -> list[tuple[str, Decimal, list[Any]]]:
        """(code, share of the customers not held out, steps)."""
        if self.variants is not None:
            return [(v.code, v.share, list(v.steps)) for v in self.variants]
        assert self.steps is not None
        return [("main", Decimal(1), list(self.steps))]

    def steps_of(self, arm: str) -> list[Any]:
        for code, _share, steps in self.arms():
            if code == arm:
                return steps
        return []


class AutomationIn(_Strict):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=200)]
    program: Annotated[str, Field(min_length=1, max_length=32)]
    definition: Definition


class AutomationUpdate(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    definition: Definition | None = None


class Activate(_Strict):
    # The audience size the caller saw, to confirm an audience above the confirmation limit.
    confirm_audience: Annotated[int, Field(ge=0)] | None = None
