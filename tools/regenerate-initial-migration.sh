#!/usr/bin/env bash
# Until Patron's first release the schema lives in one initial migration, regenerated from the
# tables. After the first release, schema changes become new Alembic revisions instead.
# Revisions written by hand on top of it (0002: the triggers that make the loyalty ledger
# append-only) are set aside while 0001 is generated and put back unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
versions=src/patron/migrations/versions
mkdir "$tmp/kept"
trap 'mv "$tmp"/kept/*.py "$versions"/ 2>/dev/null || true; rm -rf "$tmp"' EXIT
rm -f "$versions/0001_initial_schema.py"
for f in "$versions"/*.py; do
  [ -e "$f" ] && mv "$f" "$tmp/kept/"
done
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from patron.migrate import alembic_config
command.revision(alembic_config(f"sqlite:///{sys.argv[1]}/autogen.sqlite3"),
                 message="initial schema", autogenerate=True, rev_id="0001")
PY
sed -i '/^Create Date:/d' "$versions/0001_initial_schema.py"
.venv/bin/ruff check --fix --quiet "$versions/0001_initial_schema.py"
