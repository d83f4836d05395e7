"""Free text's personal data masked before it is stored or logged (patron.protection.redact)."""

import pytest

from patron.protection.redact import scrub, scrub_json


@pytest.mark.parametrize(("text", "expected"), [
    ("550 5.1.1 <li.wei@example.cn>: mailbox unavailable",
     "550 5.1.1 <l***@example.cn>: mailbox unavailable"),
    ("number 13812345678 is blacklisted", "number 138****5678 is blacklisted"),
    ("to +8613812345678 refused", "to 138****5678 refused"),
    ("to +86 138 1234 5678 refused", "to 138****5678 refused"),
    ("call 138-1234-5678", "call 138****5678"),
    ("008613812345678", "138****5678"),
    ("{'+14155550123': (550, b'no')}", "{'+141****0123': (550, b'no')}"),
    ("office 010-12345678", "office 010****5678"),
    ("id 11010519491231002X on file", "id 110***********002X on file"),
])
def test_phones_emails_and_identity_numbers_are_masked(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "2026-03-02 10:30:00", "order P-20260302-0001 total 1234567.89", "HTTP 503: busy",
    "ORD202603021030001", "import_interrupted", "frequency cap per day reached",
    "points 12345678", "sku 6901234567892",  # an EAN-13 barcode is not a phone
])
def test_other_text_is_left_as_it_is(text):
    assert scrub(text) == text


def test_json_values_are_masked_inside():
    assert scrub_json({"detail": "bad 13912345678", "n": 3, "list": ["a@b.cn"]}) == {
        "detail": "bad 139****5678", "n": 3, "list": ["a***@b.cn"]}
