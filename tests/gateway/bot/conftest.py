"""The bot channel for real: aiogram's Bot talks to FakeTelegram; updates are posted to the webhook as
Telegram delivers them, with the secret header."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select

from gateway.settings import Settings, load_settings
from gateway.web.keys import DISPATCHER, STORE
from tests.fakes.telegram_api import (
    BOT_TOKEN,
    BOT_USERNAME,
    USER_ID,
    FakeTelegram,
    callback_query_update,
    start_update,
    text_message_update,
)

PUBLIC = "http://gateway.test"
SECRET = "webhook-secret_for-the-tests-0123"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def bot_settings(database_url: str, fake_telegram: FakeTelegram, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=database_url, public_url=PUBLIC, run_dispatcher=False, telegram_bot_token=BOT_TOKEN,
        telegram_webhook_secret=SECRET, telegram_api_base=fake_telegram.url, telegram_bot_username=BOT_USERNAME,
        reminder_after_seconds=600,
    )
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str, fake_telegram: FakeTelegram, paired_redis_url: str) -> Settings:
    return bot_settings(database_url, fake_telegram, redis_url=paired_redis_url)


class Unpaced:
    """No send pacing: Telegram's one-message-a-second-per-chat bucket is the dispatcher's own concern
    (tests/gateway/messaging); here it would only make every exchange wait."""

    async def acquire(self, key: str, rate_per_second: float | None = None) -> None:
        return None


@pytest.fixture
async def client(app, aiohttp_client):  # type: ignore[no-untyped-def]
    client = await aiohttp_client(app)
    client.app[DISPATCHER].limiter = Unpaced()
    return client


async def flush(client: Any) -> None:
    """Let the dispatcher send everything that is due."""
    while await client.app[DISPATCHER].run_once():
        pass


async def rows(client: Any, model: Any, *where: Any) -> list[Any]:
    """The model's rows (where given), in the order they were written (by id, where the table has one)."""
    query = select(model).where(*where)
    if "id" in model.__table__.c:
        query = query.order_by(model.id)
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(query)).all())


class Chat:
    """A citizen's private chat with the bot: posts real updates to the webhook, reads what the fake got."""

    def __init__(self, client: Any, fake: FakeTelegram, user_id: int = USER_ID) -> None:
        self.client, self.fake, self.user_id = client, fake, user_id

    async def post(self, update: dict[str, Any], *, secret: str | None = SECRET) -> Any:
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        return await self.client.post("/webhooks/telegram", json=update, headers=headers)

    async def send(self, update: dict[str, Any]) -> dict[str, Any]:
        resp = await self.post(update)
        assert resp.status == 200, await resp.text()
        return update

    async def say(self, text: str) -> dict[str, Any]:
        return await self.send(text_message_update(text, user_id=self.user_id))

    async def start(self, payload: str | None = None) -> dict[str, Any]:
        return await self.send(start_update(payload, user_id=self.user_id))

    def tap_update(self, data: str, message: dict[str, Any] | None = None) -> dict[str, Any]:
        """The callback query for a tap on a button of a message the bot sent (the newest one with it)."""
        message = message or self.message_with(data)
        return callback_query_update(
            data, user_id=self.user_id, message_id=message["message_id"], message_text=message["text"],
            reply_markup=message.get("reply_markup"),
        )

    async def tap(self, data: str, message: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.send(self.tap_update(data, message))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The bot's messages in this chat as they look now (edits applied), oldest first."""
        return [m for (chat, _), m in sorted(self.fake.messages.items(), key=lambda kv: kv[0][1]) if chat == self.user_id]

    @property
    def last(self) -> dict[str, Any]:
        return self.messages[-1]

    def message_with(self, data: str) -> dict[str, Any]:
        for message in reversed(self.messages):
            if data in button_data(message):
                return message
        raise AssertionError(f"no message in the chat has a button {data!r}")


def button_data(message: dict[str, Any]) -> list[str]:
    keyboard = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [button["callback_data"] for row in keyboard for button in row]


def button_texts(message: dict[str, Any]) -> list[str]:
    keyboard = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [button["text"] for row in keyboard for button in row]


@pytest.fixture
def chat(client, fake_telegram) -> Chat:  # type: ignore[no-untyped-def]
    return Chat(client, fake_telegram)
