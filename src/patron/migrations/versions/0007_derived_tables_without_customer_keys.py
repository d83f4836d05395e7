"""RFM scores and lifecycle stages, intervals and transitions without foreign keys to customers

Revision ID: 0007
Revises: 0006

Written by hand. These four tables are derived: every row is written by an analytics refresh
from the customers' own figures and orders, and customers are never deleted (a merged profile
stays, with ``merged_into_id``). The foreign key checked every row written against the
customers' primary key: at a million customers the first refresh writes about eight million
such rows (five million scores, a million stages, transitions and intervals), and the checks
were about a quarter of its time (docs/analytics.md, "How it is computed").
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("rfm_scores", "lifecycle_stages", "lifecycle_intervals", "lifecycle_transitions")


def _fk(table: str) -> str:
    return f"fk_{table}_customer_id_customers"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(_fk(table), type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(_fk(table), "customers", ["customer_id"], ["id"])
