"""Personal data taken out of free text before it is stored or logged
(docs/data-protection.md#secrets-and-error-texts).

Error texts (an import's failure, a job's exception) and notes staff type (a merge's reason, a
points adjustment's reason) are not personal data by design, but can carry some: a provider's
reply quoting the phone it refused, a reason "called 138 1234 5678". Their columns' type,
:class:`Redacted`, masks e-mail addresses, phone numbers and Chinese resident identity numbers
on write, the way the masked profile shows them (``138****5678``, ``w***@example.com``), so the
text stays useful to whoever reads it and the value is not stored. Texts that come from outside
and may quote anything (a provider's or webhook receiver's answer) are encrypted instead
(``Encrypted``) and redacted too before they are logged (:func:`scrub`).

Written by hand: what counts as a phone here is Patron's own shapes (mainland mobiles with or
without +86 and separators, E.164 numbers, landlines with an area code).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import JSON, Text
from sqlalchemy.types import TypeDecorator

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# A mainland mobile (11 digits, 1[3-9]...), with an optional +86 / 0086 / 86 prefix and
# spaces or dashes between the usual groups (138 1234 5678, 138-1234-5678).
_CN_MOBILE = re.compile(
    r"(?<![\d])(?:(?:\+|00)?86[ \-]?)?1[3-9]\d[ \-]?\d{4}[ \-]?\d{4}(?!\d)")
# Any other international number: + country code and 6-14 more digits, grouped or not.
_E164 = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ \-]?\d){6,14}(?!\d)")
# A landline with its area code (010-12345678, 0755 8888 6666).
_LANDLINE = re.compile(r"(?<![\d\-])0\d{2,3}[ \-]\d{7,8}(?![\d\-])")
# A resident identity number: 17 digits and a check digit or X.
_RESIDENT_ID = re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])")


def _mask_digits(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if len(digits) <= 7:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def _mask_email(match: re.Match[str]) -> str:
    user, _, domain = match.group(0).partition("@")
    return f"{user[:1]}***@{domain}"


def _mask_resident_id(match: re.Match[str]) -> str:
    text = match.group(0)
    return f"{text[:3]}{'*' * 11}{text[-4:]}"


def scrub(text: str) -> str:
    """The text with e-mail addresses, phone numbers and identity numbers masked."""
    if not text:
        return text
    text = _EMAIL.sub(_mask_email, text)
    text = _RESIDENT_ID.sub(_mask_resident_id, text)
    text = _CN_MOBILE.sub(_mask_digits, text)
    text = _E164.sub(_mask_digits, text)
    return _LANDLINE.sub(_mask_digits, text)


def scrub_json(value: Any) -> Any:
    """:func:`scrub` applied to every string of a JSON value (keys too)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_json(k): scrub_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_json(v) for v in value]
    return value


class Redacted(TypeDecorator[str]):
    """Free text whose personal data is masked on write; ``Redacted(200)`` also cuts it to 200
    characters (what the ``String(200)`` it replaces held)."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(Text())  # PostgreSQL's text takes no length

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        text = scrub(str(value))
        length = getattr(self.impl_instance, "length", None)
        return text[:length] if length else text


class RedactedJSON(TypeDecorator[Any]):
    """A JSON value whose strings are masked on write (an import error's parameters)."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSON(none_as_null=True))
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else scrub_json(value)
