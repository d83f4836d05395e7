"""rfm_scores keyed (customer_id, scope); its separate customer_id index dropped

Revision ID: 0005
Revises: 0004

Written by hand. The nightly RFM refresh (docs/analytics.md) reads and writes the touched
customers' rows of every scope: keyed customer first, those rows sit side by side in the
primary key, which also serves reading one customer's rows, so the index on ``customer_id``
alone is one index fewer to keep up on every row written. On PostgreSQL the table also leaves
a tenth of each page free (``fillfactor``), so that a row re-scored without a new segment is
updated in place (a HOT update touches no index).
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rfm_scores DROP CONSTRAINT pk_rfm_scores")
        op.execute("ALTER TABLE rfm_scores ADD CONSTRAINT pk_rfm_scores "
                   "PRIMARY KEY (customer_id, scope)")
        op.drop_index("ix_rfm_scores_customer_id", table_name="rfm_scores")
        op.execute("ALTER TABLE rfm_scores SET (fillfactor = 90)")
        return
    with op.batch_alter_table("rfm_scores", recreate="always") as batch:
        batch.drop_index("ix_rfm_scores_customer_id")
        batch.drop_constraint("pk_rfm_scores", type_="primary")
        batch.create_primary_key("pk_rfm_scores", ["customer_id", "scope"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rfm_scores RESET (fillfactor)")
        op.execute("ALTER TABLE rfm_scores DROP CONSTRAINT pk_rfm_scores")
        op.execute("ALTER TABLE rfm_scores ADD CONSTRAINT pk_rfm_scores "
                   "PRIMARY KEY (scope, customer_id)")
        op.create_index("ix_rfm_scores_customer_id", "rfm_scores", ["customer_id"])
        return
    with op.batch_alter_table("rfm_scores", recreate="always") as batch:
        batch.drop_constraint("pk_rfm_scores", type_="primary")
        batch.create_primary_key("pk_rfm_scores", ["scope", "customer_id"])
        batch.create_index("ix_rfm_scores_customer_id", ["customer_id"])
