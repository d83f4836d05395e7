from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata

users = Table(
    "users",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(120), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),  # owner | analyst | manager | cashier
    Column("language", String(5), nullable=False, server_default="zh"),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# The stores a store manager or cashier may see; owners and analysts see every store.
user_stores = Table(
    "user_stores",
    metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("store_id", ForeignKey("stores.id"), primary_key=True, index=True),
)

# Server-side sessions so that logout (and an owner) can end one; the cookie holds a random
# token whose SHA-256 is stored here.
sessions = Table(
    "sessions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("ip", String(64), nullable=True),
)

# API keys for tills and integrations: shown once, stored as a SHA-256 of the secret part.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(120), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),
    Column("role", String(16), nullable=False, server_default="cashier"),
    Column("store_ids", JSONType, nullable=False, default=list),  # [] = every store
    Column("channel_codes", JSONType, nullable=False, default=list),  # [] = every channel
    Column("created_by", ForeignKey("users.id"), nullable=True, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor_type", String(12), nullable=False),  # user | api_key | system
    Column("actor_id", IdType, nullable=True),
    Column("actor_name", String(120), nullable=False),
    Column("action", String(64), nullable=False),
    Column("entity", String(32), nullable=True),
    Column("entity_id", String(64), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("outcome", String(16), nullable=False, server_default="ok"),
    Column("details", JSONType, nullable=False, default=dict),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_entity", "entity", "entity_id"),
)
