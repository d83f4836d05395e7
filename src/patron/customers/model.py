"""Customer identities and merge rules: plain Python, no database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers

# The kinds of identifier a purchase may carry. platform_buyer_id is scoped to its platform (the
# channel code) because two platforms may hand out the same buyer id to different people.
IDENTITY_KINDS = (
    "phone",
    "member_code",
    "wechat_openid",
    "wechat_unionid",
    "alipay_user_id",
    "platform_buyer_id",
    "email",
)
SCOPED_KINDS = {"platform_buyer_id"}

_TOKEN = re.compile(r"^[A-Za-z0-9_\-.:@]{1,128}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class IdentifierError(ValueError):
    """An identifier that cannot be used; ``reason`` is a message key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    kind: str
    namespace: str
    value: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.value)


# A Chinese mobile number as tills send it: 11 ASCII digits, optionally after +86. Numbers
# beginning 11, 12 or 179 are left to the full parser, which may read those digits as a carrier
# prefix (the national_prefix_for_parsing of CN's metadata), as are all other forms.
_CN_MOBILE_TEXT = re.compile(r"(?:\+86)?(1[3-9][0-9]{9})")
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE,
                 phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


@lru_cache(maxsize=262144)  # repeat customers: parsing is the costliest step of an order
def normalize_phone(raw: str, default_region: str = "CN") -> str:
    """E.164; Chinese numbers must be valid mobile numbers (members are reached by SMS)."""
    text = str(raw).strip()
    if not text:
        raise IdentifierError("phone_empty")
    plain = _CN_MOBILE_TEXT.fullmatch(text) if default_region == "CN" else None
    if plain is not None and not plain.group(1).startswith("179"):
        # The same metadata and type rules as below, without parsing the text (a parse cost
        # three times the type check; a bulk import meets each new customer's phone once).
        number = phonenumbers.PhoneNumber(country_code=86, national_number=int(plain.group(1)))
        kind = phonenumbers.number_type(number)
        if kind == phonenumbers.PhoneNumberType.UNKNOWN:
            raise IdentifierError("phone_invalid")
        if kind not in _MOBILE_TYPES:
            raise IdentifierError("phone_not_mobile")
        return "+86" + plain.group(1)
    return _parse_phone(text, default_region)


def _parse_phone(text: str, default_region: str) -> str:
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise IdentifierError("phone_invalid") from exc
    if not phonenumbers.is_valid_number(number):
        raise IdentifierError("phone_invalid")
    if number.country_code == 86 and phonenumbers.number_type(number) not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise IdentifierError("phone_not_mobile")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    text = str(raw).strip().lower()
    if not _EMAIL.match(text) or len(text) > 200:
        raise IdentifierError("email_invalid")
    return text


def normalize_identity(kind: str, raw: Any, *, platform: str = "") -> Identity:
    if kind not in IDENTITY_KINDS:
        raise IdentifierError("identifier_kind_unknown")
    if raw is None or str(raw).strip() == "":
        raise IdentifierError("identifier_empty")
    if kind == "phone":
        return Identity(kind, "", normalize_phone(raw))
    if kind == "email":
        return Identity(kind, "", normalize_email(raw))
    value = str(raw).strip()
    if not _TOKEN.match(value):
        raise IdentifierError("identifier_invalid")
    if kind == "member_code":
        value = value.upper()
    namespace = platform if kind in SCOPED_KINDS else ""
    if kind in SCOPED_KINDS and not namespace:
        raise IdentifierError("identifier_needs_platform")
    return Identity(kind, namespace, value)


def mask_phone(e164: str | None) -> str | None:
    """138****1234 for a Chinese mobile, the same shape for others: keep the first three and
    last four national digits."""
    if not e164:
        return e164
    digits = e164[3:] if e164.startswith("+86") else e164.lstrip("+")
    if len(digits) <= 7:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return email
    user, domain = email.split("@", 1)
    return f"{user[:1]}***@{domain}"


def mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


def mask_identifier(kind: str, value: str) -> str:
    if kind == "phone":
        return mask_phone(value) or ""
    if kind == "email":
        return mask_email(value) or ""
    if len(value) <= 6:
        return value[:1] + "*" * (len(value) - 1)
    return value[:3] + "*" * (len(value) - 6) + value[-3:]


class UnionFind:
    """Groups of customer ids that one order proved to be the same person.

    The representative of a group is its smallest id: the oldest profile survives a merge, so
    the member code, registration and history people already know stay where they were.
    """

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent.setdefault(x, x)
        if parent != x:
            parent = self.find(parent)
            self.parent[x] = parent
        return parent

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        root, child = (ra, rb) if ra < rb else (rb, ra)
        self.parent[child] = root
        return root


PROFILE_FIELDS = ("name", "gender", "birthday", "phone", "email", "member_code", "is_member",
                  "registration_store_id", "registration_channel_id", "language")

# The languages a customer's messages may be written in: Patron's own (patron.i18n), by the
# same codes. A language tag with a region or script (zh-CN, zh-Hans, en-US, en_GB) is taken as
# its language; anything else is refused rather than guessed.
LANGUAGE_RE = re.compile(r"^([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*$")


class LanguageError(ValueError):
    """Not one of Patron's languages; ``reason`` is a message key."""

    def __init__(self, reason: str = "literal_error") -> None:
        super().__init__(reason)
        self.reason = reason


def clean_language(raw: Any) -> str | None:
    """A customer's language as stored: one of ``patron.i18n.LANGUAGES``, or None (the
    default language) for None or an empty text. Raises ``LanguageError``."""
    from patron.i18n import LANGUAGES

    if raw is None:
        return None
    if not isinstance(raw, str):
        raise LanguageError("string_type")
    text = raw.strip()
    if not text:
        return None
    m = LANGUAGE_RE.match(text)
    code = m.group(1).lower() if m else None
    if code not in LANGUAGES:
        raise LanguageError("literal_error")
    return code


def merged_profile(survivor: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """The merge rule for profile fields: the survivor's values stand; the merged profile only
    fills what the survivor lacks. Custom fields follow the same rule key by key; membership is
    kept if either was a member."""
    out: dict[str, Any] = {}
    for field in PROFILE_FIELDS:
        if field == "is_member":
            out[field] = bool(survivor.get(field)) or bool(merged.get(field))
        elif survivor.get(field) in (None, ""):
            out[field] = merged.get(field)
        else:
            out[field] = survivor.get(field)
    custom = dict(merged.get("custom_fields") or {})
    custom.update({k: v for k, v in (survivor.get("custom_fields") or {}).items()
                   if v not in (None, "", [])})
    out["custom_fields"] = custom
    return out
