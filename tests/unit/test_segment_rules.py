"""Segment definitions without a database: the shape, operators per type, windows, paths of
errors, and the date arithmetic the SQL compiler relies on."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patron.segments import model as m
from patron.segments.compile import integer_range


def _errors(doc: dict) -> dict[str, str]:
    with pytest.raises(m.ValidationError) as info:
        m.parse(doc)
    return {m.error_path(e["loc"]): e["type"] for e in info.value.errors()}


def test_a_nested_definition_round_trips_as_json() -> None:
    doc = {"match": "any", "conditions": [
        {"type": "group", "match": "all", "conditions": [
            {"type": "purchases", "measure": "spend", "op": "between", "value": [100, 200.5],
             "window": {"from": "2026-01-01", "to": "2026-01-31"}},
            {"type": "tag", "op": "has_any", "tags": ["vip"]}]},
        {"type": "birthday", "within_days": 7}]}
    d = m.parse(doc)
    assert m.parse(d.as_json()) == d
    assert d.as_json()["conditions"][0]["conditions"][0]["window"]["from"] == "2026-01-01"


@pytest.mark.parametrize("doc, path, reason", [
    ({"conditions": [{"type": "nope"}]}, "conditions.0", "union_tag_invalid"),
    ({"conditions": [{"op": "in"}]}, "conditions.0", "union_tag_not_found"),
    ({"conditions": [{"type": "group", "conditions": [
        {"type": "profile", "field": "gender", "op": "gt", "value": 1}]}]},
     "conditions.0.conditions.0", "op_not_for_type"),
    ({"conditions": [{"type": "profile", "field": "is_member", "op": "eq", "value": True}]},
     "conditions.0", "op_not_for_type"),
    ({"conditions": [{"type": "profile", "field": "gender", "op": "in", "value": ["X"]}]},
     "conditions.0", "choice_unknown"),
    ({"conditions": [{"type": "profile", "field": "language", "op": "in", "value": ["fr"]}]},
     "conditions.0", "choice_unknown"),
    ({"conditions": [{"type": "purchases", "measure": "orders", "op": "gte", "value": 1,
                      "window": {"last_days": 7, "from": "2026-01-01", "to": "2026-01-02"}}]},
     "conditions.0.window", "window_ambiguous"),
    ({"conditions": [{"type": "purchases", "measure": "orders", "op": "gte", "value": 1,
                      "window": {"from": "2026-01-01"}}]},
     "conditions.0.window", "window_incomplete"),
    ({"conditions": [{"type": "purchases", "measure": "orders", "op": "gte", "value": 1,
                      "window": {}}]}, "conditions.0.window", "window_empty"),
    ({"conditions": [{"type": "store", "op": "registered", "stores": ["S"],
                      "window": {"last_days": 3}}]}, "conditions.0", "window_not_allowed"),
    ({"conditions": [{"type": "bought", "op": "bought"}]}, "conditions.0",
     "categories_or_skus"),
    ({"conditions": [{"type": "points", "op": "between", "value": [5, 1]}]}, "conditions.0",
     "between_reversed"),
    ({"conditions": [{"type": "rfm_segment", "scope": "city:SH", "op": "in",
                      "segments": ["lost"]}]}, "conditions.0.scope", "rfm_scope"),
    ({"conditions": [{"type": "rfm_segment", "op": "in", "segments": ["vip"]}]},
     "conditions.0.segments.0", "literal_error"),
    ({"conditions": [{"type": "tag", "op": "has_any", "tags": []}]}, "conditions.0.tags",
     "too_short"),
    ({"conditions": [{"type": "consent", "channel": "fax"}]}, "conditions.0.channel",
     "literal_error"),
    ({"conditions": [{"type": "hour_slot", "slot": "lunch", "min_share": 0}]},
     "conditions.0.min_share", "greater_than"),
    ({"conditions": [{"type": "identity", "kind": "phone", "extra": 1}]},
     "conditions.0.extra", "extra_forbidden"),
    ({"match": "both", "conditions": []}, "match", "literal_error"),
])
def test_bad_definitions_name_the_bad_part(doc: dict, path: str, reason: str) -> None:
    assert _errors(doc).get(path) == reason, _errors(doc)


def test_groups_nest_at_most_six_deep() -> None:
    leaf: dict = {"type": "birthday", "within_days": 1}
    for _ in range(6):
        leaf = {"type": "group", "conditions": [leaf]}
    assert "" in _errors({"conditions": [leaf]})  # the root reports it


def test_birthday_keys_wrap_the_year_and_keep_29_february() -> None:
    assert m.birthday_keys(dt.date(2026, 12, 30), 3) == {1230, 1231, 101, 102}
    assert 229 in m.birthday_keys(dt.date(2027, 2, 27), 1)  # no 29th in 2027: the 28th
    assert 229 not in m.birthday_keys(dt.date(2028, 2, 27), 1)  # 2028 has one
    assert 229 in m.birthday_keys(dt.date(2028, 2, 27), 2)


@given(st.dates(min_value=dt.date(1930, 1, 1), max_value=dt.date(2030, 12, 31)),
       st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2040, 12, 31)),
       st.integers(0, 90))
def test_age_bounds_agree_with_age_on(born: dt.date, today: dt.date, years: int) -> None:
    # the compiler's bounds: age >= n  <=>  born <= years_before(today, n)
    assert (m.age_on(born, today) >= years) == (born <= m.years_before(today, years))


@given(st.sampled_from(["eq", "gt", "gte", "lt", "lte", "between"]),
       st.decimals(min_value=-50, max_value=50, places=1), st.integers(-60, 60))
def test_integer_ranges_agree_with_the_number_test(op: str, value, x: int) -> None:  # type: ignore[no-untyped-def]
    v = (value, value + 3) if op == "between" else value
    rng = integer_range(op, v)
    assert rng is not None
    low, high = rng
    inside = (low is None or x >= low) and (high is None or x <= high)
    assert inside == m.number_test(op, v, x)
