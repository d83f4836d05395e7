"""The staff pages for messages over HTTP, on SQLite and PostgreSQL: a template created, refused
beside its field in both languages, previewed, edited and deleted through the forms; the outbox
listing a message with its address masked, filtered by state, and a failed message retried (a
second retry refused); caps and quiet hours saved and shown; who may read and who may write.
(The JSON API for the same: test_messages_api.py.)"""

from __future__ import annotations

import re
from html import unescape

import pytest

from patron.db import UnitOfWork, get_engine
from patron.errors import NotFound
from patron.messaging import model, service
from patron.messaging.delivery import deliver_due
from patron.security import roles as roles_service
from patron.security import service as security
from patron.security.model import SYSTEM
from tests.e2e.conftest import PASSWORD, login
from tests.loyalty_factories import enrol, make_program
from tests.messaging_factories import NOW, PHONE, RecordingProvider, message, queue

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
GOOD = {"code": "welcome", "description": "新会员欢迎", "variables": "name",
        "subject_zh": "欢迎", "body_zh": "欢迎 {{ name }}", "body_en": "Welcome {{ name }}",
        "wechat_kind": "template"}


def _token(client, path: str = "/messages") -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text[:300]
    return CSRF.search(r.text).group(1)


def _field_error(page: str, name: str) -> str | None:
    m = re.search(rf'<small class="error" data-field="{name}">(.*?)</small>', page, re.S)
    return unescape(m.group(1)) if m else None


def _template(db_url: str, code: str) -> dict:
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        return service.get_template(uow.c, actor=SYSTEM, code=code)


@pytest.fixture
def member(db_url, users):
    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow)
        return enrol(uow, PHONE, marketing={"sms": True})


@pytest.fixture
def template_editor(db_url, users) -> str:
    """A custom role that manages message templates but may not delete records."""
    with UnitOfWork(get_engine(db_url)) as uow:
        role_id = roles_service.create_role(uow=uow, actor=SYSTEM, name="template_editor",
                                            permissions=["view", "manage_rules"], scope="all")
        uid = security.create_user(uow=uow, actor=SYSTEM, username="editor",
                                   password=PASSWORD, role="analyst")
        security.update_user(uow=uow, actor=SYSTEM, user_id=uid, role_id=role_id)
    return "editor"


def test_a_template_is_refused_beside_its_field_previewed_saved_edited_and_deleted(
        client, users, db_url, template_editor):
    login(client, "owner")
    token = _token(client, "/messages/templates/new")
    bad = {**GOOD, "csrf_token": token, "body_en": "Welcome {{ name }}, {{ points }} points"}
    r = client.post("/messages/templates/new", data=bad)
    assert r.status_code == 422
    assert _field_error(r.text, "body_en").startswith("未知变量“points”")
    assert _field_error(r.text, "body_zh") is None
    assert "{{ points }} points</textarea>" in unescape(r.text)  # what was typed stays
    r = client.post("/messages/templates/new?lang=en", data=bad)
    assert _field_error(r.text, "body_en") == (
        'Unknown variable "points" (declared: name, unsubscribe_url).')
    r = client.post("/messages/templates/new?lang=en", data={**bad, "body_en": "",
                                                              "description": "x" * 201})
    assert _field_error(r.text, "description") == "Too long (at most 200 characters)."
    r = client.post("/messages/templates/new?lang=en", data={**bad, "code": "9lives",
                                                              "body_en": ""})
    assert _field_error(r.text, "code").startswith("A template code is 2-64 lower-case")
    with pytest.raises(NotFound):
        _template(db_url, "welcome")

    # Preview: the declared variables filled with the sample values typed; nothing saved.
    r = client.post("/messages/templates/new?lang=zh",
                    data={**GOOD, "csrf_token": token, "intent": "preview",
                          "sample_name": "小王"})
    assert r.status_code == 200 and 'id="preview"' in r.text
    assert "欢迎 小王" in r.text and "Welcome 小王" in r.text
    with pytest.raises(NotFound):
        _template(db_url, "welcome")

    r = client.post("/messages/templates/new", data={**GOOD, "csrf_token": token,
                                                    "intent": "save"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/messages/templates/welcome?saved=1"
    page = client.get(r.headers["location"]).text
    assert 'id="saved"' in page and "欢迎 [name]" in page and "新会员欢迎" in page
    assert _template(db_url, "welcome")["version"] == 1
    r = client.post("/messages/templates/new", data={**GOOD, "csrf_token": token})
    assert r.status_code == 409 and "已存在" in _field_error(r.text, "code")

    # Edit: the code stays; a variable used but not declared is refused, then declared.
    page = client.get("/messages/templates/welcome/edit").text
    assert 'name="code" value="welcome" readonly' in page and 'value="name"' in page
    edit = {**GOOD, "csrf_token": token, "code": "renamed", "body_zh": "你好 {{ nick }}"}
    r = client.post("/messages/templates/welcome/edit", data=edit)
    assert r.status_code == 422 and "nick" in _field_error(r.text, "body_zh")
    r = client.post("/messages/templates/welcome/edit",
                    data={**edit, "variables": "name，nick",
                          "wechat_fields": "thing1 = {{ nick }}\nnot a field"})
    assert r.status_code == 422 and _field_error(r.text, "wechat_fields") == \
        "第 2 行应为“字段 = 内容”。"
    r = client.post("/messages/templates/welcome/edit",
                    data={**edit, "variables": "name，nick", "wechat_fields": "thing1 = {{ nick }}",
                          "sms_template_id": "SMS_123"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/messages/templates/welcome?saved=1"
    saved = _template(db_url, "welcome")
    assert (saved["version"], saved["variables"], saved["body_zh"]) == (
        2, ["name", "nick"], "你好 {{ nick }}")
    assert saved["wechat_fields"] == {"thing1": "{{ nick }}"}
    assert saved["sms_template_id"] == "SMS_123"
    with pytest.raises(NotFound):
        _template(db_url, "renamed")

    # Delete needs records.delete besides messages.manage; the form asks first.
    page = client.get("/messages/templates/welcome").text
    assert re.search(r'<form[^>]+id="delete-form"[^>]+data-confirm="删除模板', page, re.S)
    client.cookies.clear()
    login(client, template_editor)
    editor_token = _token(client, "/messages/templates/welcome")
    assert 'id="edit"' in client.get("/messages/templates/welcome").text
    assert 'id="delete-form"' not in client.get("/messages/templates/welcome").text
    r = client.post("/messages/templates/welcome/delete", data={"csrf_token": editor_token},
                    follow_redirects=False)
    assert r.status_code == 403
    client.cookies.clear()
    login(client, "analyst")
    r = client.post("/messages/templates/welcome/delete",
                    data={"csrf_token": _token(client)}, follow_redirects=False)
    assert r.status_code == 403
    assert _template(db_url, "welcome")["version"] == 2
    client.cookies.clear()
    login(client, "owner")
    r = client.post("/messages/templates/welcome/delete", data={"csrf_token": _token(client)},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/messages/templates?deleted=welcome"
    with pytest.raises(NotFound):
        _template(db_url, "welcome")
    assert 'data-code="welcome"' not in client.get("/messages/templates").text


def test_a_built_in_template_is_reworded_from_its_edit_page_and_restored(client, users, db_url):
    login(client, "owner")
    token = _token(client, "/messages/templates/otp_login/edit")
    base = {"csrf_token": token, "variables": "code, minutes", "wechat_kind": "template"}
    r = client.post("/messages/templates/otp_login/edit?lang=en",
                    data={**base, "variables": "code", "body_zh": "验证码 {{ code }}"})
    assert r.status_code == 422
    assert _field_error(r.text, "variables") == (
        "A built-in template keeps its variables: code, minutes.")
    r = client.post("/messages/templates/otp_login/edit",
                    data={**base, "body_zh": "验证码 {{ code }}，{{ minutes }} 分钟内有效"},
                    follow_redirects=False)
    assert r.status_code == 303
    assert _template(db_url, "otp_login")["overrides_builtin"] is True
    r = client.post("/messages/templates/otp_login/delete", data={"csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and _template(db_url, "otp_login")["builtin"] is True


def test_the_outbox_masks_addresses_filters_by_state_and_retries_a_failed_message(
        client, users, member, engine):
    from patron.messaging.adapters import failed

    failing = queue(engine, customer_id=member["customer_id"], key="a")
    otp = queue(engine, customer_id=member["customer_id"], key="b", template="otp_login",
                purpose="otp")
    deliver_due(engine=engine, now=NOW, adapters=dict.fromkeys(model.CHANNELS, RecordingProvider(
        [failed("rejected", "blocked number"), failed("rejected", "x")])))
    # Queued with an explicit address (a profile's is looked up when it is sent).
    waiting = queue(engine, customer_id=member["customer_id"], key="c", to="+8613900001111")
    login(client, "owner")
    page = client.get("/messages").text
    rows = dict(re.findall(r'<tr data-id="(\d+)" data-state="(\w+)">', page))
    assert rows == {str(failing): "failed", str(otp): "failed", str(waiting): "pending"}
    assert list(rows) == sorted(rows, key=int, reverse=True)  # newest first
    assert "+86138****5678" in page and "+86139****1111" in page
    assert "13812345678" not in page and "13900001111" not in page
    assert "blocked number" in page
    counts = dict(re.findall(r'data-state="(\w+)"><span>[^<]*</span><b>(\d+)</b>', page))
    assert counts["failed"] == "2" and counts["pending"] == "1"
    page = client.get("/messages?state=pending").text
    assert re.findall(r'<tr data-id="(\d+)"', page) == [str(waiting)]
    page = client.get("/messages?state=failed&purpose=otp").text
    assert re.findall(r'<tr data-id="(\d+)"', page) == [str(otp)]
    r = client.get("/messages?state=lost&lang=en")
    assert r.status_code == 422 and _field_error(r.text, "state").startswith("Must be one of")
    # A one-time code is never shown back, on the list or the message's page.
    detail = client.get(f"/messages/{otp}").text
    assert "482913" not in detail and '<pre class="message-body" id="body">***</pre>' in detail
    assert client.get("/messages/999999").status_code == 404
    assert client.get("/messages/abc").status_code == 404

    page = client.get(f"/messages/{failing}").text
    assert 'id="retry"' in page and "blocked number" in page
    assert re.search(r'<table id="attempts">.*?<td>1</td><td>recording</td>', page, re.S)
    token = CSRF.search(page).group(1)
    assert client.post(f"/messages/{failing}/retry",
                       data={"csrf_token": "0" * 64}).status_code == 403
    r = client.post(f"/messages/{failing}/retry", data={"csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/messages/{failing}?retried=1"
    assert message(engine, failing)["state"] == "pending"
    page = client.get(r.headers["location"]).text
    assert 'id="retried"' in page and 'id="retry"' not in page
    r = client.post(f"/messages/{failing}/retry?lang=en", data={"csrf_token": token})
    assert r.status_code == 409
    assert f"Message {failing} is pending; only a failed message can be retried." in r.text
    r = client.post(f"/messages/{otp}/retry?lang=en", data={"csrf_token": token})
    assert r.status_code == 409 and "expired" in r.text


def test_caps_and_quiet_hours_are_saved_shown_and_refused_beside_their_fields(
        client, users, db_url):
    login(client, "owner")
    token = _token(client, "/messages/limits")
    form = {"csrf_token": token, "cap_sms_day": "1", "cap_sms_week": "3", "cap_wechat_week": "5",
            "quiet_start": "21:00", "quiet_end": "09:00"}
    r = client.post("/messages/limits", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/messages/limits?saved=1"
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert service.get_limits(uow.c, actor=SYSTEM) == {
            "caps": {"sms": {"day": 1, "week": 3}, "wechat": {"week": 5}},
            "quiet_hours": {"start": "21:00", "end": "09:00"}}
    page = client.get("/messages/limits?saved=1").text
    assert 'id="saved"' in page
    assert 'name="cap_sms_week" value="3"' in page and 'name="quiet_start" value="21:00"' in page
    assert 'name="cap_email_day" value=""' in page
    r = client.post("/messages/limits?lang=en", data={**form, "cap_sms_day": "5",
                                                      "cap_email_week": "lots"})
    assert r.status_code == 422
    assert _field_error(r.text, "cap_email_week") == "Give a whole number from 0 to 1000."
    r = client.post("/messages/limits?lang=en", data={**form, "cap_sms_day": "5",
                                                      "quiet_end": ""})
    assert r.status_code == 422
    assert _field_error(r.text, "cap_sms_day") == "The daily cap cannot be above the weekly cap."
    assert _field_error(r.text, "quiet_end").startswith("Give a local time as HH:MM")
    assert 'name="cap_sms_day" value="5"' in r.text  # what was typed stays
    # Nothing changed; clearing every field removes caps and quiet hours.
    r = client.post("/messages/limits", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        assert service.get_limits(uow.c, actor=SYSTEM) == {"caps": {}, "quiet_hours": None}


def test_an_analyst_reads_every_page_but_changes_nothing(client, users, member, engine):
    from patron.messaging.adapters import failed

    failing = queue(engine, customer_id=member["customer_id"], key="a")
    deliver_due(engine=engine, now=NOW, adapters=dict.fromkeys(
        model.CHANNELS, RecordingProvider([failed("rejected", "blocked")])))
    login(client, "analyst")
    home = client.get("/").text
    assert 'href="/messages"' in home
    for path in ("/messages", "/messages/templates", "/messages/templates/otp_login",
                 f"/messages/{failing}", "/messages/limits"):
        assert client.get(path).status_code == 200, path
    assert 'id="retry"' not in client.get(f"/messages/{failing}").text
    assert 'id="new-template"' not in client.get("/messages/templates").text
    assert 'id="edit"' not in client.get("/messages/templates/otp_login").text
    limits = client.get("/messages/limits").text
    assert 'id="read-only"' in limits and 'id="save-limits"' not in limits
    token = _token(client)
    for path in ("/messages/templates/new", "/messages/templates/otp_login/edit"):
        assert client.get(path).status_code == 403, path
    for path, data in ((f"/messages/{failing}/retry", {}), ("/messages/limits",
                                                             {"cap_sms_day": "1"}),
                       ("/messages/templates/new", GOOD)):
        r = client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 403, path
    assert message(engine, failing)["state"] == "failed"


@pytest.mark.parametrize("role", ["cashier", "manager"])
def test_cashiers_and_managers_have_no_messages_pages(client, users, role):
    login(client, role)
    assert 'href="/messages"' not in client.get("/cashier").text
    for path in ("/messages", "/messages/templates", "/messages/limits", "/messages/1",
                 "/messages/templates/otp_login"):
        assert client.get(path).status_code == 403, (role, path)


def test_the_campaign_and_automation_editors_link_to_a_new_template(client, users):
    login(client, "owner")
    for path in ("/campaigns/new", "/automations/new"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert 'href="/messages/templates/new" target="_blank"' in page.text, path
