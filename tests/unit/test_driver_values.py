"""Driver values built directly for ingestion's bulk rows equal what the column types bind."""

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from patron.db import Money, Quantity, UTCDateTime, driver_datetime
from patron.orders.model import fen_int
from patron.orders.model import thousandths as thousandths_of

DIALECTS = [sqlite.dialect(), postgresql.psycopg.dialect()]
aware = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1),
                     timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=8)),
                                                dt.timezone(dt.timedelta(hours=-9, minutes=-30))]))


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
@given(value=aware)
def test_driver_datetime_is_what_utcdatetime_binds(dialect, value):
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert driver_datetime(dialect)(value) == bind(value)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_driver_datetime_refuses_naive_times(dialect):
    with pytest.raises(ValueError, match="naive"):
        driver_datetime(dialect)(dt.datetime(2026, 1, 1))


@given(fen=st.integers(min_value=0, max_value=10**13))
def test_fen_is_what_money_binds(fen):
    amount = (Decimal(fen) / 100).quantize(Decimal("0.01"))
    for dialect in DIALECTS:
        bound = Money().dialect_impl(dialect).bind_processor(dialect)(amount)
        assert fen_int(amount) == bound


@given(thousandths=st.integers(min_value=1, max_value=10**12))
def test_thousandths_is_what_quantity_binds(thousandths):
    quantity = Decimal(thousandths) / 1000
    for dialect in DIALECTS:
        bound = Quantity().dialect_impl(dialect).bind_processor(dialect)(quantity)
        assert thousandths_of(quantity) == bound


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_bulk_rows_bind_patron_types_as_the_types_do(dialect):
    import patron.tables  # noqa: F401 - every area's tables
    from patron.db import column_binder, metadata

    values = {UTCDateTime: [None, dt.datetime(2026, 3, 2, 10, 30, 0, 5, tzinfo=dt.UTC),
                            dt.datetime(1999, 12, 31, 23, 59, tzinfo=dt.timezone(
                                dt.timedelta(hours=8)))],
              Money: [None, Decimal("0"), Decimal("12.345"), Decimal("-3.005"), 7, "1.10"],
              Quantity: [None, Decimal("0.35"), Decimal("2"), Decimal("1.0005"), 3]}
    checked = 0
    for table in metadata.sorted_tables:
        for column in table.columns:
            kind = type(column.type)
            if kind not in values:
                continue
            fast = column_binder(column, dialect)
            slow = column.type.dialect_impl(dialect).bind_processor(dialect)
            for v in values[kind]:
                assert fast(v) == slow(v), (table.name, column.name, v)
                checked += 1
    assert checked > 100
