"""Sending through the Bot API: what Telegram's errors mean for the outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.bot.provider import TelegramProvider, make_bot
from gateway.clock import as_utc
from gateway.messaging.providers import Outgoing, SendFailed
from gateway.settings import load_settings
from gateway.store.models import Citizen, DeliveryAttempt, OutboundMessage
from tests.conftest import sent_messages
from tests.fakes.telegram_api import BOT_TOKEN, USER_ID
from tests.gateway.bot.conftest import flush, rows
from tests.gateway.evaluations.helpers import report


async def test_a_blocked_bot_is_recorded_and_the_words_go_by_sms(client, world, chat, fake_telegram):
    await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": chat.user_id})
    fake_telegram.block(chat.user_id)
    await flush(client)

    assert [c.status for c in fake_telegram.calls_of("sendMessage")] == [403]
    (citizen,) = await rows(client, Citizen)
    assert citizen.bot_blocked_at is not None
    (message,) = await rows(client, OutboundMessage)
    assert message.channel == "sms" and message.status == "delivered" and message.buttons is None
    [sms] = sent_messages(client)  # the console SMS provider
    assert sms.to == "+8613812341234" and "个体工商户设立登记" in sms.body
    assert sms.body.startswith("【政务服务好差评】") and "非常满意" in sms.body and "非常不满意" in sms.body  # buttons as text
    attempts = await rows(client, DeliveryAttempt, DeliveryAttempt.message_id == message.id)
    assert [(a.outcome, a.error_code) for a in attempts] == [("retry", "403"), ("sent", None)]

    # Later messages for the citizen do not try the bot again.
    later = await report(client, world, case_no="HB-2", citizen={"phone": "13812341234"})
    assert [m["channel"] for m in later["messages_queued"]] == ["sms"]


async def test_429_waits_for_telegrams_retry_after(client, world, chat, fake_telegram, clock):
    await report(client, world, citizen={"telegram_chat_id": chat.user_id})
    fake_telegram.fail_next(1, 429, retry_after=7)
    await flush(client)
    (message,) = await rows(client, OutboundMessage)
    assert message.status == "queued" and message.error_code == "429"
    assert as_utc(message.next_attempt_at) == clock.now() + timedelta(seconds=7)

    clock.advance(seconds=6)
    await flush(client)
    assert len(fake_telegram.calls_of("sendMessage")) == 1  # not before Telegram said
    clock.advance(seconds=1)
    await flush(client)
    assert [c.status for c in fake_telegram.calls_of("sendMessage")] == [429, 200]
    (message,) = await rows(client, OutboundMessage)
    assert message.status == "sent" and message.provider_message_id == str(chat.last["message_id"])


@pytest.fixture
async def provider(fake_telegram):  # type: ignore[no-untyped-def]
    provider = TelegramProvider.from_settings(load_settings(telegram_bot_token=BOT_TOKEN, telegram_api_base=fake_telegram.url))
    yield provider
    await provider.close()


def _out(**fields) -> Outgoing:  # type: ignore[no-untyped-def]
    values = dict(message_id=1, channel="telegram", to=str(USER_ID), body="请对本次服务作出评价")
    values.update(fields)
    return Outgoing(**values)  # type: ignore[arg-type]


async def test_provider_sends_buttons_and_edits(provider, fake_telegram):
    rows_ = [[{"text": "5 非常满意", "data": "rt:1:5"}], [{"text": "1 非常不满意", "data": "rt:1:1"}]]
    sent = await provider.send(_out(buttons=rows_))
    [call] = fake_telegram.calls_of("sendMessage")
    assert call.params["reply_markup"] == {"inline_keyboard": [[{"text": "5 非常满意", "callback_data": "rt:1:5"}],
                                                               [{"text": "1 非常不满意", "callback_data": "rt:1:1"}]]}
    edited = await provider.send(_out(body="已选择：5 非常满意", edit_message_id=int(sent.provider_message_id)))  # type: ignore[arg-type]
    assert edited.provider_message_id == sent.provider_message_id
    assert fake_telegram.calls_of("editMessageText")[0].params["text"] == "已选择：5 非常满意"
    # The same edit again: Telegram says "message is not modified"; it is there, so it counts as sent.
    again = await provider.send(_out(body="已选择：5 非常满意", edit_message_id=int(sent.provider_message_id)))  # type: ignore[arg-type]
    assert again.status == "sent" and fake_telegram.calls_of("editMessageText")[-1].status == 400
    # A keyboard-only edit.
    await provider.send(_out(body="", buttons=rows_[:1], edit_message_id=int(sent.provider_message_id)))  # type: ignore[arg-type]
    assert fake_telegram.calls_of("editMessageReplyMarkup")[0].status == 200


async def test_provider_classifies_failures(provider, fake_telegram):
    fake_telegram.fail_next(1, 403)
    with pytest.raises(SendFailed) as blocked:
        await provider.send(_out())
    assert (blocked.value.code, blocked.value.permanent, blocked.value.opt_out) == ("403", True, True)

    fake_telegram.fail_next(1, 429, retry_after=3)
    with pytest.raises(SendFailed) as limited:
        await provider.send(_out())
    assert (limited.value.retry_after_seconds, limited.value.permanent, limited.value.opt_out) == (3.0, False, False)

    fake_telegram.fail_next(1, 400, description="Bad Request: chat not found")
    with pytest.raises(SendFailed) as bad:
        await provider.send(_out())
    assert (bad.value.code, bad.value.permanent) == ("400", True)

    fake_telegram.fail_next(1, 502, description="Bad Gateway")
    with pytest.raises(SendFailed) as server:
        await provider.send(_out())
    assert not server.value.permanent and not server.value.opt_out and server.value.retry_after_seconds is None

    with pytest.raises(SendFailed) as not_a_chat:
        await provider.send(_out(to="@channel"))
    assert not_a_chat.value.permanent


async def test_an_edit_that_cannot_be_done_is_sent_anew(provider, fake_telegram):
    fake_telegram.fail_next(1, 400, description="Bad Request: message to edit not found", method="editMessageText")
    sent = await provider.send(_out(body="请告诉我们原因", edit_message_id=77))
    assert [c.method for c in fake_telegram.calls] == ["editMessageText", "sendMessage"]
    assert sent.provider_message_id == "1001"  # the new message


async def test_network_errors_are_retryable():
    nobody_listens = load_settings(telegram_bot_token=BOT_TOKEN, telegram_api_base="http://127.0.0.1:9")
    provider = TelegramProvider(make_bot(nobody_listens))
    try:
        with pytest.raises(SendFailed) as failed:
            await provider.send(_out())
    finally:
        await provider.close()
    assert not failed.value.permanent and failed.value.code == "TelegramNetworkError"
