#!/usr/bin/env bash
# Until Patron's first release the schema lives in one initial migration, regenerated from the
# tables. After the first release, schema changes become new Alembic revisions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f src/patron/migrations/versions/0001_initial_schema.py
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from patron.migrate import alembic_config
command.revision(alembic_config(f"sqlite:///{sys.argv[1]}/autogen.sqlite3"),
                 message="initial schema", autogenerate=True, rev_id="0001")
PY
sed -i '/^Create Date:/d' src/patron/migrations/versions/0001_initial_schema.py
.venv/bin/ruff check --fix --quiet src/patron/migrations/versions/0001_initial_schema.py
rm -rf "$tmp"
