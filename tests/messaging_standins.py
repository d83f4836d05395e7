"""Local stand-ins for the channels' providers, started by the tests: an SMTP server
(aiosmtpd), an SMS gateway and a WeChat API over HTTP, a webhook receiver. Each checks what a
real provider would check (signatures, tokens) and de-duplicates as the real one does."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller

from patron.messaging.model import gateway_signature


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpServer:
    """A real SMTP server in a thread. Recipients starting with ``bounce`` are refused (550),
    with ``busy`` deferred (451)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.port = free_port()
        server = self

        class Handler:
            async def handle_RCPT(self, smtp, session, envelope, address, options):  # noqa: N802
                if address.startswith("bounce"):
                    return "550 5.1.1 mailbox unavailable"
                if address.startswith("busy"):
                    return "451 4.3.0 try again later"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802
                server.messages.append(envelope)
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpStandIn:
    """An HTTP server in a thread; ``handle(request)`` returns (status, JSON answer)."""

    handle: Callable[[Request], tuple[int, Any]]
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        stand_in = self
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(self.command, parts.path, parse_qs(parts.query),
                              {k.lower(): v for k, v in self.headers.items()}, body)
                with stand_in.lock:
                    stand_in.requests.append(req)
                    status, answer = stand_in.handle(req)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve  # noqa: N815 - the http.server hook names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HttpStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def signed_by(secret: str, req: Request) -> bool:
    import hmac

    ts = req.headers.get("x-patron-timestamp", "")
    return hmac.compare_digest(gateway_signature(secret, ts, req.body),
                               req.headers.get("x-patron-signature", ""))


class SmsGateway:
    """An SMS provider's HTTP API: refuses unsigned requests (401), sends each idempotency key
    once (a repeated key gets the first answer), answers ``statuses`` in turn (then 200)."""

    def __init__(self, secret: str, statuses: list[int] | None = None) -> None:
        self.secret = secret
        self.statuses = list(statuses or [])
        self.sent: list[dict[str, Any]] = []
        self.by_key: dict[str, str] = {}
        self.http = HttpStandIn(self._handle)

    def _handle(self, req: Request) -> tuple[int, Any]:
        if not signed_by(self.secret, req):
            return 401, {"error": "bad signature"}
        key = req.headers.get("idempotency-key", "")
        if key in self.by_key:
            return 200, {"id": self.by_key[key], "duplicate": True}
        status = self.statuses.pop(0) if self.statuses else 200
        if status != 200:
            return status, {"error": "as told"}
        self.by_key[key] = f"sms-{len(self.sent) + 1}"
        self.sent.append(req.json())
        return 200, {"id": self.by_key[key]}

    @property
    def url(self) -> str:
        return self.http.base + "/v1/sms/send"

    def __enter__(self) -> SmsGateway:
        self.http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.__exit__(*exc)


class WeChatApi:
    """WeChat's public API as far as template messages go: ``GET /cgi-bin/token`` for an
    access token, ``POST /cgi-bin/message/template/send?access_token=`` with one message per
    openid and ``client_msg_id``. ``expire_next_token`` makes the first token be refused as
    expired (40001) to exercise the refresh; openids starting with ``unfollowed`` get 43004."""

    def __init__(self, app_id: str, app_secret: str) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.tokens_issued = 0
        self.revoked: set[str] = set()
        self.expire_next_token = False
        self.sent: list[dict[str, Any]] = []
        self.subscribe_sent: list[dict[str, Any]] = []
        self.seen: dict[tuple[str, str], int] = {}
        self.http = HttpStandIn(self._handle)

    def _handle(self, req: Request) -> tuple[int, Any]:
        if req.path == "/cgi-bin/token":
            if req.query.get("appid") != [self.app_id] or req.query.get("secret") != [
                    self.app_secret]:
                return 200, {"errcode": 40013, "errmsg": "invalid appid"}
            self.tokens_issued += 1
            token = f"token-{self.tokens_issued}"
            if self.expire_next_token:
                self.revoked.add(token)
                self.expire_next_token = False
            return 200, {"access_token": token, "expires_in": 7200}
        if req.path == "/cgi-bin/message/template/send":
            token = (req.query.get("access_token") or [""])[0]
            if not token.startswith("token-") or token in self.revoked:
                return 200, {"errcode": 40001, "errmsg": "invalid credential"}
            body = req.json()
            if body["touser"].startswith("unfollowed"):
                return 200, {"errcode": 43004, "errmsg": "require subscribe"}
            key = (body["touser"], body.get("client_msg_id") or "")
            if body.get("client_msg_id") and key in self.seen:
                return 200, {"errcode": 0, "errmsg": "ok", "msgid": self.seen[key]}
            msgid = 2000 + len(self.sent)
            self.seen[key] = msgid
            self.sent.append(body)
            return 200, {"errcode": 0, "errmsg": "ok", "msgid": msgid}
        if req.path == "/cgi-bin/message/subscribe/send":
            # subscribeMessage.send: touser, template_id, data {key: {value}}, optional page,
            # miniprogram_state and lang; 43101 when the user has not accepted the
            # subscription (openids starting with ``nosub``), 47003 for a bad data field.
            token = (req.query.get("access_token") or [""])[0]
            if not token.startswith("token-") or token in self.revoked:
                return 200, {"errcode": 40001, "errmsg": "invalid credential"}
            body = req.json()
            if not body.get("touser") or not body.get("template_id"):
                return 200, {"errcode": 40003, "errmsg": "invalid openid or template"}
            fields = body.get("data") or {}
            if not fields or any(not isinstance(v, dict) or "value" not in v
                                 for v in fields.values()):
                return 200, {"errcode": 47003, "errmsg": "argument invalid! data.value"}
            if body.get("miniprogram_state", "formal") not in ("developer", "trial", "formal"):
                return 200, {"errcode": 47003, "errmsg": "miniprogram_state invalid"}
            if body["touser"].startswith("nosub"):
                return 200, {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
            self.subscribe_sent.append(body)
            return 200, {"errcode": 0, "errmsg": "ok", "msgid": 3000 + len(self.subscribe_sent)}
        return 404, {"errcode": 404}

    @property
    def base(self) -> str:
        return self.http.base

    def __enter__(self) -> WeChatApi:
        self.http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.__exit__(*exc)


class WebhookReceiver:
    """An app backend (or any system) receiving signed messages; de-duplicates on
    ``X-Patron-Message``; answers ``statuses`` in turn (then 200)."""

    def __init__(self, secret: str, statuses: list[int] | None = None) -> None:
        self.secret = secret
        self.statuses = list(statuses or [])
        self.processed: list[dict[str, Any]] = []
        self.http = HttpStandIn(self._handle)

    def _handle(self, req: Request) -> tuple[int, Any]:
        if not signed_by(self.secret, req):
            return 401, {}
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200 and req.headers["x-patron-message"] not in {
                str(p["id"]) for p in self.processed}:
            self.processed.append(req.json())
        return status, {}

    @property
    def url(self) -> str:
        return self.http.base + "/push"

    def __enter__(self) -> WebhookReceiver:
        self.http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.__exit__(*exc)
