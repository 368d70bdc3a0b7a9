"""`gateway bot set-webhook`, run as an operator would, against FakeTelegram."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.fakes.telegram_api import BOT_TOKEN
from tests.gateway.bot.conftest import SECRET


async def _gateway(*args: str, env: dict[str, str], cwd) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    # Async, so the fake (on this test's event loop) answers while the command runs.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


def _env(fake_telegram, tmp_path, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "GATEWAY_PUBLIC_URL": "https://gateway.example.cn",
        "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_BASE": fake_telegram.url,
        "PYTHONPATH": os.getcwd(),
        **extra,
    }


async def test_set_webhook_registers_url_secret_and_update_kinds(fake_telegram, tmp_path):
    code, out, err = await _gateway("bot", "set-webhook", env=_env(fake_telegram, tmp_path), cwd=tmp_path)
    assert code == 0, err
    assert fake_telegram.webhook["url"] == "https://gateway.example.cn/webhooks/telegram"
    assert fake_telegram.webhook["secret_token"] == SECRET
    assert fake_telegram.webhook["allowed_updates"] == ["callback_query", "edited_message", "message", "my_chat_member"]
    assert [c["command"] for c in fake_telegram.calls_of("setMyCommands")[0].params["commands"]] == ["start", "my", "help"]
    assert "webhook set: https://gateway.example.cn/webhooks/telegram" in out
    assert SECRET not in out and BOT_TOKEN not in out


async def test_set_webhook_refuses_without_token_or_with_a_bad_secret(fake_telegram):
    import pytest

    from gateway.bot.webhook import WebhookSetupError, register_webhook
    from gateway.settings import load_settings

    base = dict(telegram_api_base=fake_telegram.url, public_url="https://gateway.example.cn")
    with pytest.raises(WebhookSetupError, match="TELEGRAM_BOT_TOKEN"):
        await register_webhook(load_settings(**base, telegram_webhook_secret=SECRET))
    for bad in ("", "has spaces", "x" * 257):
        with pytest.raises(WebhookSetupError, match="TELEGRAM_WEBHOOK_SECRET"):
            await register_webhook(load_settings(**base, telegram_bot_token=BOT_TOKEN, telegram_webhook_secret=bad))
    assert fake_telegram.calls == []
