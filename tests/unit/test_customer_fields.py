"""Custom field values and profile edits checked without a database."""

import datetime as dt

import pytest

from patron.customers.custom_fields import (
    check_definition,
    clean_profile,
    clean_value,
    merge_custom_values,
)
from patron.customers.queries import mask_birthday
from patron.errors import ValidationFailed

DEFS = {
    "shoe_size": {"key": "shoe_size", "type": "number", "options": [], "required": False},
    "skin": {"key": "skin", "type": "choice", "options": ["dry", "oily"], "required": True},
    "likes": {"key": "likes", "type": "multi_choice", "options": ["tea", "cake", "jazz"],
              "required": False},
    "since": {"key": "since", "type": "date", "options": [], "required": False},
    "note": {"key": "note", "type": "text", "options": [], "required": False},
}


def fields_of(exc):
    return {(f.field, f.reason) for f in exc.value.fields}


def test_values_are_stored_in_their_canonical_form():
    assert clean_value(DEFS["shoe_size"], "38") == 38
    assert clean_value(DEFS["shoe_size"], "38.5") == 38.5
    assert clean_value(DEFS["since"], dt.date(2024, 1, 2)) == "2024-01-02"
    assert clean_value(DEFS["likes"], ["jazz", "tea"]) == ["tea", "jazz"]
    assert clean_value(DEFS["note"], "  quiet corner ") == "quiet corner"
    assert clean_value(DEFS["note"], "") is None


@pytest.mark.parametrize(("key", "raw", "reason"), [
    ("shoe_size", "big", "decimal_parsing"),
    ("shoe_size", True, "decimal_parsing"),
    ("since", "2024-13-01", "date_parsing"),
    ("skin", "normal", "custom_field_option_unknown"),
    ("likes", "tea", "list_type"),
    ("likes", ["tea", "golf"], "custom_field_option_unknown"),
    ("note", 5, "string_type"),
])
def test_wrong_value_names_the_field(key, raw, reason):
    with pytest.raises(ValidationFailed) as exc:
        clean_value(DEFS[key], raw)
    assert fields_of(exc) == {(f"custom_fields.{key}", reason)}


def test_unknown_key_and_missing_required_field_are_reported_together():
    with pytest.raises(ValidationFailed) as exc:
        merge_custom_values(DEFS, {}, {"nope": 1, "shoe_size": 40})
    assert fields_of(exc) == {("custom_fields.nope", "custom_field_unknown"),
                              ("custom_fields.skin", "missing")}


def test_clearing_a_value_removes_it_and_keeps_others():
    out = merge_custom_values(DEFS, {"skin": "dry", "note": "x", "old": 1}, {"note": None})
    assert out == {"skin": "dry", "old": 1}


def test_profile_fields_are_normalised_and_checked():
    assert clean_profile({"name": " 王小明 ", "gender": "F", "email": "A@Example.COM",
                          "birthday": "1990-05-17"}) == {
        "name": "王小明", "gender": "F", "email": "a@example.com",
        "birthday": dt.date(1990, 5, 17)}
    with pytest.raises(ValidationFailed) as exc:
        clean_profile({"gender": "X", "email": "nope", "birthday": "2999-01-01",
                       "phone": "13800000000"})
    assert fields_of(exc) == {("gender", "literal_error"), ("email", "email_invalid"),
                              ("birthday", "birthday_out_of_range"),
                              ("phone", "extra_forbidden")}


def test_definition_rules():
    assert check_definition(key="skin", type="choice", options=["a", "b"], label_zh="肤质",
                            label_en="Skin") == []
    reasons = {(f.field, f.reason) for f in check_definition(
        key="Skin Type", type="choice", options=[], label_zh="", label_en="Skin")}
    assert reasons == {("key", "custom_field_key_invalid"),
                       ("options", "custom_field_options_needed"), ("label_zh", "missing")}
    assert [f.reason for f in check_definition(key="n", type="number", options=["x"],
                                               label_zh="n", label_en="n")] == [
        "custom_field_options_not_allowed"]


def test_birthday_mask_keeps_month_and_day():
    assert mask_birthday(dt.date(1990, 5, 17)) == "****-05-17"
    assert mask_birthday(None) is None


@pytest.mark.parametrize(("raw", "stored"), [
    ("zh", "zh"), ("en", "en"), ("EN", "en"), ("zh-CN", "zh"), ("zh_Hans_CN", "zh"),
    ("en-US", "en"), (" en ", "en"), ("", None), (None, None)])
def test_a_language_is_stored_as_patrons_code(raw, stored):
    from patron.customers.model import clean_language

    assert clean_language(raw) == stored
    assert clean_profile({"language": raw}) == {"language": stored}


@pytest.mark.parametrize(("raw", "reason"), [
    ("fr", "literal_error"), ("zh-", "literal_error"), ("chinese", "literal_error"),
    ("e", "literal_error"), (7, "string_type"), (["en"], "string_type")])
def test_a_language_patron_does_not_have_is_refused_naming_the_field(raw, reason):
    with pytest.raises(ValidationFailed) as caught:
        clean_profile({"language": raw})
    (field,) = caught.value.fields
    assert (field.field, field.reason) == ("language", reason)
    if reason == "literal_error":
        assert field.params == {"expected": "zh, en"}


def test_a_merge_keeps_the_survivors_language_and_fills_a_missing_one():
    from patron.customers.model import merged_profile

    assert merged_profile({"language": "zh"}, {"language": "en"})["language"] == "zh"
    assert merged_profile({"language": None}, {"language": "en"})["language"] == "en"
    assert merged_profile({}, {})["language"] is None
