"""A deep link binds a chat to a citizen with a phone only after the code sent to that phone is answered.

The real aiogram client talks to FakeTelegram, the real Twilio SDK to FakeTwilio; updates are Telegram's JSON.
"""

from __future__ import annotations

import re

from typing import Any

import pytest

from gateway.bot.models import ChatLinkChallenge
from gateway.settings import Settings
from gateway.store.models import Citizen, Evaluation, Invitation
from gateway.web.keys import DEPS, STORE
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, FakeTwilio
from tests.gateway.bot.conftest import Chat, bot_settings, button_data, flush, rows
from tests.gateway.evaluations.helpers import report

PHONE = "+8613812341234"
OWNER_CHAT, OTHER_CHAT = 424242001, 424242002


@pytest.fixture
def settings(database_url: str, fake_telegram, fake_twilio: FakeTwilio) -> Settings:  # type: ignore[no-untyped-def]
    return bot_settings(
        database_url, fake_telegram, sms_provider="twilio", twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN, twilio_from_number=FROM_NUMBER, twilio_api_base=fake_twilio.url,
    )


def _codes(fake_twilio: FakeTwilio, to: str = PHONE) -> list[str]:
    """The link codes the phone received by SMS, oldest first."""
    found = []
    for received in fake_twilio.sent:
        if received.form.get("To") == to:
            match = re.search(r"验证码(\d{6})", received.form.get("Body", ""))
            if match:
                found.append(match.group(1))
    return found


async def _chat_citizen(client: Any, chat_id: int) -> Citizen | None:
    found = await rows(client, Citizen, Citizen.telegram_chat_id == chat_id)
    return found[0] if found else None


async def _owner(client: Any) -> Citizen:
    (owner,) = await rows(client, Citizen, Citizen.phone_hash.is_not(None))  # type: ignore[union-attr]
    return owner


async def _case(client: Any, world: Any, case_no: str = "HB-1", phone: str = "13812341234") -> str:
    body = await report(
        client, world, case_no=case_no, citizen={"phone": phone}, service_channel="online", staff_id=None
    )
    return body["invitation"]["token"]


async def test_a_forwarded_link_alone_binds_nothing(client, world, fake_telegram, fake_twilio):
    token = await _case(client, world)
    stranger = Chat(client, fake_telegram, user_id=OTHER_CHAT)
    await stranger.start(token)
    await flush(client)

    owner = await _owner(client)
    assert owner.telegram_chat_id is None  # not bound: later messages still go to the phone
    assert _codes(fake_twilio) and len(_codes(fake_twilio)[0]) == 6
    answer = stranger.last["text"]
    assert "138****1234" in answer and "验证码" in answer and f"/r/{token}" in answer
    assert _codes(fake_twilio)[0] not in answer and button_data(stranger.last) == []  # no rating by this chat

    later = await report(client, world, case_no="HB-2", citizen={"phone": "13812341234"})
    assert [m["channel"] for m in later["messages_queued"]] == ["sms"]

    # Guessing: five wrong codes void the challenge; the right one afterwards binds nothing.
    for n in range(5):
        await stranger.say(f"{n:06d}" if f"{n:06d}" != _codes(fake_twilio)[0] else "999999")
        await flush(client)
    assert "次数过多" in stranger.last["text"]
    await stranger.say(_codes(fake_twilio)[0])
    await flush(client)
    assert (await _owner(client)).telegram_chat_id is None
    (challenge,) = await rows(client, ChatLinkChallenge)
    assert (challenge.status, challenge.attempts) == ("failed", 5)


async def test_the_code_from_the_sms_binds_the_chat(client, world, fake_telegram, fake_twilio):
    token = await _case(client, world)
    chat = Chat(client, fake_telegram, user_id=OWNER_CHAT)
    await chat.start(token)
    await flush(client)
    (code,) = _codes(fake_twilio)
    wrong = "000000" if code != "000000" else "111111"
    await chat.say(wrong)
    await flush(client)
    assert "还可尝试4次" in chat.last["text"] and (await _owner(client)).telegram_chat_id is None

    await chat.say(f" {code} ")
    await flush(client)
    owner = await _owner(client)
    assert owner.telegram_chat_id == OWNER_CHAT
    prompt = chat.last
    (invitation,) = await rows(client, Invitation)
    assert prompt["text"].startswith("已关联")
    assert button_data(prompt) == [f"rt:{invitation.id}:{n}" for n in (5, 4, 3, 2, 1)]
    await chat.tap(f"rt:{invitation.id}:4", prompt)
    (evaluation,) = await rows(client, Evaluation)
    assert (evaluation.level, evaluation.channel, evaluation.citizen_id) == (4, "bot", owner.id)

    later = await report(client, world, case_no="HB-2", citizen={"phone": "13812341234"})
    assert [m["channel"] for m in later["messages_queued"]] == ["telegram"]


async def test_a_code_answers_only_in_its_chat_and_only_in_time(client, world, fake_telegram, fake_twilio):
    token = await _case(client, world)
    asker, other = Chat(client, fake_telegram, user_id=OWNER_CHAT), Chat(client, fake_telegram, user_id=OTHER_CHAT)
    await asker.start(token)
    await flush(client)
    (code,) = _codes(fake_twilio)
    await other.start(token)  # a second code, for the other chat
    await flush(client)
    await other.say(code)  # the first chat's code does not work here
    await flush(client)
    assert (await _owner(client)).telegram_chat_id is None
    assert "验证码不正确" in other.last["text"] or code == _codes(fake_twilio)[1]

    client.app[DEPS].clock.advance(minutes=11)
    await asker.say(code)
    await flush(client)
    assert "已过期" in asker.last["text"] and (await _owner(client)).telegram_chat_id is None


async def test_codes_are_limited_per_citizen_and_per_chat(client, world, fake_telegram, fake_twilio):
    token = await _case(client, world)
    for n in range(3):
        await Chat(client, fake_telegram, user_id=OTHER_CHAT + n).start(token)
    await flush(client)
    assert len(_codes(fake_twilio)) == 3
    fourth = Chat(client, fake_telegram, user_id=OTHER_CHAT + 3)
    await fourth.start(token)
    await flush(client)
    assert len(_codes(fake_twilio)) == 3 and "次数过多" in fourth.last["text"]

    # One chat holding the links of many citizens may ask for five codes a day in all.
    collector = Chat(client, fake_telegram, user_id=OWNER_CHAT)
    phones = [f"1391234{n:04d}" for n in range(6)]
    for n, phone in enumerate(phones):
        await collector.start(await _case(client, world, case_no=f"C-{n}", phone=phone))
    await flush(client)
    sent_to = [p for p in phones if _codes(fake_twilio, to=f"+86{p}")]
    assert sent_to == phones[:5] and "次数过多" in collector.last["text"]

    client.app[DEPS].clock.advance(hours=24, minutes=1)  # the window moves on
    await fourth.start(token)
    await flush(client)
    assert len(_codes(fake_twilio)) == 4


async def test_an_opted_out_number_gets_no_code(client, world, fake_telegram, fake_twilio):
    token = await _case(client, world)
    async with client.app[STORE].transaction() as session:
        owner = await session.get(Citizen, (await _owner(client)).id)
        owner.sms_opted_out_at = client.app[DEPS].clock.now()  # type: ignore[union-attr]
    chat = Chat(client, fake_telegram, user_id=OWNER_CHAT)
    await chat.start(token)
    await flush(client)
    assert _codes(fake_twilio) == [] and "退订" in chat.last["text"]
    assert (await _owner(client)).telegram_chat_id is None


async def test_a_redelivered_code_answer_acts_once(client, world, fake_telegram, fake_twilio):
    token = await _case(client, world)
    chat = Chat(client, fake_telegram, user_id=OWNER_CHAT)
    await chat.start(token)
    await flush(client)
    update = await chat.say("000000" if _codes(fake_twilio)[0] != "000000" else "111111")
    await chat.send(update)  # Telegram delivers it again
    await flush(client)
    (challenge,) = await rows(client, ChatLinkChallenge)
    assert challenge.attempts == 1


