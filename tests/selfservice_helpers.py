"""Reading the login codes Patron sent, as a member's phone would receive them."""

from __future__ import annotations

import re

import pytest

CODE = re.compile(r"self-service login code for (\S+): (\d{6})")


def sent_codes(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(masked phone, code) of every code delivered so far, oldest first."""
    out = []
    for record in caplog.records:
        if record.name == "patron.selfservice.delivery":
            found = CODE.search(record.getMessage())
            if found:
                out.append((found.group(1), found.group(2)))
    return out


def last_code(caplog: pytest.LogCaptureFixture, masked_phone: str) -> str:
    codes = [code for phone, code in sent_codes(caplog) if phone == masked_phone]
    assert codes, f"no code was sent to {masked_phone}"
    return codes[-1]
