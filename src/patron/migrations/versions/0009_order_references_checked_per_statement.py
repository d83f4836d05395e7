"""PostgreSQL: orders, their lines and payments reference their parents through checks run once
per statement

Revision ID: 0009
Revises: 0008

Written by hand (decision 0017). Five foreign keys ran a trigger per row written, each a probe
of the parent and a ``FOR KEY SHARE`` lock of the parent row: ``orders`` to ``customers``,
``channels`` and ``stores``, ``order_lines`` and ``order_payments`` to ``orders``, six to eight
per order recorded. The customer's lock wrote a WAL record and dirtied the customer's page for
every order, so that a bulk import rewrote a random page of ``customers`` per customer of each
chunk. On PostgreSQL they become checks that run once per statement and keep the guarantees:

- every row inserted into (or updated in) a child names an existing parent: after each
  ``INSERT`` or ``UPDATE`` statement, the statement's distinct parent ids are looked up in one
  query, one primary-key probe each; a missing one fails the statement with SQLSTATE 23503
  (foreign_key_violation), as the foreign key did;
- deleting a referenced parent fails the same way (``customers``, ``channels``, ``stores``:
  the keys had no ON DELETE action); deleting orders deletes their lines and payments (their
  keys' ON DELETE CASCADE). Both first lock the child tables in ``SHARE ROW EXCLUSIVE`` mode,
  which waits for every transaction writing them and holds new ones off until the delete
  commits: the check or the cascade then sees rows written by transactions that were running
  (READ COMMITTED takes a fresh snapshot per statement), and a writer that comes after finds
  the parent gone. That replaces the lock the foreign key took per row;
- a parent's id does not change (the keys refused a change while rows referred to it).

SQLite keeps its foreign keys: its checks are per row whatever form they take.
``patron.orders.tables`` still declares them; ``tests/integration/test_migrations.py``
expects exactly these five absent on PostgreSQL.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# child table -> [(column, parent table, ON DELETE of the foreign key)]
REFERENCES = {
    "orders": [("customer_id", "customers", None), ("channel_id", "channels", None),
               ("store_id", "stores", None)],
    "order_lines": [("order_id", "orders", "CASCADE")],
    "order_payments": [("order_id", "orders", "CASCADE")],
}

# One probe of the parent's primary key per distinct id of the statement. The lateral LIMIT 1
# keeps the planner from hashing the whole parent table, which it would do for a plain
# anti-join, not knowing how few rows a transition table holds. Static statements, so that
# each session plans them once (the single-order API runs these per group of orders).
_PROBE = """
  SELECT n.v INTO missing
  FROM (SELECT DISTINCT {column} AS v FROM new_rows WHERE {column} IS NOT NULL) AS n
  LEFT JOIN LATERAL (SELECT 1 AS hit FROM {parent} AS p WHERE p.id = n.v LIMIT 1) AS p ON true
  WHERE p.hit IS NULL
  LIMIT 1;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'insert or update on table "%" violates its reference to "{parent}"',
                    TG_TABLE_NAME
      USING ERRCODE = 'foreign_key_violation',
            DETAIL = format('Key ({column})=(%s) is not present in table "{parent}".', missing);
  END IF;
"""


def _check_function(name: str, refs: list[tuple[str, str, str | None]]) -> str:
    probes = "".join(_PROBE.format(column=column, parent=parent) for column, parent, _d in refs)
    return (f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $f$\n"
            f"DECLARE\n  missing bigint;\nBEGIN{probes}  RETURN NULL;\nEND\n$f$")


CHECK_FUNCTIONS = {"orders": "patron_check_order_references",
                   "order_lines": "patron_check_order_exists",
                   "order_payments": "patron_check_order_exists"}

# TG_ARGV: (child table, column, action) triples; action 'cascade' deletes the children,
# 'restrict' refuses the delete while children refer to a deleted row. The lock waits for
# every transaction writing the children and holds new ones off until this one commits.
PARENT_DELETE_FUNCTION = """
CREATE FUNCTION patron_delete_referenced() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
  i int := 0;
  found_id bigint;
BEGIN
  WHILE i < TG_NARGS LOOP
    EXECUTE format('LOCK TABLE %I IN SHARE ROW EXCLUSIVE MODE', TG_ARGV[i]);
    i := i + 3;
  END LOOP;
  i := 0;
  WHILE i < TG_NARGS LOOP
    IF TG_ARGV[i + 2] = 'cascade' THEN
      EXECUTE format('DELETE FROM %1$I WHERE %2$I IN (SELECT id FROM old_rows)',
                     TG_ARGV[i], TG_ARGV[i + 1]);
    ELSE
      EXECUTE format('SELECT c.%2$I FROM %1$I AS c WHERE c.%2$I IN (SELECT id FROM old_rows) '
                     'LIMIT 1', TG_ARGV[i], TG_ARGV[i + 1]) INTO found_id;
      IF found_id IS NOT NULL THEN
        RAISE EXCEPTION 'delete on table "%" violates the reference from "%"',
                        TG_TABLE_NAME, TG_ARGV[i]
          USING ERRCODE = 'foreign_key_violation',
                DETAIL = format('Key (id)=(%s) is still referenced from table "%s".',
                                found_id, TG_ARGV[i]);
      END IF;
    END IF;
    i := i + 3;
  END LOOP;
  RETURN NULL;
END
$f$
"""

KEEP_ID_FUNCTION = """
CREATE FUNCTION patron_keep_id() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  RAISE EXCEPTION 'the id of a row of "%" does not change (%)', TG_TABLE_NAME, OLD.id
    USING ERRCODE = 'foreign_key_violation';
END
$f$
"""


def _fk(child: str, column: str, parent: str) -> str:
    return f"fk_{child}_{column}_{parent}"


def _parents() -> dict[str, list[tuple[str, str, str]]]:
    """parent -> [(child, column, 'cascade' | 'restrict')]"""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for child, refs in REFERENCES.items():
        for column, parent, on_delete in refs:
            out.setdefault(parent, []).append(
                (child, column, "cascade" if on_delete == "CASCADE" else "restrict"))
    return out


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_check_function(CHECK_FUNCTIONS["orders"], REFERENCES["orders"]))
    # order_payments shares it: the same column, the same parent
    op.execute(_check_function(CHECK_FUNCTIONS["order_lines"], REFERENCES["order_lines"]))
    op.execute(PARENT_DELETE_FUNCTION)
    op.execute(KEEP_ID_FUNCTION)
    for child, refs in REFERENCES.items():
        for column, parent, _on_delete in refs:
            op.execute(f"ALTER TABLE {child} DROP CONSTRAINT {_fk(child, column, parent)}")
        for event in ("insert", "update"):
            op.execute(f"CREATE TRIGGER {child}_references_{event} AFTER {event.upper()} "
                       f"ON {child} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION {CHECK_FUNCTIONS[child]}()")
    for parent, children in _parents().items():
        args = ", ".join(f"'{name}'" for triple in children for name in triple)
        op.execute(f"CREATE TRIGGER {parent}_referenced_delete AFTER DELETE ON {parent} "
                   "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION patron_delete_referenced({args})")
        op.execute(f"CREATE TRIGGER {parent}_keep_id BEFORE UPDATE OF id ON {parent} "
                   "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
                   "EXECUTE FUNCTION patron_keep_id()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for parent in _parents():
        op.execute(f"DROP TRIGGER IF EXISTS {parent}_keep_id ON {parent}")
        op.execute(f"DROP TRIGGER IF EXISTS {parent}_referenced_delete ON {parent}")
    for child, refs in REFERENCES.items():
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS {child}_references_{event} ON {child}")
        for column, parent, on_delete in refs:
            action = f" ON DELETE {on_delete}" if on_delete else ""
            op.execute(f"ALTER TABLE {child} ADD CONSTRAINT {_fk(child, column, parent)} "
                       f"FOREIGN KEY ({column}) REFERENCES {parent} (id){action}")
    op.execute("DROP FUNCTION IF EXISTS patron_keep_id()")
    op.execute("DROP FUNCTION IF EXISTS patron_delete_referenced()")
    for name in set(CHECK_FUNCTIONS.values()):
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
