from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.fields import Encrypted

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("url", String(500), nullable=False),
    # Every delivery is signed with it: encrypted like personal data, bound to the endpoint's
    # id (a copy of the database alone cannot forge deliveries). Shown to the owner once, when
    # created or rotated.
    Column("secret", Encrypted("webhook_endpoints.secret"), nullable=False),
    Column("events", JSONType, nullable=False, default=list),
    Column("description", String(200), nullable=True),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=True),
)

# The outbox of webhook deliveries: written in the same transaction as the event, delivered by
# a worker with retries and exponential backoff. While a worker sends one (status 'sending'),
# ``next_attempt_at`` holds the end of its lease: a worker that dies mid-send leaves a delivery
# that falls due again when the lease runs out.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("endpoint_id", ForeignKey("webhook_endpoints.id"), nullable=False, index=True),
    Column("event", String(64), nullable=False),
    Column("payload", JSONType, nullable=False),
    Column("status", String(12), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    # The receiver's answer or the connection's error: it may quote anything, so encrypted,
    # bound to the delivery's id (and masked, patron.protection.redact).
    Column("last_error", Encrypted("webhook_deliveries.last_error"), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    # A redelivery an owner asked for is a new delivery of the same event.
    Column("redelivery_of", ForeignKey("webhook_deliveries.id"), nullable=True, index=True),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
)
