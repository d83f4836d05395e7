"""Form input to validated models, and errors back to messages beside each field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from patron.errors import PatronError
from patron.i18n import t

M = TypeVar("M", bound=BaseModel)


def values(form: FormData, names: tuple[str, ...], *, lists: tuple[str, ...] = (),
           flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """The named fields as typed in (blank optional fields as None), list fields as lists,
    checkboxes as booleans."""
    out: dict[str, Any] = {}
    for name in names:
        raw = form.get(name)
        text = raw.strip() if isinstance(raw, str) else ""
        out[name] = text or None
    for name in lists:
        out[name] = [v.strip() for v in form.getlist(name) if isinstance(v, str) and v.strip()]
    for name in flags:
        out[name] = form.get(name) in ("on", "1", "true")
    return out


def validate(model: type[M], data: dict[str, Any], lang: str
             ) -> tuple[M | None, dict[str, str]]:
    """The model, or None and {field: translated reason}. None values are left out so that
    the model's defaults apply."""
    try:
        return model.model_validate({k: v for k, v in data.items() if v is not None}), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "form"
            ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
            reason = err["type"]
            if reason == "value_error":
                reason = "web.error.invalid_value"
            errors.setdefault(name, t(reason, lang, **ctx))
        return None, errors


def service_errors(exc: PatronError, lang: str, *, default_field: str) -> dict[str, str]:
    """A service's refusal as field messages: its own fields, else the one the form names."""
    if exc.fields:
        return {f.field.split(".")[0]: t(f.reason, lang, **f.params) for f in exc.fields}
    return {default_field: t(exc.message, lang, **exc.params)}
