"""loyalty_programs.clawback_policy accepts deduct_from_refund (20 characters)

Revision ID: 0008
Revises: 0007

Written by hand. The third clawback policy (docs/loyalty.md, "Refunds and clawback") widens the
column and its CHECK constraint; no row changes.

PostgreSQL alters both in place. SQLite cannot alter a constraint, and the usual table copy
does not work here: ``loyalty_programs`` is referenced by most loyalty tables, and dropping the
old copy with foreign keys on fails the children's constraints at commit. The constraint only
widens (every stored row still satisfies it), which changes nothing on disk, so the table's
definition is edited in ``sqlite_master`` as SQLite documents for such changes ("ALTER TABLE",
section 7), with the schema version bumped so that every connection reads it again.
"""

from alembic import op
from sqlalchemy import text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD = "clawback_policy IN ('owe', 'write_off')"
NEW = "clawback_policy IN ('owe', 'write_off', 'deduct_from_refund')"
NAME = "ck_loyalty_programs_clawback_policy"


def _sqlite_edit(replacements: list[tuple[str, str]]) -> None:
    conn = op.get_bind()
    sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'loyalty_programs'")).scalar_one()
    for old, new in replacements:
        if old not in sql:
            raise RuntimeError(f"loyalty_programs: {old!r} not found in its definition")
        sql = sql.replace(old, new)
    version = conn.execute(text("PRAGMA schema_version")).scalar_one()
    conn.execute(text("PRAGMA writable_schema = ON"))
    conn.execute(text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                      "AND name = 'loyalty_programs'"), {"sql": sql})
    conn.execute(text(f"PRAGMA schema_version = {int(version) + 1}"))
    conn.execute(text("PRAGMA writable_schema = OFF"))
    bad = conn.execute(text("PRAGMA integrity_check(loyalty_programs)")).scalar_one()
    if bad != "ok":
        raise RuntimeError(f"loyalty_programs: integrity check after the edit: {bad}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE loyalty_programs ALTER COLUMN clawback_policy TYPE VARCHAR(20)")
        op.execute(f"ALTER TABLE loyalty_programs DROP CONSTRAINT {NAME}")
        op.execute(f"ALTER TABLE loyalty_programs ADD CONSTRAINT {NAME} CHECK ({NEW})")
        return
    _sqlite_edit([("clawback_policy VARCHAR(12)", "clawback_policy VARCHAR(20)"), (OLD, NEW)])


def downgrade() -> None:
    # A program on the new policy goes back to owe, the default (its points were settled by
    # its refunds already; later returns fall back to a debt).
    op.execute("UPDATE loyalty_programs SET clawback_policy = 'owe' "
               "WHERE clawback_policy = 'deduct_from_refund'")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE loyalty_programs DROP CONSTRAINT {NAME}")
        op.execute(f"ALTER TABLE loyalty_programs ADD CONSTRAINT {NAME} CHECK ({OLD})")
        op.execute("ALTER TABLE loyalty_programs ALTER COLUMN clawback_policy TYPE VARCHAR(12)")
        return
    _sqlite_edit([("clawback_policy VARCHAR(20)", "clawback_policy VARCHAR(12)"), (NEW, OLD)])
