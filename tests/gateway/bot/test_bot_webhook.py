"""The webhook's edge: the secret before anything, 200 for whatever Telegram sends, the bot off without a token."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.settings import load_settings
from gateway.store.models import BotUpdate, Citizen, Evaluation, Invitation, OutboundMessage
from gateway.web.keys import BOT_DISPATCHER, PROVIDERS, STORE
from tests.fakes.telegram_api import (
    channel_post_update,
    edited_message_update,
    group_message_update,
    photo_update,
    sticker_update,
)
from tests.gateway.bot.conftest import PUBLIC, SECRET, SECRET_HEADER, Chat, bot_settings, flush, rows
from tests.gateway.evaluations.helpers import count, report


async def _nothing_recorded(client) -> None:  # type: ignore[no-untyped-def]
    for model in (BotUpdate, Evaluation, OutboundMessage):
        assert await count(client, model) == 0, model.__name__


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", "webhook-secret_for-the-tests-0124", "密钥"])
async def test_missing_or_wrong_secret_is_refused_before_anything(client, world, chat, secret):
    await report(client, world, citizen={"telegram_chat_id": chat.user_id})
    invitation = (await rows(client, Invitation))[0]
    before = await count(client, OutboundMessage)
    resp = await chat.post(chat.tap_update(f"rt:{invitation.id}:1", {"message_id": 1001, "text": "请评价"}), secret=secret)
    assert resp.status == 401 and await resp.text() == "unauthorized"
    assert await count(client, Evaluation) == 0 and await count(client, BotUpdate) == 0
    assert await count(client, OutboundMessage) == before


async def test_without_a_configured_secret_every_call_is_refused(aiohttp_client, database_url, fake_telegram, clock):
    settings = bot_settings(database_url, fake_telegram, telegram_webhook_secret="")
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    chat = Chat(client, fake_telegram)
    assert (await chat.post(chat.tap_update("rt:1:1", {"message_id": 1, "text": "x"}), secret="")).status == 401


async def test_unexpected_updates_are_answered_200_and_change_nothing(client, world, chat, fake_telegram):
    await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": chat.user_id},
                 service_channel="online", staff_id=None)
    await flush(client)
    sent = len(fake_telegram.sent_messages)

    # Groups and channels are not served: nothing is recorded, nothing is said.
    for update in (group_message_update("/start"), group_message_update("5"), channel_post_update("5")):
        resp = await chat.post(update)
        assert resp.status == 200
    assert await count(client, BotUpdate) == 0 and await count(client, Evaluation) == 0

    # In the citizen's own chat, an edit, a sticker and a photo record nothing but get a short answer.
    for update in (edited_message_update("1", user_id=chat.user_id), sticker_update(user_id=chat.user_id),
                   photo_update(user_id=chat.user_id)):
        resp = await chat.post(update)
        assert resp.status == 200
    assert await count(client, Evaluation) == 0
    await flush(client)
    answers = [m["text"] for m in fake_telegram.sent_messages[sent:]]
    assert len(answers) == 3 and "修改后不会重新处理" in answers[0]
    assert all("回复数字评价" in a for a in answers[1:])  # the flow's short help for an empty message

    # A kind of update this aiogram does not know, and a JSON object that is no update at all.
    for body in ({"update_id": 990001, "some_future_update": {"x": 1}}, {"hello": "world"}):
        assert (await chat.post(body)).status == 200
    resp = await client.post("/webhooks/telegram", data=b"not json", headers={SECRET_HEADER: SECRET})
    assert resp.status == 400


async def test_stickers_from_a_chat_that_never_started_are_ignored(client, fake_telegram):
    stranger = Chat(client, fake_telegram, user_id=555000222)
    assert (await stranger.post(sticker_update(user_id=stranger.user_id))).status == 200
    await _nothing_recorded(client)
    assert await count(client, Citizen) == 0


async def test_the_routers_are_built_per_app(client, aiohttp_client, settings, clock):
    other = create_app(settings, clock=clock, migrate=False, run_background=False)
    assert other[BOT_DISPATCHER] is not client.app[BOT_DISPATCHER]
    assert client.app[BOT_DISPATCHER].resolve_used_update_types() == ["callback_query", "edited_message", "message", "my_chat_member"]


async def test_without_a_token_the_bot_is_off_and_the_rest_works(aiohttp_client, database_url, clock):
    from tests.conftest import register_world

    settings = load_settings(database_url=database_url, public_url=PUBLIC, run_dispatcher=False)
    client = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    assert BOT_DISPATCHER not in client.app and "telegram" not in client.app[PROVIDERS]
    resp = await client.post("/webhooks/telegram", json={"update_id": 1}, headers={"X-Telegram-Bot-Api-Secret-Token": "x"})
    assert resp.status == 404
    world = await register_world(client.app[STORE], clock)
    body = await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": 42})
    assert [m["channel"] for m in body["messages_queued"]] == ["sms"]  # the chat id is kept, the prompt goes by SMS
    page = await client.get(f"/r/{body['invitation']['token']}")
    assert page.status == 200 and "t.me/" not in await page.text()
