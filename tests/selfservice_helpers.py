"""Reading the login codes Patron sent, as a member's phone would receive them: from the
message outbox (the tests send nothing; the worker is off)."""

from __future__ import annotations

from sqlalchemy import select

from patron.customers.model import mask_phone
from patron.db import UnitOfWork, get_engine
from patron.messaging.tables import messages


def sent_codes() -> list[tuple[str, str]]:
    """(masked phone, code) of every login code queued so far, oldest first."""
    m = messages.c
    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = uow.c.execute(select(m.to_address, m.variables).where(
            m.template == "otp_login").order_by(m.id)).all()
    return [(mask_phone(to) or "", variables["code"]) for to, variables in rows]


def last_code(masked_phone: str) -> str:
    codes = [code for phone, code in sent_codes() if phone == masked_phone]
    assert codes, f"no code was sent to {masked_phone}"
    return codes[-1]
