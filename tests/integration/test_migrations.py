"""The migrations build exactly the schema the tables describe, on both databases."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import patron.tables  # noqa: F401
from patron.db import metadata


def test_migrated_schema_matches_the_tables(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, metadata)
    assert diffs == []
