"""Request bodies have a size limit (docs/security.md#request-size-limits): a JSON body (the
bulk endpoints: order batches, offline checkout queues) at most PATRON_MAX_JSON_BODY_MB, a file
upload (multipart: order imports) at most PATRON_IMPORT_MAX_UPLOAD_MB and a little for the
form around it.

A request whose ``Content-Length`` says more is answered 413 (``request_too_large``) before
its body is read; one sent without a length (chunked) is counted as it arrives and refused
with the same 413 as soon as it passes the limit, before the route sees it, so nothing is
written. A plain ASGI middleware: Starlette would otherwise spool a whole upload to disk
before any route could look at its size.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIB = 1024 * 1024
# The multipart envelope around an upload: boundaries, headers, the mapping's name.
FORM_OVERHEAD = MIB


class RequestTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request_too_large")


def limit_for(content_type: str) -> int:
    from patron.config import get_settings

    settings = get_settings()
    if content_type.startswith("multipart/form-data"):
        return settings.import_max_upload_mb * MIB + FORM_OVERHEAD
    return settings.max_json_body_mb * MIB


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        limit = limit_for(headers.get(b"content-type", b"").decode("latin-1").lower())
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge
            return message

        await self.app(scope, counted, send)


async def _refuse(scope: Scope, send: Send) -> None:
    from starlette.requests import Request

    from patron.deps import request_language
    from patron.i18n import t

    lang = request_language(Request(scope))
    body: dict[str, Any] = {"error": {"code": "request_too_large",
                                      "message": t("request_too_large", lang), "fields": []}}
    raw = json.dumps(body, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": raw})


def install(app: Any) -> None:
    app.add_middleware(BodyLimit)
