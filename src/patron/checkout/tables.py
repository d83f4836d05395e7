"""Checkout tables: committed checkouts, two-phase holds and refunds, each under the till's
idempotency key.

A checkout composes other areas' writes (the order, points, coupons, stored value) in one
transaction; these rows record what it did and the response it gave, so that a retry gets the
first answer back. The unique keys make a key do its work once per store, and an order belong
to at most one checkout.
"""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, Money, UTCDateTime, metadata
from patron.protection.redact import Redacted

checkout_commits = Table(
    "checkout_commits",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("source", String(8), nullable=False),  # online | offline
    Column("order_id", ForeignKey("orders.id"), nullable=True, unique=True),
    Column("order_number", String(64), nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=True, index=True),
    Column("hold_id", IdType, nullable=True),
    Column("purchased_at", UTCDateTime, nullable=False),
    Column("total", Money, nullable=False),
    Column("tier_discount", Money, nullable=False),
    Column("coupon_discount", Money, nullable=False),
    Column("points_redeemed", BigInteger, nullable=False),
    Column("points_value", Money, nullable=False),
    Column("stored_value", Money, nullable=False),
    Column("points_earned", BigInteger, nullable=False),
    # What refunds gave back so far, for the proportional split of the next refund.
    Column("refunded", Money, nullable=False, server_default="0"),
    Column("points_returned", BigInteger, nullable=False, server_default="0"),
    Column("stored_value_returned", Money, nullable=False, server_default="0"),
    Column("points_operation_id", IdType, nullable=True),
    Column("stored_value_operation_id", IdType, nullable=True),
    Column("result", JSONType, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("store_id", "idempotency_key", name="uq_checkout_commits_key"),
    CheckConstraint("source IN ('online', 'offline')", name="source"),
    CheckConstraint("total >= 0 AND tier_discount >= 0 AND coupon_discount >= 0 "
                    "AND points_value >= 0 AND stored_value >= 0", name="amounts"),
    CheckConstraint("points_value + stored_value <= total", name="paid_at_most_total"),
    CheckConstraint("points_redeemed >= 0 AND points_earned >= 0", name="points"),
    CheckConstraint("refunded >= 0 AND refunded <= total", name="refunded"),
    CheckConstraint("points_returned >= 0 AND points_returned <= points_redeemed",
                    name="points_returned"),
    CheckConstraint("stored_value_returned >= 0 AND stored_value_returned <= stored_value",
                    name="stored_value_returned"),
)

# A till paying in steps reserves points (and, when those areas are installed, stored value
# and coupons) for a basket, then commits the checkout with the hold or releases it.
checkout_holds = Table(
    "checkout_holds",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("store_id", ForeignKey("stores.id"), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=True, index=True),
    Column("points", BigInteger, nullable=False),
    Column("points_operation_id", IdType, nullable=True),
    Column("stored_value", Money, nullable=False, server_default="0"),
    Column("stored_value_operation_id", IdType, nullable=True),
    # What else the hold reserved: {"coupon_codes": [...], "coupon_operation_id": id}
    Column("parts", JSONType, nullable=False),
    Column("status", String(10), nullable=False),  # held | committed | released
    Column("expires_at", UTCDateTime, nullable=False),
    Column("checkout_id", IdType, nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    UniqueConstraint("store_id", "idempotency_key", name="uq_checkout_holds_key"),
    Index("ix_checkout_holds_open", "status", "expires_at"),
    CheckConstraint("status IN ('held', 'committed', 'released')", name="status"),
    CheckConstraint("points >= 0 AND stored_value >= 0", name="amounts"),
    CheckConstraint("status <> 'committed' OR checkout_id IS NOT NULL", name="committed_to"),
)

checkout_refunds = Table(
    "checkout_refunds",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("checkout_id", ForeignKey("checkout_commits.id"), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("return_id", IdType, nullable=False, unique=True),
    Column("amount", Money, nullable=False),
    Column("points_returned", BigInteger, nullable=False),
    Column("stored_value_returned", Money, nullable=False),
    Column("reason", Redacted(), nullable=True),
    Column("result", JSONType, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("checkout_id", "idempotency_key", name="uq_checkout_refunds_key"),
    CheckConstraint("amount >= 0 AND points_returned >= 0 AND stored_value_returned >= 0",
                    name="amounts"),
)
