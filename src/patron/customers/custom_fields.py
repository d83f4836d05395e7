"""Custom fields that an owner defines without code, and editing a customer's profile.

A definition has a key, labels in both languages, a type (text, number, date, choice,
multi_choice), options for the choice types, and a required flag. Values live in
``customers.custom_fields`` as JSON: text and choice as strings, number as a JSON number, date
as ``YYYY-MM-DD``, multi_choice as a list of strings. A definition is deactivated, never deleted,
so that values written under it keep their meaning.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, insert, select, update

from patron.customers.model import (
    IdentifierError,
    LanguageError,
    clean_language,
    normalize_email,
)
from patron.customers.protect import profile_values
from patron.customers.queries import active_field_defs, visible_customer
from patron.customers.tables import custom_field_defs, customers
from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from patron.i18n import LANGUAGES
from patron.security import audit
from patron.security.model import Actor

FIELD_TYPES = ("text", "number", "date", "choice", "multi_choice")
CHOICE_TYPES = ("choice", "multi_choice")
KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_TEXT = 500
MAX_OPTIONS = 100
# Profile fields a person may edit; phone and member code are identifiers and change only
# through orders and merges, where identity resolution keeps them unique.
EDITABLE = ("name", "gender", "birthday", "email", "language", "custom_fields")
GENDERS = ("F", "M", "U")
_LANGUAGE_PARAMS = {"expected": ", ".join(LANGUAGES)}


def _fail(field_name: str, reason: str, **params: Any) -> ValidationFailed:
    return ValidationFailed("validation_failed",
                            fields=[FieldError(field_name, reason, dict(params))])


def _need(actor: Actor, permission: str) -> None:
    if not actor.can(permission):
        raise Forbidden("forbidden", params={"permission": permission})


# --- values: plain rules, no database ---------------------------------------------------------

def clean_value(definition: Mapping[str, Any], raw: Any) -> Any:
    """One custom field value checked against its definition and put in its stored form;
    ``None`` (or an empty text or list) clears it. Raises ``ValidationFailed`` naming
    ``custom_fields.<key>``."""
    key, kind = definition["key"], definition["type"]
    name = f"custom_fields.{key}"
    if raw is None or raw == "" or raw == []:
        return None
    if kind == "text":
        if not isinstance(raw, str):
            raise _fail(name, "string_type")
        text = raw.strip()
        if len(text) > MAX_TEXT:
            raise _fail(name, "string_too_long", max_length=MAX_TEXT)
        return text or None
    if kind == "number":
        if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
            raise _fail(name, "decimal_parsing")
        try:
            number = Decimal(str(raw).strip())
        except InvalidOperation as exc:
            raise _fail(name, "decimal_parsing") from exc
        if not number.is_finite():
            raise _fail(name, "decimal_parsing")
        # Whole numbers stay exact; fractions are stored as JSON numbers, which is what lets
        # the list filter by range on both databases.
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "date":
        if isinstance(raw, dt.datetime):
            raise _fail(name, "date_parsing")
        if isinstance(raw, dt.date):
            return raw.isoformat()
        try:
            return dt.date.fromisoformat(str(raw).strip()).isoformat()
        except ValueError as exc:
            raise _fail(name, "date_parsing") from exc
    options = list(definition.get("options") or [])
    if kind == "choice":
        if not isinstance(raw, str) or raw not in options:
            raise _fail(name, "custom_field_option_unknown", value=str(raw))
        return raw
    if kind == "multi_choice":
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise _fail(name, "list_type")
        bad = [v for v in raw if v not in options]
        if bad:
            raise _fail(name, "custom_field_option_unknown", value=bad[0])
        return [o for o in options if o in raw]  # in the defined order, once each
    raise _fail(name, "custom_field_type_unknown")


def merge_custom_values(defs: Mapping[str, Mapping[str, Any]], current: Mapping[str, Any],
                        changes: Mapping[str, Any]) -> dict[str, Any]:
    """The customer's custom fields after ``changes``: unknown keys and bad values refused,
    and every required active field filled. Values of deactivated fields are kept as they are.
    """
    errors: list[FieldError] = []
    out = dict(current)
    for key, raw in changes.items():
        if key not in defs:
            errors.append(FieldError(f"custom_fields.{key}", "custom_field_unknown"))
            continue
        try:
            value = clean_value(defs[key], raw)
        except ValidationFailed as exc:
            errors.extend(exc.fields)
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    for key, d in defs.items():
        if d["required"] and out.get(key) in (None, "", []) and not any(
                e.field == f"custom_fields.{key}" for e in errors):
            errors.append(FieldError(f"custom_fields.{key}", "missing"))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    return out


def clean_profile(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Standard profile fields checked and normalised (custom fields are handled apart)."""
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for key, raw in changes.items():
        if key == "custom_fields":
            continue
        if key not in EDITABLE:
            errors.append(FieldError(key, "extra_forbidden"))
        elif key == "name":
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                out["name"] = None
            elif not isinstance(raw, str):
                errors.append(FieldError("name", "string_type"))
            elif len(raw.strip()) > 120:
                errors.append(FieldError("name", "string_too_long", {"max_length": 120}))
            else:
                out["name"] = raw.strip()
        elif key == "gender":
            if raw is not None and raw not in GENDERS:
                errors.append(FieldError("gender", "literal_error",
                                         {"expected": ", ".join(GENDERS)}))
            else:
                out["gender"] = raw
        elif key == "birthday":
            out_day, reason = _birthday(raw)
            if reason:
                errors.append(FieldError("birthday", reason))
            else:
                out["birthday"] = out_day
        elif key == "email":
            if raw is None or raw == "":
                out["email"] = None
            else:
                try:
                    out["email"] = normalize_email(str(raw))
                except IdentifierError as exc:
                    errors.append(FieldError("email", exc.reason))
        elif key == "language":
            try:
                out["language"] = clean_language(raw)
            except LanguageError as exc:
                errors.append(FieldError("language", exc.reason, _LANGUAGE_PARAMS))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    return out


def _birthday(raw: Any) -> tuple[dt.date | None, str | None]:
    if raw is None or raw == "":
        return None, None
    if isinstance(raw, dt.datetime):
        return None, "date_parsing"
    try:
        day = raw if isinstance(raw, dt.date) else dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        return None, "date_parsing"
    if day > dt.date.today() or day.year < 1900:
        return None, "birthday_out_of_range"
    return day, None


def check_definition(*, key: str, type: str, options: list[str], label_zh: str,
                     label_en: str) -> list[FieldError]:
    errors = []
    if not KEY.match(key or ""):
        errors.append(FieldError("key", "custom_field_key_invalid"))
    if type not in FIELD_TYPES:
        errors.append(FieldError("type", "literal_error", {"expected": ", ".join(FIELD_TYPES)}))
    errors.extend(_check_options(type, options))
    for name, label in (("label_zh", label_zh), ("label_en", label_en)):
        if not (label or "").strip():
            errors.append(FieldError(name, "missing"))
        elif len(label) > 120:
            errors.append(FieldError(name, "string_too_long", {"max_length": 120}))
    return errors


def _check_options(type: str, options: list[str]) -> list[FieldError]:
    if type in CHOICE_TYPES:
        cleaned = [o.strip() for o in options if isinstance(o, str)]
        if not cleaned or any(not o for o in cleaned) or len(cleaned) != len(options):
            return [FieldError("options", "custom_field_options_needed")]
        if len(set(cleaned)) != len(cleaned):
            return [FieldError("options", "custom_field_options_duplicate")]
        if len(cleaned) > MAX_OPTIONS or any(len(o) > 120 for o in cleaned):
            return [FieldError("options", "too_long", {"max_length": MAX_OPTIONS})]
    elif options:
        return [FieldError("options", "custom_field_options_not_allowed")]
    return []


# --- definitions: services ----------------------------------------------------------------------

def list_custom_fields(conn: Connection, *, actor: Actor, include_inactive: bool = False
                       ) -> list[dict[str, Any]]:
    q = select(custom_field_defs).order_by(custom_field_defs.c.id)
    if not include_inactive:
        q = q.where(custom_field_defs.c.active.is_(True))
    return [_def_out(r) for r in conn.execute(q).mappings()]


def _def_out(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": int(row["id"]), "key": row["key"], "label_zh": row["label_zh"],
            "label_en": row["label_en"], "type": row["type"], "options": row["options"] or [],
            "required": bool(row["required"]), "active": bool(row["active"]),
            "created_at": row["created_at"]}


def create_custom_field(*, uow: UnitOfWork, actor: Actor, key: str, label_zh: str,
                        label_en: str, type: str, options: list[str] | None = None,
                        required: bool = False) -> dict[str, Any]:
    _need(actor, "admin.custom_fields")
    options = list(options or [])
    errors = check_definition(key=key, type=type, options=options, label_zh=label_zh,
                              label_en=label_en)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    conn = uow.c
    if conn.execute(select(custom_field_defs.c.id).where(custom_field_defs.c.key == key)
                    ).first():
        raise Conflict("custom_field_exists", fields=[FieldError("key", "custom_field_exists")])
    options = [o.strip() for o in options]
    field_id = conn.execute(insert(custom_field_defs).values(
        key=key, label_zh=label_zh.strip(), label_en=label_en.strip(), type=type,
        options=options, required=bool(required), active=True, created_at=utcnow(),
    ).returning(custom_field_defs.c.id)).scalar_one()
    audit.record(conn, actor, "custom_field.created", entity="custom_field",
                 entity_id=field_id, details={"key": key, "type": type, "options": options,
                                              "required": bool(required)})
    row = conn.execute(select(custom_field_defs).where(custom_field_defs.c.id == field_id)
                       ).mappings().one()
    uow.commit()
    return _def_out(row)


UPDATABLE = ("label_zh", "label_en", "options", "required", "active")


def update_custom_field(*, uow: UnitOfWork, actor: Actor, field_id: int,
                        changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change labels, options, the required flag, or (de)activate. The key and type are fixed
    once values exist under them; removing an option leaves values already stored alone."""
    _need(actor, "admin.custom_fields")
    conn = uow.c
    row = conn.execute(select(custom_field_defs).where(custom_field_defs.c.id == field_id)
                       ).mappings().first()
    if row is None:
        raise NotFound("custom_field_not_found")
    unknown = [k for k in changes if k not in UPDATABLE]
    if unknown:
        raise ValidationFailed("validation_failed",
                               fields=[FieldError(k, "custom_field_immutable") for k in unknown])
    merged = {**dict(row), **changes}
    errors = check_definition(key=row["key"], type=row["type"],
                              options=list(merged["options"] or []), label_zh=merged["label_zh"],
                              label_en=merged["label_en"])
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    values = {k: v for k, v in changes.items()}
    if "options" in values:
        values["options"] = [o.strip() for o in values["options"]]
    for k in ("label_zh", "label_en"):
        if k in values:
            values[k] = values[k].strip()
    if values:
        conn.execute(update(custom_field_defs).where(custom_field_defs.c.id == field_id)
                     .values(**values))
        action = ("custom_field.deactivated" if values.get("active") is False
                  else "custom_field.updated")
        audit.record(conn, actor, action, entity="custom_field", entity_id=field_id,
                     details={"key": row["key"], "changes": values})
    out = conn.execute(select(custom_field_defs).where(custom_field_defs.c.id == field_id)
                       ).mappings().one()
    uow.commit()
    return _def_out(out)


def deactivate_custom_field(*, uow: UnitOfWork, actor: Actor, field_id: int) -> dict[str, Any]:
    return update_custom_field(uow=uow, actor=actor, field_id=field_id,
                               changes={"active": False})


# --- editing a customer ---------------------------------------------------------------------

def update_customer(*, uow: UnitOfWork, actor: Actor, customer_id: int,
                    changes: Mapping[str, Any]) -> dict[str, Any]:
    """Edit standard profile fields (name, gender, birthday, email, language) and custom
    fields. Every problem is reported at once, each naming its field; nothing is written unless
    all pass. The audit entry names the changed fields, not their values (they are personal
    data), except the language, which is not: its old and new values are kept."""
    _need(actor, "customers.write")
    conn = uow.c
    current = visible_customer(conn, actor, customer_id)
    if current["merged_into_id"] is not None:
        raise Conflict("customer_merged", params={"survivor_id": current["merged_into_id"]})
    errors: list[FieldError] = []
    profile: dict[str, Any] = {}
    try:
        profile = clean_profile(changes)
    except ValidationFailed as exc:
        errors.extend(exc.fields)
    custom = dict(current["custom_fields"] or {})
    raw_custom = changes.get("custom_fields")
    if raw_custom is not None and not isinstance(raw_custom, Mapping):
        errors.append(FieldError("custom_fields", "dict_type"))
    else:
        try:
            custom = merge_custom_values(active_field_defs(conn), custom, raw_custom or {})
        except ValidationFailed as exc:
            errors.extend(exc.fields)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    changed = sorted(k for k, v in profile.items() if current[k] != v)
    custom_changed = sorted(k for k in set(custom) | set(current["custom_fields"] or {})
                            if custom.get(k) != (current["custom_fields"] or {}).get(k))
    if changed or custom_changed:
        values = {k: profile[k] for k in changed}
        if custom_changed:
            values["custom_fields"] = custom
        conn.execute(update(customers).where(customers.c.id == customer_id)
                     .values(**profile_values(customer_id, values), updated_at=utcnow()))
        details: dict[str, Any] = {"fields": changed, "custom_fields": custom_changed}
        if "language" in changed:
            details["language"] = {"from": current["language"], "to": profile["language"]}
        audit.record(conn, actor, "customer.updated", entity="customer", entity_id=customer_id,
                     details=details)
    uow.commit()
    return {"id": customer_id, "changed": changed, "custom_fields_changed": custom_changed}


def change_language_in(conn: Connection, *, actor: Actor, customer_id: int,
                       language: Any, source: str) -> str | None:
    """Set a customer's message language (None: the default) inside the caller's transaction,
    for callers that are not staff editing the profile (the member on the self-service page).
    The caller has established that ``actor`` may; a bad value is a 422 naming ``language``.
    Audited as ``customer.updated`` when it changes. Returns the language stored."""
    try:
        value = clean_language(language)
    except LanguageError as exc:
        raise _fail("language", exc.reason, **_LANGUAGE_PARAMS) from exc
    current = conn.execute(select(customers.c.language, customers.c.merged_into_id).where(
        customers.c.id == customer_id)).first()
    if current is None:
        raise NotFound("customer_not_found")
    if current.merged_into_id is not None:
        raise Conflict("customer_merged", params={"survivor_id": current.merged_into_id})
    if current.language != value:
        conn.execute(update(customers).where(customers.c.id == customer_id)
                     .values(language=value, updated_at=utcnow()))
        audit.record(conn, actor, "customer.updated", entity="customer", entity_id=customer_id,
                     details={"fields": ["language"], "custom_fields": [], "source": source,
                              "language": {"from": current.language, "to": value}})
    return value


def set_customer_language(*, uow: UnitOfWork, actor: Actor, customer_id: int, language: Any,
                          source: str = "staff") -> dict[str, Any]:
    """Staff set only the message language (the customer page's form): unlike
    :func:`update_customer` it does not ask for required custom fields left empty, which that
    form cannot fill."""
    _need(actor, "customers.write")
    conn = uow.c
    visible_customer(conn, actor, customer_id)
    value = change_language_in(conn, actor=actor, customer_id=customer_id, language=language,
                               source=source)
    uow.commit()
    return {"id": customer_id, "language": value}
