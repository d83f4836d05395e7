"""How segment statements are rendered for the audience replica (DuckDB), without a database:
orders per hour read from their columns, JSON keys as constant paths, FLOAT as DOUBLE, and
whatever the replica does not hold refused so that the database counts instead."""

from __future__ import annotations

import datetime as dt

import pytest

from patron.customers.tables import customer_figures
from patron.security.model import SYSTEM
from patron.segments import compile as sqlc
from patron.segments import replica

AS_OF = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)


def _render(condition: dict) -> tuple[str, list]:
    return replica.render(sqlc.member_ids_select({"conditions": [condition]}, scope=SYSTEM,
                                                 as_of=AS_OF, tz="Asia/Shanghai"))


def test_the_hour_slot_reads_the_hour_columns_not_json() -> None:
    sql, _params = _render({"type": "hour_slot", "slot": "morning", "min_share": 0.5})
    assert "customer_figures.hour_06" in sql and "customer_figures.hour_10" in sql
    assert "counters" not in sql and "json" not in sql.lower()


def test_custom_fields_are_read_with_constant_json_paths() -> None:
    sql, params = _render({"type": "custom_field", "key": "shoe", "op": "gte", "value": 40})
    assert """json_extract_string(customers.custom_fields, '$."shoe"')""" in sql
    assert "AS DOUBLE" in sql and "FLOAT" not in sql
    assert 40.0 in params
    sql, _ = _render({"type": "custom_field", "key": "hobbies", "op": "has", "value": "run"})
    assert """'$."hobbies"[*]'""" in sql


def test_money_and_moments_are_bound_as_the_database_binds_them() -> None:
    _sql, params = _render({"type": "purchases", "measure": "spend", "op": "gte",
                            "value": "12.34", "window": {"last_days": 7}})
    assert 1234 in params  # fen
    moments = [p for p in params if isinstance(p, dt.datetime)]
    assert moments and all(m.utcoffset() == dt.timedelta(0) for m in moments)


def test_what_the_replica_does_not_hold_is_refused() -> None:
    with pytest.raises(replica.CannotAnswer):
        replica._json_path(['a"b'])
    other = customer_figures.c.counters[("store", "SH01", 0)].as_integer()
    from sqlalchemy import select

    with pytest.raises(replica.CannotAnswer):
        replica.render(select(customer_figures.c.customer_id).where(other > 1))


def test_no_replica_file_means_the_database_counts(tmp_path) -> None:
    assert replica.count_and_ids({"conditions": []}, scope=SYSTEM,
                                 max_age=dt.timedelta(days=1),
                                 path=tmp_path / replica.FILE_NAME) is None
    (tmp_path / replica.FILE_NAME).write_bytes(b"not a duckdb file")
    assert replica.count_and_ids({"conditions": []}, scope=SYSTEM,
                                 max_age=dt.timedelta(days=1),
                                 path=tmp_path / replica.FILE_NAME) is None
    replica.reset_readers()
