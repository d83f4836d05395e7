"""dashboard_activity: an index on (store_id, day)

Revision ID: 0013
Revises: 0012

A store manager's dashboards (their stores' figures of a period: the per-customer reach and
the reach from the marks) read ``dashboard_activity`` by day and dropped the other stores'
rows one by one: a month at a million customers is some 220k rows, 26k of them the busiest
store's (docs/benchmarks.md). With the store first the period of the manager's stores is one
index range each.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_dashboard_activity_store_id_day", "dashboard_activity",
                    ["store_id", "day"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_activity_store_id_day", table_name="dashboard_activity")
