"""Sending the login code to the phone.

Patron's message outbox (``patron.messaging``) is not built yet, so this module stands in for
it: the code is written to the server log (the demo's way of "receiving" the SMS). When the
outbox lands, :func:`send_login_code` writes to it instead, inside the caller's transaction.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from patron.customers.model import mask_phone

log = logging.getLogger(__name__)


def send_login_code(conn: Connection, *, code_id: int, phone: str, code: str,
                    customer_id: int | None, minutes: int) -> None:
    """Deliver ``code`` to ``phone``. Logged at WARNING so that it shows under a server started
    without any logging set up (``patron serve``, ``patron demo``): no delivery channel exists
    yet, which an operator should notice."""
    del conn, customer_id  # used by the outbox
    log.warning("self-service login code for %s: %s (valid %d minutes; no SMS delivery "
                "configured, ref %d)", mask_phone(phone), code, minutes, code_id)
