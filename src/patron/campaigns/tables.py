"""Campaign tables: one-off or scheduled sends to a segment, and their recipients.

A recipient is unique per (campaign, customer) and is processed once: in the transaction that
locks the campaign (its budget) and writes the recipient's coupon (idempotency key) and message
(dedupe key) together with its state.
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

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False, index=True),
    # draft -> awaiting_approval -> scheduled -> sending -> sent | stopped; or cancelled
    Column("status", String(20), nullable=False),
    # A segment definition (patron.segments); None: every active member of the program.
    Column("segment", JSONType, nullable=True),
    Column("channel", String(8), nullable=False),
    # The message template of each arm: [{"code": "main", "share": "1", "template": "..."}].
    Column("arms", JSONType, nullable=False),
    Column("control_share", String(12), nullable=False, server_default="0"),
    Column("coupon_template_id", ForeignKey("coupon_templates.id"), nullable=True, index=True),
    # When to send (None: as soon as it is launched, or approved).
    Column("scheduled_at", UTCDateTime, nullable=True),
    # Budget: messages, and value (messages at message_cost each plus the coupons' face value).
    Column("budget_messages", Integer, nullable=True),
    Column("budget_value", Money, nullable=True),
    Column("message_cost", Money, nullable=False, server_default="0"),
    Column("spent_messages", Integer, nullable=False, server_default="0"),
    Column("spent_value", Money, nullable=False, server_default="0"),
    # The audience counted at launch, and the recipients written when sending began.
    Column("audience_size", Integer, nullable=True),
    Column("recipients", Integer, nullable=True),
    Column("launched_by", String(120), nullable=True),
    Column("launched_at", UTCDateTime, nullable=True),
    Column("approved_by", String(120), nullable=True),
    Column("approved_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("stop_reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
    Index("ix_campaigns_status", "status", "scheduled_at"),
    CheckConstraint("status IN ('draft', 'awaiting_approval', 'scheduled', 'sending', 'sent', "
                    "'stopped', 'cancelled')", name="status"),
    CheckConstraint("spent_messages >= 0 AND spent_value >= 0", name="spent"),
    CheckConstraint("budget_messages IS NULL OR spent_messages <= budget_messages",
                    name="within_message_budget"),
    CheckConstraint("budget_value IS NULL OR spent_value <= budget_value",
                    name="within_value_budget"),
)

campaign_recipients = Table(
    "campaign_recipients",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("campaign_id", ForeignKey("campaigns.id"), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("member_id", IdType, nullable=False),
    Column("arm", String(16), nullable=False),
    # pending -> sent | failed | skipped (budget spent, campaign stopped); held_out (control)
    Column("state", String(10), nullable=False),
    Column("reason", String(48), nullable=True),
    Column("error", Redacted(), nullable=True),
    Column("message_id", IdType, nullable=True),
    Column("coupon_issue_id", IdType, nullable=True),
    Column("coupon_code", String(16), nullable=True),
    Column("cost", Money, nullable=False, server_default="0"),
    Column("processed_at", UTCDateTime, nullable=True),
    UniqueConstraint("campaign_id", "customer_id", name="uq_campaign_recipients"),
    Index("ix_campaign_recipients_state", "campaign_id", "state"),
    CheckConstraint("state IN ('pending', 'sent', 'failed', 'skipped', 'held_out')",
                    name="state"),
)
