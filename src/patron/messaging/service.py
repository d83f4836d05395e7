"""Message use cases: queue a message inside the caller's transaction (:func:`enqueue_in`),
templates, the message list and retries, unsubscribe links and STOP replies.

Sending is :mod:`patron.messaging.delivery`; the rules are :mod:`patron.messaging.model`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from patron.config import get_settings
from patron.customers.protect import identity_is
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, allocate_ids, upsert, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.loyalty.service import invalid, need, request_hash, retrying
from patron.loyalty.tables import loyalty_consents, loyalty_members
from patron.messaging import limits as limits_model
from patron.messaging import model
from patron.messaging.builtin import BUILTIN
from patron.messaging.tables import (
    message_attempts,
    message_keys,
    message_settings,
    message_templates,
    messages,
)
from patron.protection.fields import Sealed
from patron.security import audit
from patron.security.model import Actor

MAX_PAGE_SIZE = 200
UNSUBSCRIBE_SOURCES = ("unsubscribe", "sms_stop")


# --- queueing -----------------------------------------------------------------------------------

def enqueue_in(conn: Connection, *, customer_id: int | None, channel: str, template: str,
               variables: Mapping[str, Any], purpose: str, dedupe_key: str,
               to: str | None = None, program_id: int | None = None, lang: str | None = None,
               expires_at: dt.datetime | None = None, now: dt.datetime | None = None) -> int:
    """Queue one message in the caller's transaction (committed with it, or not at all) and
    return its id. Nothing is sent here: the worker sends it after the commit.

    ``customer_id``: the profile it is for (its phone, email or WeChat openid is found at send
    time), or None with ``to`` for a one-time code to a phone no profile owns yet. ``to``: an
    explicit address (phone in E.164, email, openid) that wins over the profile's.
    ``purpose``: ``otp`` | ``transactional`` | ``marketing`` (consent is checked when it is
    sent). ``dedupe_key``: unique per purpose; queueing the same message under the same key
    again returns the first id, a different message under it is a 409
    (``message_dedupe_key_reused``). ``program_id``: the loyalty program whose membership's
    consent counts (otherwise any of the customer's). ``lang``: ``zh`` or ``en`` to force a
    language; without it, the customer's own (:func:`customer_language`), else
    PATRON_DEFAULT_LANGUAGE. When the template has no text in that language the message is
    written in the default language (docs/messaging.md#languages); the message row records
    the language used. ``expires_at``: not sent after (one-time codes: 10 minutes).

    A template or variables that do not fit raise ``ValidationFailed`` before anything is
    written; the caller's transaction is left usable either way."""
    now = now or utcnow()
    default = get_settings().default_language
    # What the caller asked for, as before profiles had a language: a replay of the same
    # message is the same request even if the customer changed language in between.
    asked = lang or default
    if lang is None and customer_id is not None:
        lang = customer_language(conn, customer_id)
    lang = lang or default
    errors: list[FieldError] = []
    if channel not in model.CHANNELS:
        errors.append(FieldError("channel", "literal_error",
                                 {"expected": ", ".join(model.CHANNELS)}))
    if purpose not in model.PURPOSES:
        errors.append(FieldError("purpose", "literal_error",
                                 {"expected": ", ".join(model.PURPOSES)}))
    if lang not in model.LANGS:
        errors.append(FieldError("lang", "literal_error", {"expected": "zh, en"}))
    if not dedupe_key or len(dedupe_key) > 160:
        errors.append(FieldError("dedupe_key", "message_dedupe_key_length"))
    if customer_id is None and not to:
        errors.append(FieldError("to", "message_recipient_required"))
    if to is not None and not 1 <= len(to) <= 200:
        errors.append(FieldError("to", "message_address_invalid"))
    tpl = load_template(conn, template)
    if tpl is None:
        errors.append(FieldError("template", "message_template_unknown", {"value": template}))
    else:
        errors += model.variable_errors(tpl, variables)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    assert tpl is not None
    if purpose == "otp" and expires_at is None:
        expires_at = now + model.OTP_LIFETIME
    digest = request_hash({"customer_id": customer_id, "channel": channel, "template": template,
                           "variables": dict(variables), "to": to, "program_id": program_id,
                           "lang": asked})
    existing = _by_key(conn, purpose, dedupe_key)
    if existing is not None:
        return _replayed(existing, digest)
    message_id = allocate_ids(conn, messages, 1)[0]
    try:
        rendered = model.render(tpl, channel=channel, lang=lang, fallback=default,
                                purpose=purpose, variables=variables,
                                unsubscribe_url=(unsubscribe_url(conn, message_id)
                                                 if purpose == "marketing" else None))
    except model.RenderError as exc:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("variables", "message_render_failed", {"detail": str(exc)})]) from exc
    ins = upsert(conn, messages).values(
        id=message_id, customer_id=customer_id, program_id=program_id, channel=channel,
        template=template, lang=rendered.lang,
        variables=Sealed((message_id,), dict(variables)),
        purpose=purpose, dedupe_key=dedupe_key, request_hash=digest,
        to_address=Sealed((message_id,), to), subject=Sealed((message_id,), rendered.subject),
        body=Sealed((message_id,), rendered.body),
        data=Sealed((message_id,), rendered.data or {}), state="pending", attempts=0,
        next_attempt_at=now, expires_at=expires_at, created_at=now)
    inserted = conn.execute(ins.on_conflict_do_nothing(index_elements=["purpose", "dedupe_key"])
                            .returning(messages.c.id)).scalar()
    if inserted is None:  # a concurrent transaction queued the same key first
        row = _by_key(conn, purpose, dedupe_key)
        assert row is not None
        return _replayed(row, digest)
    return int(inserted)


def _by_key(conn: Connection, purpose: str, dedupe_key: str) -> Any:
    return conn.execute(select(messages.c.id, messages.c.request_hash).where(
        messages.c.purpose == purpose, messages.c.dedupe_key == dedupe_key)).first()


def _replayed(row: Any, digest: str) -> int:
    if row.request_hash != digest:
        raise Conflict("message_dedupe_key_reused", params={"id": int(row.id)})
    return int(row.id)


# --- what the worker needs ----------------------------------------------------------------------

def _live(conn: Connection, customer_id: int | None) -> tuple[int | None, str | None]:
    """The profile a message is for now (a profile merged since points to its survivor) and
    that profile's stored language: one read per profile on the way."""
    seen = 0
    while customer_id is not None and seen < 20:
        row = conn.execute(select(customers.c.merged_into_id, customers.c.language).where(
            customers.c.id == customer_id)).first()
        if row is None:
            return customer_id, None
        if row.merged_into_id is None:
            return customer_id, row.language
        customer_id, seen = int(row.merged_into_id), seen + 1
    return customer_id, None


def customer_language(conn: Connection, customer_id: int | None) -> str | None:
    """The language the customer asked to be written to in (their profile's, the survivor's
    when the profile was merged since), or None: the default language."""
    from patron.i18n import LANGUAGES

    language = _live(conn, customer_id)[1]
    return language if language in LANGUAGES else None


def live_customer(conn: Connection, customer_id: int | None) -> int | None:
    """The profile a message is for now: a profile merged since points to its survivor."""
    return _live(conn, customer_id)[0]


def consent_rows(conn: Connection, customer_id: int, kind: str,
                 program_id: int | None = None) -> dict[int, tuple[bool, str]]:
    """The consent in force for ``kind`` in each of the customer's memberships (of one program
    when given): {member_id: (granted, source)}."""
    lm, c = loyalty_members.c, loyalty_consents.c
    q = select(c.member_id, c.granted, c.source).join(
        loyalty_members, lm.id == c.member_id).where(lm.customer_id == customer_id,
                                                     c.kind == kind).order_by(c.id)
    if program_id is not None:
        q = q.where(lm.program_id == program_id)
    latest: dict[int, tuple[bool, str]] = {}
    for r in conn.execute(q):
        latest[int(r.member_id)] = (bool(r.granted), r.source)
    return latest


def marketing_refusal(conn: Connection, customer_id: int | None, program_id: int | None,
                      channel: str) -> str | None:
    """Why a marketing message may not go out on ``channel`` now (``no_consent`` or
    ``unsubscribed``), or None when the customer consents to it: the latest consent of that
    channel in the program's membership (any membership when the message names no program)
    is a grant. Frequency caps and quiet hours are applied after it by the worker
    (:func:`delivery_limits`, :func:`sent_in_windows`, :func:`local_timezone`)."""
    kind = model.CONSENT_KIND.get(channel)
    if customer_id is None or kind is None:
        return "no_consent"
    latest = consent_rows(conn, customer_id, kind, program_id)
    if any(granted for granted, _ in latest.values()):
        return None
    if any(source in UNSUBSCRIBE_SOURCES for _, source in latest.values()):
        return "unsubscribed"
    return "no_consent"


def delivery_limits(conn: Connection) -> limits_model.DeliveryLimits:
    """The organisation's frequency caps and quiet hours (none until an owner sets them)."""
    value = conn.execute(select(message_settings.c.value).where(
        message_settings.c.name == "limits")).scalar()
    if value is None:
        return limits_model.NO_LIMITS
    parsed, _errors = limits_model.parse_limits(value)  # checked when saved
    return parsed


def lock_for_caps(conn: Connection, customer_ids: list[int]) -> None:
    """Serialise cap checks per customer across workers on PostgreSQL (transaction-scoped
    advisory locks taken in id order, so that two workers cannot deadlock); SQLite has one
    writer already."""
    if conn.dialect.name != "postgresql":
        return
    from sqlalchemy import text

    for cid in sorted(set(customer_ids)):
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"),
                     {"ns": CAP_LOCK_NAMESPACE, "k": cid % 2**31})


CAP_LOCK_NAMESPACE = 0x4D534743  # "MSGC": advisory locks of frequency-cap checks


def sent_in_windows(conn: Connection, customer_id: int, channel: str, now: dt.datetime
                    ) -> dict[str, int]:
    """How many marketing messages on ``channel`` were sent (or are being sent) to the
    customer in the last day and week."""
    m = messages.c
    base = select(func.count()).select_from(messages).where(
        m.customer_id == customer_id, m.channel == channel, m.purpose == "marketing",
        m.state.in_(("sending", "delivered")), m.sent_at.is_not(None))
    return {window: int(conn.execute(base.where(m.sent_at > now - span)).scalar_one())
            for window, span in limits_model.WINDOWS.items()}


def local_timezone(conn: Connection, customer_id: int | None, program_id: int | None) -> str:
    """The time zone quiet hours are read in: the customer's registration store's, else the
    message's loyalty program's, else PATRON_DEFAULT_TIMEZONE."""
    from patron.loyalty.tables import loyalty_programs
    from patron.org.tables import stores

    if customer_id is not None:
        tz = conn.execute(select(stores.c.timezone).select_from(customers.join(
            stores, stores.c.id == customers.c.registration_store_id)).where(
            customers.c.id == customer_id)).scalar()
        if tz:
            return str(tz)
    if program_id is not None:
        tz = conn.execute(select(loyalty_programs.c.timezone).where(
            loyalty_programs.c.id == program_id)).scalar()
        if tz:
            return str(tz)
    return get_settings().default_timezone


def get_limits(conn: Connection, *, actor: Actor) -> dict[str, Any]:
    need(actor, "messages.read")
    return delivery_limits(conn).as_json()


def set_limits(*, uow: UnitOfWork, actor: Actor, values: Mapping[str, Any]) -> dict[str, Any]:
    """Replace the frequency caps and quiet hours (checked first: a bad value is a 422 naming
    the field, and nothing changes)."""
    need(actor, "messages.manage")
    parsed, errors = limits_model.parse_limits(values)
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    conn = uow.c
    value = parsed.as_json()
    conn.execute(upsert(conn, message_settings).values(
        name="limits", value=value, updated_at=utcnow(), updated_by=actor.name
    ).on_conflict_do_update(index_elements=["name"], set_={
        "value": value, "updated_at": utcnow(), "updated_by": actor.name}))
    audit.record(conn, actor, "message_limits.updated", entity="message_settings",
                 entity_id="limits", details=value)
    uow.commit()
    return value


def address_of(conn: Connection, customer_id: int | None, channel: str) -> str | None:
    """Where the profile receives ``channel``: its phone, email, a WeChat openid; app pushes
    and webhooks address the customer id, which the receiving system maps to devices."""
    if customer_id is None:
        return None
    if channel in ("sms", "email"):
        col = customers.c.phone if channel == "sms" else customers.c.email
        return conn.execute(select(col).where(customers.c.id == customer_id)).scalar()
    if channel == "wechat":
        return conn.execute(select(identities.c.value).where(
            identities.c.customer_id == customer_id, identities.c.kind == "wechat_openid")
            .order_by(identities.c.id).limit(1)).scalar()
    return str(customer_id)


def signing_key(conn: Connection) -> str:
    """The key that signs unsubscribe links: made once, kept in the database so that every
    process (and every restart) signs and checks with the same one."""
    row = conn.execute(select(message_keys.c.value).where(message_keys.c.name == "unsubscribe")
                       ).scalar()
    if row is not None:
        return str(row)
    conn.execute(upsert(conn, message_keys).values(
        name="unsubscribe", value=Sealed(("unsubscribe",), secrets.token_urlsafe(32)),
        created_at=utcnow()
    ).on_conflict_do_nothing(index_elements=["name"]))
    return str(conn.execute(select(message_keys.c.value).where(
        message_keys.c.name == "unsubscribe")).scalar_one())


def unsubscribe_url(conn: Connection, message_id: int) -> str:
    base = get_settings().public_url.rstrip("/")
    return f"{base}/messages/unsubscribe/{model.unsubscribe_token(signing_key(conn), message_id)}"


# --- templates ----------------------------------------------------------------------------------

def _template_from_row(r: Mapping[str, Any]) -> model.Template:
    return model.Template(
        code=r["code"], variables=tuple(r["variables"] or ()),
        body={"zh": r["body_zh"], "en": r["body_en"]},
        subject={"zh": r["subject_zh"], "en": r["subject_en"]},
        wechat_template_id=r["wechat_template_id"], wechat_fields=dict(r["wechat_fields"] or {}),
        wechat_kind=r["wechat_kind"] or "template", wechat_page=r["wechat_page"],
        sms_template_id=r["sms_template_id"])


def load_template(conn: Connection, code: str) -> model.Template | None:
    """A saved template (active), else the built-in one of that code."""
    row = conn.execute(select(message_templates).where(message_templates.c.code == code,
                                                       message_templates.c.active.is_(True))
                       ).mappings().first()
    if row is not None:
        return _template_from_row(row)
    return BUILTIN.get(code)


def template_view(t: model.Template, row: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"code": t.code, "variables": list(t.variables), "builtin": row is None,
            "overrides_builtin": row is not None and t.code in BUILTIN,
            "description": row["description"] if row is not None else None,
            "subject_zh": t.subject.get("zh"), "subject_en": t.subject.get("en"),
            "body_zh": t.body.get("zh"), "body_en": t.body.get("en"),
            "wechat_template_id": t.wechat_template_id, "wechat_fields": dict(t.wechat_fields),
            "wechat_kind": t.wechat_kind, "wechat_page": t.wechat_page,
            "sms_template_id": t.sms_template_id,
            "version": int(row["version"]) if row is not None else None,
            "updated_at": row["updated_at"] if row is not None else None,
            "updated_by": row["updated_by"] if row is not None else None}


def list_templates(conn: Connection, *, actor: Actor) -> list[dict[str, Any]]:
    need(actor, "messages.read")
    saved = {r["code"]: r for r in conn.execute(select(message_templates).where(
        message_templates.c.active.is_(True))).mappings()}
    out = [template_view(_template_from_row(r), r) for r in saved.values()]
    out += [template_view(t) for code, t in BUILTIN.items() if code not in saved]
    return sorted(out, key=lambda v: v["code"])


def get_template(conn: Connection, *, actor: Actor, code: str) -> dict[str, Any]:
    need(actor, "messages.read")
    row = _saved(conn, code)
    if row is not None:
        return template_view(_template_from_row(row), row)
    if code in BUILTIN:
        return template_view(BUILTIN[code])
    raise NotFound("message_template_not_found", params={"code": code})


def _saved(conn: Connection, code: str, *, lock: bool = False) -> dict[str, Any] | None:
    q = select(message_templates).where(message_templates.c.code == code,
                                        message_templates.c.active.is_(True))
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    return dict(row) if row is not None else None


def check_template(values: Mapping[str, Any]) -> model.Template:
    """The template ``values`` describe, or ``ValidationFailed`` naming each refused field:
    what saving checks (the template pages' preview checks the same without saving)."""
    t = model.Template(
        code=values["code"], variables=tuple(values.get("variables") or ()),
        body={"zh": values.get("body_zh"), "en": values.get("body_en")},
        subject={"zh": values.get("subject_zh"), "en": values.get("subject_en")},
        wechat_template_id=values.get("wechat_template_id"),
        wechat_fields=dict(values.get("wechat_fields") or {}),
        wechat_kind=values.get("wechat_kind") or "template",
        wechat_page=values.get("wechat_page"),
        sms_template_id=values.get("sms_template_id"))
    errors = model.template_errors(t)
    builtin = BUILTIN.get(t.code)
    if builtin is not None and set(builtin.variables) != set(t.variables):
        errors.append(FieldError("variables", "message_builtin_variables",
                                 {"expected": ", ".join(builtin.variables)}))
    if len(set(t.variables)) != len(t.variables):
        errors.append(FieldError("variables", "message_variable_duplicate"))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    return t


TEMPLATE_FIELDS = ("description", "variables", "subject_zh", "subject_en", "body_zh", "body_en",
                   "wechat_template_id", "wechat_fields", "wechat_kind", "wechat_page",
                   "sms_template_id")


def create_template(*, uow: UnitOfWork, actor: Actor, values: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """Save a template; every variable its sources use must be declared (or built in), or it is
    refused here, naming the source and the variable. A built-in code may be saved to change
    its wording, with the same variables."""
    need(actor, "messages.manage")
    if values.get("code") in model.RESERVED_CODES:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("code", "message_template_code_reserved", {"code": values["code"]})])
    t = check_template(values)

    def work() -> dict[str, Any]:
        conn = uow.c
        if _saved(conn, t.code) is not None:
            raise Conflict("message_template_exists", params={"code": t.code})
        conn.execute(message_templates.delete().where(message_templates.c.code == t.code,
                                                      message_templates.c.active.is_(False)))
        now = utcnow()
        row = {k: values.get(k) for k in TEMPLATE_FIELDS}
        row["variables"] = list(t.variables)
        row["wechat_fields"] = dict(t.wechat_fields)
        row["wechat_kind"] = t.wechat_kind
        tid = conn.execute(insert(message_templates).values(
            code=t.code, **row, active=True, version=1, created_at=now, updated_at=now,
            updated_by=actor.name).returning(message_templates.c.id)).scalar_one()
        audit.record(conn, actor, "message_template.created", entity="message_template",
                     entity_id=tid, details={"code": t.code, "variables": list(t.variables)})
        out = get_template(conn, actor=actor, code=t.code)
        uow.commit()
        return out

    return retrying(uow, work)


def update_template(*, uow: UnitOfWork, actor: Actor, code: str, changes: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """Change a saved template (checked as when created). Messages already queued keep the
    text they were rendered with."""
    need(actor, "messages.manage")
    conn = uow.c
    row = _saved(conn, code, lock=True)
    if row is None:
        if code in BUILTIN:
            raise Conflict("message_template_builtin", params={"code": code})
        raise NotFound("message_template_not_found", params={"code": code})
    # Required parts cannot be cleared: null leaves them as they are.
    changes = {k: v for k, v in changes.items()
               if v is not None or k not in ("variables", "body_zh", "wechat_fields",
                                                 "wechat_kind")}
    values = {**row, **dict(changes), "code": code}
    t = check_template(values)
    diff = {k: v for k, v in changes.items() if v != row[k]}
    if diff:
        if "variables" in diff:
            diff["variables"] = list(t.variables)
        conn.execute(update(message_templates).where(message_templates.c.id == row["id"])
                     .values(**diff, version=int(row["version"]) + 1, updated_at=utcnow(),
                             updated_by=actor.name))
        audit.record(conn, actor, "message_template.updated", entity="message_template",
                     entity_id=row["id"], details={"code": code, "fields": sorted(diff)})
    out = get_template(conn, actor=actor, code=code)
    uow.commit()
    return out


def delete_template(*, uow: UnitOfWork, actor: Actor, code: str) -> None:
    """Remove a saved template (a built-in code goes back to Patron's wording). Messages
    already queued keep their text."""
    need(actor, "messages.manage")
    conn = uow.c
    row = _saved(conn, code, lock=True)
    if row is None:
        raise NotFound("message_template_not_found", params={"code": code})
    conn.execute(update(message_templates).where(message_templates.c.id == row["id"])
                 .values(active=False, updated_at=utcnow(), updated_by=actor.name))
    audit.record(conn, actor, "message_template.deleted", entity="message_template",
                 entity_id=row["id"], details={"code": code})
    uow.commit()


# --- messages -----------------------------------------------------------------------------------

def message_view(r: Mapping[str, Any], attempts: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    otp = r["purpose"] == "otp"
    out = {
        "id": int(r["id"]), "customer_id": r["customer_id"], "program_id": r["program_id"],
        "channel": r["channel"], "template": r["template"], "lang": r["lang"],
        "purpose": r["purpose"], "dedupe_key": r["dedupe_key"],
        "variables": model.masked_variables(r["purpose"], r["variables"] or {}),
        "address": model.mask_address(r["channel"], r["address"] or r["to_address"]),
        "subject": r["subject"], "body": "***" if otp else r["body"],
        "state": r["state"], "reason": r["reason"], "error": r["error"],
        "attempts": int(r["attempts"]), "next_attempt_at": r["next_attempt_at"],
        "expires_at": r["expires_at"], "provider_message_id": r["provider_message_id"],
        "created_at": r["created_at"], "finished_at": r["finished_at"],
    }
    if attempts is not None:
        out["attempt_log"] = attempts
    return out


def list_messages(conn: Connection, *, actor: Actor, state: str | None = None,
                  channel: str | None = None, purpose: str | None = None,
                  customer_id: int | None = None, page: int = 1, page_size: int = 50
                  ) -> dict[str, Any]:
    """Messages, newest first. Addresses are masked and one-time codes never shown."""
    need(actor, "messages.read")
    errors = []
    for name, value, allowed in (("state", state, model.STATES),
                                 ("channel", channel, model.CHANNELS),
                                 ("purpose", purpose, model.PURPOSES)):
        if value is not None and value not in allowed:
            errors.append(FieldError(name, "literal_error", {"expected": ", ".join(allowed)}))
    if page < 1:
        errors.append(FieldError("page", "greater_than_equal", {"ge": 1}))
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        errors.append(FieldError("page_size", "less_than_equal", {"le": MAX_PAGE_SIZE}))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)
    m = messages.c
    where = []
    if state is not None:
        where.append(m.state == state)
    if channel is not None:
        where.append(m.channel == channel)
    if purpose is not None:
        where.append(m.purpose == purpose)
    if customer_id is not None:
        where.append(m.customer_id == customer_id)
    total = conn.execute(select(func.count()).select_from(messages).where(*where)).scalar_one()
    rows = conn.execute(select(messages).where(*where).order_by(m.id.desc()).limit(page_size)
                        .offset((page - 1) * page_size)).mappings()
    counts = {s: 0 for s in model.STATES}
    for r in conn.execute(select(m.state, func.count()).group_by(m.state)):
        counts[r[0]] = int(r[1])
    return {"items": [message_view(r) for r in rows], "total": int(total), "page": page,
            "page_size": page_size, "counts": counts}


def get_message(conn: Connection, *, actor: Actor, message_id: int) -> dict[str, Any]:
    need(actor, "messages.read")
    row = conn.execute(select(messages).where(messages.c.id == message_id)).mappings().first()
    if row is None:
        raise NotFound("message_not_found", params={"id": message_id})
    a = message_attempts.c
    attempts = [dict(r) for r in conn.execute(
        select(a.number, a.adapter, a.started_at, a.finished_at, a.outcome,
               a.provider_message_id, a.error).where(a.message_id == message_id)
        .order_by(a.number)).mappings()]
    return message_view(row, attempts)


def retry_message(*, uow: UnitOfWork, actor: Actor, message_id: int,
                  now: dt.datetime | None = None) -> dict[str, Any]:
    """Queue a failed message again, due now, with its attempts kept. A message that failed
    with ``outcome_unknown`` may then reach the customer twice: that is the owner's call."""
    need(actor, "messages.manage")
    now = now or utcnow()
    conn = uow.c
    q = select(messages).where(messages.c.id == message_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound("message_not_found", params={"id": message_id})
    if row["state"] != "failed":
        raise Conflict("message_not_failed", params={"id": message_id, "state": row["state"]})
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise Conflict("message_expired", params={"id": message_id})
    conn.execute(update(messages).where(messages.c.id == message_id).values(
        state="pending", reason=None, error=None, finished_at=None, next_attempt_at=now))
    audit.record(conn, actor, "message.retried", entity="message", entity_id=message_id,
                 details={"previous_reason": row["reason"], "attempts": int(row["attempts"])})
    out = get_message(conn, actor=actor, message_id=message_id)
    uow.commit()
    return out


# --- unsubscribing ------------------------------------------------------------------------------

def withdraw_consent_in(conn: Connection, *, actor: Actor, customer_id: int, kind: str,
                        source: str, program_id: int | None = None,
                        now: dt.datetime | None = None) -> int:
    """Withdraw ``kind`` marketing consent in the customer's memberships (of one program when
    given) where it is in force, as new loyalty consent rows (the history keeps the grant).
    Returns how many memberships changed."""
    now = now or utcnow()
    changed = 0
    for member_id, (granted, _source) in sorted(consent_rows(conn, customer_id, kind,
                                                             program_id).items()):
        if not granted:
            continue
        conn.execute(insert(loyalty_consents).values(
            member_id=member_id, kind=kind, granted=False, policy_version=None, source=source,
            store_id=None, at=now, actor=actor.name))
        audit.record(conn, actor, "loyalty.consent_withdrawn", entity="loyalty_member",
                     entity_id=member_id, details={"kind": kind, "source": source})
        changed += 1
    return changed


def unsubscribe(*, uow: UnitOfWork, token: str, actor: Actor,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """Withdraw the consent a marketing message relied on: its channel, in its program's
    membership (every membership when it named none). Signed link; works once or many times."""
    conn = uow.c
    message_id = model.read_unsubscribe_token(signing_key(conn), token)
    row = None
    if message_id is not None:
        row = conn.execute(select(messages).where(messages.c.id == message_id)).mappings().first()
    if row is None:
        raise NotFound("unsubscribe_link_invalid")
    kind = model.CONSENT_KIND.get(row["channel"])
    customer_id = live_customer(conn, row["customer_id"])
    changed = 0
    if kind is not None and customer_id is not None:
        changed = withdraw_consent_in(conn, actor=actor, customer_id=customer_id, kind=kind,
                                      source="unsubscribe", program_id=row["program_id"],
                                      now=now)
    audit.record(conn, actor, "message.unsubscribed", entity="message", entity_id=message_id,
                 details={"channel": row["channel"], "memberships": changed})
    uow.commit()
    return {"channel": row["channel"], "memberships": changed}


def stop_reply(*, uow: UnitOfWork, actor: Actor, phone: str, text: str,
               now: dt.datetime | None = None) -> dict[str, Any]:
    """An SMS reply from ``phone``: a STOP word (STOP, TD, 退订, ...) withdraws SMS marketing
    consent in every membership of the profile owning the phone. Anything else is ignored."""
    from patron.customers.model import IdentifierError, normalize_identity

    if not model.is_stop_reply(text):
        return {"action": "ignored", "memberships": 0}
    try:
        ident = normalize_identity("phone", phone)
    except IdentifierError as exc:
        raise invalid("from", exc.reason) from exc
    conn = uow.c
    owner = conn.execute(select(identities.c.customer_id).where(
        identities.c.kind == "phone", identities.c.namespace == "",
        identity_is(ident.value))).scalar()
    changed = 0
    if owner is not None:
        changed = withdraw_consent_in(conn, actor=actor, customer_id=int(owner), kind="sms",
                                      source="sms_stop", now=now)
    audit.record(conn, actor, "message.stop_reply", details={
        "memberships": changed, "known_phone": owner is not None})
    uow.commit()
    return {"action": "unsubscribed" if changed else "ignored", "memberships": changed}
