"""Sending the login code to the phone, through Patron's message outbox.

The code is queued with ``patron.messaging.service.enqueue_in`` inside the transaction that
stores the code's hash, so a code exists for the member exactly when its message does. The
outbox's worker sends it by SMS once a gateway is configured, and until then writes it to the
server log (the log adapter), which is how the demo shows the code.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection

from patron.messaging.service import customer_language, enqueue_in

LOGIN_TEMPLATE = "otp_login"


def send_login_code(conn: Connection, *, code_id: int, phone: str, code: str,
                    customer_id: int | None, minutes: int, expires_at: dt.datetime,
                    lang: str | None = None, now: dt.datetime | None = None) -> int:
    """Queue the code for ``phone`` (E.164) as a one-time-code SMS, never sent after the code
    has expired; returns the message id. The phone is given explicitly, so the code goes to the
    number that asked for it even when the profile's primary phone is another one. It is
    written in the language of the profile owning the phone when it has one, else in ``lang``
    (the page's), else the default."""
    return enqueue_in(conn, customer_id=customer_id, channel="sms", template=LOGIN_TEMPLATE,
                      variables={"code": code, "minutes": minutes}, purpose="otp",
                      dedupe_key=f"selfservice-login:{code_id}", to=phone,
                      lang=customer_language(conn, customer_id) or lang,
                      expires_at=expires_at, now=now)
