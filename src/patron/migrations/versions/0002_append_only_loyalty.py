"""loyalty ledger tables refuse UPDATE and DELETE

Revision ID: 0002
Revises: 0001

Written by hand, not generated: tools/regenerate-initial-migration.sh regenerates 0001 from the
tables and leaves this revision alone (triggers are not part of SQLAlchemy's table metadata, so
autogenerate can neither write nor compare them). docs/loyalty.md, "Append-only tables", lists
the tables and why each is append-only.

Tables whose rows legitimately change are not here: lots (running remaining points, activation,
reminder stamp), members (cached figures, tier), operations (hold status), order earnings (what
returns took back), programs and tiers (settings).
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APPEND_ONLY = ("loyalty_entries", "loyalty_lot_moves", "loyalty_tier_history",
               "loyalty_consents", "loyalty_rule_versions",
               # stored value (docs/stored-value.md): the entries and the bonus rule versions
               "sv_entries", "sv_bonus_rules")

# PostgreSQL: one function for every table; SQLSTATE 23001 (restrict_violation) makes drivers
# report an integrity error, like SQLite's RAISE(ABORT) in a trigger.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION patron_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
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
        op.execute("DROP FUNCTION IF EXISTS patron_refuse_change()")
        return
    for table in APPEND_ONLY:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
