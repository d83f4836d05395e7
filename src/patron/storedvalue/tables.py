"""Stored value (储值) tables: per-program settings, versioned bonus rules, one account per
member, top-up lots, operations (top-ups, spends, holds, refunds, cash-backs, adjustments) and
the append-only entries.

The database refuses what would break the invariants (docs/stored-value.md, "Invariants"):
CHECK constraints keep every account and lot figure non-negative (no overdraft, whatever a
writer does), keep a lot's remaining money within what it was topped up with, keep refunds of a
spend within what it spent and give each entry the sign its kind allows; unique keys make an
idempotency key do its work once and an operation write each kind of entry once per lot and
bucket. Money columns are integer fen (``db.Money``).
"""

from sqlalchemy import (
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

# Stored value is offered by a loyalty program once an owner has set it up here.
sv_programs = Table(
    "sv_programs",
    metadata,
    Column("program_id", ForeignKey("loyalty_programs.id"), primary_key=True,
           autoincrement=False),
    # Which money a spend uses first: bonus_first | principal_first | proportional
    Column("spend_order", String(16), nullable=False),
    Column("hold_minutes", Integer, nullable=False),
    # Bonus expires this many months after its top-up (None: never). Principal never expires.
    Column("bonus_expiry_months", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
    CheckConstraint("spend_order IN ('bonus_first', 'principal_first', 'proportional')",
                    name="spend_order"),
    CheckConstraint("hold_minutes BETWEEN 1 AND 1440", name="hold_minutes"),
    CheckConstraint("bonus_expiry_months IS NULL OR bonus_expiry_months BETWEEN 1 AND 120",
                    name="bonus_expiry_months"),
)

# Bonus rules are versioned and effective-dated: a top-up earns by the version in force at its
# time. Versions are never edited; a change is a new version.
sv_bonus_rules = Table(
    "sv_bonus_rules",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("effective_from", UTCDateTime, nullable=False),
    # [{"min": "500.00", "bonus": "50.00"}, ...]: the highest threshold met applies
    Column("tiers", JSONType, nullable=False),
    Column("note", Redacted(), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    UniqueConstraint("program_id", "version", name="uq_sv_bonus_rules_version"),
    UniqueConstraint("program_id", "effective_from", name="uq_sv_bonus_rules_from"),
    CheckConstraint("version >= 1", name="version"),
)

# One account per member of a program. The figures are a cache of the entries, kept by every
# entry in the same transaction; `patron stored-value verify` recomputes them.
sv_accounts = Table(
    "sv_accounts",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False, unique=True),
    Column("principal", Money, nullable=False, server_default="0"),
    Column("bonus", Money, nullable=False, server_default="0"),
    Column("principal_held", Money, nullable=False, server_default="0"),
    Column("bonus_held", Money, nullable=False, server_default="0"),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("principal >= 0", name="principal"),
    CheckConstraint("bonus >= 0", name="bonus"),
    CheckConstraint("principal_held >= 0", name="principal_held"),
    CheckConstraint("bonus_held >= 0", name="bonus_held"),
)

_OP_KINDS = "('topup', 'spend', 'hold', 'refund', 'cashout', 'adjust', 'expire')"

# Top-ups, spends, holds, refunds to the card, cash-backs of a top-up and adjustments, each under
# the caller's idempotency key: the same key with the same request returns the first result,
# with another request a 409. Bonus expiries are operations too, under a key of their own.
sv_operations = Table(
    "sv_operations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("account_id", ForeignKey("sv_accounts.id"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    # topup: money paid; spend, hold, refund: principal + bonus; cashout: principal paid back;
    # adjust: signed; expire: the bonus expired
    Column("amount", Money, nullable=False),
    Column("principal", Money, nullable=False),
    Column("bonus", Money, nullable=False),
    # spends and committed holds: what refunds gave back; top-ups: principal paid back in cash
    # and bonus forfeited with it
    Column("refunded_principal", Money, nullable=False, server_default="0"),
    Column("refunded_bonus", Money, nullable=False, server_default="0"),
    Column("status", String(10), nullable=False),  # done | held | committed | released | expired
    Column("hold_expires_at", UTCDateTime, nullable=True),
    Column("store_id", IdType, nullable=True),
    Column("channel", String(32), nullable=True),
    Column("rule_version_id", IdType, nullable=True),  # top-ups: the bonus rules applied
    # refunds: the spend (or committed hold); cashouts: the top-up
    Column("parent_id", ForeignKey("sv_operations.id"), nullable=True, index=True),
    Column("reference", String(64), nullable=True),  # the till's order or receipt
    Column("reason", Redacted(), nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    UniqueConstraint("program_id", "idempotency_key", name="uq_sv_operations_key"),
    Index("ix_sv_operations_open_holds", "status", "hold_expires_at"),
    CheckConstraint(f"kind IN {_OP_KINDS}", name="kind"),
    CheckConstraint("status IN ('done', 'held', 'committed', 'released', 'expired')",
                    name="status"),
    CheckConstraint("kind = 'adjust' OR (amount > 0 AND principal >= 0 AND bonus >= 0)",
                    name="positive"),
    CheckConstraint("kind NOT IN ('spend', 'hold', 'refund', 'expire') "
                    "OR amount = principal + bonus",
                    name="amount_split"),
    CheckConstraint("kind NOT IN ('topup', 'cashout') OR amount = principal", name="amount_paid"),
    CheckConstraint("kind <> 'adjust' OR (amount <> 0 AND amount = principal + bonus "
                    "AND (principal = 0 OR bonus = 0))", name="adjust"),
    # A spend is never refunded beyond what it used, whatever the retries.
    CheckConstraint("refunded_principal >= 0 AND refunded_bonus >= 0 AND (CASE WHEN kind = "
                    "'adjust' THEN refunded_principal + refunded_bonus = 0 ELSE "
                    "refunded_principal <= principal AND refunded_bonus <= bonus END)",
                    name="refunded_at_most_spent"),
    CheckConstraint("kind <> 'hold' OR hold_expires_at IS NOT NULL", name="hold_expiry"),
    CheckConstraint("kind <> 'expire' OR principal = 0", name="expire_bonus_only"),
    CheckConstraint("kind NOT IN ('refund', 'cashout') OR parent_id IS NOT NULL", name="parent"),
)

# What each top-up (or positive adjustment) put on the card, and what is left of it. Spends take
# from the oldest lots first, so each yuan spent is traced to the store that took it in (the
# liability by store and inter-store settlement come from this). left + held never exceed what
# the lot was given.
sv_lots = Table(
    "sv_lots",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("account_id", ForeignKey("sv_accounts.id"), nullable=False),
    Column("operation_id", ForeignKey("sv_operations.id"), nullable=False, unique=True),
    Column("store_id", IdType, nullable=True),  # store of top-up; none: head office / channel
    Column("channel", String(32), nullable=True),
    Column("principal", Money, nullable=False),
    Column("bonus", Money, nullable=False),
    Column("principal_left", Money, nullable=False),
    Column("bonus_left", Money, nullable=False),
    Column("principal_held", Money, nullable=False, server_default="0"),
    Column("bonus_held", Money, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("bonus_expires_at", UTCDateTime, nullable=True),  # None: the bonus never expires
    Index("ix_sv_lots_account", "account_id", "id"),
    Index("ix_sv_lots_store", "store_id"),
    Index("ix_sv_lots_bonus_expires_at", "bonus_expires_at"),
    CheckConstraint("principal >= 0 AND bonus >= 0 AND principal + bonus > 0", name="given"),
    CheckConstraint("principal_left >= 0 AND bonus_left >= 0 AND principal_held >= 0 "
                    "AND bonus_held >= 0", name="non_negative"),
    CheckConstraint("principal_left + principal_held <= principal", name="principal_within"),
    CheckConstraint("bonus_left + bonus_held <= bonus", name="bonus_within"),
    CheckConstraint("bonus_expires_at IS NULL OR bonus_expires_at > created_at",
                    name="bonus_expiry_after_top_up"),
)

_SIGNS = """
(kind = 'topup' AND amount > 0 AND bucket IN ('principal', 'bonus'))
OR (kind = 'spend' AND amount < 0)
OR (kind = 'hold' AND ((bucket IN ('principal', 'bonus') AND amount < 0)
                       OR (bucket IN ('principal_held', 'bonus_held') AND amount > 0)))
OR (kind = 'release' AND ((bucket IN ('principal_held', 'bonus_held') AND amount < 0)
                          OR (bucket IN ('principal', 'bonus') AND amount > 0)))
OR (kind = 'refund' AND amount > 0 AND bucket IN ('principal', 'bonus'))
OR (kind = 'cashout' AND amount < 0 AND bucket = 'principal')
OR (kind = 'forfeit' AND amount < 0 AND bucket = 'bonus')
OR (kind = 'expire' AND amount < 0 AND bucket = 'bonus')
OR (kind = 'adjust' AND amount <> 0 AND bucket IN ('principal', 'bonus'))
"""

# The ledger: append-only, one entry per operation, kind, bucket and lot. An account's figures
# are the sums of its entries by bucket, a lot's figures the sums of its entries.
sv_entries = Table(
    "sv_entries",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("account_id", ForeignKey("sv_accounts.id"), nullable=False),
    Column("operation_id", ForeignKey("sv_operations.id"), nullable=False),
    Column("lot_id", ForeignKey("sv_lots.id"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),
    Column("bucket", String(16), nullable=False),
    Column("amount", Money, nullable=False),
    # Where the money was used: the operation's store; for a refund, the store of the spend it
    # reverses (settlement nets them).
    Column("store_id", IdType, nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("operation_id", "kind", "bucket", "lot_id", name="uq_sv_entries_cause"),
    Index("ix_sv_entries_account", "account_id", "id"),
    Index("ix_sv_entries_created_at", "created_at"),
    CheckConstraint("kind IN ('topup', 'spend', 'hold', 'release', 'refund', 'cashout', "
                    "'forfeit', 'adjust', 'expire')", name="kind"),
    CheckConstraint("bucket IN ('principal', 'bonus', 'principal_held', 'bonus_held')",
                    name="bucket"),
    CheckConstraint(" ".join(_SIGNS.split()), name="sign"),
)
