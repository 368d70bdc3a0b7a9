"""Typed settings, read from the environment and `.env` (DESIGN.md §5)."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from gateway.upload.profile import ProvinceProfile

# A well-known key for development only: data encrypted with it is not protected.
DEV_SECRET_KEY = "dev-only-insecure-key-change-me"

_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class SettingsError(ValueError):
    """The configuration cannot run: the message says which setting and why."""


class Settings(BaseSettings):
    """Every setting of the gateway; `.env.example` documents each one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    gateway_env: Literal["development", "production"] = Field(default="development", alias="GATEWAY_ENV")
    database_url: str = Field(default="sqlite+aiosqlite:///./gateway.db", alias="GATEWAY_DATABASE_URL")
    redis_url: str = Field(default="", alias="GATEWAY_REDIS_URL")
    public_url: str = Field(default="http://127.0.0.1:8080", alias="GATEWAY_PUBLIC_URL")
    secret_key: SecretStr = Field(default=SecretStr(""), alias="GATEWAY_SECRET_KEY")
    timezone: str = Field(default="Asia/Shanghai", alias="GATEWAY_TIMEZONE")
    quiet_hours: str = Field(default="21:00-08:00", alias="GATEWAY_QUIET_HOURS")
    host: str = Field(default="127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(default=8080, ge=1, le=65535, alias="GATEWAY_PORT")
    log_level: str = Field(default="INFO", alias="GATEWAY_LOG_LEVEL")
    calendar_file: Path | None = Field(default=None, alias="GATEWAY_CALENDAR_FILE")
    sms_signature: str = Field(default="【政务服务好差评】", alias="GATEWAY_SMS_SIGNATURE")
    sms_provider: Literal["console", "twilio"] = Field(default="console", alias="GATEWAY_SMS_PROVIDER")
    sms_rate_per_second: float = Field(default=10.0, gt=0, alias="GATEWAY_SMS_RATE_PER_SECOND")
    dispatch_interval_seconds: float = Field(default=1.0, gt=0, alias="GATEWAY_DISPATCH_INTERVAL_SECONDS")
    dispatch_batch_size: int = Field(default=50, ge=1, le=1000, alias="GATEWAY_DISPATCH_BATCH_SIZE")
    dispatch_max_attempts: int = Field(default=8, ge=1, alias="GATEWAY_DISPATCH_MAX_ATTEMPTS")
    dispatch_lease_seconds: int = Field(default=120, ge=5, alias="GATEWAY_DISPATCH_LEASE_SECONDS")
    run_dispatcher: bool = Field(default=True, alias="GATEWAY_RUN_DISPATCHER")
    db_pool_size: int = Field(default=25, ge=1, le=500, alias="GATEWAY_DB_POOL_SIZE")
    inbox_batch_size: int = Field(default=64, ge=1, le=500, alias="GATEWAY_INBOX_BATCH_SIZE")
    inbox_lease_seconds: int = Field(default=60, ge=5, alias="GATEWAY_INBOX_LEASE_SECONDS")
    inbox_group_size: int = Field(default=32, ge=1, le=64, alias="GATEWAY_INBOX_GROUP_SIZE")
    inbox_max_attempts: int = Field(default=5, ge=1, alias="GATEWAY_INBOX_MAX_ATTEMPTS")
    sms_replies_per_hour: int = Field(default=20, ge=1, alias="GATEWAY_SMS_REPLIES_PER_HOUR")
    reminder_after_seconds: int = Field(default=1800, ge=60, alias="GATEWAY_REMINDER_AFTER_SECONDS")
    conversation_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60, alias="GATEWAY_CONVERSATION_TTL_SECONDS")
    overdue_reminder_webhook: str = Field(default="", alias="GATEWAY_OVERDUE_WEBHOOK_URL")
    overdue_sweep_interval_seconds: float = Field(default=300.0, gt=0, alias="GATEWAY_OVERDUE_SWEEP_INTERVAL_SECONDS")
    survey_no_answer_days: int = Field(default=3, ge=1, alias="GATEWAY_SURVEY_NO_ANSWER_DAYS")
    campaign_queue_ahead: int = Field(default=0, ge=0, le=100_000, alias="GATEWAY_CAMPAIGN_QUEUE_AHEAD")
    campaign_feed_interval_seconds: float = Field(default=1.0, gt=0, alias="GATEWAY_CAMPAIGN_FEED_INTERVAL_SECONDS")
    # Fraud detection (Art. 19, docs/fraud.md): the pass, then each rule's thresholds.
    fraud_interval_seconds: float = Field(default=10.0, gt=0, alias="GATEWAY_FRAUD_INTERVAL_SECONDS")
    fraud_batch_size: int = Field(default=2000, ge=1, le=10_000, alias="GATEWAY_FRAUD_BATCH_SIZE")
    fraud_lag_seconds: float = Field(default=10.0, ge=0, alias="GATEWAY_FRAUD_LAG_SECONDS")
    fraud_burst_count: int = Field(default=5, ge=2, alias="GATEWAY_FRAUD_BURST_COUNT")
    fraud_burst_minutes: float = Field(default=30.0, gt=0, alias="GATEWAY_FRAUD_BURST_MINUTES")
    fraud_staff_rater_scope: Literal["unit", "region", "any"] = Field(
        default="region", alias="GATEWAY_FRAUD_STAFF_RATER_SCOPE"
    )
    fraud_fast_seconds: float = Field(default=5.0, gt=0, alias="GATEWAY_FRAUD_FAST_SECONDS")
    fraud_device_count: int = Field(default=5, ge=2, alias="GATEWAY_FRAUD_DEVICE_COUNT")
    fraud_address_count: int = Field(default=30, ge=2, alias="GATEWAY_FRAUD_ADDRESS_COUNT")
    fraud_device_hours: float = Field(default=24.0, gt=0, alias="GATEWAY_FRAUD_DEVICE_HOURS")
    fraud_client_address_header: str = Field(default="", alias="GATEWAY_FRAUD_CLIENT_ADDRESS_HEADER")
    fraud_share_min_sample: int = Field(default=30, ge=1, alias="GATEWAY_FRAUD_SHARE_MIN_SAMPLE")
    fraud_share_min_peers: int = Field(default=10, ge=3, alias="GATEWAY_FRAUD_SHARE_MIN_PEERS")
    fraud_share_z: float = Field(default=3.5, gt=0, alias="GATEWAY_FRAUD_SHARE_Z")
    fraud_targeted_count: int = Field(default=3, ge=2, alias="GATEWAY_FRAUD_TARGETED_COUNT")
    fraud_targeted_days: float = Field(default=30.0, gt=0, alias="GATEWAY_FRAUD_TARGETED_DAYS")
    fraud_text_min_chars: int = Field(default=12, ge=4, alias="GATEWAY_FRAUD_TEXT_MIN_CHARS")
    fraud_text_similarity: float = Field(default=0.7, gt=0, le=1, alias="GATEWAY_FRAUD_TEXT_SIMILARITY")
    fraud_text_numbers: int = Field(default=3, ge=2, alias="GATEWAY_FRAUD_TEXT_NUMBERS")
    fraud_text_days: float = Field(default=30.0, gt=0, alias="GATEWAY_FRAUD_TEXT_DAYS")

    # The upward feed to the provincial platform (docs/upload.md). No profile: nothing is queued.
    province_profile: str = Field(default="", alias="GATEWAY_PROVINCE_PROFILE")
    province_base_url: str = Field(default="", alias="GATEWAY_PROVINCE_BASE_URL")
    province_app_key: str = Field(default="", alias="GATEWAY_PROVINCE_APP_KEY")
    province_app_secret: SecretStr = Field(default=SecretStr(""), alias="GATEWAY_PROVINCE_APP_SECRET")
    province_token: SecretStr = Field(default=SecretStr(""), alias="GATEWAY_PROVINCE_TOKEN")
    upload_interval_seconds: float = Field(default=1.0, gt=0, alias="GATEWAY_UPLOAD_INTERVAL_SECONDS")
    upload_lease_seconds: int = Field(default=60, ge=1, alias="GATEWAY_UPLOAD_LEASE_SECONDS")
    upload_max_attempts: int = Field(default=0, ge=0, alias="GATEWAY_UPLOAD_MAX_ATTEMPTS")
    upload_concurrency: int = Field(default=4, ge=1, le=64, alias="GATEWAY_UPLOAD_CONCURRENCY")
    _province: object = PrivateAttr(default=None)
    console_idle_minutes: int = Field(default=30, ge=1, le=24 * 60, alias="GATEWAY_CONSOLE_IDLE_MINUTES")
    console_session_hours: int = Field(default=12, ge=1, le=24 * 30, alias="GATEWAY_CONSOLE_SESSION_HOURS")
    console_signin_failures_per_account: int = Field(
        default=5, ge=1, alias="GATEWAY_CONSOLE_SIGNIN_FAILURES_PER_ACCOUNT"
    )
    console_signin_failures_per_address: int = Field(
        default=20, ge=1, alias="GATEWAY_CONSOLE_SIGNIN_FAILURES_PER_ADDRESS"
    )
    console_signin_window_seconds: int = Field(default=900, ge=60, alias="GATEWAY_CONSOLE_SIGNIN_WINDOW_SECONDS")
    ranking_min_sample: int = Field(default=30, ge=1, le=100_000, alias="GATEWAY_RANKING_MIN_SAMPLE")
    public_stats_ttl_seconds: float = Field(default=60.0, ge=0, le=86_400, alias="GATEWAY_PUBLIC_STATS_TTL_SECONDS")
    stats_alert_interval_seconds: float = Field(default=3600.0, gt=0, alias="GATEWAY_STATS_ALERT_INTERVAL_SECONDS")

    twilio_account_sid: str = Field(default="", alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr = Field(default=SecretStr(""), alias="TWILIO_AUTH_TOKEN")
    twilio_from_number: str = Field(default="", alias="TWILIO_FROM_NUMBER")
    twilio_messaging_service_sid: str = Field(default="", alias="TWILIO_MESSAGING_SERVICE_SID")
    twilio_api_base: str = Field(default="https://api.twilio.com", alias="TWILIO_API_BASE")

    telegram_bot_token: SecretStr = Field(default=SecretStr(""), alias="TELEGRAM_BOT_TOKEN")
    telegram_webhook_secret: SecretStr = Field(default=SecretStr(""), alias="TELEGRAM_WEBHOOK_SECRET")
    telegram_api_base: str = Field(default="https://api.telegram.org", alias="TELEGRAM_API_BASE")
    telegram_bot_username: str = Field(default="", alias="TELEGRAM_BOT_USERNAME")

    @field_validator("public_url", "twilio_api_base", "telegram_api_base")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("calendar_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet(cls, value: str) -> str:
        if value.strip() and parse_quiet_hours(value) is None:
            raise ValueError("GATEWAY_QUIET_HOURS must look like 21:00-08:00 (or be empty for none)")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.gateway_env == "production":
            if not self.secret_key.get_secret_value() or self.secret_key.get_secret_value() == DEV_SECRET_KEY:
                raise SettingsError(
                    "GATEWAY_SECRET_KEY is required in production: it encrypts citizens' phone numbers "
                    "and keys their lookups; generate one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
            if len(self.secret_key.get_secret_value()) < 16:
                raise SettingsError("GATEWAY_SECRET_KEY must be at least 16 characters in production")
        if self.sms_provider == "twilio":
            if not self.twilio_account_sid or not self.twilio_auth_token.get_secret_value():
                raise SettingsError("GATEWAY_SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
            if not (self.twilio_from_number or self.twilio_messaging_service_sid):
                raise SettingsError(
                    "GATEWAY_SMS_PROVIDER=twilio needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
                )
        self._check_province()
        return self

    def _check_province(self) -> None:
        """An unusable province profile stops the gateway at start-up, saying which key is wrong."""
        if not self.province_profile.strip():
            return
        from gateway.upload.profile import ProfileError, load_profile

        try:
            profile = load_profile(self.province_profile.strip())
        except ProfileError as exc:
            raise SettingsError(f"GATEWAY_PROVINCE_PROFILE: {exc}") from None
        if profile.auth.kind == "hmac" and not (self.province_app_key and self.province_app_secret.get_secret_value()):
            raise SettingsError(
                f"province profile {profile.name!r} signs with HMAC: "
                "set GATEWAY_PROVINCE_APP_KEY and GATEWAY_PROVINCE_APP_SECRET"
            )
        if profile.auth.kind == "bearer" and not self.province_token.get_secret_value():
            raise SettingsError(f"province profile {profile.name!r} uses a bearer token: set GATEWAY_PROVINCE_TOKEN")
        self._province = profile

    @property
    def province(self) -> ProvinceProfile | None:
        """The parsed province profile, or None when no upload is configured."""
        return self._province  # type: ignore[return-value]

    @property
    def effective_secret(self) -> str:
        """The secret key, or the development key outside production."""
        return self.secret_key.get_secret_value() or DEV_SECRET_KEY

    @property
    def quiet_window(self) -> tuple[time, time] | None:
        """Quiet hours as (start, end) local times, or None when disabled."""
        return parse_quiet_hours(self.quiet_hours)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def bot_enabled(self) -> bool:
        return bool(self.telegram_bot_token.get_secret_value())


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """Parse '21:00-08:00' into local start and end times; empty means no quiet hours."""
    if not text.strip():
        return None
    match = _QUIET.match(text)
    if not match:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if not (0 <= h1 < 24 and 0 <= h2 < 24 and 0 <= m1 < 60 and 0 <= m2 < 60):
        return None
    return time(h1, m1), time(h2, m2)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; overrides (by field name) win, for tests."""
    # By alias, as the environment names them; pydantic validates the values, so their static type is open.
    return Settings(**{Settings.model_fields[k].alias or k: v for k, v in overrides.items()})  # type: ignore[arg-type]
