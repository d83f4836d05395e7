"""Loyalty tables: programs, rule versions, tiers, members, consents, the points ledger (entries,
lots, lot moves), order earnings and operations (redemptions, holds, adjustments, transfers).
Expiry reminders go to the message outbox (patron.messaging).

The database itself refuses what would break the ledger's invariants (docs/loyalty.md,
"Invariants"): CHECK constraints keep every figure and lot non-negative and every entry's sign
consistent with its kind and bucket; unique keys make an order earn once and a cause write each
kind of entry once per member. Members, lots and entries are foreign keys; the ids of reference
rows on the busy ledger tables (program, store, rule version, tier) are plain columns, so that
writing an entry does not maintain an index per reference.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, Money, Quantity, UTCDateTime, metadata
from patron.protection.redact import Redacted

loyalty_programs = Table(
    "loyalty_programs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    # One program per brand; a customer may be a member of several brands' programs.
    Column("brand_id", ForeignKey("brands.id"), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("status", String(8), nullable=False),  # active | closed
    # Orders without a store earn in this program when they come through these channels.
    Column("storeless_channels", JSONType, nullable=False, default=list),
    Column("timezone", String(64), nullable=False),
    Column("expiry_mode", String(20), nullable=False),
    Column("expiry_months", SmallInteger, nullable=True),
    Column("pending_days", Integer, nullable=False),
    Column("reminder_days", Integer, nullable=False),
    Column("hold_minutes", Integer, nullable=False),
    Column("redeem_points_per_yuan", Integer, nullable=False),
    Column("clawback_policy", String(20), nullable=False),
    Column("tier_basis", String(12), nullable=False),
    Column("tier_grace_days", Integer, nullable=False),
    Column("tier_max_downgrade", SmallInteger, nullable=False),
    Column("privacy_version", String(32), nullable=False),
    Column("code_prefix", String(4), nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("status IN ('active', 'closed')", name="status"),
    CheckConstraint("expiry_mode IN ('rolling_months', 'end_of_next_year')", name="expiry_mode"),
    # A lifetime in months, between one month and ten years: no unit mistake can make points
    # live for decades.
    CheckConstraint("expiry_mode <> 'rolling_months' OR expiry_months BETWEEN 1 AND 120",
                    name="expiry_months"),
    CheckConstraint("pending_days BETWEEN 0 AND 90", name="pending_days"),
    CheckConstraint("reminder_days BETWEEN 0 AND 90", name="reminder_days"),
    CheckConstraint("hold_minutes BETWEEN 1 AND 10080", name="hold_minutes"),
    CheckConstraint("redeem_points_per_yuan BETWEEN 1 AND 100000", name="redeem_rate"),
    CheckConstraint("clawback_policy IN ('owe', 'write_off', 'deduct_from_refund')",
                    name="clawback_policy"),
    CheckConstraint("tier_basis IN ('growth', 'spend_12m')", name="tier_basis"),
    CheckConstraint("tier_grace_days BETWEEN 0 AND 3660", name="tier_grace_days"),
    CheckConstraint("tier_max_downgrade BETWEEN 1 AND 20", name="tier_max_downgrade"),
)

# Earning rules are versioned and effective-dated: an order earns by the version in force at its
# purchase time. Versions are never edited; a change is a new version.
loyalty_rule_versions = Table(
    "loyalty_rule_versions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("effective_from", UTCDateTime, nullable=False),
    Column("rules", JSONType, nullable=False),
    Column("note", Redacted(), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    UniqueConstraint("program_id", "version", name="uq_loyalty_rule_versions_version"),
    UniqueConstraint("program_id", "effective_from", name="uq_loyalty_rule_versions_from"),
    CheckConstraint("version >= 1", name="version"),
)

loyalty_tiers = Table(
    "loyalty_tiers",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("code", String(32), nullable=False),
    Column("name", String(120), nullable=False),
    Column("rank", SmallInteger, nullable=False),
    Column("min_growth", BigInteger, nullable=False),
    Column("min_spend", Money, nullable=False),
    Column("points_multiplier", Quantity, nullable=False),
    # Benefits shown at the till: member discount, birthday gift, free items (used later).
    Column("benefits", JSONType, nullable=False, default=dict),
    UniqueConstraint("program_id", "code", name="uq_loyalty_tiers_code"),
    UniqueConstraint("program_id", "rank", name="uq_loyalty_tiers_rank"),
    CheckConstraint("rank >= 0", name="rank"),
    CheckConstraint("min_growth >= 0", name="min_growth"),
    CheckConstraint("min_spend >= 0", name="min_spend"),
    CheckConstraint("points_multiplier > 0 AND points_multiplier <= 100000", name="multiplier"),
)

loyalty_members = Table(
    "loyalty_members",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("member_code", String(32), nullable=False, unique=True),
    Column("status", String(8), nullable=False),  # active | closed
    Column("enrolled_at", UTCDateTime, nullable=False),
    Column("enrolled_store_id", ForeignKey("stores.id"), nullable=True, index=True),
    Column("enrolled_channel", String(32), nullable=False),
    # Kept current by every entry; `patron ledger verify` recomputes them from the entries.
    Column("points_available", BigInteger, nullable=False, server_default="0"),
    Column("points_owed", BigInteger, nullable=False, server_default="0"),
    Column("points_pending", BigInteger, nullable=False, server_default="0"),
    Column("points_held", BigInteger, nullable=False, server_default="0"),
    Column("growth_value", BigInteger, nullable=False, server_default="0"),
    Column("tier_id", ForeignKey("loyalty_tiers.id"), nullable=True, index=True),
    Column("tier_since", UTCDateTime, nullable=True),
    Column("tier_manual_until", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "customer_id", name="uq_loyalty_members_program_customer"),
    CheckConstraint("status IN ('active', 'closed')", name="status"),
    CheckConstraint("points_available >= 0", name="available"),
    CheckConstraint("points_owed >= 0", name="owed"),
    # A member who owes points has none to spend: arriving points pay the debt first.
    CheckConstraint("points_available = 0 OR points_owed = 0", name="owed_or_available"),
    CheckConstraint("points_pending >= 0", name="pending"),
    CheckConstraint("points_held >= 0", name="held"),
    CheckConstraint("growth_value >= 0", name="growth"),
)

# Consent history: each grant or withdrawal is a new row; the latest per kind is in force.
loyalty_consents = Table(
    "loyalty_consents",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("kind", String(8), nullable=False),  # privacy | sms | wechat | app | email
    Column("granted", Boolean, nullable=False),
    Column("policy_version", String(32), nullable=True),
    Column("source", String(16), nullable=False),  # where it was given: pos, app, web, ...
    Column("store_id", IdType, nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(120), nullable=False),
    Index("ix_loyalty_consents_member_kind", "member_id", "kind", "id"),
    CheckConstraint("kind IN ('privacy', 'sms', 'wechat', 'app', 'email')", name="kind"),
    CheckConstraint("kind <> 'privacy' OR policy_version IS NOT NULL", name="privacy_version"),
)

_SIGNS = """
(kind = 'earn' AND points > 0 AND bucket IN ('available', 'pending', 'growth'))
OR (kind = 'activate' AND ((bucket = 'pending' AND points < 0)
                           OR (bucket = 'available' AND points > 0)))
OR (kind = 'hold' AND ((bucket = 'available' AND points < 0) OR (bucket = 'held' AND points > 0)))
OR (kind = 'release' AND ((bucket = 'held' AND points < 0)
                          OR (bucket = 'available' AND points > 0)))
OR (kind = 'redeem' AND points < 0 AND bucket IN ('available', 'held'))
OR (kind = 'expire' AND points < 0 AND bucket = 'available')
OR (kind = 'clawback' AND points < 0 AND bucket IN ('available', 'pending', 'growth'))
OR (kind = 'adjust' AND points <> 0 AND bucket IN ('available', 'growth'))
OR (kind = 'transfer' AND points <> 0 AND bucket = 'available')
"""

# The ledger: append-only. Balances are sums of entries; a correction is a new entry.
loyalty_entries = Table(
    "loyalty_entries",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("bucket", String(10), nullable=False),
    Column("points", BigInteger, nullable=False),
    # What caused it: an order, a return, an operation (redemption, hold, adjustment, transfer),
    # a lot (activation, expiry).
    Column("cause_type", String(10), nullable=False),
    Column("cause_id", String(64), nullable=False),
    Column("order_id", IdType, nullable=True, index=True),
    Column("store_id", IdType, nullable=True),
    Column("rule_version_id", IdType, nullable=True),
    Column("reason", Redacted(), nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # A cause writes each kind of entry once per member and bucket: a retried order, return or
    # operation can never earn, claw back or redeem twice.
    UniqueConstraint("cause_type", "cause_id", "kind", "bucket", "member_id",
                     name="uq_loyalty_entries_cause"),
    Index("ix_loyalty_entries_member_id", "member_id", "id"),
    CheckConstraint("kind IN ('earn', 'activate', 'redeem', 'hold', 'release', 'expire', "
                    "'clawback', 'adjust', 'transfer')", name="kind"),
    CheckConstraint("bucket IN ('available', 'pending', 'held', 'growth')", name="bucket"),
    CheckConstraint("cause_type IN ('order', 'return', 'operation', 'lot', 'review')",
                    name="cause_type"),
    CheckConstraint(" ".join(_SIGNS.split()), name="sign"),
)

# Points earned together and expiring together. remaining = points + the sum of its moves.
loyalty_lots = Table(
    "loyalty_lots",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("entry_id", ForeignKey("loyalty_entries.id"), nullable=False, index=True),
    Column("points", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("earned_at", UTCDateTime, nullable=False),
    Column("available_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("activated", Boolean, nullable=False),
    Column("order_id", IdType, nullable=True, index=True),
    Column("store_id", IdType, nullable=True),  # store of issue
    Column("reminded_at", UTCDateTime, nullable=True),
    Index("ix_loyalty_lots_member_expires", "member_id", "expires_at"),
    Index("ix_loyalty_lots_expires_at", "expires_at"),
    Index("ix_loyalty_lots_available_at", "available_at"),
    CheckConstraint("points > 0", name="points"),
    CheckConstraint("remaining >= 0", name="remaining"),
    CheckConstraint("remaining <= points", name="remaining_at_most_points"),
    CheckConstraint("expires_at > earned_at", name="expiry_after_earning"),
    CheckConstraint("available_at < expires_at", name="available_before_expiry"),
)

# How each entry changed each lot's remaining points (consumption negative, give-back positive).
loyalty_lot_moves = Table(
    "loyalty_lot_moves",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("entry_id", ForeignKey("loyalty_entries.id"), nullable=False),
    Column("lot_id", ForeignKey("loyalty_lots.id"), nullable=False, index=True),
    Column("points", BigInteger, nullable=False),
    UniqueConstraint("entry_id", "lot_id", name="uq_loyalty_lot_moves_entry_lot"),
    CheckConstraint("points <> 0", name="points"),
)

# What each member order earned, line by line, and what its returns took back. The primary key
# makes an order earn at most once, in one program, whatever retries.
loyalty_order_earnings = Table(
    "loyalty_order_earnings",
    metadata,
    Column("order_id", ForeignKey("orders.id"), primary_key=True, autoincrement=False),
    Column("program_id", IdType, nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("rule_version_id", IdType, nullable=True),
    Column("purchased_at", UTCDateTime, nullable=False),
    Column("local_date", Date, nullable=False),
    Column("spend", Money, nullable=False),
    Column("eligible", Money, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("growth", BigInteger, nullable=False),
    Column("lot_id", IdType, nullable=True),
    # [[line_no, paid fen, eligible fen, points], ...]
    Column("lines", JSONType, nullable=False),
    Column("returned", Money, nullable=False, server_default="0"),
    # {line_no: refunded fen}, cumulative over the order's returns
    Column("returned_lines", JSONType, nullable=False, default=dict),
    Column("points_clawed", BigInteger, nullable=False, server_default="0"),
    Column("points_excused", BigInteger, nullable=False, server_default="0"),
    Column("points_written_off", BigInteger, nullable=False, server_default="0"),
    Column("growth_clawed", BigInteger, nullable=False, server_default="0"),
    Index("ix_loyalty_order_earnings_member", "member_id", "purchased_at"),
    Index("ix_loyalty_order_earnings_member_day", "member_id", "local_date"),
    CheckConstraint("points >= 0 AND growth >= 0", name="non_negative"),
    CheckConstraint("points_clawed >= 0 AND points_excused >= 0 AND points_written_off >= 0 "
                    "AND points_clawed + points_excused + points_written_off <= points",
                    name="clawback_at_most_earned"),
    CheckConstraint("growth_clawed >= 0 AND growth_clawed <= growth", name="growth_clawed"),
    CheckConstraint("returned >= 0 AND returned <= spend", name="returned"),
)

# Redemptions, holds, adjustments and transfers, each under the caller's idempotency key: the
# same key with the same request returns the first result, with another request a 409.
loyalty_operations = Table(
    "loyalty_operations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # redeem | hold | adjust | transfer
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("value", Money, nullable=True),
    Column("status", String(10), nullable=False),  # done | held | committed | released | expired
    Column("hold_expires_at", UTCDateTime, nullable=True),
    Column("store_id", IdType, nullable=True),
    Column("reference", String(64), nullable=True),  # the till's order or receipt
    Column("reason", Redacted(), nullable=True),
    Column("counterparty_member_id", IdType, nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    UniqueConstraint("program_id", "idempotency_key", name="uq_loyalty_operations_key"),
    Index("ix_loyalty_operations_open_holds", "status", "hold_expires_at"),
    CheckConstraint("kind IN ('redeem', 'hold', 'adjust', 'transfer')", name="kind"),
    CheckConstraint("status IN ('done', 'held', 'committed', 'released', 'expired')",
                    name="status"),
    CheckConstraint("points <> 0", name="points"),
    CheckConstraint("kind IN ('adjust') OR points > 0", name="points_positive"),
    CheckConstraint("kind <> 'hold' OR hold_expires_at IS NOT NULL", name="hold_expiry"),
)

loyalty_tier_history = Table(
    "loyalty_tier_history",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("from_tier_id", IdType, nullable=True),
    Column("to_tier_id", IdType, nullable=True),
    # enrol | upgrade | downgrade | manual_grant | manual_end
    Column("reason", String(16), nullable=False),
    Column("effective_at", UTCDateTime, nullable=False),
    Column("manual_until", UTCDateTime, nullable=True),
    Column("growth_value", BigInteger, nullable=True),
    Column("spend_12m", Money, nullable=True),
    Column("note", Redacted(), nullable=True),
    Column("actor", String(120), nullable=False),
    Index("ix_loyalty_tier_history_member", "member_id", "effective_at"),
    CheckConstraint("reason IN ('enrol', 'upgrade', 'downgrade', 'manual_grant', 'manual_end')",
                    name="reason"),
)
