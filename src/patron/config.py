"""Settings, read from the environment (``PATRON_*``) or a ``.env`` file.

The database defaults to an embedded SQLite file under ``var/``; point
``PATRON_DATABASE_URL`` at PostgreSQL (``postgresql+psycopg://...``) to use it instead.
"""

from __future__ import annotations

from decimal import Decimal
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
    # Sensitive actions (reveal, export, role changes, key creation, points adjustments) need
    # the password typed within this many minutes (docs/security.md#re-authentication).
    reauth_minutes: int = Field(default=10, ge=1, le=1440)
    # Exports of more rows than this wait for an owner's approval (owners' own do not).
    export_approval_rows: int = Field(default=10000, ge=1)
    # Alerts to owners (docs/security.md#alerts): an export of at least this many rows; this
    # many personal-data reveals by one user within `alert_window_minutes`; sign-ins between
    # these local hours ("22-6"); where alert messages go (emails or phones, comma-separated;
    # none: the alerts page only).
    alert_export_rows: int = Field(default=1000, ge=1)
    alert_reveals: int = Field(default=20, ge=1)
    alert_window_minutes: int = Field(default=10, ge=1)
    alert_quiet_hours: str = "0-6"
    alert_recipients: str = ""
    # Requests per minute per client address on sign-in, one-time codes and other public
    # routes (in each server process).
    rate_limit_per_minute: int = Field(default=30, ge=1)
    # Request size limits (docs/security.md#request-size-limits): an uploaded order file, and
    # any other request body (JSON: order batches, offline checkout queues).
    import_max_upload_mb: int = Field(default=2048, ge=1, le=65536)
    max_json_body_mb: int = Field(default=32, ge=1, le=4096)
    # Member self-service pages (/m/): how long a member stays signed in after the one-time
    # code, and how long a QR member card shown on the phone stays valid at the till.
    member_session_minutes: int = Field(default=30, ge=1, le=1440)
    member_card_seconds: int = Field(default=300, ge=30, le=3600)
    # Personal-information rights (docs/privacy.md): days to answer a data-subject request, and
    # the retention job's inactivity period after which a customer is anonymised (0: never).
    privacy_request_days: int = Field(default=15, ge=1, le=90)
    retention_inactive_days: int = Field(default=1095, ge=0, le=36500)
    # Deliver webhooks from a thread of each server process (off when a separate
    # `patron webhooks deliver` worker runs).
    webhooks_worker: bool = True
    # Let webhook endpoints resolve to loopback, private, link-local or metadata addresses
    # (receivers inside the network; tests). Off: such URLs are refused (docs/webhooks.md).
    webhook_allow_private_targets: bool = False
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
    # Automations and campaigns (docs/automations.md, docs/campaigns.md): run them from a
    # thread of each server process (off when a separate `patron automations work` runs); an
    # audience above `audience_confirm_above` customers must be confirmed with its size before
    # anything is sent; a campaign above `campaign_approval_above` needs another user's approval.
    automations_worker: bool = True
    # What one message costs per channel, in yuan, for the lift report's cost and ROI of
    # automations, as JSON: {"sms": "0.05", "email": "0"} (a campaign's messages cost its own
    # message_cost).
    message_costs: dict[str, Decimal] = Field(default_factory=dict)
    audience_confirm_above: int = Field(default=1_000_000, ge=1)
    campaign_approval_above: int = Field(default=10_000, ge=0)
    # The segment builder's live count reads the audience replica (docs/segments.md#the-
    # audience-replica) when it is at most this many minutes old (0: never, always the
    # database); each server process refreshes it every `audience_replica_refresh_minutes`
    # (0: never; `patron segments sync-replica` from cron instead).
    audience_replica_max_age_minutes: int = Field(default=15, ge=0, le=10080)
    audience_replica_refresh_minutes: int = Field(default=10, ge=0, le=10080)
    # DuckDB's memory limit and threads for the replica's sync and each process's reader
    # (DuckDB's own defaults: 80 % of the machine's memory and every core).
    audience_replica_memory_mb: int = Field(default=2048, ge=64, le=1_048_576)
    audience_replica_threads: int = Field(default=2, ge=1, le=256)
    # Nightly analytics refresh: local time "HH:MM" in `analytics_refresh_tz`, or "off".
    analytics_refresh_at: str = "03:00"
    analytics_refresh_tz: str = "Asia/Shanghai"
    # argon2id cost. The defaults are the library's (RFC 9106 low-memory profile); the test
    # suite lowers them to keep thousands of logins fast.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    # Keys (docs/data-protection.md#keys): keyrings "id:key,id:key" (the first encrypts), the
    # blind index key; empty = development keys generated into <data_dir>/patron-keys.env.
    data_keys: str = ""
    index_key: str = ""
    backup_keys: str = ""
    # Backups (docs/backups.md): where they go, how many to keep, a daily time "HH:MM" in
    # `backup_tz` at which one server process takes one, or "off".
    backup_dir: Path | None = None
    backup_keep: int = Field(default=7, ge=1, le=1000)
    backup_at: str = "off"
    backup_tz: str = "Asia/Shanghai"

    @field_validator("backup_at")
    @classmethod
    def _backup_at(cls, value: str) -> str:
        from patron.analytics.refresh_schedule import parse_refresh_at

        parse_refresh_at(value)
        return value.strip().lower() if value.strip().lower() == "off" else value.strip()

    @field_validator("analytics_refresh_at")
    @classmethod
    def _refresh_at(cls, value: str) -> str:
        from patron.analytics.refresh_schedule import parse_refresh_at

        parse_refresh_at(value)  # raises ValueError with the reason
        return value.strip().lower() if value.strip().lower() == "off" else value.strip()

    @field_validator("analytics_refresh_tz", "backup_tz")
    @classmethod
    def _refresh_tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def effective_backup_dir(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'patron.sqlite3').as_posix()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
