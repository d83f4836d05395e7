"""PostgreSQL: identities and figures reference their customer through checks run once per
statement

Revision ID: 0010
Revises: 0009

Written by hand (decision 0017, which 0009 began). A chunk of a bulk import writes about 1,100
identities and 550 figures rows for new customers; each ran the foreign key's trigger to
``customers`` (a probe and a ``FOR KEY SHARE`` lock of the customer's row, a WAL record each).
They become the checks 0009 gave the orders, with the same guarantees:

- every identity inserted or updated, and every figures row inserted, names an existing
  customer (one probe per distinct customer id of the statement; SQLSTATE 23503 otherwise);
  a figures row's customer never changes (it is the row's key, rebuilt by a merge, never
  updated), which a row trigger refuses, so that the figures' updates of every chunk collect
  no rows for a check;
- deleting a customer that identities or figures refer to fails with 23503, after locking
  both tables (``customers_referenced_delete`` of 0009, now with three child tables).

SQLite keeps its foreign keys.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CHILDREN = ("identities", "customer_figures")

_PROBE_FUNCTION = """
CREATE FUNCTION patron_check_customer_exists() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
  missing bigint;
BEGIN
  SELECT n.v INTO missing
  FROM (SELECT DISTINCT customer_id AS v FROM new_rows WHERE customer_id IS NOT NULL) AS n
  LEFT JOIN LATERAL (SELECT 1 AS hit FROM customers AS p WHERE p.id = n.v LIMIT 1) AS p ON true
  WHERE p.hit IS NULL
  LIMIT 1;
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'insert or update on table "%" violates its reference to "customers"',
                    TG_TABLE_NAME
      USING ERRCODE = 'foreign_key_violation',
            DETAIL = format('Key (customer_id)=(%s) is not present in table "customers".',
                            missing);
  END IF;
  RETURN NULL;
END
$f$
"""

_KEEP_CUSTOMER_FUNCTION = """
CREATE FUNCTION patron_keep_customer_id() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  RAISE EXCEPTION 'the customer of a row of "%" does not change (%)', TG_TABLE_NAME,
                  OLD.customer_id
    USING ERRCODE = 'foreign_key_violation';
END
$f$
"""

_CUSTOMERS_DELETE_0009 = "'orders', 'customer_id', 'restrict'"
_CUSTOMERS_DELETE = (_CUSTOMERS_DELETE_0009 + ", 'identities', 'customer_id', 'restrict', "
                     "'customer_figures', 'customer_id', 'restrict'")


def _fk(table: str) -> str:
    return f"fk_{table}_customer_id_customers"


def _customers_delete_trigger(args: str) -> None:
    op.execute("DROP TRIGGER customers_referenced_delete ON customers")
    op.execute("CREATE TRIGGER customers_referenced_delete AFTER DELETE ON customers "
               "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
               f"EXECUTE FUNCTION patron_delete_referenced({args})")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_PROBE_FUNCTION)
    op.execute(_KEEP_CUSTOMER_FUNCTION)
    for table in CHILDREN:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {_fk(table)}")
        op.execute(f"CREATE TRIGGER {table}_references_insert AFTER INSERT ON {table} "
                   "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                   "EXECUTE FUNCTION patron_check_customer_exists()")
    op.execute("CREATE TRIGGER identities_references_update AFTER UPDATE ON identities "
               "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
               "EXECUTE FUNCTION patron_check_customer_exists()")
    op.execute("CREATE TRIGGER customer_figures_keep_customer BEFORE UPDATE OF customer_id "
               "ON customer_figures FOR EACH ROW "
               "WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id) "
               "EXECUTE FUNCTION patron_keep_customer_id()")
    _customers_delete_trigger(_CUSTOMERS_DELETE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _customers_delete_trigger(_CUSTOMERS_DELETE_0009)
    op.execute("DROP TRIGGER IF EXISTS customer_figures_keep_customer ON customer_figures")
    op.execute("DROP TRIGGER IF EXISTS identities_references_update ON identities")
    for table in CHILDREN:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_references_insert ON {table}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_fk(table)} FOREIGN KEY (customer_id) "
                   "REFERENCES customers (id)")
    op.execute("DROP FUNCTION IF EXISTS patron_keep_customer_id()")
    op.execute("DROP FUNCTION IF EXISTS patron_check_customer_exists()")
