"""Segment and tag pages over HTTP: both languages, what each role may do there, the forms."""

from __future__ import annotations

import re

from tests.e2e.conftest import login
from tests.e2e.test_web_pages import post_form


def test_builder_pages_in_both_languages(owner, org) -> None:
    zh = owner.get("/segments/new")
    assert zh.status_code == 200
    assert "新建分群" in zh.text and 'id="segment-catalog"' in zh.text
    assert "/static/patron-segments.js" in zh.text and "cdn" not in zh.text.lower()
    en = owner.get("/segments/new?lang=en")
    assert "New segment" in en.text and "Days since last purchase" in en.text
    assert owner.get("/static/patron-segments.js").status_code == 200
    seg = owner.post("/api/v1/segments", json={"name": "Everyone", "definition": {}}).json()
    page = owner.get(f"/segments/{seg['id']}?lang=en")
    assert page.status_code == 200 and "Everyone" in page.text and "export.csv" in page.text
    assert owner.get("/segments/999999").status_code == 404
    assert "Everyone" in owner.get("/segments").text


def test_managers_read_segments_but_do_not_save_them(client, users) -> None:
    login(client, "manager")
    page = client.get("/segments/new")
    assert page.status_code == 200
    assert 'id="segment-save"' not in page.text


def test_tag_form_creates_a_tag_and_refuses_a_bad_code(owner, org) -> None:
    bad = post_form(owner, "/tags", {"code": "no spaces", "name": "x"})
    assert bad.status_code == 422
    assert re.search(r'data-field="code"', bad.text)
    ok = post_form(owner, "/tags", {"code": "vip", "name": "贵宾"})
    assert ok.status_code == 303 and ok.headers["location"] == "/tags/vip?created=1"
    assert "贵宾" in owner.get("/tags").text
    assert owner.get("/tags/vip?lang=en").status_code == 200
