"""Rewards catalog (points mall) tables: items a program's members buy with points (or points
and cash), and redemptions holding the member's points and the item's stock together.

The database refuses an oversold item: ``reserved + sold <= stock`` is a CHECK on the item row,
so whatever a writer forgets, no transaction can commit more units than the stock.
"""

from sqlalchemy import (
    BigInteger,
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

from patron.db import IdType, Money, UTCDateTime, metadata

rewards_items = Table(
    "rewards_items",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False),
    Column("code", String(32), nullable=False),
    Column("name", String(120), nullable=False),
    Column("description", Text, nullable=True),
    Column("points_price", BigInteger, nullable=False),
    # Cash paid on top of the points (yuan in Python, integer fen in the database); 0: points only.
    Column("cash_price", Money, nullable=False),
    # NULL: unlimited. Otherwise units ever offered; reserved (held) and sold never exceed it.
    Column("stock", BigInteger, nullable=True),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("sold", BigInteger, nullable=False, server_default="0"),
    # Units one member may have (held or fulfilled) in all, and per calendar period.
    Column("limit_per_member", Integer, nullable=True),
    Column("limit_per_period", Integer, nullable=True),
    Column("limit_period", String(8), nullable=True),  # day | week | month | year
    Column("valid_from", UTCDateTime, nullable=False),
    Column("valid_until", UTCDateTime, nullable=True),
    Column("active", Boolean, nullable=False),
    # How long a redemption holds points and stock before it expires; NULL: the program's.
    Column("hold_minutes", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "code", name="uq_rewards_items_code"),
    CheckConstraint("points_price >= 1 AND points_price <= 100000000", name="points_price"),
    CheckConstraint("cash_price >= 0", name="cash_price"),
    CheckConstraint("stock IS NULL OR stock >= 0", name="stock"),
    CheckConstraint("reserved >= 0 AND sold >= 0", name="reserved_sold"),
    # The rule the catalog exists for: never more units held and sold than the stock.
    CheckConstraint("stock IS NULL OR reserved + sold <= stock", name="not_oversold"),
    CheckConstraint("limit_per_member IS NULL OR limit_per_member >= 1", name="limit_per_member"),
    CheckConstraint("(limit_per_period IS NULL) = (limit_period IS NULL)", name="limit_period"),
    CheckConstraint("limit_per_period IS NULL OR limit_per_period >= 1", name="limit_per_period"),
    CheckConstraint("limit_period IS NULL OR limit_period IN ('day', 'week', 'month', 'year')",
                    name="limit_period_kind"),
    CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="validity"),
    CheckConstraint("hold_minutes IS NULL OR hold_minutes BETWEEN 1 AND 10080",
                    name="hold_minutes"),
)

# One redemption: the loyalty hold on the member's points and the units reserved on the item,
# under the caller's idempotency key. held -> fulfilled (hold committed, units sold) or
# cancelled / expired (hold released, units back in stock).
rewards_redemptions = Table(
    "rewards_redemptions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", IdType, nullable=False),
    Column("item_id", ForeignKey("rewards_items.id"), nullable=False),
    Column("member_id", ForeignKey("loyalty_members.id"), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("cash", Money, nullable=False),
    Column("status", String(10), nullable=False),
    # The loyalty hold (loyalty_operations.id) on the member's points.
    Column("hold_id", ForeignKey("loyalty_operations.id"), nullable=False, unique=True),
    Column("hold_expires_at", UTCDateTime, nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("store_id", IdType, nullable=True),
    Column("reference", String(64), nullable=True),
    Column("actor", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("finished_by", String(120), nullable=True),
    UniqueConstraint("program_id", "idempotency_key", name="uq_rewards_redemptions_key"),
    Index("ix_rewards_redemptions_item_open", "item_id", "status", "hold_expires_at"),
    Index("ix_rewards_redemptions_member_item", "member_id", "item_id", "created_at"),
    Index("ix_rewards_redemptions_open", "status", "hold_expires_at"),
    CheckConstraint("status IN ('held', 'fulfilled', 'cancelled', 'expired')", name="status"),
    CheckConstraint("quantity >= 1", name="quantity"),
    CheckConstraint("points >= 1", name="points"),
    CheckConstraint("cash >= 0", name="cash"),
)
