"""Messaging rules, plain Python: channels and purposes, template checking and rendering
(sandboxed Jinja2), retry backoff, what happens to an attempt whose worker died, unsubscribe
tokens and STOP replies."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from patron.errors import FieldError

CHANNELS = ("sms", "email", "wechat", "app", "webhook")
WECHAT_KINDS = ("template", "subscribe")
PURPOSES = ("otp", "transactional", "marketing")
STATES = ("pending", "sending", "delivered", "failed", "suppressed")
LANGS = ("zh", "en")
# The loyalty consent that lets a channel carry marketing; 'webhook' has none, so marketing on
# it is always suppressed.
CONSENT_KIND = {"sms": "sms", "email": "email", "wechat": "wechat", "app": "app"}
# Variables every template may use without declaring them: filled in by Patron.
BUILTIN_VARIABLES = frozenset({"unsubscribe_url"})

# Wait before attempt n+1 after n failed attempts; after MAX_ATTEMPTS the message has failed.
BACKOFF = (dt.timedelta(seconds=30), dt.timedelta(minutes=2), dt.timedelta(minutes=10),
           dt.timedelta(hours=1), dt.timedelta(hours=6))
MAX_ATTEMPTS = len(BACKOFF) + 1
JITTER = 0.2
# A one-time code not sent within this time is failed rather than sent late.
OTP_LIFETIME = dt.timedelta(minutes=10)

CODE_RE = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
# Words the template pages use as addresses (/messages/templates/new): a template of that code
# could never be opened, so a new template may not take it.
RESERVED_CODES = frozenset({"new"})
VARIABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")

# Replies to an SMS that withdraw SMS marketing consent (Chinese carriers' conventions and
# English), compared after trimming and upper-casing.
STOP_WORDS = frozenset({"STOP", "TD", "T", "N", "UNSUBSCRIBE", "退订", "退订TD", "取消"})

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     keep_trailing_newline=False)

# What marketing messages end with, so that every one can be refused from its own text.
FOOTERS = {
    ("sms", "zh"): "回复TD退订", ("sms", "en"): "Reply STOP to unsubscribe",
    ("email", "zh"): "退订：{url}", ("email", "en"): "Unsubscribe: {url}",
}


@dataclass(frozen=True)
class Template:
    """A template's sources; ``variables`` are the names it declares."""

    code: str
    variables: tuple[str, ...]
    body: Mapping[str, str | None]  # lang -> source
    subject: Mapping[str, str | None] = field(default_factory=dict)
    wechat_template_id: str | None = None
    wechat_fields: Mapping[str, str] = field(default_factory=dict)
    wechat_kind: str = "template"  # template | subscribe
    wechat_page: str | None = None
    sms_template_id: str | None = None
    builtin: bool = False


@dataclass(frozen=True)
class Rendered:
    lang: str
    subject: str | None
    body: str
    data: dict[str, Any]


def template_errors(t: Template) -> list[FieldError]:
    """Everything wrong with a template, found when it is saved: a code or variable name that is
    not allowed, a source that does not parse, a variable it uses without declaring."""
    errors: list[FieldError] = []
    if not CODE_RE.match(t.code):
        errors.append(FieldError("code", "message_template_code"))
    for i, name in enumerate(t.variables):
        if not VARIABLE_RE.match(name) or name in BUILTIN_VARIABLES:
            errors.append(FieldError(f"variables.{i}", "message_variable_name", {"value": name}))
    if not (t.body.get("zh") or "").strip():
        errors.append(FieldError("body_zh", "message_body_required"))
    if t.wechat_kind not in WECHAT_KINDS:
        errors.append(FieldError("wechat_kind", "literal_error",
                                 {"expected": ", ".join(WECHAT_KINDS)}))
    known = set(t.variables) | BUILTIN_VARIABLES
    for name, source in _sources(t):
        try:
            used = meta.find_undeclared_variables(_env.parse(source))
        except TemplateSyntaxError as exc:
            errors.append(FieldError(name, "message_template_syntax",
                                     {"line": exc.lineno, "detail": exc.message or ""}))
            continue
        for unknown in sorted(used - known):
            errors.append(FieldError(name, "message_variable_unknown",
                                     {"value": unknown, "known": ", ".join(sorted(known))}))
    return errors


def _sources(t: Template) -> list[tuple[str, str]]:
    out = []
    for lang in LANGS:
        if t.body.get(lang):
            out.append((f"body_{lang}", str(t.body[lang])))
        if t.subject.get(lang):
            out.append((f"subject_{lang}", str(t.subject[lang])))
    for key, source in t.wechat_fields.items():
        out.append((f"wechat_fields.{key}", source))
    return out


def variable_errors(t: Template, variables: Mapping[str, Any]) -> list[FieldError]:
    """What a caller passes must be exactly what the template declares, as plain values."""
    errors = [FieldError(f"variables.{k}", "message_variable_unknown",
                         {"value": k, "known": ", ".join(t.variables)})
              for k in sorted(set(variables) - set(t.variables))]
    errors += [FieldError(f"variables.{k}", "message_variable_missing", {"value": k})
               for k in t.variables if k not in variables]
    for k, v in sorted(variables.items()):
        if not isinstance(v, str | int | float | bool) and v is not None:
            errors.append(FieldError(f"variables.{k}", "message_variable_type", {"value": k}))
    return errors


def language_for(t: Template, wanted: str, fallback: str | None = None) -> str:
    """The language a message is written in: ``wanted`` when the template has a body in it,
    else ``fallback`` (the default language) when it has that, else the first of LANGS it has
    (a saved template always has Chinese)."""
    for lang in (wanted, fallback, *LANGS):
        if lang and t.body.get(lang):
            return lang
    return wanted


def render(t: Template, *, channel: str, lang: str, purpose: str, variables: Mapping[str, Any],
           unsubscribe_url: str | None, fallback: str | None = None) -> Rendered:
    """The message's text in ``lang``, or when the template has no text in it, in
    ``fallback`` (:func:`language_for`; ``Rendered.lang`` says which); marketing on SMS and
    email ends with how to unsubscribe."""
    lang = language_for(t, lang, fallback)
    context = {**variables, "unsubscribe_url": unsubscribe_url or ""}
    body = _render(str(t.body[lang]), context)
    subject_src = (t.subject.get(lang) or (t.subject.get(fallback) if fallback else None)
                   or t.subject.get("zh") or t.subject.get("en"))
    subject = _render(str(subject_src), context) if subject_src else None
    if purpose == "marketing":
        footer = FOOTERS.get((channel, lang))
        if footer and not (channel == "email" and unsubscribe_url and unsubscribe_url in body):
            body = f"{body}\n{footer.format(url=unsubscribe_url or '')}" if channel == "email" \
                else f"{body} {footer}"
    data: dict[str, Any] = {}
    if channel == "wechat":
        data = {"template_id": t.wechat_template_id,
                "fields": {k: _render(v, context) for k, v in t.wechat_fields.items()}}
        if t.wechat_kind == "subscribe":
            data.update(kind="subscribe", page=t.wechat_page)
    elif channel == "sms" and t.sms_template_id:
        data = {"template_id": t.sms_template_id}
    return Rendered(lang, subject, body, data)


class RenderError(ValueError):
    pass


def _render(source: str, context: Mapping[str, Any]) -> str:
    try:
        return _env.from_string(source).render(**context).strip()
    except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
        raise RenderError(str(exc)) from exc


# --- delivery -----------------------------------------------------------------------------------

def retry_delay(attempts: int, rng: random.Random | None = None) -> dt.timedelta:
    base = BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]
    return base * (1 + (rng or random).uniform(-JITTER, JITTER))


def after_failure(attempts: int, now: dt.datetime,
                  rng: random.Random | None = None) -> tuple[str, dt.datetime]:
    """State and next attempt time after attempt number ``attempts`` failed for a reason that
    may pass (a timeout, a 5xx, a refused connection)."""
    if attempts >= MAX_ATTEMPTS:
        return "failed", now
    return "pending", now + retry_delay(attempts, rng)


def resend_is_safe(*, started_at: dt.datetime, now: dt.datetime,
                   idempotency_window: dt.timedelta | None) -> bool:
    """An attempt whose worker died after it began may have reached the provider. Sending
    again is safe only when the provider de-duplicates on the message id for long enough."""
    return idempotency_window is not None and now - started_at < idempotency_window


def mask_address(channel: str, address: str | None) -> str | None:
    """Addresses in lists: 138****1234, z***@example.cn, the end of an openid."""
    if not address:
        return address
    if channel == "sms":
        return address[:-8] + "****" + address[-4:] if len(address) > 8 else "****"
    if channel == "email" and "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if channel == "wechat":
        return "…" + address[-6:]
    return address


def masked_variables(purpose: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """A one-time code is never shown back: listing messages must not log anyone in."""
    if purpose != "otp":
        return dict(variables)
    return dict.fromkeys(variables, "***")


# --- unsubscribe links and STOP replies ---------------------------------------------------------

def unsubscribe_token(secret: str, message_id: int) -> str:
    mac = hmac.new(secret.encode(), f"unsubscribe:{message_id}".encode(), hashlib.sha256)
    sig = base64.urlsafe_b64encode(mac.digest()[:18]).decode().rstrip("=")
    return f"{message_id}.{sig}"


def read_unsubscribe_token(secret: str, token: str) -> int | None:
    """The message id a token was made for, or None when it was not made with ``secret``."""
    head, _, _sig = token.partition(".")
    if not head.isdigit() or len(head) > 18:
        return None
    message_id = int(head)
    return message_id if hmac.compare_digest(unsubscribe_token(secret, message_id),
                                             token) else None


def is_stop_reply(text: str) -> bool:
    return text.strip().upper().rstrip(".!。！") in STOP_WORDS


def gateway_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"``, as Patron signs its
    webhooks: requests to the SMS gateway and the gateway's inbound calls both carry it."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signature_ok(secret: str, timestamp: str, body: bytes, header: str, *, now: dt.datetime,
                 tolerance: dt.timedelta = dt.timedelta(minutes=5)) -> bool:
    if not secret or not timestamp.isdigit():
        return False
    if abs(now.timestamp() - int(timestamp)) > tolerance.total_seconds():
        return False
    return hmac.compare_digest(gateway_signature(secret, timestamp, body), header)


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
