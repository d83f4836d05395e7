"""Each channel's provider against a local stand-in started by the test, through the real
worker, on SQLite and PostgreSQL: SMTP (aiosmtpd), the SMS gateway, WeChat's API, signed
webhooks; and a worker dying after sending on each kind of channel."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

import pytest
from sqlalchemy import select, update

from patron.config import Settings
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork
from patron.messaging import delivery
from patron.messaging.adapters import LogAdapter
from patron.messaging.channels import configured_adapters
from patron.messaging.delivery import deliver_due
from patron.messaging.providers import (
    SmsGatewayAdapter,
    SmtpAdapter,
    WebhookAdapter,
    WeChatAdapter,
)
from tests.messaging_factories import (
    E164,
    NOW,
    DiesAfterSending,
    RecordingProvider,
    WorkerDied,
    attempts,
    member_with,
    message,
    queue,
)
from tests.messaging_standins import SmsGateway, SmtpServer, WebhookReceiver, WeChatApi

AFTER_LEASE = NOW + delivery.LEASE + dt.timedelta(seconds=1)


def set_email(engine, address: str) -> None:
    with UnitOfWork(engine) as uow:
        from patron.customers.protect import profile_values

        for cid in uow.c.execute(select(customers.c.id)).scalars():
            uow.c.execute(update(customers).where(customers.c.id == cid)
                          .values(profile_values(cid, {"email": address})))
        uow.commit()


def add_openid(engine, customer_id: int, openid: str) -> None:
    from sqlalchemy import insert

    from patron.customers.protect import identity_row

    with UnitOfWork(engine) as uow:
        uow.c.execute(insert(identities).values(**identity_row(
            kind="wechat_openid", namespace="", value=openid, customer_id=customer_id,
            created_at=NOW)))
        uow.commit()


def only(channel: str, adapter) -> dict:
    out = dict.fromkeys(("sms", "email", "wechat", "app", "webhook"), RecordingProvider())
    out[channel] = adapter
    return out


# --- email over SMTP ----------------------------------------------------------------------------

def test_an_email_reaches_a_real_smtp_server_with_its_subject_and_unsubscribe_header(engine):
    m = member_with(engine, email=True)
    set_email(engine, "li.wei@example.cn")
    mid = queue(engine, customer_id=m["customer_id"], channel="email", purpose="marketing",
                lang="en")
    with SmtpServer() as smtp:
        adapter = SmtpAdapter(host="127.0.0.1", port=smtp.port, sender="club@bean.example")
        stats = deliver_due(engine=engine, now=NOW, adapters=only("email", adapter))
        assert stats.delivered == 1
        (envelope,) = smtp.messages
    assert envelope.rcpt_tos == ["li.wei@example.cn"]
    mail = email.message_from_bytes(envelope.content, policy=policy.default)
    assert mail["Subject"] == "71 points expire soon"
    assert mail["Message-ID"] == f"<patron-message-{mid}@bean.example>"
    body = mail.get_content()
    assert "71 of your points expire on 2027-03-02" in body
    assert mail["List-Unsubscribe"].strip() == f"<{body.rsplit('Unsubscribe: ', 1)[1].strip()}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    row = message(engine, mid)
    assert row["state"] == "delivered" and row["provider_message_id"] == mail["Message-ID"]


def test_a_mailbox_the_smtp_server_refuses_fails_and_a_deferral_is_retried(engine):
    m = member_with(engine)
    bounce = queue(engine, customer_id=m["customer_id"], channel="email", key="a",
                   to="bounce@example.cn")
    busy = queue(engine, customer_id=m["customer_id"], channel="email", key="b",
                 to="busy@example.cn")
    with SmtpServer() as smtp:
        adapter = SmtpAdapter(host="127.0.0.1", port=smtp.port)
        deliver_due(engine=engine, now=NOW, adapters=only("email", adapter))
        assert smtp.messages == []
    row = message(engine, bounce)
    assert (row["state"], row["reason"]) == ("failed", "rejected") and "550" in row["error"]
    row = message(engine, busy)
    assert row["state"] == "pending" and "451" in row["error"]


def test_an_smtp_server_that_is_down_is_tried_again_later(engine):
    m = member_with(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="email", to="li@example.cn")
    from tests.messaging_standins import free_port

    deliver_due(engine=engine, now=NOW,
                adapters=only("email", SmtpAdapter(host="127.0.0.1", port=free_port())))
    row = message(engine, mid)
    assert row["state"] == "pending" and row["next_attempt_at"] > NOW and row["attempts"] == 1


def test_a_worker_dying_after_an_smtp_send_does_not_mail_the_customer_twice(engine):
    m = member_with(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="email", to="li@example.cn")
    with SmtpServer() as smtp:
        adapter = SmtpAdapter(host="127.0.0.1", port=smtp.port)
        with pytest.raises(WorkerDied):
            deliver_due(engine=engine, now=NOW,
                        adapters=only("email", DiesAfterSending(adapter)))  # type: ignore[arg-type]
        assert len(smtp.messages) == 1
        deliver_due(engine=engine, now=AFTER_LEASE, adapters=only("email", adapter))
        assert len(smtp.messages) == 1
    row = message(engine, mid)
    assert (row["state"], row["reason"]) == ("failed", "outcome_unknown")


# --- SMS through the HTTP gateway ---------------------------------------------------------------

def test_an_sms_goes_through_the_gateway_signed_with_the_template_id(engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"], template="otp_login", purpose="otp")
    with SmsGateway("gw-secret") as gw:
        adapter = SmsGatewayAdapter(url=gw.url, secret="gw-secret", template_id="SMS_100",
                                    sign_name="豆子兄弟")
        assert deliver_due(engine=engine, now=NOW, adapters=only("sms", adapter)).delivered == 1
        (sent,) = gw.sent
        (request,) = gw.http.requests
    assert request.headers["idempotency-key"] == f"patron-message-{mid}"
    assert sent["phone"] == E164 and sent["template_id"] == "SMS_100"
    assert sent["sign_name"] == "豆子兄弟" and sent["params"] == {"code": "482913", "minutes": "10"}
    assert sent["text"].startswith("您的登录验证码是 482913")
    assert message(engine, mid)["provider_message_id"] == "sms-1"


def test_a_gateway_that_refuses_the_signature_or_the_message_fails_it_and_a_5xx_is_retried(
        engine):
    m = member_with(engine, sms=True)
    first = queue(engine, customer_id=m["customer_id"], key="a")
    with SmsGateway("gw-secret") as gw:
        wrong = SmsGatewayAdapter(url=gw.url, secret="not-the-secret")
        deliver_due(engine=engine, now=NOW, adapters=only("sms", wrong))
        assert gw.sent == []
    row = message(engine, first)
    assert (row["state"], row["reason"]) == ("failed", "rejected") and "401" in row["error"]
    second = queue(engine, customer_id=m["customer_id"], key="b")
    with SmsGateway("gw-secret", statuses=[503]) as gw:
        adapter = SmsGatewayAdapter(url=gw.url, secret="gw-secret")
        deliver_due(engine=engine, now=NOW, adapters=only("sms", adapter))
        assert message(engine, second)["state"] == "pending"
        later = message(engine, second)["next_attempt_at"]
        deliver_due(engine=engine, now=later, adapters=only("sms", adapter))
        assert len(gw.sent) == 1
    assert message(engine, second)["state"] == "delivered"


def test_a_worker_dying_after_an_sms_send_resends_under_the_same_key_and_the_gateway_sends_once(
        engine):
    m = member_with(engine, sms=True)
    mid = queue(engine, customer_id=m["customer_id"])
    with SmsGateway("gw-secret") as gw:
        adapter = SmsGatewayAdapter(url=gw.url, secret="gw-secret")
        with pytest.raises(WorkerDied):
            deliver_due(engine=engine, now=NOW,
                        adapters=only("sms", DiesAfterSending(adapter)))  # type: ignore[arg-type]
        stats = deliver_due(engine=engine, now=AFTER_LEASE, adapters=only("sms", adapter))
        assert stats.resent_after_crash == 1 and stats.delivered == 1
        keys = [r.headers["idempotency-key"] for r in gw.http.requests]
        assert keys == [f"patron-message-{mid}"] * 2
        assert len(gw.sent) == 1
    assert [a["outcome"] for a in attempts(engine, mid)] == ["unknown", "delivered"]


# --- WeChat template messages -------------------------------------------------------------------

def test_a_wechat_template_message_goes_to_the_openid_with_its_fields(engine):
    m = member_with(engine, wechat=True)
    add_openid(engine, m["customer_id"], "oPENID-li")
    with UnitOfWork(engine) as uow:
        from patron.messaging import service
        from patron.security.model import SYSTEM

        service.create_template(uow=uow, actor=SYSTEM, values={
            "code": "points_expiring",
            "variables": ["program", "member_code", "points", "expires_on", "balance"],
            "body_zh": "{{ points }} 积分将到期", "wechat_template_id": "TPL-EXPIRY",
            "wechat_fields": {"thing1": "{{ program }}", "number2": "{{ points }}"}})
    mid = queue(engine, customer_id=m["customer_id"], channel="wechat", purpose="marketing")
    with WeChatApi("wx-app", "wx-secret") as wx:
        wx.expire_next_token = True  # the first token is refused: fetched again, then sent
        adapter = WeChatAdapter(app_id="wx-app", app_secret="wx-secret", api_url=wx.base)
        assert deliver_due(engine=engine, now=NOW,
                           adapters=only("wechat", adapter)).delivered == 1
        (sent,) = wx.sent
        assert wx.tokens_issued == 2
    assert sent == {"touser": "oPENID-li", "template_id": "TPL-EXPIRY",
                    "data": {"thing1": {"value": "Bean Club"}, "number2": {"value": "71"}},
                    "client_msg_id": f"patron-message-{mid}"}
    assert message(engine, mid)["provider_message_id"] == "2000"


def test_wechat_refusals_fail_the_message_and_a_template_without_a_wechat_id_is_not_sent(
        engine):
    m = member_with(engine, wechat=True)
    save_notice(engine)
    unfollowed = queue(engine, customer_id=m["customer_id"], channel="wechat", key="a",
                       template="notice", variables={}, to="unfollowed-1")
    no_template = queue(engine, customer_id=m["customer_id"], channel="wechat", key="b",
                        to="oPENID-li")  # the built-in template names no WeChat template
    with WeChatApi("wx-app", "wx-secret") as wx:
        adapter = WeChatAdapter(app_id="wx-app", app_secret="wx-secret", api_url=wx.base)
        deliver_due(engine=engine, now=NOW, adapters=only("wechat", adapter))
        assert wx.sent == []
    row = message(engine, no_template)
    assert (row["state"], row["reason"]) == ("failed", "no_template")
    row = message(engine, unfollowed)
    assert (row["state"], row["reason"]) == ("failed", "rejected") and "43004" in row["error"]


def save_notice(engine) -> None:
    from patron.messaging import service
    from patron.security.model import SYSTEM

    with UnitOfWork(engine) as uow:
        service.create_template(uow=uow, actor=SYSTEM, values={
            "code": "notice", "variables": [], "body_zh": "通知",
            "wechat_template_id": "TPL-1", "wechat_fields": {"thing1": "通知"}})


def test_a_worker_dying_after_a_wechat_send_resends_with_the_same_client_msg_id_once(engine):
    m = member_with(engine, wechat=True)
    save_notice(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="wechat", template="notice",
                variables={}, to="oPENID-li")
    with WeChatApi("wx-app", "wx-secret") as wx:
        adapter = WeChatAdapter(app_id="wx-app", app_secret="wx-secret", api_url=wx.base)
        with pytest.raises(WorkerDied):
            deliver_due(engine=engine, now=NOW,
                        adapters=only("wechat", DiesAfterSending(adapter)))  # type: ignore[arg-type]
        stats = deliver_due(engine=engine, now=AFTER_LEASE, adapters=only("wechat", adapter))
        assert stats.resent_after_crash == 1
        assert [s["touser"] for s in wx.sent] == ["oPENID-li"]
    assert message(engine, mid)["state"] == "delivered"


# --- WeChat subscription messages (subscribeMessage.send) --------------------------------------

def save_subscription(engine) -> None:
    from patron.messaging import service
    from patron.security.model import SYSTEM

    with UnitOfWork(engine) as uow:
        service.create_template(uow=uow, actor=SYSTEM, values={
            "code": "sub-points", "variables": ["points"], "body_zh": "{{ points }} 积分",
            "wechat_kind": "subscribe", "wechat_template_id": "SUB-1",
            "wechat_page": "pages/points/index",
            "wechat_fields": {"number1": "{{ points }}", "thing2": "积分即将到期"}})


def test_a_wechat_subscription_message_is_sent_in_the_shape_of_subscribe_message_send(engine):
    m = member_with(engine, wechat=True)
    save_subscription(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="wechat", template="sub-points",
                variables={"points": 71}, to="oPENID-li", purpose="marketing")
    with WeChatApi("wx-app", "wx-secret") as wx:
        adapter = WeChatAdapter(app_id="wx-app", app_secret="wx-secret", api_url=wx.base)
        assert deliver_due(engine=engine, now=NOW,
                           adapters=only("wechat", adapter)).delivered == 1
        (sent,) = wx.subscribe_sent
        assert wx.sent == []  # not a template message
    assert sent == {"touser": "oPENID-li", "template_id": "SUB-1",
                    "page": "pages/points/index", "miniprogram_state": "formal",
                    "lang": "zh_CN",
                    "data": {"number1": {"value": "71"}, "thing2": {"value": "积分即将到期"}}}
    assert message(engine, mid)["provider_message_id"] == "3001"


def test_a_subscription_message_to_a_customer_who_did_not_accept_it_fails_not_subscribed(
        engine):
    m = member_with(engine, wechat=True)
    save_subscription(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="wechat", template="sub-points",
                variables={"points": 5}, to="nosub-openid", purpose="marketing")
    with WeChatApi("wx-app", "wx-secret") as wx:
        adapter = WeChatAdapter(app_id="wx-app", app_secret="wx-secret", api_url=wx.base)
        deliver_due(engine=engine, now=NOW, adapters=only("wechat", adapter))
        assert wx.subscribe_sent == []
    row = message(engine, mid)
    assert (row["state"], row["reason"]) == ("failed", "not_subscribed")
    assert "43101" in row["error"]


def test_a_subscription_message_whose_worker_died_mid_send_is_not_sent_again(engine):
    """subscribeMessage.send has no client_msg_id: WeChat cannot de-duplicate a resend."""
    m = member_with(engine, wechat=True)
    save_subscription(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="wechat", template="sub-points",
                variables={"points": 5}, to="oPENID-li", purpose="marketing")
    with WeChatApi("wx-app", "wx-secret") as wx:
        adapter = WeChatAdapter(app_id="wx-app", app_secret="wx-secret", api_url=wx.base)
        with pytest.raises(WorkerDied):
            deliver_due(engine=engine, now=NOW,
                        adapters=only("wechat", DiesAfterSending(adapter)))  # type: ignore[arg-type]
        deliver_due(engine=engine, now=AFTER_LEASE, adapters=only("wechat", adapter))
        assert len(wx.subscribe_sent) == 1
    row = message(engine, mid)
    assert (row["state"], row["reason"]) == ("failed", "outcome_unknown")


# --- app push and other systems by signed webhook -----------------------------------------------

def test_an_app_push_is_posted_signed_to_the_apps_backend(engine):
    m = member_with(engine, app=True)
    mid = queue(engine, customer_id=m["customer_id"], channel="app", purpose="marketing")
    with WebhookReceiver("push-secret", statuses=[500]) as rx:
        adapter = WebhookAdapter(name="app_push", url=rx.url, secret="push-secret")
        deliver_due(engine=engine, now=NOW, adapters=only("app", adapter))
        assert rx.processed == [] and message(engine, mid)["state"] == "pending"
        deliver_due(engine=engine, now=message(engine, mid)["next_attempt_at"],
                    adapters=only("app", adapter))
        (push,) = rx.processed
    assert push["id"] == mid and push["to"] == str(m["customer_id"])
    assert push["title"] == "您有 71 积分即将到期"
    assert push["unsubscribe_url"].startswith("http://127.0.0.1:8000/messages/unsubscribe/")
    assert message(engine, mid)["state"] == "delivered"


# --- which adapter serves which channel ---------------------------------------------------------

def test_each_channel_uses_its_provider_once_configured_and_the_log_until_then():
    adapters = configured_adapters(Settings())
    assert all(isinstance(a, LogAdapter) for a in adapters.values())
    adapters = configured_adapters(Settings(
        smtp_host="mail.example.cn", sms_gateway_url="https://sms.example.cn/send",
        sms_gateway_secret="s", wechat_app_id="wx", wechat_app_secret="ws",
        app_push_url="https://app.example.cn/push", app_push_secret="p",
        messages_webhook_url="https://crm.example.cn/in", messages_webhook_secret="w"))
    assert {k: a.name for k, a in adapters.items()} == {
        "email": "smtp", "sms": "sms_gateway", "wechat": "wechat", "app": "app_push",
        "webhook": "webhook"}
