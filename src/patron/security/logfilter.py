"""No personal data in the server's logs: the access log's request line loses phone numbers
and email addresses in paths and query strings (a search typed into an old bookmark, a till
looking a member up by phone with GET). Installed on uvicorn's access logger by the app."""

from __future__ import annotations

import logging
import re

# Mainland mobiles with or without +86 / 86, other E.164 numbers, and emails (also %40).
PHONE = re.compile(r"(?<![0-9])(?:(?:\+|%2B)?86)?1[3-9][0-9]{9}(?![0-9])"
                   r"|(?:\+|%2B)[1-9][0-9]{7,14}")
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def scrub(text: str) -> str:
    return EMAIL.sub("[email]", PHONE.sub("[phone]", text))


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
