"""Settings: typed, from the environment; production refuses to run without a secret."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from gateway.settings import Settings, load_settings


def test_defaults_are_the_embedded_setup(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./gateway.db"
    assert settings.redis_url == "" and settings.sms_provider == "console" and settings.is_sqlite
    assert settings.quiet_window is not None and str(settings.quiet_window[0]) == "21:00:00"
    assert not settings.bot_enabled


def test_environment_and_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GATEWAY_PUBLIC_URL=https://pj.example.cn/\nGATEWAY_QUIET_HOURS=22:30-07:00\n")
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    settings = Settings()
    assert settings.public_url == "https://pj.example.cn" and settings.port == 9000
    assert str(settings.quiet_window[1]) == "07:00:00"


@pytest.mark.parametrize("field,value", [("port", "eighty"), ("quiet_hours", "9pm-8am"), ("sms_provider", "carrier-pigeon")])
def test_bad_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        load_settings(**{field: value})


def test_production_needs_a_secret_key():
    with pytest.raises(ValidationError, match="GATEWAY_SECRET_KEY is required in production"):
        load_settings(gateway_env="production")
    assert load_settings(gateway_env="production", secret_key="s" * 32).gateway_env == "production"


def test_twilio_needs_credentials():
    with pytest.raises(ValidationError, match="TWILIO_ACCOUNT_SID"):
        load_settings(sms_provider="twilio")


def test_serve_refuses_to_start_in_production_without_secret(tmp_path):
    env = {"GATEWAY_ENV": "production", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gateway", "serve"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "GATEWAY_SECRET_KEY is required in production" in result.stderr


def test_package_imports_without_settings():
    # Nothing is read at import time (STYLE 1): importing every module needs no environment.
    code = "import gateway.app, gateway.evaluations.views, gateway.web.rating, gateway.messaging.dispatcher"
    result = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
