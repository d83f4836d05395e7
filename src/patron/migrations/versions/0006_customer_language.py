"""customers.language: the language messages to the customer are written in

Revision ID: 0006
Revises: 0005

Written by hand. A nullable column, NULL for every existing profile (they keep getting
PATRON_DEFAULT_LANGUAGE, as before); no index: messages read it by the customer's id. Adding a
nullable column without a default rewrites no rows on either database.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("language", sa.String(8), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35: no table copy (customers is referenced by
    # most tables, which a batch rebuild would have to go around).
    op.execute("ALTER TABLE customers DROP COLUMN language")
