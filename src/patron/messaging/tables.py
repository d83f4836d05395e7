"""Messaging tables: the outbox of messages to customers, each send attempt, templates, and the
key that signs unsubscribe links.

Every message is a row before anything is sent (``messages``); a worker claims it with a lease,
writes an attempt row before sending and its outcome after (``message_attempts``), so that a
worker that dies at any point leaves enough behind for the next one to decide whether sending
again is safe (docs/messaging.md, "Crashes and the at-least-once boundary").
"""

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.fields import Encrypted, EncryptedJSON

messages = Table(
    "messages",
    metadata,
    Column("id", IdType, primary_key=True),
    # None for a one-time code to a phone no profile owns yet (``to`` is then required).
    Column("customer_id", ForeignKey("customers.id"), nullable=True, index=True),
    # The loyalty program the message speaks for: its membership's consent decides marketing.
    Column("program_id", IdType, nullable=True),
    Column("channel", String(8), nullable=False),
    Column("template", String(64), nullable=False),
    Column("lang", String(2), nullable=False),
    # What identifies or speaks to the person (variables, addresses, the rendered text) is
    # encrypted, bound to the message's id (docs/data-protection.md#personal-data-at-rest).
    Column("variables", EncryptedJSON("messages.variables"), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("dedupe_key", String(160), nullable=False),
    # What the caller asked for, to tell a replay of the same message from a reuse of its key.
    Column("request_hash", String(64), nullable=False),
    # An explicit address given by the caller; otherwise the profile's, found at send time.
    Column("to_address", Encrypted("messages.to_address"), nullable=True),
    # The address the message was (or was to be) sent to.
    Column("address", Encrypted("messages.address"), nullable=True),
    Column("subject", Encrypted("messages.subject"), nullable=True),
    Column("body", Encrypted("messages.body"), nullable=False),
    # Channel-specific rendered parts (WeChat template fields).
    Column("data", EncryptedJSON("messages.data"), nullable=False),
    Column("state", String(10), nullable=False),
    # Why it failed or was suppressed (a stable code) and the detail (an error message, which
    # may quote the provider's answer and so the address: encrypted, and masked).
    Column("reason", String(32), nullable=True),
    Column("error", Encrypted("messages.error"), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # When the next attempt is due; while a worker holds it ('sending'), the end of its lease.
    Column("next_attempt_at", UTCDateTime, nullable=False),
    # A message not sent by then is failed ('expired'): a one-time code is useless later.
    Column("expires_at", UTCDateTime, nullable=True),
    Column("provider_message_id", String(128), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # When a worker first took it to send: frequency caps count marketing messages sent (or
    # being sent) to the customer on the channel since a moment (docs/messaging.md).
    Column("sent_at", UTCDateTime, nullable=True),
    UniqueConstraint("purpose", "dedupe_key", name="uq_messages_purpose_dedupe_key"),
    Index("ix_messages_due", "state", "next_attempt_at"),
    Index("ix_messages_customer_channel_sent", "customer_id", "channel", "sent_at"),
    CheckConstraint("channel IN ('sms', 'email', 'wechat', 'app', 'webhook')", name="channel"),
    CheckConstraint("purpose IN ('otp', 'transactional', 'marketing')", name="purpose"),
    CheckConstraint("state IN ('pending', 'sending', 'delivered', 'failed', 'suppressed')",
                    name="state"),
    CheckConstraint("customer_id IS NOT NULL OR to_address IS NOT NULL", name="recipient"),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint("state NOT IN ('failed', 'suppressed') OR reason IS NOT NULL",
                    name="reason_when_ended"),
)

# One row per send attempt, written before the adapter is called ('started') and completed after
# it answers. A 'started' row with no outcome is an attempt whose worker died mid-send.
message_attempts = Table(
    "message_attempts",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("message_id", ForeignKey("messages.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("adapter", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # started | delivered | retry | failed | unknown (its worker died; decided by the next one)
    Column("outcome", String(10), nullable=False),
    Column("provider_message_id", String(128), nullable=True),
    # The provider's answer: encrypted (bound to the attempt's id) and masked, as messages.error.
    Column("error", Encrypted("message_attempts.error"), nullable=True),
    UniqueConstraint("message_id", "number", name="uq_message_attempts_number"),
    CheckConstraint("outcome IN ('started', 'delivered', 'retry', 'failed', 'unknown')",
                    name="outcome"),
)

message_templates = Table(
    "message_templates",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("description", String(200), nullable=True),
    # The variables the template may use; anything else is refused when it is saved.
    Column("variables", JSONType, nullable=False, default=list),
    Column("subject_zh", Text, nullable=True),
    Column("subject_en", Text, nullable=True),
    Column("body_zh", Text, nullable=False),
    Column("body_en", Text, nullable=True),
    # WeChat: the account's template id and {field: Jinja source} for its data fields.
    Column("wechat_template_id", String(64), nullable=True),
    Column("wechat_fields", JSONType, nullable=False, default=dict),
    # 'template' (official-account template message) or 'subscribe' (a subscription message,
    # WeChat's subscribeMessage.send, to a customer who accepted it in WeChat), and the page a
    # subscription message opens.
    Column("wechat_kind", String(10), nullable=False, server_default="template"),
    Column("wechat_page", String(200), nullable=True),
    # The SMS provider's template id, when not the gateway's default (PATRON_SMS_TEMPLATE_ID).
    Column("sms_template_id", String(64), nullable=True),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
)

# Keys Patron generates for itself, shared by every process through the database (the key that
# signs unsubscribe links).
message_keys = Table(
    "message_keys",
    metadata,
    Column("name", String(32), primary_key=True),
    # Encrypted, bound to the name: a copy of the database alone cannot sign links.
    Column("value", Encrypted("message_keys.value", ("name",)), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Settings of the organisation's message delivery, one JSON value per name ('limits': frequency
# caps and quiet hours, patron.messaging.limits), changed by owners through the API.
message_settings = Table(
    "message_settings",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
)
