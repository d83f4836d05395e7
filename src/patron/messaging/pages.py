"""The unsubscribe page a marketing message links to (no login: the signed link is the proof).

``GET`` only shows what will happen and a button, because mail scanners open links; ``POST``
withdraws the consent. Mail clients' one-click unsubscribe (RFC 8058, ``List-Unsubscribe-Post``)
posts to the same address.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from patron.db import UnitOfWork, get_engine
from patron.deps import public, rate_limited, request_language
from patron.errors import NotFound
from patron.messaging import service
from patron.security.model import Actor

# The links in messages: the signed token in the URL is the authority.
router = APIRouter(include_in_schema=False,
                   dependencies=[Depends(public("signed unsubscribe link in a message")),
                                 Depends(rate_limited("public"))])

TEXT = {
    "zh": {"title": "退订", "ask": "不再通过{channel}接收营销消息？", "button": "确认退订",
           "done": "已退订：您将不再通过{channel}收到营销消息。", "invalid": "退订链接无效。"},
    "en": {"title": "Unsubscribe", "ask": "Stop receiving marketing messages by {channel}?",
           "button": "Unsubscribe", "done": "Done: no more marketing messages by {channel}.",
           "invalid": "This unsubscribe link is not valid."},
}
CHANNEL_NAMES = {"zh": {"sms": "短信", "email": "邮件", "wechat": "微信", "app": "App 推送",
                        "webhook": "其他渠道"},
                 "en": {"sms": "SMS", "email": "email", "wechat": "WeChat",
                        "app": "app notifications", "webhook": "other channels"}}


def _page(lang: str, content: str, status: int = 200) -> HTMLResponse:
    title = escape(TEXT[lang]["title"])
    html = (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{title}</title><link rel="stylesheet" href="/static/patron.css"></head>'
            f'<body><main class="narrow"><h1>{title}</h1>{content}</main></body></html>')
    return HTMLResponse(html, status_code=status)


def _channel_of(token: str) -> str | None:
    from sqlalchemy import select

    from patron.messaging import model
    from patron.messaging.tables import messages

    with UnitOfWork(get_engine(), readonly=True) as uow:
        message_id = model.read_unsubscribe_token(service.signing_key(uow.c), token)
        if message_id is None:
            return None
        return uow.c.execute(select(messages.c.channel).where(messages.c.id == message_id)
                             ).scalar()


@router.get("/messages/unsubscribe/{token}")
def unsubscribe_form(token: str, request: Request) -> HTMLResponse:
    lang = request_language(request)
    channel = _channel_of(token)
    if channel is None:
        return _page(lang, f"<p>{escape(TEXT[lang]['invalid'])}</p>", 404)
    ask = TEXT[lang]["ask"].format(channel=CHANNEL_NAMES[lang][channel])
    return _page(lang, f'<p>{escape(ask)}</p><form method="post">'
                       f'<button type="submit">{escape(TEXT[lang]["button"])}</button></form>')


@router.post("/messages/unsubscribe/{token}")
def unsubscribe(token: str, request: Request) -> HTMLResponse:
    lang = request_language(request)
    ip = request.client.host if request.client else None
    actor = Actor(type="system", id=None, name="unsubscribe-link", role="owner", ip=ip)
    try:
        with UnitOfWork(get_engine()) as uow:
            out = service.unsubscribe(uow=uow, token=token, actor=actor)
    except NotFound:
        return _page(lang, f"<p>{escape(TEXT[lang]['invalid'])}</p>", 404)
    done = TEXT[lang]["done"].format(channel=CHANNEL_NAMES[lang][out["channel"]])
    return _page(lang, f"<p>{escape(done)}</p>")
