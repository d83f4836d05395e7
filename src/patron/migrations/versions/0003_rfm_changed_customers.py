# ruff: noqa: S608 - trigger SQL built from this module's own constant names
"""customer_figures notes every changed customer for the next RFM and lifecycle refreshes

Revision ID: 0003
Revises: 0002

Written by hand, not generated (triggers are not part of SQLAlchemy's table metadata; see 0002).
Whatever writes a customer's figures (ingestion, returns, merges and their undo, a rebuild)
adds the customer to ``rfm_changed_customers`` and ``lifecycle_changed_customers``, from which
the nightly RFM and lifecycle refreshes take the customers to look at again
(docs/analytics.md). On PostgreSQL one statement
per write statement (a statement trigger reading its transition table), so that a chunk of
2,000 orders costs one more ``INSERT ... SELECT``, not a trigger call per row; SQLite has only
row triggers, which run in-process.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PG_FUNCTIONS = {
    "patron_rfm_note_new_rows": "new_rows",
    "patron_rfm_note_old_rows": "old_rows",
}
_PG_TRIGGERS = (  # (trigger, event, transition table, function)
    ("customer_figures_rfm_insert", "INSERT", "NEW TABLE AS new_rows",
     "patron_rfm_note_new_rows"),
    ("customer_figures_rfm_update", "UPDATE", "NEW TABLE AS new_rows",
     "patron_rfm_note_new_rows"),
    ("customer_figures_rfm_delete", "DELETE", "OLD TABLE AS old_rows",
     "patron_rfm_note_old_rows"),
)
_SQLITE_TRIGGERS = (("customer_figures_rfm_insert", "INSERT", "NEW"),
                    ("customer_figures_rfm_update", "UPDATE", "NEW"),
                    ("customer_figures_rfm_delete", "DELETE", "OLD"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for function, rows in _PG_FUNCTIONS.items():
            op.execute(f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO rfm_changed_customers (customer_id) SELECT customer_id FROM {rows};
  INSERT INTO lifecycle_changed_customers (customer_id) SELECT customer_id FROM {rows};
  RETURN NULL;
END
$$""")
        for trigger, event, transition, function in _PG_TRIGGERS:
            op.execute(f"CREATE TRIGGER {trigger} AFTER {event} ON customer_figures "
                       f"REFERENCING {transition} FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION {function}()")
        return
    for trigger, event, row in _SQLITE_TRIGGERS:
        op.execute(f"CREATE TRIGGER {trigger} AFTER {event} ON customer_figures BEGIN "
                   f"INSERT INTO rfm_changed_customers (customer_id) "
                   f"VALUES ({row}.customer_id); "
                   f"INSERT INTO lifecycle_changed_customers (customer_id) "
                   f"VALUES ({row}.customer_id); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, _event, _transition, _function in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON customer_figures")
        for function in _PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
        return
    for trigger, _event, _row in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
