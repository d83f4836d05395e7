"""Errors that services raise and the HTTP layer, the CLI and the UI turn into clear messages.

Each carries a stable code and, where it concerns one input, the field; messages are looked up
in the user's language by :mod:`patron.i18n`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    field: str
    reason: str  # a message key in patron/i18n, or a plain sentence
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "reason": self.reason, "params": self.params}


class PatronError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str = "", *, fields: list[FieldError] | None = None,
                 params: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.fields = fields or []
        self.params = params or {}


class ValidationFailed(PatronError):
    status = 422
    code = "validation_failed"


class NotFound(PatronError):
    status = 404
    code = "not_found"


class Conflict(PatronError):
    status = 409
    code = "conflict"

    def __init__(self, message: str = "", *, differences: list[dict[str, Any]] | None = None,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.differences = differences or []


class Forbidden(PatronError):
    status = 403
    code = "forbidden"


class Unauthorized(PatronError):
    status = 401
    code = "unauthorized"


class TooManyAttempts(PatronError):
    status = 429
    code = "too_many_attempts"


class ReauthRequired(PatronError):
    """A sensitive action needs the password typed again (PATRON_REAUTH_MINUTES)."""

    status = 403
    code = "reauth_required"
