"""Messages in Chinese (default) and English. Keys are stable codes used by services and the
API; a missing translation falls back to English, then to the key itself."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("zh", "en")
_DIR = Path(__file__).parent


@cache
def catalog(lang: str) -> dict[str, str]:
    path = _DIR / f"{lang}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def pick_language(requested: str | None, accept: str | None = None, default: str = "zh") -> str:
    if requested in LANGUAGES:
        return requested  # type: ignore[return-value]
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return default


def t(key: str, lang: str = "zh", **params: Any) -> str:
    text = catalog(lang).get(key) or catalog("en").get(key) or key
    if params:
        try:
            return text.format(**params)
        except (KeyError, IndexError, ValueError):
            return text
    return text
