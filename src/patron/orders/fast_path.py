"""The tills' hot path: ``POST /api/v1/orders`` answered without FastAPI's routing and
dependency machinery when nothing about the request is unusual.

Profiled under load (a stub in place of the database write), the framework's part of a
single-order request (routing through every included router, solving the route's dependencies,
the body-parameter machinery, the exception and exit-stack middlewares) cost about as much CPU
as recording the order itself in a group. This middleware does the happy path with the very
same steps the route does, in the same order: the caller from a cached API key
(``deps._cached_key_actor``), the ``orders.write`` permission, ``json.loads`` of a JSON body,
``OrderIn`` validated in Python mode as FastAPI validates a body, the process's group-commit
batcher, and the route's own ``JSONResponse`` (201 created, 200 duplicate).

Anything else goes to the application untouched (the body it read is handed on): another path
or method, a key not in the cache or refused, a missing permission, another content type,
malformed JSON, an invalid order; and so do the outcomes the route answers with an error
(rejected, conflict: neither writes anything, so the route finds the same again and answers
with its translated error, its alert on a refused key, everything it does). Security headers
and the body limit sit outside this middleware and apply alike (a body the limit refuses while
it is read is refused again where the route reads it, which answers its 413).
``tests/e2e/test_order_fast_path.py`` compares both answers, headers included.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patron.errors import PatronError

PATH = "/api/v1/orders"
PERMISSION = "orders.write"


class SingleOrderFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        refused: Exception | None = None
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break  # the client went away: the application sees it as it would have
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except Exception as exc:  # noqa: BLE001 - the body limit's 413: raised to the route
            refused = exc
        whole = refused is None and messages[-1]["type"] == "http.request"
        response = await _answer(scope, body) if whole else None
        if response is not None:
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            if refused is not None:
                # Raised where the route reads the body, as it would have been without us.
                raise refused
            return await receive()

        await self.app(scope, replay, send)


async def _answer(scope: Scope, body: bytes) -> JSONResponse | None:
    """The route's response when the request takes its happy path, else None."""
    from patron.deps import _cached_key_actor
    from patron.orders.api import order_batcher
    from patron.orders.schemas import OrderIn

    request = Request(scope)
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        return None
    try:
        actor = _cached_key_actor(request)
    except PatronError:
        return None  # a refused key: the application answers and raises the alert
    if actor is None or not actor.can(PERMISSION):
        return None
    try:
        payload: Any = json.loads(body)
        order = OrderIn.model_validate(payload)
    except (ValueError, ValidationError):
        return None  # json.JSONDecodeError is a ValueError; the route reports either
    outcome = await order_batcher(scope["app"]).submit(order, actor)
    if outcome.status not in ("created", "duplicate"):
        return None
    return JSONResponse(outcome.model_dump(mode="json"),
                        status_code=201 if outcome.status == "created" else 200)


def install(app: Any) -> None:
    app.add_middleware(SingleOrderFastPath)
