"""Messages in Chinese (default) and English. Keys are stable codes used by services and the
API; a missing translation falls back to English, then to the key itself."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("zh", "en")
# Each language by its own name, as language pickers show them whatever the page's language.
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}
_DIR = Path(__file__).parent


@cache
def catalog(lang: str) -> dict[str, str]:
    """``{lang}.json`` (errors shared by every area) plus each area's ``<area>.{lang}.json``."""
    merged: dict[str, str] = {}
    for path in sorted(_DIR.glob(f"*.{lang}.json")) + [_DIR / f"{lang}.json"]:
        if path.exists():
            merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


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
