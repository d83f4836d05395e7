from sqlalchemy import Boolean, Column, ForeignKey, String, Table, UniqueConstraint

from patron.db import IdType, Money, metadata

brands = Table(
    "brands",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
)

regions = Table(
    "regions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
)

stores = Table(
    "stores",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("city", String(64), nullable=False, server_default=""),
    Column("timezone", String(64), nullable=False, server_default="Asia/Shanghai"),
    Column("brand_id", ForeignKey("brands.id"), nullable=True, index=True),
    Column("region_id", ForeignKey("regions.id"), nullable=True, index=True),
    Column("active", Boolean, nullable=False, server_default="1"),
)

# kind: pos | mini_program | app | online_mall | platform. The list is data, so an owner adds a
# platform (a new delivery app, say) without a code change.
channels = Table(
    "channels",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("requires_store", Boolean, nullable=False, server_default="0"),
    Column("active", Boolean, nullable=False, server_default="1"),
)

categories = Table(
    "categories",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(120), nullable=False),
    Column("parent_id", ForeignKey("categories.id"), nullable=True, index=True),
)

products = Table(
    "products",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("category_id", ForeignKey("categories.id"), nullable=True, index=True),
    Column("brand_id", ForeignKey("brands.id"), nullable=True, index=True),
    Column("list_price", Money, nullable=True),
    Column("active", Boolean, nullable=False, server_default="1"),
    UniqueConstraint("sku"),
)
