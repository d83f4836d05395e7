from sqlalchemy import (
    Boolean,
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

from patron.db import IdType, JSONType, Money, UTCDateTime, metadata
from patron.protection.fields import Encrypted, EncryptedDate, EncryptedJSON
from patron.protection.redact import Redacted

# Name, birthday, phone and email are encrypted, each bound to the customer's id
# (docs/data-protection.md#personal-data-at-rest); write them as Sealed((id,), value). Name
# search compares blind indexes of the whole name and of the surname; birthday offers read the
# month and day, kept apart in clear (MMDD) as the masked profile shows them to every role.
customers = Table(
    "customers",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", Encrypted("customers.name"), nullable=True),
    Column("gender", String(1), nullable=True),  # F | M | U
    Column("birthday", EncryptedDate("customers.birthday"), nullable=True),
    Column("phone", Encrypted("customers.phone"), nullable=True),  # E.164, the primary phone
    Column("email", Encrypted("customers.email"), nullable=True),
    Column("name_index", String(32), nullable=True),
    Column("surname_index", String(32), nullable=True),
    Column("birth_md", SmallInteger, nullable=True),  # month * 100 + day
    Column("member_code", String(32), nullable=True, unique=True),
    Column("is_member", Boolean, nullable=False, server_default="0"),
    Column("registration_store_id", ForeignKey("stores.id"), nullable=True, index=True),
    Column("registration_channel_id", ForeignKey("channels.id"), nullable=True, index=True),
    Column("custom_fields", JSONType, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Set when this profile was merged into another; its identities and orders moved there.
    Column("merged_into_id", ForeignKey("customers.id"), nullable=True, index=True),
    # The language messages to the customer are written in (one of patron.i18n.LANGUAGES);
    # NULL: PATRON_DEFAULT_LANGUAGE (docs/messaging.md#languages). Not personal data: kept in
    # clear, emptied by an erasure like every column not kept.
    Column("language", String(8), nullable=True),
    Index("ix_customers_name_index", "name_index"),
    Index("ix_customers_surname_index", "surname_index"),
    Index("ix_customers_birth_md", "birth_md"),
    Index("ix_customers_created_at", "created_at"),
)

# Each (kind, namespace, value) belongs to at most one customer. namespace is "" except for
# identifiers that only mean something within one platform (platform buyer ids: the channel code).
# The value is encrypted, bound to (kind, namespace, value_index); value_index is its blind index
# (patron.protection.fields.blind("identity", value)), which lookups and uniqueness use.
identities = Table(
    "identities",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("kind", String(24), nullable=False),
    Column("namespace", String(32), nullable=False, server_default=""),
    Column("value", Encrypted("identities.value", ("kind", "namespace", "value_index")),
           nullable=False),
    Column("value_index", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("kind", "namespace", "value_index",
                     name="uq_identities_kind_namespace_value_index"),
    # Search finds a customer by any identifier's value without knowing its kind.
    Index("ix_identities_value_index", "value_index"),
)

custom_field_defs = Table(
    "custom_field_defs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("label_zh", String(120), nullable=False),
    Column("label_en", String(120), nullable=False),
    Column("type", String(16), nullable=False),  # text | number | date | choice | multi_choice
    Column("options", JSONType, nullable=False, default=list),
    Column("required", Boolean, nullable=False, server_default="0"),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
)

# Per-customer figures kept current as orders and returns arrive (never by rescanning history);
# `patron customers rebuild-figures` recomputes them from the orders and reports differences.
# `counters` holds the running counters behind favourites and preferences, per dimension
# (store, channel, category, hour, weekday) and key: [orders, spend in fen]. One row per
# customer, rewritten once per ingested chunk (patron.customers.figures).
customer_figures = Table(
    "customer_figures",
    metadata,
    Column("customer_id", ForeignKey("customers.id"), primary_key=True),
    Column("order_count", Integer, nullable=False, server_default="0"),
    Column("purchase_days", Integer, nullable=False, server_default="0"),
    Column("total_spend", Money, nullable=False, server_default="0"),
    Column("refunded", Money, nullable=False, server_default="0"),
    Column("net_spend", Money, nullable=False, server_default="0"),
    Column("first_order_at", UTCDateTime, nullable=True),
    Column("last_order_at", UTCDateTime, nullable=True),
    # The earliest and latest local purchase dates: a new order's day outside them is a new
    # purchase day without looking at the orders.
    Column("first_purchase_day", Date, nullable=True),
    Column("last_purchase_day", Date, nullable=True),
    Column("counters", JSONType, nullable=False, default=dict),
    Index("ix_customer_figures_last_order_at", "last_order_at"),
    Index("ix_customer_figures_net_spend", "net_spend"),
)

customer_merges = Table(
    "customer_merges",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("survivor_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("merged_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("reason", Redacted(), nullable=False),
    # What moved, so that an owner can undo: identity ids, order ids, the survivor's profile
    # before the merge (personal data: encrypted, bound to the merge's id).
    Column("snapshot", EncryptedJSON("customer_merges.snapshot"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("undone_at", UTCDateTime, nullable=True),
    Column("undone_by", String(120), nullable=True),
)
