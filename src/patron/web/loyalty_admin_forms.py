"""Form parsing shared by the loyalty administration pages: local date-times, lists typed as
text, rows of (key, factor), and pydantic errors mapped back to the form's own field names.

Nothing here reads the database; the pages call it before a service, so that each mistake is
reported beside the field that holds it rather than as one message for a nested JSON body."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData

from patron.i18n import t
from patron.loyalty.schemas import Factor

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"
_FACTOR = TypeAdapter(Factor)


def text(form: FormData, name: str) -> str:
    raw = form.get(name)
    return raw.strip() if isinstance(raw, str) else ""


def texts(form: FormData, name: str) -> list[str]:
    return [v.strip() if isinstance(v, str) else "" for v in form.getlist(name)]


def words(value: str) -> list[str]:
    """A list typed as text: commas (also the full-width ，and 、), spaces or new lines."""
    return [w for w in re.split(r"[\s,，、;；]+", value) if w]


def local_input(value: dt.datetime | None, tz: str) -> str:
    """A time for an ``<input type="datetime-local">`` in the program's time zone."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(tz)).strftime(LOCAL_FORMAT)


def parse_local(value: str, tz: str) -> dt.datetime:
    """``2026-11-25T10:00`` (or with a space, or a date alone = midnight) in ``tz``."""
    value = value.strip().replace(" ", "T")
    if len(value) == 10:
        value += "T00:00"
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment


def error_text(err: dict[str, Any], lang: str) -> str:
    ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
    reason = err["type"]
    if reason == "value_error":
        reason = "web.error.invalid_value"
    return t(reason, lang, **ctx)


def check_factor(value: str, lang: str) -> tuple[Decimal | None, str | None]:
    try:
        return _FACTOR.validate_python(value), None
    except ValidationError as exc:
        return None, error_text(exc.errors()[0], lang)


def check(adapter: TypeAdapter[Any], value: Any, lang: str) -> tuple[Any, str | None]:
    try:
        return adapter.validate_python(value), None
    except ValidationError as exc:
        return None, error_text(exc.errors()[0], lang)


def map_errors(exc: ValidationError, lang: str,
               name_of: Callable[[tuple[Any, ...]], str]) -> dict[str, str]:
    """A model's errors by the form field ``name_of(loc)`` names (first error per field)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        errors.setdefault(name_of(tuple(err["loc"])), error_text(err, lang))
    return errors
