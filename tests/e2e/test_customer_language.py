"""A customer's message language: set and refused through the customer API, the staff
customer page and the member's self-service page, audited each time, reset by an erasure."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from patron.customers.tables import customers
from patron.db import UnitOfWork, get_engine
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import login
from tests.e2e.test_customers_api import data_dir  # noqa: F401  (fixture)
from tests.e2e.test_selfservice_pages import csrf as member_csrf
from tests.e2e.test_selfservice_pages import shop, sign_in  # noqa: F401  (fixture)
from tests.e2e.test_web_pages import errors_in, post_form
from tests.factories import order


@pytest.fixture
def shopper(db_url, org) -> int:
    with UnitOfWork(get_engine(db_url)) as uow:
        (out,) = record_orders(uow=uow, orders_in=[
            order("S1", identifiers={"phone": "13812341234"}, customer={"name": "王小明"})],
            source="api", actor=SYSTEM)
    return int(out.customer_id)


def stored_language(customer_id: int) -> str | None:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        return uow.c.execute(select(customers.c.language).where(
            customers.c.id == customer_id)).scalar()


def language_audits(customer_id: int) -> list[dict]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = uow.c.execute(select(audit_log.c.actor_name, audit_log.c.details).where(
            audit_log.c.action == "customer.updated",
            audit_log.c.entity_id == str(customer_id)).order_by(audit_log.c.id)).all()
    return [{"by": r.actor_name, **r.details} for r in rows if "language" in r.details]


def test_staff_set_the_language_through_the_api_and_each_change_is_audited(
        client, users, shopper):
    login(client, "owner")
    url = f"/api/v1/customers/{shopper}"
    assert client.get(url).json()["language"] is None
    r = client.patch(url, json={"language": "en"})
    assert r.status_code == 200 and r.json()["changed"] == ["language"], r.text
    assert client.get(url).json()["language"] == "en"
    # a tag with a region is its language; the same value again changes nothing
    assert client.patch(url, json={"language": "zh-CN"}).json()["changed"] == ["language"]
    assert client.patch(url, json={"language": "zh"}).json()["changed"] == []
    assert stored_language(shopper) == "zh"
    assert client.patch(url, json={"language": None}).json()["changed"] == ["language"]
    assert client.get(url).json()["language"] is None
    assert [(a["by"], a["language"]) for a in language_audits(shopper)] == [
        ("owner", {"from": None, "to": "en"}), ("owner", {"from": "en", "to": "zh"}),
        ("owner", {"from": "zh", "to": None})]


@pytest.mark.parametrize("bad", ["fr", "klingon", "zh-", "", 7])
def test_a_language_patron_does_not_speak_is_a_422_naming_the_field(client, users, shopper,
                                                                    bad):
    login(client, "owner")
    url = f"/api/v1/customers/{shopper}"
    client.patch(url, json={"language": "en"})
    r = client.patch(url + "?lang=en", json={"language": bad, "name": "李四"})
    if bad == "":  # an empty text clears it, like the other profile fields
        assert r.status_code == 200 and stored_language(shopper) is None
        return
    assert r.status_code == 422, r.text
    (field,) = r.json()["error"]["fields"]
    assert field["field"] == "language"
    assert (field["message"] == "Must be one of: zh, en." if bad != 7
            else field["message"] != field["reason"])
    # nothing of the edit was written, the name neither
    assert stored_language(shopper) == "en"
    assert client.get(url).json()["name"].startswith("王")


def test_only_roles_that_edit_customers_set_the_language(client, users, shopper):
    login(client, "analyst")
    assert client.patch(f"/api/v1/customers/{shopper}",
                        json={"language": "en"}).status_code == 403
    page = client.get(f"/customers/{shopper}")
    assert page.status_code == 200 and 'id="language-form"' not in page.text
    assert stored_language(shopper) is None


def test_staff_set_the_language_on_the_customer_page(client, users, shopper):
    login(client, "manager")
    path = f"/customers/{shopper}/language"
    page = client.get(f"/customers/{shopper}")
    assert 'id="language-form"' in page.text and 'data-language=""' in page.text
    r = post_form(client, path, {"language": "en"}, page=f"/customers/{shopper}")
    assert r.status_code == 303 and r.headers["location"].endswith("done=language#profile")
    shown = client.get(r.headers["location"]).text
    assert 'data-language="en"' in shown and 'id="language-saved"' in shown
    assert stored_language(shopper) == "en"
    bad = post_form(client, path + "?lang=en", {"language": "fr"},
                    page=f"/customers/{shopper}")
    assert bad.status_code == 422
    assert errors_in(bad.text) == {"language": "Must be one of: zh, en."}
    assert stored_language(shopper) == "en"
    back = post_form(client, path, {"language": ""}, page=f"/customers/{shopper}")
    assert back.status_code == 303 and stored_language(shopper) is None
    assert [(a["by"], a["language"]["to"], a.get("source")) for a in
            language_audits(shopper)] == [("manager", "en", "staff"),
                                          ("manager", None, "staff")]


def test_the_page_form_is_refused_without_the_permission(client, users, shopper):
    login(client, "analyst")
    r = post_form(client, f"/customers/{shopper}/language", {"language": "en"},
                  page=f"/customers/{shopper}")
    assert r.status_code == 403 and stored_language(shopper) is None


def test_a_member_chooses_the_language_of_their_messages(client, shop):  # noqa: F811
    sign_in(client)
    home = client.get("/m/home")
    assert 'id="language-form"' in home.text
    r = client.post("/m/language", data={"csrf_token": member_csrf(home.text),
                                         "member": shop["me"]["id"], "language": "en"},
                    follow_redirects=False)
    assert r.status_code == 303 and "done=language_saved" in r.headers["location"]
    customer_id = shop["me"]["customer_id"]
    assert stored_language(customer_id) == "en"
    shown = client.get(r.headers["location"]).text
    assert '<option value="en" selected>' in shown
    (entry,) = language_audits(customer_id)
    assert entry["source"] == "self_service" and entry["by"].startswith("member:")
    bad = client.post("/m/language", data={"csrf_token": member_csrf(shown),
                                           "member": shop["me"]["id"], "language": "de"},
                      follow_redirects=False)
    assert bad.status_code == 422 and stored_language(customer_id) == "en"


def test_an_erasure_resets_the_language(client, users, shopper):
    login(client, "owner")
    client.patch(f"/api/v1/customers/{shopper}", json={"language": "en"})
    req = client.post("/api/v1/privacy/requests", json={
        "customer_id": shopper, "kind": "deletion", "source": "email"}).json()
    r = client.post(f"/api/v1/privacy/requests/{req['id']}/erasure")
    assert r.status_code == 200, r.text
    assert stored_language(shopper) is None
    assert client.get(f"/api/v1/customers/{shopper}").json()["language"] is None


def test_an_order_for_a_new_customer_may_carry_their_language(client, pos_key, db_url):
    h = {"Authorization": f"Bearer {pos_key}", "Accept-Language": "en"}
    r = client.post("/api/v1/orders", headers=h, json=order(
        "L-1", identifiers={"phone": "13800138000"}, customer={"language": "en-US"}))
    assert r.status_code == 201, r.text
    first = int(r.json()["customer_id"])
    assert stored_language(first) == "en"
    # a hint for a customer Patron knows changes nothing of the profile
    again = client.post("/api/v1/orders", headers=h, json=order(
        "L-2", identifiers={"phone": "13800138000"}, customer={"language": "zh"}))
    assert again.status_code == 201 and stored_language(first) == "en"
    bad = client.post("/api/v1/orders", headers=h, json=order(
        "L-3", identifiers={"phone": "13800138001"}, customer={"language": "fr"}))
    assert bad.status_code == 422, bad.text
    (field,) = bad.json()["error"]["fields"]
    assert (field["field"], field["message"]) == ("customer.language",
                                                 "Must be one of: zh, en.")
    batch = client.post("/api/v1/orders/batch", headers=h, json={"orders": [
        order("L-4", identifiers={"phone": "13800138002"}, customer={"language": "zh"}),
        order("L-5", identifiers={"phone": "13800138003"}, customer={"language": 5})]})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [x["status"] for x in results] == ["created", "rejected"]
    assert stored_language(int(results[0]["customer_id"])) == "zh"
    assert results[1]["errors"][0]["field"] == "customer.language"


def test_an_enrolment_may_carry_the_members_language(client, users):
    from tests.e2e.test_loyalty_api import ENROL, PROGRAM

    login(client, "owner")
    assert client.post("/api/v1/loyalty/programs", json=PROGRAM).status_code == 201
    bad = client.post("/api/v1/loyalty/programs/BB/members?lang=en",
                      json={**ENROL, "language": "fr"})
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "language"
    m = client.post("/api/v1/loyalty/programs/BB/members", json={**ENROL, "language": "en"})
    assert m.status_code == 201, m.text
    cid = int(m.json()["customer_id"])
    assert stored_language(cid) == "en"
    (entry,) = language_audits(cid)
    assert entry["source"] == "enrolment" and entry["language"] == {"from": None, "to": "en"}
    # a profile that has a language keeps it when it enrols
    known = client.post("/api/v1/orders", json=order(
        "K-1", identifiers={"phone": "13900001111"}, customer={"language": "zh"}))
    assert known.status_code == 201, known.text
    joined = client.post("/api/v1/loyalty/programs/BB/members",
                         json={**ENROL, "phone": "13900001111", "language": "en"})
    assert joined.status_code == 201, joined.text
    assert int(joined.json()["customer_id"]) == int(known.json()["customer_id"])
    assert stored_language(int(known.json()["customer_id"])) == "zh"


def test_the_list_and_the_export_show_the_language(client, users, shopper):
    import csv
    import io

    login(client, "owner")
    client.patch(f"/api/v1/customers/{shopper}", json={"language": "en"})
    (item,) = client.get("/api/v1/customers").json()["items"]
    assert item["language"] == "en"
    r = client.get("/api/v1/exports/customers.csv")
    assert r.status_code == 200, r.text
    # the first line is the export's watermark
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig").split("\n", 1)[1])))
    assert [row["language"] for row in rows if row["id"] == str(shopper)] == ["en"]
