"""Rating in the bot: one tap records, the keyboard closes on the choice, the follow-ups run on the
same conversation flows as SMS (reasons by ticks or by text, the optional staff rating)."""

from __future__ import annotations

import pytest

from gateway.store.models import (
    BotUpdate,
    Citizen,
    Evaluation,
    EvaluationAddendum,
    InboundMessage,
    Invitation,
    OutboundMessage,
    Ticket,
    TicketEvent,
)
from gateway.web.keys import STORE
from tests.fakes.telegram_api import USER_ID
from tests.gateway.bot.conftest import Chat, bot_settings, button_data, button_texts, flush, rows
from tests.gateway.evaluations.helpers import count, report


async def _prompted(client, world, chat: Chat, **overrides) -> int:  # type: ignore[no-untyped-def]
    """A case reported with the citizen's chat id: the prompt arrives in the chat, with the five levels."""
    body = await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": chat.user_id}, **overrides)
    assert [m["channel"] for m in body["messages_queued"]] == ["telegram"]
    await flush(client)
    (invitation,) = await rows(client, Invitation, Invitation.token == body["invitation"]["token"])
    return int(invitation.id)


async def test_rating_by_one_tap(client, world, chat, fake_telegram):
    invitation_id = await _prompted(client, world, chat, service_channel="online", staff_id=None)
    prompt = chat.last
    assert "个体工商户设立登记" in prompt["text"] and "汉滨区市场监督管理局" in prompt["text"]
    assert button_texts(prompt) == ["5 非常满意", "4 满意", "3 基本满意", "2 不满意", "1 非常不满意"]
    assert button_data(prompt) == [f"rt:{invitation_id}:{level}" for level in (5, 4, 3, 2, 1)]

    update = await chat.tap(f"rt:{invitation_id}:4")
    # Acknowledged at once, in the webhook; the replies only went to the outbox.
    [ack] = fake_telegram.calls_of("answerCallbackQuery")
    assert ack.params["callback_query_id"] == update["callback_query"]["id"]
    assert len(fake_telegram.calls_of("sendMessage")) == 1  # still only the prompt
    (evaluation,) = await rows(client, Evaluation)
    assert (evaluation.level, evaluation.channel, evaluation.invitation_id) == (4, "bot", invitation_id)

    await flush(client)
    # The prompt now shows the choice instead of the keyboard, and the flow's confirmation follows.
    edited = next(m for m in chat.messages if m["message_id"] == prompt["message_id"])
    assert "reply_markup" not in edited and edited["text"].startswith(prompt["text"]) and "已选择：4 满意" in edited["text"]
    [edit] = fake_telegram.calls_of("editMessageText")
    assert edit.params["message_id"] == prompt["message_id"] and edit.params["chat_id"] == USER_ID
    assert "已记录您对「个体工商户设立登记」" in chat.last["text"] and "满意" in chat.last["text"]
    assert await count(client, Ticket) == 0


async def test_bad_rating_then_reasons_by_toggles(client, world, chat, fake_telegram):
    invitation_id = await _prompted(client, world, chat, service_channel="online", staff_id=None)
    await chat.tap(f"rt:{invitation_id}:2")
    await flush(client)
    (ticket,) = await rows(client, Ticket)  # recorded at once: never lost while the reasons are asked
    question = chat.last
    assert "请告诉我们原因" in question["text"]
    data = button_data(question)
    assert data[-1] == f"rs:{invitation_id}:ok" and all(d.startswith(f"rs:{invitation_id}:2") for d in data[:-1])
    first, third = data[0], data[2]

    await chat.tap(first, question)
    await flush(client)
    redrawn = chat.message_with(first)
    assert redrawn["message_id"] == question["message_id"]  # the same message, redrawn with a tick
    assert button_texts(redrawn)[0].startswith("✅ 1 ")
    await chat.tap(third, redrawn)
    await flush(client)
    await chat.tap(f"rs:{invitation_id}:ok", chat.message_with(third))
    await flush(client)

    (addendum,) = await rows(client, EvaluationAddendum)
    assert addendum.kind == "reasons" and addendum.reason_codes == [int(first.rsplit(":", 1)[1]), int(third.rsplit(":", 1)[1])]
    assert addendum.channel == "bot"
    events = await rows(client, TicketEvent, TicketEvent.ticket_id == ticket.id)
    assert events[-1].action == "reasons_added"
    closed = next(m for m in chat.messages if m["message_id"] == question["message_id"])
    assert "reply_markup" not in closed and "已选择：1 " in closed["text"]
    assert "已收到您对「个体工商户设立登记」的意见" in chat.last["text"]
    assert all(len(d.encode()) <= 64 for c in fake_telegram.calls for d in _callback_data(c.params))


async def test_reasons_by_text(client, world, chat):
    invitation_id = await _prompted(client, world, chat, service_channel="online", staff_id=None)
    await chat.tap(f"rt:{invitation_id}:1")
    await flush(client)
    await chat.say("窗口让我跑了三趟")
    await flush(client)
    (addendum,) = await rows(client, EvaluationAddendum)
    assert addendum.reason_codes == [] and addendum.content == "窗口让我跑了三趟" and addendum.channel == "bot"
    assert "已收到您对" in chat.last["text"] and "及您的留言" not in chat.last["text"]


async def test_window_service_offers_the_staff_rating(client, world, chat):
    invitation_id = await _prompted(client, world, chat)  # a window case with a staff id
    await chat.tap(f"rt:{invitation_id}:5")
    await flush(client)
    question = chat.last
    assert "窗口工作人员" in question["text"]
    assert button_data(question) == [f"st:{invitation_id}:{level}" for level in (5, 4, 3, 2, 1, 0)]
    await chat.tap(f"st:{invitation_id}:4", question)
    await flush(client)
    (addendum,) = await rows(client, EvaluationAddendum)
    assert (addendum.kind, addendum.staff_level, addendum.channel) == ("staff", 4, "bot")
    closed = next(m for m in chat.messages if m["message_id"] == question["message_id"])
    assert "reply_markup" not in closed and "已选择：4 满意" in closed["text"]
    assert "已记录您对窗口工作人员的评价：满意" in chat.last["text"]


async def test_typed_digit_rates_like_sms(client, world, chat):
    await _prompted(client, world, chat, service_channel="online", staff_id=None)
    await chat.say("５")  # full-width, as a phone keyboard may send it
    (evaluation,) = await rows(client, Evaluation)
    assert (evaluation.level, evaluation.channel) == (5, "bot")


async def test_a_redelivered_update_acts_once(client, world, chat, fake_telegram):
    invitation_id = await _prompted(client, world, chat, service_channel="online", staff_id=None)
    update = chat.tap_update(f"rt:{invitation_id}:3")
    await chat.send(update)
    queued = await count(client, OutboundMessage)
    await chat.send(update)  # Telegram did not see our 200 in time and delivers it again
    assert await count(client, Evaluation) == 1
    assert await count(client, OutboundMessage) == queued
    assert [u.update_id for u in await rows(client, BotUpdate)] == [update["update_id"]]
    assert await count(client, InboundMessage) == 0  # the SMS inbox holds SMS only

    text = await chat.say("谢谢")
    before = await count(client, OutboundMessage)
    await chat.send(text)
    assert await count(client, OutboundMessage) == before


async def test_forged_callback_for_another_citizens_service_records_nothing(client, world, chat, fake_telegram):
    # Someone else's service, reported with their own phone.
    other = await report(client, world, case_no="OTHER-1", citizen={"phone": "13900001111"})
    await flush(client)
    others = (await rows(client, Invitation, Invitation.token == other["invitation"]["token"]))[0]
    await _prompted(client, world, chat, service_channel="online", staff_id=None)

    for forged in (f"rt:{others.id}:1", f"rs:{others.id}:ok", f"st:{others.id}:1", "rt:999999:1", "rt:1:9", "x" * 80):
        await chat.tap(forged, chat.last)
    assert await count(client, Evaluation) == 0
    async with client.app[STORE].transaction() as session:
        assert (await session.get(Invitation, others.id)).status == "open"  # type: ignore[union-attr]
    await flush(client)
    assert "该选项已失效" in chat.last["text"]
    assert len(fake_telegram.calls_of("answerCallbackQuery")) == 6


async def test_a_tap_from_a_chat_nobody_linked_records_nothing(client, world, fake_telegram):
    await report(client, world, citizen={"phone": "13812341234"})
    stranger = Chat(client, fake_telegram, user_id=555000111)
    await stranger.send(stranger.tap_update("rt:1:1", {"message_id": 9, "text": "请评价"}))
    assert await count(client, Evaluation) == 0 and await count(client, Citizen) == 1
    assert len(fake_telegram.calls_of("answerCallbackQuery")) == 1


@pytest.fixture
def redis_settings(database_url, fake_telegram, redis_url):  # type: ignore[no-untyped-def]
    return bot_settings(database_url, fake_telegram, redis_url=redis_url)


async def test_ticks_survive_in_redis_state(aiohttp_client, redis_settings, clock, fake_telegram, redis_url):
    """The multi-select's ticks live in the conversation state; with Redis, any gateway process has them."""
    import redis.asyncio as aioredis

    from gateway.app import create_app
    from tests.conftest import register_world
    from tests.gateway.bot.conftest import Unpaced
    from gateway.web.keys import DISPATCHER

    async def gateway():  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(redis_settings, clock=clock, migrate=False, run_background=False))
        client.app[DISPATCHER].limiter = Unpaced()
        return client

    first = await gateway()
    world = await register_world(first.app[STORE], clock)
    chat = Chat(first, fake_telegram)
    invitation_id = await _prompted(first, world, chat, service_channel="online", staff_id=None)
    await chat.tap(f"rt:{invitation_id}:2")
    await flush(first)
    question = chat.last
    tick = button_data(question)[1]
    await chat.tap(tick, question)
    await flush(first)

    redis = aioredis.from_url(redis_url, decode_responses=True)
    try:
        (key,) = [k async for k in redis.scan_iter("gw:conv:telegram:*")]
        assert str(USER_ID) not in key and 0 < await redis.ttl(key)
    finally:
        await redis.aclose()

    second = await gateway()  # another process takes the next tap
    chat = Chat(second, fake_telegram)
    await chat.tap(f"rs:{invitation_id}:ok", chat.message_with(tick))
    (addendum,) = await rows(second, EvaluationAddendum)
    assert addendum.reason_codes == [int(tick.rsplit(":", 1)[1])]


def _callback_data(params):  # type: ignore[no-untyped-def]
    markup = params.get("reply_markup") or {}
    return [b.get("callback_data", "") for row in markup.get("inline_keyboard", []) for b in row]
