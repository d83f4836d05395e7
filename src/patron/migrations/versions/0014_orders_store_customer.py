"""orders: the store index carries the customer too

Revision ID: 0014
Revises: 0013

A store manager's RFM and lifecycle views over a whole scope restrict to the manager's
customers as one set: those registered at the manager's stores and those with an order there
(customers.queries.visible_ids). Through ``(store_id)`` alone the buyers of a busy store were
read from the orders' heap, half a million rows of a million-customer database (over a
gigabyte of pages); with the customer in the index they are read from the index alone. The
new index replaces the old one: every query by store uses its first column as before.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_orders_store_id_customer_id", "orders", ["store_id", "customer_id"])
    op.drop_index("ix_orders_store_id", table_name="orders")


def downgrade() -> None:
    op.create_index("ix_orders_store_id", "orders", ["store_id"])
    op.drop_index("ix_orders_store_id_customer_id", table_name="orders")
