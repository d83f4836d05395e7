"""The running counters' rules, without a database."""

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from patron.customers.figures import (
    Counters,
    FigureDelta,
    RecordedFigures,
    _bump,
    _window,
    ranked,
)

UTC = dt.UTC


def add_counters(into: Counters, more: Counters) -> Counters:
    """The reference for merging counters: ``into`` with every counter of ``more`` added (what
    recording a chunk's orders into the stored counters must give)."""
    for dim, keys in more.items():
        for key, (count, spend) in keys.items():
            _bump(into, dim, key, spend, count)
    return into


def test_a_delta_counts_each_order_once_per_dimension_in_fen():
    d = FigureDelta()
    at = dt.datetime(2026, 3, 2, 1, 30, tzinfo=UTC)  # Monday 09:30 in Shanghai
    local = at.astimezone(ZoneInfo("Asia/Shanghai"))
    for _ in range(2):
        d.add_order(purchased_at=at, local_time=local, total=Decimal("71.00"),
                    store_code="SH01", channel_code="pos",
                    category_amounts={"coffee": Decimal("56.00"), "bakery": Decimal("15.00")})
    assert d.counters == {"channel": {"pos": [2, 14200]}, "hour": {"09": [2, 14200]},
                          "weekday": {"1": [2, 14200]}, "store": {"SH01": [2, 14200]},
                          "category": {"coffee": [2, 11200], "bakery": [2, 3000]}}
    assert d.days == {dt.date(2026, 3, 2)}


def test_favourite_is_most_orders_then_more_spend_then_smaller_key():
    counters = {"store": {"B": [2, 100], "A": [2, 100], "C": [2, 500], "D": [3, 1]}}
    assert [k for k, _n, _s in ranked(counters, "store")] == ["D", "C", "A", "B"]
    assert ranked(counters, "store")[0] == ("D", 3, Decimal("0.01"))
    assert ranked(counters, "hour") == []


counter_maps = st.dictionaries(
    st.sampled_from(["store", "channel", "hour"]),
    st.dictionaries(st.text(min_size=1, max_size=3),
                    st.tuples(st.integers(0, 50), st.integers(0, 10**6)).map(list),
                    max_size=4),
    max_size=3)


@given(counter_maps, counter_maps)
def test_adding_counters_sums_every_key(a, b):
    import copy

    total = add_counters(copy.deepcopy(a), b)
    for dim in set(a) | set(b):
        for key in set(a.get(dim, {})) | set(b.get(dim, {})):
            x = a.get(dim, {}).get(key, [0, 0])
            y = b.get(dim, {}).get(key, [0, 0])
            assert total[dim][key] == [x[0] + y[0], x[1] + y[1]]


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                    timezones=st.sampled_from([ZoneInfo("Pacific/Kiritimati"),
                                               ZoneInfo("Etc/GMT+12"), ZoneInfo("Asia/Shanghai"),
                                               ZoneInfo("America/New_York"), UTC])))
def test_an_order_on_a_local_date_lies_within_that_dates_window(at):
    # Whatever the store's zone (UTC-12 to UTC+14), an order bought on local date D is found
    # by the search around D, and not by the search around a date three days away.
    instant = at.astimezone(UTC)
    start, end = _window(at.date())
    assert start <= instant < end
    start, end = _window(at.date() + dt.timedelta(days=3))
    assert not start <= instant < end


recorded_orders = st.lists(st.tuples(
    st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1),
                 timezones=st.just(UTC)),
    st.integers(0, 10**6),
    st.sampled_from([None, "SH01", "BJ02"]),
    st.sampled_from(["pos", "tmall"]),
    st.dictionaries(st.sampled_from(["coffee", "bakery", "tea"]), st.integers(0, 10**5),
                    max_size=3)), min_size=1, max_size=6)


@given(counter_maps, recorded_orders)
def test_recorded_orders_count_into_stored_counters_as_their_own_deltas_would(stored, orders):
    # Recording counts a chunk's orders straight into the stored counters: the same counters
    # as adding the counters FigureDelta.add_order builds for those orders, and the same totals.
    import copy

    zone = ZoneInfo("Asia/Shanghai")
    recorded, delta = RecordedFigures(), FigureDelta()
    for at, fen, store, channel, categories in orders:
        local = at.astimezone(zone)
        recorded.add(at, local, fen, store, channel, categories)
        delta.add_order(purchased_at=at, local_time=local, total=Decimal(fen) / 100,
                        store_code=store, channel_code=channel,
                        category_amounts={k: Decimal(v) / 100 for k, v in categories.items()})
    assert recorded.counted_into(copy.deepcopy(stored)) == add_counters(
        copy.deepcopy(stored), delta.counters)
    assert recorded.counted_into({}) == delta.counters
    assert (recorded.order_count, recorded.spend_fen, recorded.days) == (
        delta.order_count, int(delta.total_spend * 100), delta.days)
    assert (recorded.first_at, recorded.last_at) == (delta.first_order_at, delta.last_order_at)
