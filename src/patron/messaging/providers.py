"""The channels' real providers: email over SMTP, SMS through an HTTP gateway, WeChat template
messages through WeChat's public API, and signed webhooks (app push and any other system).

Each follows :mod:`patron.messaging.adapters`: ``delivered`` / ``retry`` / ``failed``, never an
exception for a provider's answer, and an ``idempotency_window`` saying how long the provider
de-duplicates a message resent under the same id.
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx

from patron import __version__
from patron.messaging.adapters import FOREVER, Outgoing, Result, delivered, failed, retry
from patron.messaging.model import gateway_signature

TIMEOUT = 10.0


def _http_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False,
                        headers={"User-Agent": f"Patron-Messages/{__version__}"})


def _http_result(response: httpx.Response) -> Result | None:
    """None for a 2xx; otherwise retry what may pass (408, 429, 5xx) and fail the rest."""
    if 200 <= response.status_code < 300:
        return None
    excerpt = response.text[:300].strip()
    error = f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
    if response.status_code in (408, 425, 429) or response.status_code >= 500:
        return retry(error)
    return failed("rejected", error)


def _signed_headers(secret: str, message: Outgoing, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {"Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": f"patron-message-{message.id}",
            "X-Patron-Message": str(message.id), "X-Patron-Timestamp": timestamp,
            "X-Patron-Signature": gateway_signature(secret, timestamp, body)}


class SmtpAdapter:
    """Email over SMTP (``PATRON_SMTP_*``). SMTP has no idempotency key (the ``Message-ID``
    header lets mail clients hide a duplicate, servers do not refuse one), so a message whose
    worker died mid-send is not sent again automatically."""

    name = "smtp"
    idempotency_window: dt.timedelta | None = None

    def __init__(self, *, host: str, port: int = 25, username: str = "", password: str = "",
                 starttls: bool = False, sender: str = "patron@localhost") -> None:
        self.host, self.port, self.username, self.password = host, port, username, password
        self.starttls, self.sender = starttls, sender

    def build(self, message: Outgoing) -> EmailMessage:
        msg = EmailMessage()
        domain = self.sender.rpartition("@")[2] or "patron.local"
        msg["From"] = self.sender
        msg["To"] = message.address
        msg["Subject"] = message.subject or ""
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = f"<patron-message-{message.id}@{domain}>"
        if message.unsubscribe_url:
            # RFC 2369 and RFC 8058: the mail client's own unsubscribe button.
            msg["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(message.body)
        return msg

    def send(self, message: Outgoing) -> Result:
        msg = self.build(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return _smtp_answer(code, text)
        except smtplib.SMTPAuthenticationError as exc:
            return retry(f"SMTP login refused: {exc.smtp_code}")
        except smtplib.SMTPResponseException as exc:
            return _smtp_answer(exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPException) as exc:
            return retry(f"{type(exc).__name__}: {exc}")
        return delivered(str(msg["Message-ID"]))


def _smtp_answer(code: int, text: bytes | str) -> Result:
    detail = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    error = f"SMTP {code}: {detail}"
    return failed("rejected", error) if 500 <= code < 600 else retry(error)


class SmsGatewayAdapter:
    """SMS through an HTTP gateway (``PATRON_SMS_GATEWAY_URL``): one signed JSON POST per
    message, the message id as ``Idempotency-Key``; the gateway must not send a key it has seen
    in the last 24 hours again (docs/messaging.md, "SMS gateway")."""

    name = "sms_gateway"
    idempotency_window: dt.timedelta | None = dt.timedelta(hours=24)

    def __init__(self, *, url: str, secret: str, template_id: str = "", sign_name: str = "",
                 client: httpx.Client | None = None) -> None:
        self.url, self.secret, self.template_id, self.sign_name = url, secret, template_id, \
            sign_name
        self.client = client or _http_client()

    def close(self) -> None:
        self.client.close()

    def body(self, message: Outgoing) -> bytes:
        return json.dumps({
            "message_id": str(message.id), "phone": message.address,
            "template_id": message.data.get("template_id") or self.template_id,
            "sign_name": self.sign_name,
            "params": {k: "" if v is None else str(v) for k, v in message.variables.items()},
            "text": message.body,
        }, ensure_ascii=False, separators=(",", ":")).encode()

    def send(self, message: Outgoing) -> Result:
        body = self.body(message)
        try:
            response = self.client.post(self.url, content=body,
                                        headers=_signed_headers(self.secret, message, body))
        except httpx.HTTPError as exc:
            return retry(f"{type(exc).__name__}: {exc}")
        problem = _http_result(response)
        if problem is not None:
            return problem
        try:
            provider_id = str(response.json().get("id") or "") or None
        except (ValueError, AttributeError):
            provider_id = None
        return delivered(provider_id)


class WebhookAdapter:
    """App push (``PATRON_APP_PUSH_URL``) and any other system (``PATRON_MESSAGES_WEBHOOK_URL``)
    by a POST signed like Patron's webhooks. Receivers de-duplicate on ``X-Patron-Message``, as
    webhook receivers do on the delivery id (docs/webhooks.md)."""

    idempotency_window: dt.timedelta | None = FOREVER

    def __init__(self, *, name: str, url: str, secret: str,
                 client: httpx.Client | None = None) -> None:
        self.name, self.url, self.secret = name, url, secret
        self.client = client or _http_client()

    def close(self) -> None:
        self.client.close()

    def body(self, message: Outgoing) -> bytes:
        return json.dumps({
            "id": message.id, "channel": message.channel, "customer_id": message.customer_id,
            "to": message.address, "purpose": message.purpose, "template": message.template,
            "lang": message.lang, "title": message.subject, "body": message.body,
            "variables": message.variables, "unsubscribe_url": message.unsubscribe_url,
        }, ensure_ascii=False, separators=(",", ":"), default=str).encode()

    def send(self, message: Outgoing) -> Result:
        body = self.body(message)
        try:
            response = self.client.post(self.url, content=body,
                                        headers=_signed_headers(self.secret, message, body))
        except httpx.HTTPError as exc:
            return retry(f"{type(exc).__name__}: {exc}")
        return _http_result(response) or delivered(None)


# WeChat's answers (errcode) that mean the access token must be fetched again, that may pass,
# or that refuse this message for good.
WECHAT_TOKEN_ERRORS = {40001, 40014, 42001}
WECHAT_BUSY = {-1, 45009, 45047}
# subscribeMessage.send: the customer has not accepted (or has used up) the subscription.
WECHAT_NOT_SUBSCRIBED = 43101


class WeChatAdapter:
    """WeChat official-account template messages (``cgi-bin/message/template/send``), with an
    access token from ``cgi-bin/token`` kept until shortly before it expires. WeChat sends one
    message per openid and ``client_msg_id`` within 10 minutes, so a resend inside that window
    cannot produce a second copy."""

    name = "wechat"
    idempotency_window: dt.timedelta | None = dt.timedelta(minutes=9)

    def __init__(self, *, app_id: str, app_secret: str,
                 api_url: str = "https://api.weixin.qq.com",
                 client: httpx.Client | None = None) -> None:
        self.app_id, self.app_secret, self.api_url = app_id, app_secret, api_url.rstrip("/")
        self.client = client or _http_client()
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _access_token(self, *, fresh: bool = False) -> str:
        with self._lock:
            if not fresh and self._token is not None and self._token[1] > time.monotonic():
                return self._token[0]
            response = self.client.get(f"{self.api_url}/cgi-bin/token", params={
                "grant_type": "client_credential", "appid": self.app_id,
                "secret": self.app_secret})
            answer = response.json()
            token = answer.get("access_token")
            if not token:
                raise WeChatError(int(answer.get("errcode", -1)), str(answer.get("errmsg", "")))
            # Fetched again five minutes before WeChat says it expires.
            self._token = (str(token), time.monotonic() + int(answer.get("expires_in", 7200))
                           - 300)
            return str(token)

    def payload(self, message: Outgoing) -> dict[str, Any]:
        data = {k: {"value": v} for k, v in (message.data.get("fields") or {}).items()}
        if message.data.get("kind") == "subscribe":
            # subscribeMessage.send: no client_msg_id, so no de-duplication by WeChat.
            out: dict[str, Any] = {"touser": message.address,
                                   "template_id": message.data.get("template_id"),
                                   "data": data, "miniprogram_state": "formal",
                                   "lang": "en_US" if message.lang == "en" else "zh_CN"}
            if message.data.get("page"):
                out["page"] = message.data["page"]
            return out
        return {"touser": message.address, "template_id": message.data.get("template_id"),
                "data": data, "client_msg_id": f"patron-message-{message.id}"}

    def resend_window(self, data: dict[str, Any]) -> dt.timedelta | None:
        """How long WeChat de-duplicates this message: template messages by client_msg_id;
        subscription messages not at all (a resend after a crash could reach the customer
        twice, so it is not made)."""
        return None if data.get("kind") == "subscribe" else self.idempotency_window

    def send(self, message: Outgoing) -> Result:
        if not message.data.get("template_id"):
            return failed("no_template", "the template has no wechat_template_id")
        payload = self.payload(message)
        path = ("/cgi-bin/message/subscribe/send" if message.data.get("kind") == "subscribe"
                else "/cgi-bin/message/template/send")
        try:
            for fresh in (False, True):
                token = self._access_token(fresh=fresh)
                response = self.client.post(f"{self.api_url}{path}",
                                            params={"access_token": token}, json=payload)
                if response.status_code >= 500:
                    return retry(f"HTTP {response.status_code}")
                answer = response.json()
                code = int(answer.get("errcode", 0))
                if code == 0:
                    return delivered(str(answer.get("msgid") or "") or None)
                if code not in WECHAT_TOKEN_ERRORS:
                    break
        except WeChatError as exc:
            return retry(f"WeChat token: {exc}")
        except (httpx.HTTPError, ValueError) as exc:
            return retry(f"{type(exc).__name__}: {exc}")
        error = f"WeChat {code}: {answer.get('errmsg', '')}"
        if code in WECHAT_BUSY or code in WECHAT_TOKEN_ERRORS:
            return retry(error)
        if code == WECHAT_NOT_SUBSCRIBED:
            return failed("not_subscribed", error)
        return failed("rejected", error)


class WeChatError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
