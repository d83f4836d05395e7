"""Both languages say the same things: every message has a Chinese and an English text with the
same placeholders, and every message key a page names literally exists (a missing one would
show the key itself to the user)."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

from patron.i18n import LANGUAGES, catalog

I18N = Path(__file__).resolve().parents[2] / "src" / "patron" / "i18n"
TEMPLATES = I18N.parent / "templates"
# Messages that say a thing each language's own way from the same parameters: a Chinese
# discount is stated as 折 ("zhe", 8.5 for 15 % off), an English one as percent off; the caller
# passes both (selfservice.service).
OWN_WAY = {"selfservice.coupon.percent", "selfservice.coupon.percent_capped"}
LITERAL_KEY = re.compile(r"""\b_\(\s*(['"])([A-Za-z0-9_.]+)\1\s*[,)]""")


def _placeholders(text: str) -> set[str]:
    return {name.split(".")[0].split("[")[0]
            for _, name, _, _ in string.Formatter().parse(text) if name}


def _areas() -> list[str]:
    return sorted({p.name.split(".")[0] for p in I18N.glob("*.json")})


@pytest.mark.parametrize("area", _areas())
def test_each_area_has_the_same_keys_in_both_languages(area: str) -> None:
    # zh.json / en.json hold the errors every area shares; <area>.<lang>.json the rest
    names = {lang: f"{lang}.json" if area in LANGUAGES else f"{area}.{lang}.json"
             for lang in LANGUAGES}
    zh, en = (json.loads((I18N / names[lang]).read_text(encoding="utf-8"))
              for lang in ("zh", "en"))
    assert sorted(set(zh) - set(en)) == [], "only in Chinese"
    assert sorted(set(en) - set(zh)) == [], "only in English"
    differing = {k: (_placeholders(zh[k]), _placeholders(en[k])) for k in zh
                 if k not in OWN_WAY and _placeholders(zh[k]) != _placeholders(en[k])}
    assert differing == {}
    assert [k for k in zh if not str(zh[k]).strip() or not str(en[k]).strip()] == []


def test_every_key_a_page_names_exists_in_both_languages() -> None:
    missing = []
    for page in sorted(TEMPLATES.rglob("*.html")):
        for match in LITERAL_KEY.finditer(page.read_text(encoding="utf-8")):
            key = match.group(2)
            if "." not in key:
                continue
            for lang in LANGUAGES:
                if key not in catalog(lang):
                    missing.append((str(page.relative_to(TEMPLATES)), key, lang))
    assert missing == []
