"""Privacy tables: data-subject requests with their deadline, the erasures done (one per
customer), the retention job's runs, and the person-level consent ledger."""

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.redact import Redacted

# A request from a person about their data. Its deadline is fixed when it is received.
privacy_requests = Table(
    "privacy_requests",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("kind", String(12), nullable=False),  # access | correction | deletion
    Column("status", String(8), nullable=False),  # open | done | refused
    Column("source", String(16), nullable=False),  # store | phone | email | app | web | api
    Column("note", Redacted(), nullable=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("completed_by", String(120), nullable=True),
    # What was done: counts, changed field names, the refusal's reason. Never personal data.
    Column("outcome", JSONType, nullable=True),
    Column("created_by", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_privacy_requests_status_due", "status", "due_at"),
    CheckConstraint("kind IN ('access', 'correction', 'deletion')", name="kind"),
    CheckConstraint("status IN ('open', 'done', 'refused')", name="status"),
    CheckConstraint("status = 'open' OR completed_at IS NOT NULL", name="completed"),
)

# One row per anonymised customer: the profile stays (orders, ledgers and reports keep
# pointing at it) but holds no personal data any more.
privacy_erasures = Table(
    "privacy_erasures",
    metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True, autoincrement=False),
    Column("erased_at", UTCDateTime, nullable=False),
    Column("reason", String(12), nullable=False),  # request | retention
    Column("request_id", ForeignKey("privacy_requests.id"), nullable=True, index=True),
    Column("retention_run_id", IdType, nullable=True),
    Column("counts", JSONType, nullable=False),
    Column("actor", String(120), nullable=False),
    CheckConstraint("reason IN ('request', 'retention')", name="reason"),
)

privacy_retention_runs = Table(
    "privacy_retention_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("inactive_days", Integer, nullable=False),
    Column("cutoff", UTCDateTime, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("candidates", Integer, nullable=False, server_default="0"),
    Column("anonymised", Integer, nullable=False, server_default="0"),
    # reason -> customers kept, e.g. {"stored_value_outstanding": 3}
    Column("kept", JSONType, nullable=False, default=dict),
    Column("actor", String(120), nullable=False),
)

# Person-level consents, one row per grant or withdrawal; the latest per purpose is in force.
# Marketing consent per channel lives with each membership (loyalty_consents); this ledger holds
# what concerns the person whatever the brand: personalised marketing from automated scoring
# (PIPL article 24), which is allowed until the person opts out.
privacy_consents = Table(
    "privacy_consents",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), nullable=False),
    Column("purpose", String(16), nullable=False),  # personalisation
    Column("granted", Boolean, nullable=False),
    Column("policy_version", String(32), nullable=True),
    Column("source", String(16), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(120), nullable=False),
    Index("ix_privacy_consents_customer_purpose", "customer_id", "purpose", "id"),
    CheckConstraint("purpose IN ('personalisation')", name="purpose"),
)
