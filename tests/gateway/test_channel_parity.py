"""One conversation, two transports: the same flow driven by SMS and by the bot leaves the same records."""

from __future__ import annotations

import pytest
from sqlmodel import select

from gateway.settings import load_settings
from gateway.store.models import Evaluation, EvaluationAddendum, Invitation, Ticket, TicketEvent
from gateway.web.keys import DISPATCHER, STORE
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.gateway.bot.conftest import BOT_TOKEN, BOT_USERNAME, PUBLIC, SECRET, Chat, Unpaced, flush
from tests.gateway.evaluations.helpers import report
from tests.gateway.sms.conftest import Phone


@pytest.fixture
def settings(database_url, fake_twilio, fake_telegram, paired_redis_url):  # type: ignore[no-untyped-def]
    return load_settings(
        database_url=database_url, public_url=PUBLIC, run_dispatcher=False, redis_url=paired_redis_url,
        sms_provider="twilio", twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
        twilio_from_number=FROM_NUMBER, twilio_api_base=fake_twilio.url,
        telegram_bot_token=BOT_TOKEN, telegram_webhook_secret=SECRET, telegram_api_base=fake_telegram.url,
        telegram_bot_username=BOT_USERNAME,
    )


async def _records(client, invitation_id: int) -> dict[str, object]:
    async with client.app[STORE].transaction() as session:
        evaluation = (await session.exec(select(Evaluation).where(Evaluation.invitation_id == invitation_id))).one()
        addenda = (await session.exec(select(EvaluationAddendum).where(EvaluationAddendum.evaluation_id == evaluation.id)
                                      .order_by(EvaluationAddendum.id))).all()
        ticket = (await session.exec(select(Ticket).where(Ticket.evaluation_id == evaluation.id))).one()
        events = (await session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id))).all()
    return {
        "level": evaluation.level,
        "staff_id": evaluation.staff_id,
        "addenda": [(a.kind, a.reason_codes, a.content, a.staff_level) for a in addenda],
        "ticket": (ticket.status, ticket.level, ticket.responsibility, ticket.approval_org_id, ticket.unit_org_id, ticket.due_at),
        "events": [(e.action, e.data.get("reasons")) for e in events],
        "channel": evaluation.channel,
    }


async def _invitation_id(client, case_no: str) -> int:
    async with client.app[STORE].transaction() as session:
        return (await session.exec(select(Invitation.id).where(Invitation.group_no == case_no))).one()


async def test_sms_and_bot_inputs_give_the_same_records(client, world, fake_telegram):
    client.app[DISPATCHER].limiter = Unpaced()

    # By SMS: a bad rating, two reasons by their list numbers, then the staff member's rating.
    await report(client, world, case_no="SMS-1", citizen={"phone": "13812341234"})
    phone = Phone(client)
    for text in ("2", "1 3", "3"):
        assert (await phone.text(text)).status == 200
    by_sms = await _records(client, await _invitation_id(client, "SMS-1"))

    # By the bot: the same choices as taps on the keyboards the bot sent.
    await report(client, world, case_no="BOT-1", citizen={"telegram_chat_id": 777001})
    chat = Chat(client, fake_telegram, user_id=777001)
    await flush(client)
    invitation = await _invitation_id(client, "BOT-1")
    await chat.tap(f"rt:{invitation}:2")
    await flush(client)
    await chat.tap(f"rs:{invitation}:207")
    await flush(client)
    await chat.tap(f"rs:{invitation}:209")
    await flush(client)
    await chat.tap(f"rs:{invitation}:ok")
    await flush(client)
    await chat.tap(f"st:{invitation}:3")
    await flush(client)
    by_bot = await _records(client, invitation)

    assert by_sms.pop("channel") == "sms" and by_bot.pop("channel") == "bot"
    assert by_sms == by_bot
    assert by_sms["addenda"] == [("reasons", [207, 209], "", None), ("staff", [], "", 3)]
    assert [action for action, _ in by_sms["events"]] == ["created", "reasons_added"]

    # What the conversation added later is visible to departments, from either channel (docs/evaluations.md).
    listing = await (await client.get("/api/v1/evaluations", headers=world.auth("hanbin"))).json()
    for item in listing["items"]:
        assert item["reasons"] == [] and item["staff_level"] is None  # the rating as given
        assert [a["kind"] for a in item["addenda"]] == ["reasons", "staff"]
        assert (item["current"]["reasons"], item["current"]["staff_level"]) == ([207, 209], 3)
