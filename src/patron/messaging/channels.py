"""Which adapter serves each channel: a channel's provider once it is configured (PATRON_*
settings), the log adapter until then (the demo)."""

from __future__ import annotations

from patron.config import Settings, get_settings
from patron.messaging.adapters import Adapter, LogAdapter
from patron.messaging.providers import (
    SmsGatewayAdapter,
    SmtpAdapter,
    WebhookAdapter,
    WeChatAdapter,
)


def configured_adapters(settings: Settings | None = None) -> dict[str, Adapter]:
    s = settings or get_settings()
    log = LogAdapter()
    out: dict[str, Adapter] = {"sms": log, "email": log, "wechat": log, "app": log,
                               "webhook": log}
    if s.smtp_host:
        out["email"] = SmtpAdapter(host=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
                                   password=s.smtp_password, starttls=s.smtp_starttls,
                                   sender=s.smtp_from)
    if s.sms_gateway_url:
        out["sms"] = SmsGatewayAdapter(url=s.sms_gateway_url, secret=s.sms_gateway_secret,
                                       template_id=s.sms_template_id, sign_name=s.sms_sign_name)
    if s.wechat_app_id:
        out["wechat"] = WeChatAdapter(app_id=s.wechat_app_id, app_secret=s.wechat_app_secret,
                                      api_url=s.wechat_api_url)
    if s.app_push_url:
        out["app"] = WebhookAdapter(name="app_push", url=s.app_push_url,
                                    secret=s.app_push_secret)
    if s.messages_webhook_url:
        out["webhook"] = WebhookAdapter(name="webhook", url=s.messages_webhook_url,
                                        secret=s.messages_webhook_secret)
    return out
