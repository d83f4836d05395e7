"""Coupon tables: templates and their immutable versions, issues (requests under an idempotency
key), coupons, operations (redemptions and two-phase holds under an idempotency key) and the
coupons each operation used.

The database refuses what would break the invariants (docs/coupons.md, "Invariants"): a
template's issued count and face value never pass its limits (CHECK on the counters every issue
adds to), a member never holds more coupons of a template than its per-member limit (UNIQUE slot
number with a CHECK on it), a coupon is used by at most one operation per generation (UNIQUE:
two tills holding the same coupon cannot both write their use), an idempotency key does its
work once per program (UNIQUE).
"""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, Money, UTCDateTime, metadata
from patron.protection.redact import Redacted

coupon_templates = Table(
    "coupon_templates",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("code", String(32), nullable=False),
    Column("name", String(120), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("status", String(8), nullable=False),  # active | paused | ended
    Column("version", Integer, nullable=False),  # the version new coupons are issued from
    # Limits of issuing. total_limit is the budget in coupons, budget_value in face value.
    Column("total_limit", BigInteger, nullable=True),
    Column("budget_value", Money, nullable=True),
    Column("per_member_limit", Integer, nullable=True),
    Column("issued_count", BigInteger, nullable=False, server_default="0"),
    Column("issued_value", Money, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "code", name="uq_coupon_templates_code"),
    CheckConstraint("kind IN ('amount', 'percent', 'threshold', 'free_item', 'shipping')",
                    name="kind"),
    CheckConstraint("status IN ('active', 'paused', 'ended')", name="status"),
    CheckConstraint("version >= 1", name="version"),
    CheckConstraint("total_limit IS NULL OR total_limit >= 0", name="total_limit"),
    CheckConstraint("budget_value IS NULL OR budget_value >= 0", name="budget_value"),
    CheckConstraint("per_member_limit IS NULL OR per_member_limit >= 1",
                    name="per_member_limit"),
    # The budget: no issue can pass it, whatever the code above forgot.
    CheckConstraint("issued_count >= 0 AND (total_limit IS NULL OR issued_count <= total_limit)",
                    name="within_total_limit"),
    CheckConstraint("issued_value >= 0 AND (budget_value IS NULL OR "
                    "issued_value <= budget_value)", name="within_budget_value"),
)

# A template's terms, never edited: a change is a new version; coupons point at the version they
# were issued from, so their terms never change after issue.
coupon_template_versions = Table(
    "coupon_template_versions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("template_id", ForeignKey("coupon_templates.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("terms", JSONType, nullable=False),
    Column("face_value", Money, nullable=True),
    Column("note", Redacted(), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    UniqueConstraint("template_id", "version", name="uq_coupon_template_versions_version"),
)

# One issuing request (to one member or a list) under the caller's idempotency key.
coupon_issues = Table(
    "coupon_issues",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("template_id", ForeignKey("coupon_templates.id"), nullable=False, index=True),
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("store_id", IdType, nullable=True),
    Column("issued", Integer, nullable=False),
    Column("skipped", JSONType, nullable=False, default=list),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "idempotency_key", name="uq_coupon_issues_key"),
)

coupons = Table(
    "coupons",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("template_id", ForeignKey("coupon_templates.id"), nullable=False),
    Column("version_id", ForeignKey("coupon_template_versions.id"), nullable=False, index=True),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("issue_id", ForeignKey("coupon_issues.id"), nullable=False, index=True),
    Column("code", String(16), nullable=False, unique=True),
    Column("status", String(10), nullable=False),  # available | held | redeemed | revoked
    # Bumped whenever a use ends (released, expired, restored): a use is unique per generation.
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("face_value", Money, nullable=True),
    Column("valid_from", UTCDateTime, nullable=False),
    Column("valid_until", UTCDateTime, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("issued_store_id", IdType, nullable=True),
    # The n-th coupon of this template for this member; the limit copied from the template.
    Column("member_seq", Integer, nullable=False),
    Column("member_limit", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("template_id", "member_id", "member_seq", name="uq_coupons_member_slot"),
    Index("ix_coupons_member_status", "member_id", "status"),
    Index("ix_coupons_template_status", "template_id", "status"),
    Index("ix_coupons_valid_until", "valid_until"),
    CheckConstraint("status IN ('available', 'held', 'redeemed', 'revoked')", name="status"),
    CheckConstraint("member_seq >= 1 AND (member_limit IS NULL OR member_seq <= member_limit)",
                    name="member_limit"),
    CheckConstraint("valid_until > valid_from", name="validity"),
    CheckConstraint("generation >= 0", name="generation"),
)

# A redemption or hold of one or more coupons on one basket, under the caller's key.
coupon_operations = Table(
    "coupon_operations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),  # redeem | hold
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", String(10), nullable=False),  # held | committed | released | expired
    Column("hold_expires_at", UTCDateTime, nullable=True),
    Column("store_id", IdType, nullable=True),
    Column("channel", String(32), nullable=False),
    Column("discount", Money, nullable=False),
    Column("basket", JSONType, nullable=False),
    # The order the coupons paid for: its id when known, else the till's reference, matched
    # when a return of that order is recorded.
    Column("order_id", IdType, nullable=True, index=True),
    Column("ref_channel_id", IdType, nullable=True),
    Column("ref_scope_store_id", IdType, nullable=True),
    Column("ref_external_id", String(64), nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    UniqueConstraint("program_id", "idempotency_key", name="uq_coupon_operations_key"),
    Index("ix_coupon_operations_ref", "ref_channel_id", "ref_scope_store_id", "ref_external_id"),
    Index("ix_coupon_operations_open_holds", "status", "hold_expires_at"),
    CheckConstraint("kind IN ('redeem', 'hold')", name="kind"),
    CheckConstraint("status IN ('held', 'committed', 'released', 'expired')", name="status"),
    CheckConstraint("status <> 'held' OR hold_expires_at IS NOT NULL", name="hold_expiry"),
    CheckConstraint("discount >= 0", name="discount"),
)

# Each coupon an operation used: its discount and the lines it applied to.
coupon_uses = Table(
    "coupon_uses",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("operation_id", ForeignKey("coupon_operations.id"), nullable=False, index=True),
    Column("coupon_id", ForeignKey("coupons.id"), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("discount", Money, nullable=False),
    Column("lines", JSONType, nullable=False),  # {line_no: fen}
    Column("shipping", Money, nullable=False, server_default="0"),
    # held | committed | released | expired | restored (a refund gave the coupon back)
    Column("status", String(10), nullable=False),
    Column("restored_by_return_id", IdType, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # Exactly once: one use per coupon and generation; a new use needs the previous one ended.
    UniqueConstraint("coupon_id", "generation", name="uq_coupon_uses_coupon_generation"),
    CheckConstraint("status IN ('held', 'committed', 'released', 'expired', 'restored')",
                    name="status"),
    CheckConstraint("discount >= 0 AND shipping >= 0", name="discount"),
)
