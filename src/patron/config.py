"""Settings, read from the environment (``PATRON_*``) or a ``.env`` file.

The database defaults to an embedded SQLite file under ``var/``; point
``PATRON_DATABASE_URL`` at PostgreSQL (``postgresql+psycopg://...``) to use it instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PATRON_", env_file=".env", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""
    session_hours: int = 12
    default_timezone: str = "Asia/Shanghai"
    default_language: str = "zh"
    # Failed logins: after `login_slowdown_after` failures each attempt waits longer; after
    # `login_lock_after` the account is locked for `login_lock_minutes`.
    login_slowdown_after: int = 3
    login_lock_after: int = 8
    login_lock_minutes: int = 15
    cookie_secure: bool = False
    # Member self-service pages (/m/): how long a member stays signed in after the one-time
    # code, and how long a QR member card shown on the phone stays valid at the till.
    member_session_minutes: int = Field(default=30, ge=1, le=1440)
    member_card_seconds: int = Field(default=300, ge=30, le=3600)
    # Deliver webhooks from a thread of each server process (off when a separate
    # `patron webhooks deliver` worker runs).
    webhooks_worker: bool = True
    # Messages (docs/messaging.md): deliver from a thread of each server process (off when a
    # separate `patron messages work` runs); the base URL of unsubscribe links. Each channel
    # uses its provider once that is configured, and writes to the server log until then.
    messages_worker: bool = True
    public_url: str = "http://127.0.0.1:8000"
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_from: str = "patron@localhost"
    sms_gateway_url: str = ""
    sms_gateway_secret: str = ""
    sms_template_id: str = ""
    sms_sign_name: str = ""
    wechat_app_id: str = ""
    wechat_app_secret: str = ""
    wechat_api_url: str = "https://api.weixin.qq.com"
    app_push_url: str = ""
    app_push_secret: str = ""
    messages_webhook_url: str = ""
    messages_webhook_secret: str = ""
    # Nightly analytics refresh: local time "HH:MM" in `analytics_refresh_tz`, or "off".
    analytics_refresh_at: str = "03:00"
    analytics_refresh_tz: str = "Asia/Shanghai"
    # argon2id cost. The defaults are the library's (RFC 9106 low-memory profile); the test
    # suite lowers them to keep thousands of logins fast.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536

    @field_validator("analytics_refresh_at")
    @classmethod
    def _refresh_at(cls, value: str) -> str:
        from patron.analytics.refresh_schedule import parse_refresh_at

        parse_refresh_at(value)  # raises ValueError with the reason
        return value.strip().lower() if value.strip().lower() == "off" else value.strip()

    @field_validator("analytics_refresh_tz")
    @classmethod
    def _refresh_tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'patron.sqlite3').as_posix()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
