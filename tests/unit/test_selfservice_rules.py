"""Self-service rules without a database: login codes, rate limits, the signed QR member card
and the progress towards the next tier."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest

from patron.selfservice.model import (
    CardTokenError,
    LoginLimits,
    check_card,
    code_digest,
    code_matches,
    new_code,
    normalize_code,
    parse_card,
    phone_key,
    refuse_code_request,
    refuse_verification,
    sign_card,
    tier_progress,
)

NOW = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
KEY = bytes(range(32))
PHONE = "+8613812345678"


def ago(**kw: float) -> dt.datetime:
    return NOW - dt.timedelta(**kw)


def test_a_login_code_is_six_random_digits():
    codes = {new_code() for _ in range(300)}
    assert all(re.fullmatch(r"\d{6}", c) for c in codes)
    assert len(codes) > 290  # not a counter, not a constant


def test_the_stored_digest_reveals_neither_code_nor_phone_and_depends_on_the_salt():
    digest = code_digest("00" * 16, PHONE, "123456")
    assert "123456" not in digest and "13812345678" not in digest
    assert code_matches("00" * 16, PHONE, "123456", digest)
    assert not code_matches("00" * 16, PHONE, "123457", digest)
    assert not code_matches("00" * 16, "+8613812345679", "123456", digest)
    assert code_digest("11" * 16, PHONE, "123456") != digest


def test_phone_key_is_a_hash_not_the_phone():
    assert phone_key(PHONE) != phone_key("+8613812345679")
    assert "13812345678" not in phone_key(PHONE) and len(phone_key(PHONE)) == 32
    # keyed (a blind index): not the plain SHA-256 anyone could recompute for every number
    import hashlib

    assert phone_key(PHONE) not in hashlib.sha256(
        f"patron-selfservice:{PHONE}".encode()).hexdigest()


@pytest.mark.parametrize(("typed", "expected"), [
    ("123456", "123456"), (" 123 456 ", "123456"), ("１２３４５６", "123456"),
    ("12345", None), ("1234567", None), ("12a456", None), ("١٢٣٤٥٦", None), ("", None)])
def test_a_typed_code_is_forgiven_spaces_and_full_width_digits_only(typed, expected):
    assert normalize_code(typed) == expected


def test_a_new_code_for_the_same_phone_waits_a_minute():
    refusal = refuse_code_request(now=NOW, sent_to_phone=[ago(seconds=20)], sent_from_address=[])
    assert refusal is not None and refusal.reason == "selfservice.code_resend_wait"
    assert refusal.retry_at == NOW + dt.timedelta(seconds=40) and refusal.minutes(NOW) == 1
    assert refuse_code_request(now=NOW, sent_to_phone=[ago(seconds=61)],
                               sent_from_address=[]) is None


def test_a_phone_gets_at_most_five_codes_an_hour():
    sent = [ago(minutes=m) for m in (50, 40, 30, 20, 10)]
    refusal = refuse_code_request(now=NOW, sent_to_phone=sent, sent_from_address=[])
    assert refusal is not None and refusal.reason == "selfservice.too_many_codes"
    assert refusal.retry_at == ago(minutes=50) + dt.timedelta(hours=1)
    assert refusal.minutes(NOW) == 10
    # An hour later the oldest no longer counts.
    older = [ago(minutes=m) for m in (61, 40, 30, 20, 10)]
    assert refuse_code_request(now=NOW, sent_to_phone=older, sent_from_address=[]) is None


def test_one_client_address_gets_at_most_twenty_codes_an_hour_whatever_the_phones():
    sent = [ago(minutes=2 * i + 1) for i in range(20)]
    refusal = refuse_code_request(now=NOW, sent_to_phone=[], sent_from_address=sent)
    assert refusal is not None and refusal.reason == "selfservice.too_many_codes"
    assert refuse_code_request(now=NOW, sent_to_phone=[], sent_from_address=sent[:19]) is None
    small = LoginLimits(codes_per_address_per_hour=2)
    assert refuse_code_request(now=NOW, sent_to_phone=[], sent_from_address=sent[:2],
                               limits=small) is not None


def test_an_address_that_guessed_wrong_thirty_times_in_an_hour_is_refused():
    failures = [ago(minutes=i + 1) for i in range(30)]
    refusal = refuse_verification(now=NOW, failures_from_address=failures)
    assert refusal is not None and refusal.reason == "selfservice.too_many_failures"
    assert refuse_verification(now=NOW, failures_from_address=failures[:29]) is None


def test_a_card_payload_round_trips_and_uses_only_qr_alphanumeric_characters():
    expires = NOW + dt.timedelta(minutes=5)
    payload = sign_card(member_code="81234567897", expires_at=expires, key_id=3, key=KEY)
    assert re.fullmatch(r"[0-9A-Z .:$%*+/-]+", payload)
    assert payload.startswith(f"PM1.81234567897.{int(expires.timestamp())}.3.")
    token = check_card(payload, key=KEY, now=NOW)
    assert token.member_code == "81234567897" and token.key_id == 3
    assert token.expires_at == expires


def test_a_screenshot_of_the_card_stops_working_when_it_expires():
    expires = NOW + dt.timedelta(minutes=5)
    payload = sign_card(member_code="81234567897", expires_at=expires, key_id=1, key=KEY)
    assert check_card(payload, key=KEY, now=expires - dt.timedelta(seconds=1))
    with pytest.raises(CardTokenError) as err:
        check_card(payload, key=KEY, now=expires)
    assert err.value.reason == "member_card_expired"


def test_a_card_with_another_member_code_or_a_later_expiry_fails_its_signature():
    expires = NOW + dt.timedelta(minutes=5)
    payload = sign_card(member_code="81234567897", expires_at=expires, key_id=1, key=KEY)
    _, code, stamp, kid, sig = payload.split(".")
    for forged in (f"PM1.81234567898.{stamp}.{kid}.{sig}",
                   f"PM1.{code}.{int(stamp) + 86400}.{kid}.{sig}",
                   f"PM1.{code}.{stamp}.2.{sig}"):
        with pytest.raises(CardTokenError) as err:
            check_card(forged, key=KEY, now=NOW)
        assert err.value.reason == "member_card_bad_signature"
    with pytest.raises(CardTokenError) as err:
        check_card(payload, key=bytes(32), now=NOW)
    assert err.value.reason == "member_card_bad_signature"
    with pytest.raises(CardTokenError) as err:
        check_card(payload, key=None, now=NOW)
    assert err.value.reason == "member_card_unknown_key"


@pytest.mark.parametrize("payload", [
    "", "81234567897", "PM1.81234567897", "PM2.1.2.3.AAAAAAAAAAAAAAAAAAAAAAAA",
    "PM1.x.1764000000.1.AAAAAAAAAAAAAAAAAAAAAAAA", "PM1.1.1764000000.1.SHORT",
    "PM1.1.17640000000000000.1.AAAAAAAAAAAAAAAAAAAAAAAA", "PM1.1.-5.1.AAAAAAAAAAAAAAAAAAAAAAAA"])
def test_anything_but_a_card_payload_is_malformed(payload):
    with pytest.raises(CardTokenError) as err:
        parse_card(payload)
    assert err.value.reason == "member_card_malformed"


def test_tier_progress_runs_from_the_current_threshold_to_the_next():
    p = tier_progress(basis="growth", value=Decimal(3000), current_threshold=Decimal(1000),
                      next_threshold=Decimal(5000))
    assert (p.percent, p.remaining, p.target) == (50, Decimal(2000), Decimal(5000))
    first = tier_progress(basis="spend_12m", value=Decimal("250.50"),
                          current_threshold=Decimal(0), next_threshold=Decimal(1000))
    assert (first.percent, first.remaining) == (25, Decimal("749.50"))


def test_tier_progress_is_never_full_before_the_threshold_and_never_negative():
    almost = tier_progress(basis="growth", value=Decimal(4999), current_threshold=Decimal(1000),
                           next_threshold=Decimal(5000))
    assert almost.percent == 99 and almost.remaining == 1
    reached = tier_progress(basis="growth", value=Decimal(5000),
                            current_threshold=Decimal(1000), next_threshold=Decimal(5000))
    assert reached.percent == 100 and reached.remaining == 0
    # Figures fell under the current tier's threshold after a refund (tiers drop only at a review).
    fallen = tier_progress(basis="growth", value=Decimal(400), current_threshold=Decimal(1000),
                           next_threshold=Decimal(5000))
    assert fallen.percent == 0 and fallen.remaining == 4600
