"""Self-service rules in plain Python: one-time login codes, rate limits, the signed QR member
card payload and the progress towards the next tier. No database, no HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

CODE_DIGITS = 6


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How long a code lives, how often it may be guessed and how often codes may be asked
    for. The limits count the same way whether or not the phone belongs to anyone, so their
    answers reveal nothing about who is a customer."""

    code_minutes: int = 5
    attempts_per_code: int = 5
    resend_seconds: int = 60
    codes_per_phone_per_hour: int = 5
    codes_per_address_per_hour: int = 20
    failures_per_address_per_hour: int = 30


LIMITS = LoginLimits()
HOUR = dt.timedelta(hours=1)


def new_code() -> str:
    """Six random digits from the operating system's CSPRNG."""
    return f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def code_digest(salt: str, phone: str, code: str) -> str:
    """What is stored instead of the code: an HMAC keyed by the code's own random salt over the
    phone and the code (a stolen row does not show the code; only a search over the million
    codes would, within the five minutes the code lives)."""
    return hmac.new(bytes.fromhex(salt), f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def code_matches(salt: str, phone: str, code: str, digest: str) -> bool:
    return hmac.compare_digest(code_digest(salt, phone, code), digest)


def phone_key(phone: str) -> str:
    """The key that rate limits and codes are filed under: the blind index of the E.164 phone
    (keyed: a plain hash of a phone number is undone by trying every number), so the login
    tables hold no phone numbers."""
    from patron.protection.fields import blind

    return blind("selfservice-phone", phone)


def normalize_code(raw: str) -> str | None:
    """The digits typed (spaces and full-width digits forgiven), or None if it cannot be a
    code."""
    digits = "".join(ch for ch in raw.translate(_FULLWIDTH) if not ch.isspace())
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # a message key
    retry_at: dt.datetime

    def minutes(self, now: dt.datetime) -> int:
        return max(1, math.ceil((self.retry_at - now).total_seconds() / 60))


def refuse_code_request(*, now: dt.datetime, sent_to_phone: Sequence[dt.datetime],
                        sent_from_address: Sequence[dt.datetime],
                        limits: LoginLimits = LIMITS) -> Refusal | None:
    """Whether a new code may be sent now, given when codes were sent to this phone and from
    this client address in the last hour (any order)."""
    phone_times = sorted(t for t in sent_to_phone if t > now - HOUR)
    if phone_times and phone_times[-1] > now - dt.timedelta(seconds=limits.resend_seconds):
        return Refusal("selfservice.code_resend_wait",
                       phone_times[-1] + dt.timedelta(seconds=limits.resend_seconds))
    if len(phone_times) >= limits.codes_per_phone_per_hour:
        return Refusal("selfservice.too_many_codes",
                       phone_times[-limits.codes_per_phone_per_hour] + HOUR)
    address_times = sorted(t for t in sent_from_address if t > now - HOUR)
    if len(address_times) >= limits.codes_per_address_per_hour:
        return Refusal("selfservice.too_many_codes",
                       address_times[-limits.codes_per_address_per_hour] + HOUR)
    return None


def refuse_verification(*, now: dt.datetime, failures_from_address: Sequence[dt.datetime],
                        limits: LoginLimits = LIMITS) -> Refusal | None:
    """A client address that guessed wrong too often in the last hour is refused for a while,
    whatever the phone (one address spraying guesses over many phones)."""
    recent = sorted(t for t in failures_from_address if t > now - HOUR)
    if len(recent) >= limits.failures_per_address_per_hour:
        return Refusal("selfservice.too_many_failures",
                       recent[-limits.failures_per_address_per_hour] + HOUR)
    return None


# --- the QR member card ---------------------------------------------------------------------
#
# Payload: ``PM1.<member code>.<expiry, Unix seconds>.<key id>.<signature>``, where the
# signature is the first 15 bytes of HMAC-SHA256(key, "PM1.<member code>.<expiry>.<key id>")
# in RFC 4648 base32 (24 characters, no padding). Every character belongs to the QR
# alphanumeric set (digits, capitals, '.'), which keeps the code small and easy to scan. A
# screenshot stops working at the expiry; tills check the signature with the key the id names.

CARD_PREFIX = "PM1"
SIGNATURE_BYTES = 15


@dataclass(frozen=True, slots=True)
class CardToken:
    member_code: str
    expires_at: dt.datetime
    key_id: int


class CardTokenError(ValueError):
    """``reason``: ``member_card_malformed``, ``member_card_bad_signature``,
    ``member_card_expired`` or ``member_card_unknown_key``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _signature(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()[:SIGNATURE_BYTES]
    return base64.b32encode(digest).decode().rstrip("=")


def sign_card(*, member_code: str, expires_at: dt.datetime, key_id: int, key: bytes) -> str:
    if not member_code.isdigit():
        raise ValueError("member codes are digits")
    body = f"{CARD_PREFIX}.{member_code}.{int(expires_at.timestamp())}.{key_id}"
    return f"{body}.{_signature(key, body)}"


def parse_card(payload: str) -> tuple[CardToken, str, str]:
    """The token's fields, the signed text and the signature, or CardTokenError (malformed)."""
    parts = payload.strip().split(".")
    if (len(parts) != 5 or parts[0] != CARD_PREFIX or not parts[1].isdigit()
            or not parts[2].isdigit() or not parts[3].isdigit() or len(parts[1]) > 32
            or len(parts[2]) > 12 or len(parts[3]) > 9 or len(parts[4]) != 24):
        raise CardTokenError("member_card_malformed")
    expires = dt.datetime.fromtimestamp(int(parts[2]), tz=dt.UTC)
    token = CardToken(member_code=parts[1], expires_at=expires, key_id=int(parts[3]))
    return token, ".".join(parts[:4]), parts[4]


def check_card(payload: str, *, key: bytes | None, now: dt.datetime) -> CardToken:
    """A card payload checked against the key its id names (None: no such key): the member
    code when the signature holds and the card has not expired."""
    token, body, signature = parse_card(payload)
    if key is None:
        raise CardTokenError("member_card_unknown_key")
    if not hmac.compare_digest(_signature(key, body), signature.upper()):
        raise CardTokenError("member_card_bad_signature")
    if token.expires_at <= now:
        raise CardTokenError("member_card_expired")
    return token


# --- progress towards the next tier -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TierProgress:
    basis: str  # growth | spend_12m
    value: Decimal  # the member's figure on the program's basis
    target: Decimal  # the next tier's threshold
    remaining: Decimal  # what is still missing (0 once reached)
    percent: int  # 0..100, from the current tier's threshold to the next one's


def tier_progress(*, basis: str, value: Decimal, current_threshold: Decimal,
                  next_threshold: Decimal) -> TierProgress:
    """How far the member has come from the current tier's threshold to the next one's. A
    member whose figures fell below the current tier's threshold (tiers go down only at a
    review) shows 0%."""
    span = next_threshold - current_threshold
    remaining = max(Decimal(0), next_threshold - value)
    if span <= 0:
        percent = 100 if remaining == 0 else 0
    else:
        share = (value - current_threshold) / span
        percent = int(max(Decimal(0), min(Decimal(1), share)) * 100)
    if remaining > 0:
        percent = min(percent, 99)  # 100% only when the threshold is actually met
    return TierProgress(basis, value, next_threshold, remaining, percent)
