"""Security headers on every response, as a plain ASGI middleware (no per-request task or
body buffering, so the tills' hot path pays a few header appends).

- ``Content-Security-Policy``: scripts only from Patron itself (no page has an inline script
  or event handler); inline styles stay allowed because Plotly.js sets them; no framing; forms
  post only to Patron. A response that sets its own policy (the member pages) keeps it.
- ``X-Frame-Options: DENY`` for browsers without ``frame-ancestors``, ``nosniff``,
  ``Referrer-Policy: same-origin`` (no page address leaves the site).
- ``Strict-Transport-Security`` when the request came over https (directly or through a proxy
  that uvicorn trusts, ``--proxy-headers``) or ``PATRON_COOKIE_SECURE`` says the site is https.
- ``Cache-Control: no-store`` on every response that does not set its own (pages and API
  answers carry personal data; the published static files set theirs or are not personal).
- Cookies set over https get ``Secure`` even when the code that set them did not ask.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# FastAPI's Swagger page loads its script from a CDN and starts it inline: it keeps no policy.
NO_CSP_PATHS = ("/api/docs", "/docs/oauth2-redirect")
HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, https_always: bool = False) -> None:
        self.app = app
        self.https_always = https_always

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        https = self.https_always or scope.get("scheme") == "https"
        static = path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                add: list[tuple[bytes, bytes]] = []

                def default(name: bytes, value: str) -> None:
                    if name not in names:
                        add.append((name, value.encode()))

                default(b"x-content-type-options", "nosniff")
                default(b"x-frame-options", "DENY")
                default(b"referrer-policy", "same-origin")
                if not path.startswith(NO_CSP_PATHS):
                    default(b"content-security-policy", CSP)
                if https:
                    default(b"strict-transport-security", HSTS)
                if not static:
                    default(b"cache-control", "no-store")
                if https:
                    headers = [_secure_cookie(k, v) for k, v in headers]
                message["headers"] = headers + add
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure_cookie(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    attributes = [part.strip().lower() for part in value.split(b";")[1:]]
    if name.lower() == b"set-cookie" and b"secure" not in attributes:
        return name, value + b"; Secure"
    return name, value


def install(app: Any) -> None:
    from patron.config import get_settings

    app.add_middleware(SecurityHeaders, https_always=get_settings().cookie_secure)
