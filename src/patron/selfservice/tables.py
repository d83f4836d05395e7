"""Self-service tables: one-time login codes, failed guesses (for the per-address limit),
member sessions and the keys that sign QR member cards.

Phones are filed under a hash (``model.phone_key``) in the code and failure tables; a member
session keeps the verified phone itself, since enrolment and every page resolve the customer
from it.
"""

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Table,
)

from patron.db import IdType, UTCDateTime, metadata
from patron.protection.fields import Encrypted

selfservice_codes = Table(
    "selfservice_codes",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("phone_key", String(64), nullable=False),
    Column("salt", String(32), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("consumed_at", UTCDateTime, nullable=True),
    Column("ip", String(64), nullable=True),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint("expires_at > created_at", name="expiry"),
    Index("ix_selfservice_codes_phone", "phone_key", "created_at"),
    Index("ix_selfservice_codes_ip", "ip", "created_at"),
)

selfservice_failures = Table(
    "selfservice_failures",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("ip", String(64), nullable=True),
    Column("phone_key", String(64), nullable=False),
    Index("ix_selfservice_failures_ip", "ip", "at"),
)

# Separate from staff sessions: its own cookie (path /m), a short lifetime, no role.
selfservice_sessions = Table(
    "selfservice_sessions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    # E.164, proved by the code; encrypted, bound to the token's hash
    Column("phone", Encrypted("selfservice_sessions.phone", ("token_hash",)), nullable=False),
    Column("code_id", ForeignKey("selfservice_codes.id"), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("ip", String(64), nullable=True),
    CheckConstraint("expires_at > created_at", name="expiry"),
)

# HMAC keys for the QR member card; the card names the key id, so a key can be retired while
# cards signed by the next one keep working.
selfservice_card_keys = Table(
    "selfservice_card_keys",
    metadata,
    Column("id", IdType, primary_key=True),
    # 32 random bytes, hex; encrypted, bound to the key's id: a copy of the database alone
    # cannot sign cards.
    Column("secret", Encrypted("selfservice_card_keys.secret"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
)
