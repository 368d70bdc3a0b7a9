"""Linking a chat to a citizen with the deep link t.me/<bot>?start=<invitation token>, and never stealing one."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from gateway.evaluations.prompts import sms_prompt, telegram_deep_link
from gateway.messaging.segments import segments
from gateway.store.models import Citizen, Evaluation, Invitation, OutboundMessage
from tests.fakes.telegram_api import BOT_USERNAME
from tests.gateway.bot.conftest import Chat, button_data, flush, rows
from tests.gateway.evaluations.helpers import count, report


async def _citizen_of_chat(client, chat_id: int) -> Citizen | None:  # type: ignore[no-untyped-def]
    found = await rows(client, Citizen, Citizen.telegram_chat_id == chat_id)
    return found[0] if found else None


async def _link_code(client) -> str:  # type: ignore[no-untyped-def]
    """The code of the latest link SMS in the outbox (whatever the SMS provider)."""
    sms = await rows(client, OutboundMessage, OutboundMessage.channel == "sms")
    bodies = [m.body for m in sorted(sms, key=lambda m: m.id) if "验证码" in m.body]
    match = re.search(r"验证码(\d{6})", bodies[-1])
    assert match is not None
    return match.group(1)


async def test_the_rating_page_offers_the_deep_link(client, world):
    body = await report(client, world)
    token = body["invitation"]["token"]
    page = await (await client.get(f"/r/{token}")).text()
    assert f"https://t.me/{BOT_USERNAME}?start={token}" in page


async def test_deep_link_binds_the_chat_and_shows_that_services_prompt(client, world, chat, fake_telegram):
    body = await report(client, world, citizen={"phone": "13812341234"}, service_channel="online", staff_id=None)
    token = body["invitation"]["token"]
    (phone_citizen,) = await rows(client, Citizen)

    await chat.start(token)
    await flush(client)
    assert "验证码" in chat.last["text"]  # the phone is proven first (test_bot_link_proof.py)
    await chat.say(await _link_code(client))
    assert (await _citizen_of_chat(client, chat.user_id)).id == phone_citizen.id  # type: ignore[union-attr]
    await flush(client)
    prompt = chat.last
    (invitation,) = await rows(client, Invitation)
    assert prompt["text"].startswith("已关联") and "个体工商户设立登记" in prompt["text"]
    assert button_data(prompt) == [f"rt:{invitation.id}:{level}" for level in (5, 4, 3, 2, 1)]

    await chat.tap(f"rt:{invitation.id}:5", prompt)
    (evaluation,) = await rows(client, Evaluation)
    assert (evaluation.level, evaluation.channel, evaluation.citizen_id) == (5, "bot", phone_citizen.id)

    # Later invitations of that citizen come to the chat.
    later = await report(client, world, case_no="HB-2026-0002", citizen={"phone": "13812341234"})
    assert [m["channel"] for m in later["messages_queued"]] == ["telegram"]


async def test_a_chat_that_wrote_first_moves_to_the_invitations_citizen(client, world, chat):
    await chat.start()  # plain /start: the chat gets a row of its own, holding nothing else
    blank = await _citizen_of_chat(client, chat.user_id)
    assert blank is not None and blank.phone_hash is None
    body = await report(client, world, citizen={"phone": "13812341234"})
    await chat.start(body["invitation"]["token"])
    await chat.say(await _link_code(client))
    bound = await _citizen_of_chat(client, chat.user_id)
    assert bound is not None and bound.id != blank.id and bound.phone_hash is not None


async def test_a_case_without_contact_gets_a_citizen_for_the_chat(client, world, chat):
    body = await report(client, world, citizen={}, service_channel="online", staff_id=None)
    assert await count(client, Citizen) == 0
    await chat.start(body["invitation"]["token"])
    citizen = await _citizen_of_chat(client, chat.user_id)
    (invitation,) = await rows(client, Invitation)
    assert citizen is not None and invitation.citizen_id == citizen.id
    await flush(client)
    await chat.tap(f"rt:{invitation.id}:3", chat.last)
    (evaluation,) = await rows(client, Evaluation)
    assert evaluation.citizen_id == citizen.id and evaluation.channel == "bot"


async def test_a_citizen_linked_to_another_chat_is_not_taken_over(client, world, chat, fake_telegram):
    body = await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": 111222333})
    owner = (await rows(client, Citizen))[0]
    await chat.start(body["invitation"]["token"])  # a forwarded SMS, opened by someone else
    owner_after = (await rows(client, Citizen, Citizen.id == owner.id))[0]
    assert owner_after.telegram_chat_id == 111222333
    here = await _citizen_of_chat(client, chat.user_id)
    assert here is not None and here.id != owner.id
    await flush(client)
    assert "已关联到另一个 Telegram 账号" in chat.last["text"] and f"/r/{body['invitation']['token']}" in chat.last["text"]
    assert "reply_markup" not in chat.last  # no buttons: a tap here could not rate it anyway


async def test_a_chat_with_its_own_records_is_not_merged_into_another_citizen(client, world, chat):
    mine = await report(client, world, case_no="MINE", citizen={"telegram_chat_id": chat.user_id})
    await flush(client)
    theirs = await report(client, world, case_no="THEIRS", citizen={"phone": "13900001111"})
    await chat.start(theirs["invitation"]["token"])
    (their_citizen,) = await rows(client, Citizen, Citizen.phone_hash.is_not(None))  # type: ignore[union-attr]
    assert their_citizen.telegram_chat_id is None
    await flush(client)
    assert "已关联其他办事人的评价记录" in chat.last["text"]
    assert mine["invitation"]["token"] not in chat.last["text"]


async def test_bad_and_expired_links(client, world, chat, clock):
    await chat.start("no-such-token")
    await flush(client)
    assert "链接无效" in chat.last["text"]
    body = await report(client, world, citizen={"phone": "13812341234"})
    clock.advance(days=30)  # the rating period (7 working days) is over: the link binds nothing
    await chat.start(body["invitation"]["token"])
    await flush(client)
    assert "评价期" in chat.last["text"]
    phone_citizen = (await rows(client, Citizen, Citizen.phone_hash.is_not(None)))[0]  # type: ignore[union-attr]
    assert phone_citizen.telegram_chat_id is None


async def test_start_without_a_token_explains_the_bot(client, chat, fake_telegram):
    update = await chat.start()
    await chat.send(update)  # delivered twice: answered once
    await flush(client)
    [answer] = fake_telegram.sent_messages
    assert "好差评" in answer["text"] and "/my" in answer["text"] and "Telegram 链接" in answer["text"]
    assert "满意" not in answer["text"].replace("好差评", "")  # a service notice: it never asks for a good rating


async def test_start_after_a_block_reopens_the_chat(client, world, chat, fake_telegram):
    from tests.fakes.telegram_api import chat_object, user_object

    body = await report(client, world, citizen={"phone": "13812341234", "telegram_chat_id": chat.user_id})
    kicked = {"update_id": 770001, "my_chat_member": {
        "chat": chat_object(chat.user_id), "from": user_object(chat.user_id), "date": 1772600000,
        "old_chat_member": {"status": "member", "user": {"id": 123456789, "is_bot": True, "first_name": "bot"}},
        "new_chat_member": {"status": "kicked", "until_date": 0, "user": {"id": 123456789, "is_bot": True, "first_name": "bot"}},
    }}
    await chat.send(kicked)
    assert (await _citizen_of_chat(client, chat.user_id)).bot_blocked_at is not None  # type: ignore[union-attr]
    # Meanwhile a new invitation goes by SMS.
    later = await report(client, world, case_no="HB-2", citizen={"phone": "13812341234"})
    assert [m["channel"] for m in later["messages_queued"]] == ["sms"]
    await chat.start(body["invitation"]["token"])
    assert (await _citizen_of_chat(client, chat.user_id)).bot_blocked_at is None  # type: ignore[union-attr]


def test_the_sms_carries_the_deep_link_only_when_two_segments_still_hold_it():
    at = datetime(2026, 3, 4, 2, tzinfo=timezone.utc)
    link = "http://a.cn/r/AbCdEfGhIjKl"
    deep = telegram_deep_link("hcp_bot", "AbCdEfGhIjKl")
    assert deep == "https://t.me/hcp_bot?start=AbCdEfGhIjKl" and telegram_deep_link("", "x") is None
    short = sms_prompt(signature="【好差评】", item_name="户籍", completed_at=at, tz="Asia/Shanghai", link=link, bot_link=deep)
    assert deep in short and segments(short) <= 2 and link in short
    long = sms_prompt(signature="【政务服务好差评】", item_name="个体工商户设立登记", completed_at=at, tz="Asia/Shanghai",
                      link="http://gateway.example.cn/r/AbCdEfGhIjKl", bot_link=deep)
    assert deep not in long and "个体工商户设立登记" in long and segments(long) <= 2


async def test_the_bot_prompt_is_the_conversations_prompt(client, world, chat):
    from conversations import rating_prompt

    from gateway.bot.chats import invitation_ref

    await report(client, world, citizen={"telegram_chat_id": chat.user_id})
    (message,) = await rows(client, OutboundMessage)
    (invitation,) = await rows(client, Invitation)
    expected = rating_prompt(invitation_ref(invitation, "Asia/Shanghai"))
    assert message.body == expected.text
    assert [row[0]["data"] for row in message.buttons] == [c.data for c in expected.choices]  # type: ignore[union-attr]


async def test_two_chats_two_citizens(client, world, fake_telegram):
    first, second = Chat(client, fake_telegram, 800000001), Chat(client, fake_telegram, 800000002)
    a = await report(client, world, case_no="A", citizen={"phone": "13800000001"})
    b = await report(client, world, case_no="B", citizen={"phone": "13800000002"})
    await first.start(a["invitation"]["token"])
    await second.start(b["invitation"]["token"])
    await second.start(a["invitation"]["token"])  # the other chat's link: refused, nothing moves
    one, two = await _citizen_of_chat(client, first.user_id), await _citizen_of_chat(client, second.user_id)
    assert one is not None and two is not None and one.id != two.id
