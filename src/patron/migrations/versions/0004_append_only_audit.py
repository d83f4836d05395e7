"""the audit log refuses UPDATE and DELETE

Revision ID: 0004
Revises: 0003

Written by hand, like 0002 (tools/regenerate-initial-migration.sh leaves it alone). The audit
log is append-only: an entry, once written, is never changed or removed by Patron, and the
database refuses it to anyone else who tries through SQL. Its hash chain
(patron.security.audit) shows an entry changed by someone who first dropped these triggers.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_log",)


def upgrade() -> None:
    # patron_refuse_change() is 0002's function (SQLSTATE 23001, restrict_violation).
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION patron_refuse_change()")
        return
    for table in APPEND_ONLY:
        for action in ("update", "delete"):
            op.execute(f"CREATE TRIGGER {table}_no_{action} BEFORE {action.upper()} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: "
                       f"{action.upper()} refused'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        return
    for table in APPEND_ONLY:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
