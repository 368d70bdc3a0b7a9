"""The fakes speak the wire formats the real SDKs expect: aiogram's Bot and Twilio's validator agree."""

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from twilio.request_validator import RequestValidator

from tests.fakes.telegram_api import (
    BOT_TOKEN,
    USER_ID,
    FakeTelegram,
    callback_query_update,
    channel_post_update,
    edited_message_update,
    group_message_update,
    photo_update,
    start_update,
    sticker_update,
    text_message_update,
)
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    inbound_sms_params,
    signed_form,
    status_callback_params,
)

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[
        [InlineKeyboardButton(text="5 非常满意", callback_data="rate:inv1:5")],
        [InlineKeyboardButton(text="1 非常不满意", callback_data="rate:inv1:1")],
    ]
)


@pytest_asyncio.fixture
async def bot(fake_telegram: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake_telegram.url))
    async with Bot(token=BOT_TOKEN, session=session) as bot:
        yield bot


# -- FakeTelegram with aiogram ---------------------------------------------------------------------


async def test_send_message_is_recorded_and_answered(bot: Bot, fake_telegram: FakeTelegram) -> None:
    message = await bot.send_message(chat_id=USER_ID, text="请为本次服务评价", reply_markup=KEYBOARD)

    assert message.message_id == 1001 and message.chat.id == USER_ID and message.chat.type == "private"
    assert message.text == "请为本次服务评价"
    assert message.reply_markup is not None
    assert message.reply_markup.model_dump(exclude_none=True) == KEYBOARD.model_dump(exclude_none=True)
    assert message.from_user is not None and message.from_user.id == fake_telegram.bot_id
    [call] = fake_telegram.calls
    assert call.method == "sendMessage" and call.status == 200
    assert call.params["chat_id"] == USER_ID
    assert call.params["text"] == "请为本次服务评价"
    assert call.params["reply_markup"]["inline_keyboard"][0][0] == {"text": "5 非常满意", "callback_data": "rate:inv1:5"}
    assert (await bot.send_message(chat_id=USER_ID, text="第二条")).message_id == 1002


async def test_edit_reply_markup_and_answer_callback(bot: Bot, fake_telegram: FakeTelegram) -> None:
    sent = await bot.send_message(chat_id=USER_ID, text="请为本次服务评价", reply_markup=KEYBOARD)

    edited = await bot.edit_message_reply_markup(chat_id=USER_ID, message_id=sent.message_id, reply_markup=None)
    answered = await bot.answer_callback_query(callback_query_id="4470000000000000001", text="已记录您的评价")

    assert isinstance(edited, Message) and edited.reply_markup is None and edited.text == "请为本次服务评价"
    assert answered is True
    assert [c.method for c in fake_telegram.calls] == ["sendMessage", "editMessageReplyMarkup", "answerCallbackQuery"]
    assert fake_telegram.calls_of("editMessageReplyMarkup")[0].params == {"chat_id": USER_ID, "message_id": 1001}
    assert fake_telegram.calls_of("answerCallbackQuery")[0].params["text"] == "已记录您的评价"

    # Editing to the same markup again is Telegram's "message is not modified".
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=USER_ID, message_id=sent.message_id, reply_markup=None)


async def test_edit_text_of_a_message_from_an_update(bot: Bot) -> None:
    # A callback's message was built by a test, not sent through the fake: editing it still works.
    edited = await bot.edit_message_text(chat_id=USER_ID, message_id=77, text="感谢您的评价")
    assert isinstance(edited, Message) and edited.text == "感谢您的评价" and edited.edit_date is not None


async def test_get_me_and_webhook_roundtrip(bot: Bot, fake_telegram: FakeTelegram) -> None:
    me = await bot.get_me()
    assert me.id == 123456789 and me.is_bot and me.username == "haochaping_test_bot"

    assert await bot.set_webhook(
        "https://gateway.example.cn/webhooks/telegram",
        secret_token="s3cret",
        allowed_updates=["message", "callback_query"],
    )
    info = await bot.get_webhook_info()
    assert info.url == "https://gateway.example.cn/webhooks/telegram"
    assert info.allowed_updates == ["message", "callback_query"]
    assert fake_telegram.webhook["secret_token"] == "s3cret"

    assert await bot.delete_webhook(drop_pending_updates=True)
    assert (await bot.get_webhook_info()).url == ""
    assert fake_telegram.calls_of("deleteWebhook")[0].params == {"drop_pending_updates": True}


async def test_429_surfaces_as_retry_after(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail_next(1, 429, retry_after=1)

    with pytest.raises(TelegramRetryAfter) as raised:
        await bot.send_message(chat_id=USER_ID, text="请评价")
    assert raised.value.retry_after == 1
    assert "Too Many Requests: retry after 1" in str(raised.value)

    await bot.send_message(chat_id=USER_ID, text="请评价")
    assert [c.status for c in fake_telegram.calls] == [429, 200]


async def test_403_for_one_chat(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail_next(1, 403, chat_id=USER_ID)

    await bot.send_message(chat_id=USER_ID + 1, text="别的用户不受影响")
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(chat_id=USER_ID, text="请评价")
    await bot.send_message(chat_id=USER_ID, text="只失败一次")


async def test_blocked_chat_stays_blocked(bot: Bot, fake_telegram: FakeTelegram) -> None:
    fake_telegram.block(USER_ID)

    for _ in range(2):
        with pytest.raises(TelegramForbiddenError):
            await bot.send_message(chat_id=USER_ID, text="请评价")
    assert fake_telegram.sent_messages == []


async def test_wrong_token_is_unauthorized(fake_telegram: FakeTelegram) -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake_telegram.url))
    async with Bot(token="42:another-bot-token", session=session) as other:
        with pytest.raises(TelegramUnauthorizedError):
            await other.get_me()


async def test_json_bodies_are_read_too(fake_telegram: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{fake_telegram.url}/bot{BOT_TOKEN}/sendMessage",
            json={
                "chat_id": USER_ID,
                "text": "hi",
                "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": "b"}]]},
            },
        ) as response:
            payload = await response.json()
        async with http.post(f"{fake_telegram.url}/bot{BOT_TOKEN}/noSuchMethod") as response:
            assert response.status == 404 and (await response.json())["ok"] is False

    assert payload["ok"] and payload["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "b"
    assert fake_telegram.calls[0].params["chat_id"] == USER_ID


# -- update builders -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "event_type"),
    [
        (text_message_update("3"), "message"),
        (start_update("inv-Ab3dE5"), "message"),
        (callback_query_update("rate:inv1:5"), "callback_query"),
        (edited_message_update("改为 4"), "edited_message"),
        (sticker_update(), "message"),
        (photo_update(caption="材料照片"), "message"),
        (group_message_update("/start"), "message"),
        (channel_post_update("公告"), "channel_post"),
    ],
)
def test_builders_make_valid_updates(update: dict[str, Any], event_type: str) -> None:
    parsed = Update.model_validate(update)
    assert parsed.event_type == event_type
    assert parsed.update_id == update["update_id"]


def test_builder_details() -> None:
    sticker = Update.model_validate(sticker_update()).message
    assert sticker is not None and sticker.sticker is not None and sticker.text is None
    photo = Update.model_validate(photo_update(caption="材料")).message
    assert photo is not None and photo.photo and photo.caption == "材料"
    group = Update.model_validate(group_message_update("你好")).message
    assert group is not None and group.chat.type == "supergroup" and group.from_user is not None
    post = Update.model_validate(channel_post_update("公告")).channel_post
    assert post is not None and post.from_user is None and post.sender_chat is not None
    first, second = text_message_update("a"), text_message_update("b")
    assert second["update_id"] > first["update_id"]


async def test_dispatcher_routes_built_updates(bot: Bot, fake_telegram: FakeTelegram) -> None:
    seen: list[tuple[str, str | None]] = []
    router = Router()

    @router.message(CommandStart(deep_link=True))
    async def on_start(message: Message, command: CommandObject) -> None:
        seen.append(("start", command.args))

    @router.callback_query(F.data.startswith("rate:"))
    async def on_rate(query: CallbackQuery) -> None:
        seen.append(("rate", query.data))
        await query.answer("已记录")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    await dispatcher.feed_update(bot, Update.model_validate(start_update("inv-Ab3dE5"), context={"bot": bot}))
    await dispatcher.feed_update(bot, Update.model_validate(callback_query_update("rate:inv1:2"), context={"bot": bot}))

    assert seen == [("start", "inv-Ab3dE5"), ("rate", "rate:inv1:2")]
    assert fake_telegram.calls_of("answerCallbackQuery")[0].params["text"] == "已记录"


# -- FakeTwilio on the wire ----------------------------------------------------------------------------

WEBHOOK_URL = "https://gateway.example.cn/webhooks/twilio/sms"


def test_signed_form_verifies_with_twilios_validator() -> None:
    params = inbound_sms_params(from_="+8613812341234", body="差评 服务态度差")
    headers, body = signed_form(WEBHOOK_URL, params)

    validator = RequestValidator(AUTH_TOKEN)
    assert validator.validate(WEBHOOK_URL, params, headers["X-Twilio-Signature"])
    assert not validator.validate(WEBHOOK_URL, {**params, "Body": "5"}, headers["X-Twilio-Signature"])
    assert not RequestValidator("other").validate(WEBHOOK_URL, params, headers["X-Twilio-Signature"])
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert "Body=%E5%B7%AE%E8%AF%84" in body.decode()


def test_webhook_param_builders() -> None:
    inbound = inbound_sms_params(from_="+8613812341234", body="TD", opt_out_type="STOP")
    assert inbound["MessageSid"].startswith("SM") and len(inbound["MessageSid"]) == 34
    assert inbound["AccountSid"] == ACCOUNT_SID and inbound["ApiVersion"] == "2010-04-01"
    assert inbound["NumMedia"] == "0" and inbound["NumSegments"] == "1" and inbound["OptOutType"] == "STOP"
    assert inbound["FromCountry"] == "CN"

    status = status_callback_params(
        message_sid="SM" + "1" * 32, status="undelivered", to="+8613812341234", error_code=30003
    )
    assert status["MessageStatus"] == "undelivered" and status["ErrorCode"] == "30003"
    assert "ErrorCode" not in status_callback_params(message_sid="SM" + "1" * 32, status="delivered", to="+1")


async def test_fake_twilio_answers_like_twilio(fake_twilio: FakeTwilio) -> None:
    url = f"{fake_twilio.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    auth = {"Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"To": "+8613812341234", "From": "+15005550006", "Body": "hi"}) as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Basic")
            assert (await response.json())["code"] == 20003
        async with http.post(url, data={"From": "+15005550006", "Body": "hi"}, headers=auth) as response:
            assert response.status == 400 and (await response.json())["code"] == 21604
        long_body = {"To": "+8613812341234", "From": "+15005550006", "Body": "好" * 71}
        async with http.post(url, data=long_body, headers=auth) as response:
            created = await response.json()
            assert response.status == 201
        async with http.get(f"{url[:-5]}/{created['sid']}.json", headers=auth) as response:
            assert (await response.json())["sid"] == created["sid"]

    assert created["status"] == "queued" and created["num_segments"] == "2" and created["direction"] == "outbound-api"
    assert [r.status for r in fake_twilio.received] == [401, 400, 201]
    assert fake_twilio.sent[0].form["Body"] == "好" * 71
