"""退订 and START in the chat, as on SMS: the opt-out is recorded at once and for good, later prompts go
nowhere (not by the chat, not by the SMS fallback), and START or /start takes the chat back. Unlike SMS,
where the carrier confirms a STOP, the chat gets the confirmation from the gateway: nobody else can."""

from __future__ import annotations

import pytest

from conversations import texts as dialogue_texts
from gateway.store.models import Citizen, Invitation, OutboundMessage
from tests.gateway.bot.conftest import Chat, button_data, flush, rows
from tests.gateway.evaluations.helpers import report

PHONE = "13812341234"


async def _prompted(client, world, chat: Chat, case_no: str = "HB-1") -> None:  # type: ignore[no-untyped-def]
    await report(client, world, case_no=case_no, citizen={"phone": PHONE, "telegram_chat_id": chat.user_id},
                 service_channel="online", staff_id=None)
    await flush(client)


async def _citizen(client, chat: Chat) -> Citizen:  # type: ignore[no-untyped-def]
    (citizen,) = await rows(client, Citizen, Citizen.telegram_chat_id == chat.user_id)
    return citizen


@pytest.mark.parametrize("keyword", ["退订", "TD", "STOP"])
async def test_opt_out_in_the_chat_is_confirmed_and_then_nothing_more_is_sent(
    client, world, chat, fake_telegram, fake_twilio, keyword
):
    await _prompted(client, world, chat)
    prompts = len(chat.messages)
    await report(client, world, case_no="HB-2", citizen={"phone": PHONE, "telegram_chat_id": chat.user_id},
                 service_channel="online", staff_id=None)  # its prompt is queued, not sent yet
    (queued,) = await rows(client, OutboundMessage, OutboundMessage.status == "queued")
    update = await chat.say(keyword)
    await flush(client)
    assert [m["text"] for m in chat.messages[prompts:]] == [dialogue_texts.OPTED_OUT]
    # Checked again at send time: the prompt queued before the 退订 is not sent, by the chat or by SMS.
    (queued,) = await rows(client, OutboundMessage, OutboundMessage.id == queued.id)
    assert queued.status == "suppressed"
    citizen = await _citizen(client, chat)
    assert citizen.bot_blocked_at is not None and citizen.sms_opted_out_at is not None
    (confirmation,) = await rows(client, OutboundMessage, OutboundMessage.purpose == "opt_out")
    assert confirmation.channel == "telegram" and confirmation.status == "sent"

    await chat.send(update)  # Telegram delivers the same update again: one confirmation
    await chat.say("5")  # an answer to the old prompt: recorded or not, nothing is said back
    first = min(invitation.id for invitation in await rows(client, Invitation))
    await chat.tap(f"rt:{first}:4")  # a button of the old prompt
    await chat.say("/my")
    await _prompted(client, world, chat, case_no="HB-3")  # a later case: its prompt is not even written
    assert len(chat.messages) == prompts + 1
    assert fake_twilio.sent == []  # and nothing went by SMS instead
    assert await rows(client, OutboundMessage, OutboundMessage.id > confirmation.id) == []


async def test_a_confirmation_never_turns_into_an_sms(client, world, chat, fake_telegram, fake_twilio):
    # The user blocks the bot right after 退订: Telegram refuses the confirmation with 403. An ordinary
    # chat message would be re-sent by SMS; this one is not (and the number has opted out anyway).
    await _prompted(client, world, chat)
    fake_telegram.block(chat.user_id)
    await chat.say("退订")
    await flush(client)
    (confirmation,) = await rows(client, OutboundMessage, OutboundMessage.purpose == "opt_out")
    assert confirmation.channel == "telegram" and confirmation.status == "failed"
    assert fake_twilio.sent == []


@pytest.mark.parametrize("how", ["START", "开通", "/start"])
async def test_start_in_the_chat_takes_it_back(client, world, chat, fake_telegram, fake_twilio, how):
    await _prompted(client, world, chat)
    await chat.say("退订")
    await flush(client)
    if how == "/start":
        await chat.start()
    else:
        await chat.say(how)
    await flush(client)
    if how != "/start":
        assert chat.last["text"] == dialogue_texts.OPTED_IN
    citizen = await _citizen(client, chat)
    assert citizen.bot_blocked_at is None
    # The SMS opt-out stays: a number is taken back only from the phone (START by SMS), as the carriers ask.
    assert citizen.sms_opted_out_at is not None
    before = len(chat.messages)
    await _prompted(client, world, chat, case_no="HB-2")
    assert len(chat.messages) == before + 1 and len(button_data(chat.last)) == 5  # the new prompt, in the chat
    assert fake_twilio.sent == []
