"""No personal data in the server's logs: the access log's request line has its phone numbers,
e-mail addresses and identity numbers masked (a search typed into an old bookmark, a till
looking a member up by phone with GET), by the same rules as free text stored in the database
(:mod:`patron.protection.redact`), also where the URL encodes ``+`` or ``@``. Installed on
uvicorn's access logger by the app."""

from __future__ import annotations

import logging
import re

from patron.protection import redact

# What a URL writes for the characters the masking rules look for: %2B for "+", %40 for "@",
# %20 and + for a space between digit groups.
_ENCODED = re.compile(r"%2[Bb]|%40|%20")
_DECODED = {"%2B": "+", "%2b": "+", "%40": "@", "%20": " "}


def scrub(text: str) -> str:
    return redact.scrub(_ENCODED.sub(lambda m: _DECODED[m.group(0)], text))


class PersonalDataFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True


def install() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, PersonalDataFilter) for f in logger.filters):
        logger.addFilter(PersonalDataFilter())
