# ruff: noqa: S608 - trigger SQL built from this module's own constant names
"""lifecycle_flow_counts: stage changes per day and flow, kept by triggers

Revision ID: 0012
Revises: 0011

Written by hand (triggers are not part of SQLAlchemy's table metadata; see 0003). The
lifecycle page's flows over the last 30 days counted every transition of the period: after a
first refresh that is one per customer, a million rows grouped on every view (docs/
benchmarks.md). Whatever inserts, deletes or updates ``lifecycle_transitions`` now moves the
count of its (day, from, to) in ``lifecycle_flow_counts`` (from "": a first stage), which
readers who see every customer sum instead. On PostgreSQL one statement per write statement
(statement triggers reading their transition tables, so a first refresh's million
transitions cost one grouped insert), and a ``TRUNCATE`` empties the counts too; SQLite has
row triggers only. The counts of the transitions already recorded are taken here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TABLE = "lifecycle_flow_counts"
KEY = "changed_on, from_stage, to_stage"


def _add(rows: str, sign: str) -> str:
    """Add (or take away) the transitions of ``rows`` from their day's flow counts."""
    return (f"INSERT INTO {TABLE} ({KEY}, customers) "
            f"SELECT changed_on, COALESCE(from_stage, ''), to_stage, {sign}COUNT(*) "
            f"FROM {rows} GROUP BY changed_on, COALESCE(from_stage, ''), to_stage "
            f"ON CONFLICT ({KEY}) DO UPDATE SET customers = "
            f"{TABLE}.customers + excluded.customers;")


_PG_FUNCTIONS = {  # function -> its body
    "patron_lifecycle_flows_added": _add("new_rows", ""),
    "patron_lifecycle_flows_removed": _add("old_rows", "-"),
    "patron_lifecycle_flows_changed": _add("old_rows", "-") + _add("new_rows", ""),
    "patron_lifecycle_flows_truncated": f"DELETE FROM {TABLE};",
}
_PG_TRIGGERS = (  # (trigger, event, transition tables, function)
    ("lifecycle_transitions_flows_insert", "INSERT", "REFERENCING NEW TABLE AS new_rows",
     "patron_lifecycle_flows_added"),
    ("lifecycle_transitions_flows_delete", "DELETE", "REFERENCING OLD TABLE AS old_rows",
     "patron_lifecycle_flows_removed"),
    ("lifecycle_transitions_flows_update", "UPDATE",
     "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
     "patron_lifecycle_flows_changed"),
    ("lifecycle_transitions_flows_truncate", "TRUNCATE", "",
     "patron_lifecycle_flows_truncated"),
)


def _sqlite_add(row: str, step: str) -> str:
    return (f"INSERT INTO {TABLE} ({KEY}, customers) VALUES ({row}.changed_on, "
            f"COALESCE({row}.from_stage, ''), {row}.to_stage, {step}) "
            f"ON CONFLICT ({KEY}) DO UPDATE SET customers = customers + excluded.customers;")


_SQLITE_TRIGGERS = (
    ("lifecycle_transitions_flows_insert", "INSERT", _sqlite_add("NEW", "1")),
    ("lifecycle_transitions_flows_delete", "DELETE", _sqlite_add("OLD", "-1")),
    ("lifecycle_transitions_flows_update", "UPDATE",
     _sqlite_add("OLD", "-1") + " " + _sqlite_add("NEW", "1")),
)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("changed_on", sa.Date(), nullable=False),
        sa.Column("from_stage", sa.String(length=16), nullable=False),
        sa.Column("to_stage", sa.String(length=16), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("changed_on", "from_stage", "to_stage",
                                name=op.f("pk_lifecycle_flow_counts")),
    )
    op.execute(f"INSERT INTO {TABLE} ({KEY}, customers) "
               f"SELECT changed_on, COALESCE(from_stage, ''), to_stage, COUNT(*) "
               f"FROM lifecycle_transitions "
               f"GROUP BY changed_on, COALESCE(from_stage, ''), to_stage")
    if op.get_bind().dialect.name == "postgresql":
        for function, body in _PG_FUNCTIONS.items():
            op.execute(f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger "
                       f"LANGUAGE plpgsql AS $$\nBEGIN\n  {body}\n  RETURN NULL;\nEND\n$$")
        for trigger, event, transition, function in _PG_TRIGGERS:
            op.execute(f"CREATE TRIGGER {trigger} AFTER {event} ON lifecycle_transitions "
                       f"{transition} FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
        return
    for trigger, event, body in _SQLITE_TRIGGERS:
        op.execute(f"CREATE TRIGGER {trigger} AFTER {event} ON lifecycle_transitions "
                   f"FOR EACH ROW BEGIN {body} END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, _event, _transition, _function in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON lifecycle_transitions")
        for function in _PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for trigger, _event, _body in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_table(TABLE)
