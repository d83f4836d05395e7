"""The privacy pages over HTTP: only owners open them; a request recorded from the form lands
on its page with the deadline; bad input comes back with the reason beside the field; the copy
downloads as a JSON file; erasure needs the confirmation; both languages."""

from __future__ import annotations

import json

from tests.e2e.conftest import login
from tests.e2e.test_privacy_api import member
from tests.e2e.test_web_pages import errors_in, post_form


def test_only_owners_open_the_privacy_pages(client, users):
    member(client)
    for role, status in (("owner", 200), ("analyst", 403), ("manager", 403), ("cashier", 403)):
        login(client, role)
        assert client.get("/privacy").status_code == status, role
        nav = client.get("/").text if role != "cashier" else ""
        assert ('href="/privacy"' in nav) == (role == "owner"), role


def test_an_owner_records_answers_and_closes_requests(client, users):
    m = member(client)
    cid = m["customer_id"]
    r = post_form(client, "/privacy/requests", {"customer_id": "x", "kind": "access",
                                                "source": "store"}, page="/privacy?lang=en")
    assert r.status_code == 422 and "customer_id" in errors_in(r.text)
    r = post_form(client, "/privacy/requests", {"customer_id": str(cid), "kind": "access",
                                                "source": "store"}, page="/privacy")
    assert r.status_code == 303
    page = r.headers["location"]
    html = client.get(page + "?lang=en").text
    assert "15 days left" in html and "Copy of data" in html
    assert client.get(page).headers["cache-control"] == "no-store"
    r = post_form(client, page + "/copy", {}, page=page)
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert json.loads(r.text)["tables"]["customers"][0]["name"] == "林小美"
    assert "已完成" in client.get(page + "?lang=zh").text

    r = post_form(client, "/privacy/requests", {"customer_id": str(cid), "kind": "deletion",
                                                "source": "email"}, page="/privacy")
    page = r.headers["location"]
    r = post_form(client, page + "/erasure", {}, page=page)
    assert r.status_code == 422 and "confirm" in errors_in(r.text)
    r = post_form(client, page + "/erasure", {"confirm": "yes"}, page=page)
    assert r.status_code == 303
    html = client.get(page + "?lang=zh").text
    assert "已完成" in html and "林小美" not in html
    listing = client.get("/privacy?status=done").text
    assert listing.count('href="/privacy/requests/') == 2


def test_a_correction_with_a_bad_email_says_why_and_keeps_the_request_open(client, users):
    m = member(client)
    r = post_form(client, "/privacy/requests", {"customer_id": str(m["customer_id"]),
                                                "kind": "correction", "source": "phone"},
                  page="/privacy")
    page = r.headers["location"]
    r = post_form(client, page + "/correction?lang=en", {"email": "nope"}, page=page)
    assert r.status_code == 422 and "email" in errors_in(r.text)
    assert "待处理" in client.get(page + "?lang=zh").text
    r = post_form(client, page + "/correction", {"email": "xm@example.cn"}, page=page)
    assert r.status_code == 303 and "已完成" in client.get(page + "?lang=zh").text
