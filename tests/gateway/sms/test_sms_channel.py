"""The whole SMS loop with the real twilio SDK against FakeTwilio, and signed inbound webhooks."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from sqlmodel import select

from gateway.messaging.ratelimit import RedisRateLimiter
from gateway.store.models import (
    Citizen,
    Evaluation,
    EvaluationAddendum,
    InboundMessage,
    OutboundMessage,
    Ticket,
    TicketEvent,
)
from gateway.web.keys import DISPATCHER, SETTINGS, STORE
from tests.fakes.twilio_api import AUTH_TOKEN, status_callback_params, signed_form
from tests.gateway.evaluations.helpers import count, report
from tests.gateway.sms.conftest import PUBLIC


async def _rows(client, model, *where):
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(model).where(*where))).all())


async def _send_all(client) -> None:
    while await client.app[DISPATCHER].run_once():
        pass


async def test_the_whole_loop(client, world, phone, fake_twilio):
    body = await report(client, world)
    await _send_all(client)
    prompt = fake_twilio.sent[-1].form
    assert prompt["To"] == "+8613812341234" and prompt["From"]
    (sent,) = await _rows(client, OutboundMessage)
    assert body["invitation"]["rating_url"] in prompt["Body"] and prompt["StatusCallback"] == f"{PUBLIC}/webhooks/twilio/status?m={sent.id}"
    assert prompt["Body"].startswith("【政务服务好差评】")

    resp = await phone.text("2")
    assert resp.status == 200 and "<Response>" in await resp.text()
    await _send_all(client)
    question = fake_twilio.sent[-1].form["Body"]
    assert "不满意" in question and "1" in question and "无材料样本" in question  # the level's reasons, numbered

    (evaluation,) = await _rows(client, Evaluation)
    assert (evaluation.level, evaluation.channel) == (2, "sms")
    (ticket,) = await _rows(client, Ticket)  # the rating is never lost while waiting for reasons

    await phone.text("1 3 窗口让我跑了三趟")
    await _send_all(client)
    (addendum,) = await _rows(client, EvaluationAddendum)
    assert addendum.reason_codes == [207, 209] and addendum.content == "窗口让我跑了三趟" and addendum.channel == "sms"
    events = await _rows(client, TicketEvent, TicketEvent.ticket_id == ticket.id)
    assert events[-1].action == "reasons_added" and events[-1].data["reasons"] == [207, 209]
    assert "窗口让我跑了三趟" in events[-1].data["text"]
    assert len(fake_twilio.sent) >= 3


async def test_status_callbacks_only_move_forward(client, world, fake_twilio):
    await report(client, world)
    await _send_all(client)
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sent" and message.provider_message_id == fake_twilio.sent[-1].sid

    async def callback(status: str, error_code: str | None = None) -> int:
        params = status_callback_params(message_sid=message.provider_message_id, status=status, to="+8613812341234", error_code=error_code)
        headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/status", params, AUTH_TOKEN)
        return (await client.post("/webhooks/twilio/status", data=data, headers=headers)).status

    assert await callback("delivered") == 204
    assert await callback("sent") == 204  # late and out of order: ignored
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "delivered"


async def _callback(client, message_id: int, sid: str, status: str, error_code: str | None = None) -> int:
    """A signed delivery callback to the URL the gateway gave Twilio for this message."""
    url = f"{PUBLIC}/webhooks/twilio/status?m={message_id}"
    params = status_callback_params(message_sid=sid, status=status, to="+8613812341234", error_code=error_code)
    headers, data = signed_form(url, params, AUTH_TOKEN)
    return (await client.post(f"/webhooks/twilio/status?m={message_id}", data=data, headers=headers)).status


async def _send_with_callback_first(client, fake_twilio, status: str):  # type: ignore[no-untyped-def]
    """Twilio creates the message and calls back before its answer to the send reaches the gateway."""
    fake_twilio.hold_answers()
    sending = asyncio.create_task(client.app[DISPATCHER].run_once())
    while not fake_twilio.sent:
        await asyncio.sleep(0.01)
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sending" and message.provider_message_id is None
    assert await _callback(client, message.id, fake_twilio.sent[-1].sid, status) == 204
    fake_twilio.release_answers()
    await sending
    (message,) = await _rows(client, OutboundMessage)
    return message


async def test_a_status_callback_that_beats_the_send_answer_is_kept(client, world, fake_twilio):
    await report(client, world)
    message = await _send_with_callback_first(client, fake_twilio, "delivered")
    assert message.status == "delivered"  # the send's own answer ("sent") did not move it back
    assert message.provider_message_id == fake_twilio.sent[-1].sid
    assert message.lease_until is None  # done with: no lease left behind


async def test_a_send_that_failed_on_our_side_is_not_retried_once_twilio_reported_it(client, world, fake_twilio, clock):
    """Our side of the send errs (here: the answer is an error), yet Twilio had taken the message and said so."""
    await report(client, world)
    fake_twilio.hold_answers()
    fake_twilio.fail_next(1, 500)
    sending = asyncio.create_task(client.app[DISPATCHER].run_once())
    while not fake_twilio.received:
        await asyncio.sleep(0.01)
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sending"  # the error answer has not reached the gateway yet
    assert await _callback(client, message.id, "SM" + "d" * 32, "sent") == 204
    fake_twilio.release_answers()
    await sending
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sent"  # not "queued" for a retry: the citizen would get it twice
    clock.advance(hours=1)
    assert await client.app[DISPATCHER].run_once() == 0
    assert len(fake_twilio.received) == 1


async def test_a_sending_callback_for_a_message_waiting_to_retry_means_sent(client, world, fake_twilio):
    await report(client, world)
    fake_twilio.fail_next(1, 500)
    await client.app[DISPATCHER].run_once()
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "queued" and message.lease_until is None  # waiting for its retry
    assert await _callback(client, message.id, "SM" + "d" * 32, "sending") == 204
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sent"  # Twilio has it: no retry, and not stuck in "sending" without a lease


async def test_a_status_callback_naming_another_message_is_ignored(client, world, fake_twilio):
    await report(client, world)
    await _send_all(client)
    (message,) = await _rows(client, OutboundMessage)
    url = f"{PUBLIC}/webhooks/twilio/status?m={message.id}"
    params = status_callback_params(message_sid="SM" + "0" * 32, status="failed", to="+8613812341234", error_code="30003")
    headers, data = signed_form(url, params, AUTH_TOKEN)
    assert (await client.post(f"/webhooks/twilio/status?m={message.id}", data=data, headers=headers)).status == 204
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sent" and message.error_code is None


async def test_undelivered_status_records_the_error_code(client, world, fake_twilio):
    await report(client, world)
    await _send_all(client)
    (message,) = await _rows(client, OutboundMessage)
    params = status_callback_params(message_sid=message.provider_message_id, status="undelivered", to="+8613812341234", error_code="30005")
    headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/status", params, AUTH_TOKEN)
    assert (await client.post("/webhooks/twilio/status", data=data, headers=headers)).status == 204
    (message,) = await _rows(client, OutboundMessage)
    assert (message.status, message.error_code) == ("undelivered", "30005") and "unknown" in message.last_error


@pytest.mark.parametrize("how", ["forged", "missing", "other-url"])
async def test_unsigned_or_forged_webhooks_are_refused(client, world, phone, how):
    await report(client, world)
    from tests.fakes.twilio_api import inbound_sms_params

    params = inbound_sms_params(from_=phone.number, body="1")
    if how == "forged":
        headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/sms", params, "not-the-token")
    elif how == "missing":
        headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/sms", params, AUTH_TOKEN)
        headers.pop("X-Twilio-Signature")
    else:
        headers, data = signed_form("http://evil.test/webhooks/twilio/sms", params, AUTH_TOKEN)
    for path in ("/webhooks/twilio/sms", "/webhooks/twilio/status"):
        resp = await client.post(path, data=data, headers=headers)
        assert resp.status == 403
    assert await count(client, Evaluation) == 0 and await count(client, InboundMessage) == 0


async def test_a_message_sid_posted_twice_acts_once(client, world, phone):
    await report(client, world)
    first = await phone.text("4", sid="SM" + "a" * 32)
    again = await phone.text("4", sid="SM" + "a" * 32)
    assert first.status == again.status == 200
    assert await count(client, Evaluation) == 1
    replies = await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")
    assert len(replies) == 1 and await count(client, InboundMessage) == 1


async def test_concurrent_retries_of_one_message_act_once(client, world, phone):
    await report(client, world)
    await asyncio.gather(*(phone.text("5", sid="SM" + "b" * 32) for _ in range(5)))
    assert await count(client, Evaluation) == 1
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == 1


@pytest.mark.parametrize("keyword", ["STOP", "TD", "T", "退订", "R", "td"])
async def test_opt_out_is_honoured_for_good(client, world, phone, fake_twilio, keyword):
    await report(client, world, case_no="A-1")
    await _send_all(client)
    sent_before = len(fake_twilio.sent)
    await phone.text(keyword)
    (citizen,) = await _rows(client, Citizen)
    assert citizen.sms_opted_out_at is not None
    await report(client, world, case_no="A-2")  # a later case: its prompt is never sent
    await _send_all(client)
    assert len(fake_twilio.sent) == sent_before  # not even a confirmation
    # Not even queued: the runner drops the confirmation (the dispatcher's own check would only suppress
    # it), and the later case's prompt is never written for a number that opted out.
    messages = await _rows(client, OutboundMessage)
    assert sorted((m.purpose, m.status) for m in messages) == [("prompt", "sent")]


async def test_twilio_opt_out_type_and_resubscribe(client, world, phone, fake_twilio):
    await phone.text("anything", opt_out_type="STOP")
    (citizen,) = await _rows(client, Citizen)
    assert citizen.sms_opted_out_at is not None
    await phone.text("开通")
    (citizen,) = await _rows(client, Citizen)
    assert citizen.sms_opted_out_at is None
    await report(client, world)
    await _send_all(client)
    assert any("个体工商户设立登记" in r.form["Body"] for r in fake_twilio.sent)


async def test_opt_out_between_queueing_and_sending(client, world, phone, fake_twilio):
    await report(client, world)  # prompt queued, not yet sent
    await phone.text("退订")
    await _send_all(client)
    assert fake_twilio.sent == []
    (prompt,) = await _rows(client, OutboundMessage, OutboundMessage.purpose == "prompt")
    assert prompt.status == "suppressed"


async def test_quiet_hours_hold_prompts_but_not_answers(client, world, phone, fake_twilio, clock):
    clock.set(datetime(2026, 3, 4, 14, 0, tzinfo=timezone.utc))  # 22:00 Shanghai
    await report(client, world, completed_at="2026-03-04T21:30:00+08:00")
    await _send_all(client)
    assert fake_twilio.sent == []  # the prompt waits for 08:00
    await phone.text("5")  # the citizen writes anyway (from the page's link or an older SMS)
    await _send_all(client)
    assert len(fake_twilio.sent) == 1 and "已记录" in fake_twilio.sent[0].form["Body"]
    clock.set(datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc))
    await _send_all(client)
    assert len(fake_twilio.sent) == 2


async def test_provider_429_and_500_are_retried(client, world, fake_twilio, clock):
    await report(client, world)
    fake_twilio.fail_next(1, 429, retry_after=7)
    fake_twilio.fail_next(1, 500)
    await client.app[DISPATCHER].run_once()
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "queued" and message.error_code
    clock.advance(seconds=8)
    await client.app[DISPATCHER].run_once()
    clock.advance(seconds=60)
    await client.app[DISPATCHER].run_once()
    (message,) = await _rows(client, OutboundMessage)
    assert message.status == "sent" and message.attempts == 3 and len(fake_twilio.sent) == 1


async def test_permanent_errors_stop_and_21610_opts_out(client, world, fake_twilio, clock):
    await report(client, world, case_no="X-1")
    fake_twilio.fail_next(1, 400, code=21610)
    await client.app[DISPATCHER].run_once()
    (message,) = await _rows(client, OutboundMessage)
    assert (message.status, message.error_code) == ("failed", "21610")
    (citizen,) = await _rows(client, Citizen)
    assert citizen.sms_opted_out_at is not None
    await report(client, world, case_no="X-2", citizen={"phone": "13900001111"})
    fake_twilio.fail_next(1, 400, code=21211)
    await client.app[DISPATCHER].run_once()
    failed = await _rows(client, OutboundMessage, OutboundMessage.status == "failed")
    assert {m.error_code for m in failed} == {"21610", "21211"}
    clock.advance(hours=1)
    assert await client.app[DISPATCHER].run_once() == 0  # nothing is retried


@pytest.mark.parametrize("text", ["😀😀", "好" * 5000, "\x00\x07\x1b[31m", "", "  ", "ＡＢＣ abc ١٢٣ 中文", "'; DROP TABLE citizen;--", "<b>五</b>"])
async def test_no_input_crashes_anything(client, world, phone, text):
    await report(client, world)
    resp = await phone.text(text)
    assert resp.status == 200
    replies = await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")
    assert len(replies) == 1 and len(replies[0].body) < 400
    assert await count(client, Evaluation) == 0


async def test_reply_without_open_invitation_gets_a_useful_answer(client, world, phone):
    await phone.text("5")
    (reply,) = await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")
    assert reply.body.startswith("【政务服务好差评】") and len(reply.body) < 200
    assert await count(client, Evaluation) == 0


async def test_reminder_once_after_silence_then_late_reasons_still_attach(client, world, phone, clock, fake_twilio):
    from gateway.dialogue import fire_timers
    from gateway.web.keys import RUNNER

    await report(client, world)
    await phone.text("1")
    await _send_all(client)
    asked = len(fake_twilio.sent)
    clock.advance(seconds=599)
    assert await fire_timers(client.app[RUNNER]) == 0
    clock.advance(seconds=2)
    assert await fire_timers(client.app[RUNNER]) == 1
    await _send_all(client)
    assert len(fake_twilio.sent) == asked + 1  # one reminder
    clock.advance(hours=5)
    assert await fire_timers(client.app[RUNNER]) == 0  # and no more
    await phone.text("113 多头跑了三个窗口")
    (addendum,) = await _rows(client, EvaluationAddendum)
    assert addendum.reason_codes == [113]


async def test_answers_go_before_bulk_prompts(client, world, phone):
    for i in range(5):
        await report(client, world, case_no=f"P-{i}", citizen={"phone": f"1390000{i:04d}"})
    await phone.text("5")  # a citizen with no invitation writes in
    dispatcher = client.app[DISPATCHER]
    claimed = await dispatcher.claim()
    async with client.app[STORE].transaction() as session:
        first = await session.get(OutboundMessage, claimed[0])
    assert first.purpose == "reply"


async def test_rate_limit_is_shared_through_redis(redis_url):
    import redis.asyncio as aioredis

    a_client, b_client = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    try:
        a, b = RedisRateLimiter(a_client, 4), RedisRateLimiter(b_client, 4)
        # Wait for the start of a fresh second so all acquisitions fall into one window.
        import time

        await asyncio.sleep(1 - (time.time() % 1) + 0.01)
        for limiter in (a, b, a, b):
            await asyncio.wait_for(limiter.acquire("sms"), 0.5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.acquire("sms"), 0.3)  # the fifth in this second must wait
    finally:
        await a_client.aclose()
        await b_client.aclose()


async def test_an_auto_responder_cannot_keep_an_endless_exchange_going(client, world, phone, clock):
    """Every answer is answered (an auto-reply): after the hourly limit the gateway stays silent."""
    limit = client.app[SETTINGS].sms_replies_per_hour
    for i in range(limit + 3):
        await phone.text(f"自动回复：我正在开会 {i}")
    replies = await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")
    assert len(replies) == limit
    assert await count(client, InboundMessage) == limit + 3  # every message was still taken in and processed
    clock.advance(hours=1, seconds=1)
    await phone.text("5")
    assert len(await _rows(client, OutboundMessage, OutboundMessage.purpose == "reply")) == limit + 1
