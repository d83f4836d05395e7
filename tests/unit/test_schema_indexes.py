"""Every foreign key is the leading column of an index, so that deleting or merging a row
never scans a whole table to find what refers to it."""

import patron.tables  # noqa: F401
from patron.db import metadata


def leading_columns(table):
    firsts = set()
    for idx in table.indexes:
        firsts.add(list(idx.columns)[0].name)
    for cons in table.constraints:
        cols = list(getattr(cons, "columns", []))
        if cols and cons.__class__.__name__ in ("UniqueConstraint", "PrimaryKeyConstraint"):
            firsts.add(cols[0].name)
    for col in table.columns:
        if col.index or col.unique:
            firsts.add(col.name)
    return firsts


def test_every_foreign_key_column_is_indexed():
    missing = []
    for table in metadata.sorted_tables:
        firsts = leading_columns(table)
        for fk in table.foreign_keys:
            if fk.parent.name not in firsts:
                missing.append(f"{table.name}.{fk.parent.name}")
    assert missing == []
