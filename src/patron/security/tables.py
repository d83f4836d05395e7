from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.fields import Encrypted

# Custom roles an owner builds in the permission matrix: editable permissions (model.COARSE)
# and a data scope: every store, a brand's or a region's stores, or the user's own stores.
roles = Table(
    "roles",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("permissions", JSONType, nullable=False, default=list),
    Column("scope", String(16), nullable=False, server_default="own_stores"),
    Column("brand_id", ForeignKey("brands.id"), nullable=True, index=True),
    Column("region_id", ForeignKey("regions.id"), nullable=True, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(120), nullable=False),
    Column("password_hash", String(200), nullable=False),
    # owner | analyst | manager | cashier, or 'custom' with role_id
    Column("role", String(16), nullable=False),
    Column("role_id", ForeignKey("roles.id"), nullable=True, index=True),
    Column("language", String(5), nullable=False, server_default="zh"),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", UTCDateTime, nullable=True),
    # The optional second factor (RFC 6238 TOTP, owners): the shared secret once confirmed.
    # Encrypted like personal data, bound to the user's id: with it anyone makes the codes.
    Column("totp_secret", Encrypted("users.totp_secret"), nullable=True),
    Column("totp_pending", Encrypted("users.totp_pending"), nullable=True),
    Column("password_changed_at", UTCDateTime, nullable=True),
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
    # When the user last typed their password (sign-in or re-authentication): sensitive
    # actions need it to be recent.
    Column("authenticated_at", UTCDateTime, nullable=True),
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
    # The hash chain (docs/data-protection.md#audit-log): each entry's SHA-256 covers its
    # content and the previous entry's hash, so an entry changed, removed or slipped in breaks
    # every link after it. Ids are consecutive, given out under the chain head's lock.
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_entity", "entity", "entity_id"),
)

# The chain's head: one row (id 1), the last entry's id and hash. Writers lock it (SELECT ...
# FOR UPDATE on PostgreSQL; SQLite has one writer) while they append, so concurrent writers
# still build one chain; `patron audit verify` checks it against the last entry.
audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", IdType, nullable=False),
    Column("last_hash", String(64), nullable=False),
)

# Alerts to owners (issue 6 §3): shown in the UI and sent through the message outbox. A
# ``dedupe_key`` keeps one alert per subject and window.
security_alerts = Table(
    "security_alerts",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("subject", String(120), nullable=False),  # who or what: a username, a key, an ip
    Column("details", JSONType, nullable=False, default=dict),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    Column("acknowledged_by", ForeignKey("users.id"), nullable=True, index=True),
    Index("ix_security_alerts_at", "at"),
)

# Exports larger than PATRON_EXPORT_APPROVAL_ROWS wait for an owner: the request, then the
# owner's decision; the approved export is made once by its requester.
export_requests = Table(
    "export_requests",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("requested_by", ForeignKey("users.id"), nullable=True, index=True),
    Column("requester_name", String(120), nullable=False),
    Column("kind", String(32), nullable=False),  # customers | orders
    Column("fmt", String(8), nullable=False),
    Column("unmasked", Boolean, nullable=False, server_default="0"),
    Column("filters", JSONType, nullable=False, default=dict),
    Column("fingerprint", String(64), nullable=False, index=True),
    Column("rows", Integer, nullable=False),
    Column("status", String(12), nullable=False),  # pending | approved | refused | used
    Column("requested_at", UTCDateTime, nullable=False),
    Column("decided_by", ForeignKey("users.id"), nullable=True, index=True),
    Column("decided_at", UTCDateTime, nullable=True),
)

# Requests counted per route group, client address and minute, for the rate limits of sign-in,
# one-time codes and public routes (security.ratelimit): in the database, so that the limit
# holds across every server process. The address is kept as a blind index; rows older than the
# previous window are removed as new ones are written.
rate_limit_windows = Table(
    "rate_limit_windows",
    metadata,
    Column("route_group", String(32), primary_key=True),
    Column("client_key", String(32), primary_key=True),
    Column("window", BigInteger, primary_key=True),  # seconds since the epoch // window length
    Column("hits", Integer, nullable=False),
)
