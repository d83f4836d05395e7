from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, Money, Quantity, UTCDateTime, metadata
from patron.protection.fields import EncryptedJSON
from patron.protection.redact import Redacted

# External order ids are unique per channel, and per store as well for store POS (each till
# numbers its own receipts): scope_store_id is the store for such channels and 0 otherwise.
orders = Table(
    "orders",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("channel_id", ForeignKey("channels.id"), nullable=False),
    Column("scope_store_id", IdType, nullable=False, server_default="0"),
    Column("external_id", String(64), nullable=False),
    Column("store_id", ForeignKey("stores.id"), nullable=True),
    Column("customer_id", ForeignKey("customers.id"), nullable=True),
    Column("purchased_at", UTCDateTime, nullable=False),
    Column("gross_amount", Money, nullable=False),
    Column("discount_amount", Money, nullable=False),
    Column("total_amount", Money, nullable=False),
    Column("refunded_amount", Money, nullable=False, server_default="0"),
    Column("line_count", Integer, nullable=False, server_default="0"),
    # The identifiers the order came with, as sent (resolution may have merged them since).
    # The identifiers the order came with (phones, openids...): encrypted, bound to the order's
    # id (docs/data-protection.md#personal-data-at-rest); write Sealed((id,), [...]).
    Column("identifiers", EncryptedJSON("orders.identifiers"), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("source", String(16), nullable=False),  # api | import | demo
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("channel_id", "scope_store_id", "external_id", name="uq_orders_external"),
    Index("ix_orders_customer_purchased", "customer_id", "purchased_at"),
    Index("ix_orders_purchased_at", "purchased_at"),
    # A store's orders, and its buyers read from the index alone (a store manager's customers
    # as one set: customers.queries.visible_ids).
    Index("ix_orders_store_id_customer_id", "store_id", "customer_id"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("order_id", ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("name", String(200), nullable=True),
    Column("category", String(64), nullable=True),
    Column("quantity", Quantity, nullable=False),
    Column("unit_price", Money, nullable=False),
    Column("discount", Money, nullable=False),
    Column("amount", Money, nullable=False),
    Column("returned_quantity", Quantity, nullable=False, server_default="0"),
    UniqueConstraint("order_id", "line_no", name="uq_order_lines_order_line"),
)

order_payments = Table(
    "order_payments",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("order_id", ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("method", String(16), nullable=False),
    Column("amount", Money, nullable=False),
)

returns = Table(
    "returns",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("order_id", ForeignKey("orders.id"), nullable=False, index=True),
    Column("external_id", String(64), nullable=False),
    Column("returned_at", UTCDateTime, nullable=False),
    Column("amount", Money, nullable=False),
    Column("reason", Redacted(), nullable=True),
    Column("content_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("order_id", "external_id", name="uq_returns_order_external"),
)

return_lines = Table(
    "return_lines",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("return_id", ForeignKey("returns.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("order_line_id", ForeignKey("order_lines.id"), nullable=False, index=True),
    Column("quantity", Quantity, nullable=False),
    Column("amount", Money, nullable=False),
)
