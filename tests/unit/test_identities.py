import pytest
from hypothesis import given
from hypothesis import strategies as st

from patron.customers.model import (
    IdentifierError,
    UnionFind,
    mask_identifier,
    mask_phone,
    merged_profile,
    normalize_identity,
    normalize_phone,
)


@pytest.mark.parametrize("raw", ["13812341234", "+86 138 1234 1234", "138-1234-1234",
                                 "008613812341234", " 13812341234 "])
def test_chinese_mobile_numbers_normalise_to_e164(raw):
    assert normalize_phone(raw) == "+8613812341234"


@pytest.mark.parametrize("raw,reason", [("12345", "phone_invalid"), ("abc", "phone_invalid"),
                                        ("010 6552 9988", "phone_not_mobile"), ("", "phone_empty")])
def test_bad_phones_are_refused_with_a_reason(raw, reason):
    with pytest.raises(IdentifierError) as err:
        normalize_phone(raw)
    assert err.value.reason == reason


def test_foreign_mobile_is_kept_in_e164():
    assert normalize_phone("+852 6123 4567") == "+85261234567"


def test_platform_buyer_ids_are_scoped_to_their_platform():
    a = normalize_identity("platform_buyer_id", "u1", platform="meituan")
    b = normalize_identity("platform_buyer_id", "u1", platform="eleme")
    assert a.key != b.key
    assert normalize_identity("wechat_openid", "o1", platform="meituan").namespace == ""


def test_member_codes_and_emails_are_case_insensitive():
    assert normalize_identity("member_code", "m001").value == "M001"
    assert normalize_identity("email", "Li.Wei@Example.COM").value == "li.wei@example.com"


def test_masks():
    assert mask_phone("+8613812341234") == "138****1234"
    assert mask_identifier("wechat_openid", "oAbCdEfGhIjK") == "oAb******IjK"


def test_union_find_keeps_the_oldest_profile():
    uf = UnionFind()
    uf.union(7, 3)
    uf.union(9, 7)
    assert uf.find(9) == 3


def test_merge_rule_survivor_values_stand_and_blanks_are_filled():
    survivor = {"name": "王芳", "email": None, "is_member": False,
                "custom_fields": {"size": "M", "pet": ""}}
    merged = {"name": "Wang Fang", "email": "wf@example.com", "is_member": True,
              "custom_fields": {"size": "L", "pet": "cat", "diet": "vegan"}}
    out = merged_profile(survivor, merged)
    assert out["name"] == "王芳"
    assert out["email"] == "wf@example.com"
    assert out["is_member"] is True
    assert out["custom_fields"] == {"size": "M", "pet": "cat", "diet": "vegan"}


def _slow_phone(text: str) -> str | tuple[str, str]:
    from patron.customers.model import _parse_phone

    try:
        return _parse_phone(text, "CN")
    except IdentifierError as exc:
        return ("error", exc.reason)


def _fast_phone(text: str) -> str | tuple[str, str]:
    try:
        return normalize_phone.__wrapped__(text)
    except IdentifierError as exc:
        return ("error", exc.reason)


def test_the_chinese_mobile_shortcut_agrees_with_the_full_parser_on_every_prefix():
    # Every 6-digit prefix of an 11-digit number starting with 1 (the metadata's patterns
    # decide on the first few digits), with a suffix that varies with the prefix; and every
    # 5-digit prefix again after +86.
    import random

    rng = random.Random(11)
    for prefix in range(130_000, 200_000):  # the shortcut takes 13-19 only
        text = f"{prefix}{rng.randrange(100_000):05d}"
        assert _fast_phone(text) == _slow_phone(text), text
    for prefix in range(13_000, 20_000):
        text = f"+86{prefix}{rng.randrange(1_000_000):06d}"
        assert _fast_phone(text) == _slow_phone(text), text


@given(st.text(alphabet="0123456789+ -()８６１３", max_size=16))
def test_the_chinese_mobile_shortcut_agrees_with_the_full_parser_on_any_text(text):
    if text.strip():
        assert _fast_phone(text.strip()) == _slow_phone(text.strip()), text
