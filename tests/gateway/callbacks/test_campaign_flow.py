"""A campaign end to end over SMS and bot citizens: who is asked, on which channel, with which words,
and how their answers land on the targets and the tickets."""

from __future__ import annotations

from datetime import datetime

from gateway.callbacks.schemas import TARGET_STATUSES
from gateway.messaging.segments import segments
from gateway.store.models import Citizen, OutboundMessage, Ticket, TicketEvent
from gateway.wiring.campaigns import CAMPAIGN_FEEDER
from tests.fakes.twilio_api import AUTH_TOKEN, signed_form, status_callback_params
from tests.gateway.bot.conftest import button_data, button_texts
from tests.gateway.callbacks.conftest import (
    Campaigns,
    campaign_row,
    flush,
    phone_number,
    phone_of,
    rows,
    run_campaigns,
    surveys,
    targets,
)
from tests.gateway.sms.conftest import PUBLIC


async def test_a_campaign_over_sms_and_bot_citizens(client, world, make_resolved, campaigns: Campaigns, chat, fake_twilio, fake_telegram):
    sms_a = await make_resolved(phone=phone_number(1))
    sms_b = await make_resolved(phone=phone_number(2), item_name="食品经营许可证核发（新办）及变更登记的一件事联办服务")
    bot = await make_resolved(phone=phone_number(3), chat_id=chat.user_id)
    await flush(client)  # the rating prompts and the units' replies go out first
    texts_before, bot_before = len(fake_twilio.sent), len(chat.messages)

    created = await campaigns.started(name="2026年3月回访")
    assert created["status"] == "running" and created["org"] == "hanbin"
    assert created["counts"]["targets"] == 3 and created["counts"]["pending"] == 3
    assert created["satisfaction_rate"] is None

    await run_campaigns(client)
    # One survey per ticket, on each citizen's own channel: the bot where linked, SMS otherwise.
    sent = {m.ticket_id: m for m in await surveys(client)}
    assert {t: m.channel for t, m in sent.items()} == {sms_a: "sms", sms_b: "sms", bot: "telegram"}
    assert all(m.status == "sent" and m.dedupe_key == f"survey:{created['id']}:{t}" for t, m in sent.items())
    texts = [r.form for r in fake_twilio.sent[texts_before:]]
    assert sorted(f["To"] for f in texts) == [f"+86{phone_number(1)}", f"+86{phone_number(2)}"]
    for form in texts:
        body = form["Body"]
        assert body.startswith("【政务服务好差评】回访：您对「") and "差评的整改结果是否满意" in body
        assert "1.满意 2.不满意" in body and "回T退订" in body
        assert segments(body) <= 2  # a long service name is cut, never the question
    [question] = chat.messages[bot_before:]
    assert "差评的整改结果是否满意" in question["text"]
    assert button_data(question) == [f"sv:{bot}:1", f"sv:{bot}:2"] and button_texts(question) == ["1 满意", "2 不满意"]

    # Answers: "1" by SMS, a tap in the bot, "不满意，还是没人管" with its reason in one message.
    await phone_of(client, phone_number(1)).text("1")
    await chat.tap(f"sv:{bot}:1")
    await phone_of(client, phone_number(2)).text("不满意，还是没人管")
    await flush(client)

    by_ticket = await targets(client, created["id"])
    assert {t: (x.status, x.answer_channel) for t, x in by_ticket.items()} == {
        sms_a: ("satisfied", "sms"), bot: ("satisfied", "telegram"), sms_b: ("unsatisfied", "sms"),
    }
    assert by_ticket[sms_b].answer_text == "还是没人管"
    statuses = {t.id: t.status for t in await rows(client, Ticket)}
    assert statuses == {sms_a: "closed_satisfied", bot: "closed_satisfied", sms_b: "callback_unsatisfied"}
    events = await rows(client, TicketEvent, TicketEvent.ticket_id == sms_b)
    result, reason = events[-2], events[-1]
    assert result.action == "callback_result" and result.actor == "system:callback-campaign"
    assert result.data == {"outcome": "unsatisfied", "channel": "sms", "campaign_id": created["id"]}
    assert reason.action == "callback_reason" and reason.data["text"] == "还是没人管"
    # The citizens were told their answer was recorded; the bot's keyboard closed on the choice.
    replies = {r.form["To"]: r.form["Body"] for r in fake_twilio.sent if "回访意见" in r.form["Body"]}
    assert "已记录您的回访意见：满意" in replies[f"+86{phone_number(1)}"]
    assert "不满意，并已收到您的说明" in replies[f"+86{phone_number(2)}"]
    assert any("已记录您的回访意见：满意" in m["text"] for m in chat.messages)
    edited = next(m for m in chat.messages if m["message_id"] == question["message_id"])
    assert "reply_markup" not in edited and "已选择：1 满意" in edited["text"]

    read = await campaigns.read(created["id"])
    assert read["counts"] == {
        "targets": 3, "pending": 0, "queued": 0, "sent": 3, "delivered": 0, "failed": 0, "skipped": 0,
        "awaiting_answer": 0, "answered": 3, "satisfied": 2, "unsatisfied": 1, "no_answer": 0,
    }
    assert read["satisfaction_rate"] == round(2 / 3, 4)
    await run_campaigns(client)
    assert (await campaign_row(client, created["id"])).status == "finished"


async def test_delivery_receipts_and_failures_flow_back(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    delivered = await make_resolved(phone=phone_number(1))
    answered = await make_resolved(phone=phone_number(2))
    undelivered = await make_resolved(phone=phone_number(3))
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    sids = {m.ticket_id: m.provider_message_id for m in await surveys(client)}
    for ticket_id, number, status in ((delivered, 1, "delivered"), (answered, 2, "delivered"), (undelivered, 3, "undelivered")):
        params = status_callback_params(message_sid=sids[ticket_id], status=status, to=f"+86{phone_number(number)}",
                                        error_code="30003" if status == "undelivered" else None)
        headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/status", params, AUTH_TOKEN)
        assert (await client.post("/webhooks/twilio/status", data=data, headers=headers)).status == 204
    await phone_of(client, phone_number(2)).text("1")

    expected = {
        "targets": 3, "pending": 0, "queued": 0, "sent": 3, "delivered": 2, "failed": 1, "skipped": 0,
        "awaiting_answer": 1, "answered": 1, "satisfied": 1, "unsatisfied": 0, "no_answer": 0,
    }
    assert (await campaigns.read(created["id"]))["counts"] == expected  # exact at once, from the outbox
    await run_campaigns(client)  # and mirrored onto the targets by the feeder: the funnel reads the same
    assert {t: x.status for t, x in (await targets(client, created["id"])).items()} == {
        delivered: "delivered", answered: "satisfied", undelivered: "failed",
    }
    assert (await campaigns.read(created["id"]))["counts"] == expected


async def test_the_funnel_reads_the_outbox_before_the_feeder_mirrors_it(client, world, make_resolved, campaigns: Campaigns):
    tickets = [await make_resolved(phone=phone_number(i)) for i in range(1, 6)]
    await make_resolved()  # no phone, no chat: skipped when the feeder comes to it
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    sids = {m.ticket_id: m.provider_message_id for m in await surveys(client)}
    # Receipts for three of the five questions out; their targets still say `sent` until the next pass.
    for ticket_id, number, status in ((tickets[0], 1, "delivered"), (tickets[1], 2, "failed"), (tickets[2], 3, "undelivered")):
        params = status_callback_params(message_sid=sids[ticket_id], status=status, to=f"+86{phone_number(number)}",
                                        error_code=None if status == "delivered" else "30008")
        headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/status", params, AUTH_TOKEN)
        assert (await client.post("/webhooks/twilio/status", data=data, headers=headers)).status == 204
    assert {x.status for t, x in (await targets(client, created["id"])).items() if t in tickets} == {"sent"}
    assert (await campaigns.read(created["id"]))["counts"] == {
        "targets": 6, "pending": 0, "queued": 0, "sent": 5, "delivered": 1, "failed": 2, "skipped": 1,
        "awaiting_answer": 3, "answered": 0, "satisfied": 0, "unsatisfied": 0, "no_answer": 0,
    }


async def test_unreachable_citizens_are_skipped_and_opt_outs_honoured(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    reachable = await make_resolved(phone=phone_number(1))
    opted_out = await make_resolved(phone=phone_number(2))
    stops_later = await make_resolved(phone=phone_number(3))
    await phone_of(client, phone_number(2)).text("TD")
    await flush(client)
    created = await campaigns.started()

    # The feeder queues the two it can reach; then the third citizen sends TD before the dispatcher runs.
    await client.app[CAMPAIGN_FEEDER].run_once()
    await phone_of(client, phone_number(3)).text("退订")
    before = len(fake_twilio.sent)
    await flush(client)
    # Before the feeder has mirrored the outbox onto the targets (both still `queued`), the funnel
    # already says where each question is: one suppressed, one sent.
    counts = (await campaigns.read(created["id"]))["counts"]
    assert (counts["queued"], counts["skipped"], counts["sent"], counts["awaiting_answer"]) == (0, 2, 1, 1)
    await run_campaigns(client)
    survey_texts = [r.form for r in fake_twilio.sent[before:] if "回访" in r.form["Body"]]
    assert [f["To"] for f in survey_texts] == [f"+86{phone_number(1)}"]  # nothing to an opted-out number
    by_ticket = await targets(client, created["id"])
    assert {t: x.status for t, x in by_ticket.items()} == {reachable: "sent", opted_out: "skipped", stops_later: "skipped"}
    (suppressed,) = await rows(client, OutboundMessage, OutboundMessage.ticket_id == stops_later, OutboundMessage.purpose == "survey")
    assert suppressed.status == "suppressed"
    read = await campaigns.read(created["id"])
    assert (read["counts"]["skipped"], read["counts"]["sent"]) == (2, 1)
    citizens = await rows(client, Citizen)
    assert sum(1 for c in citizens if c.sms_opted_out_at is not None) == 2


async def test_a_question_not_yet_sent_is_dropped_when_its_ticket_moves_on(client, world, make_resolved, campaigns: Campaigns, api, clock, fake_twilio):
    visited = await make_resolved(phone=phone_number(1))
    redone = await make_resolved(phone=phone_number(2))
    asked = await make_resolved(phone=phone_number(3))
    await flush(client)
    created = await campaigns.started()
    # Before the feeder gets to them: the department enters one ticket's result itself (a visit), and
    # another's by phone, sends it back, and the unit resolves it again (round 2).
    await api.ok("hanbin", visited, "callback_result", outcome="satisfied", channel="visit", answer="上门回访：满意")
    await api.ok("hanbin", redone, "callback_result", outcome="unsatisfied", channel="phone", answer="电话回访：不满意")
    await api.ok("hanbin", redone, "redo", reason="整改不到位")
    clock.advance(days=1)
    await api.ok("hanbin-market", redone, "resolve", rectification="重新整改", reply="已重新整改。")
    await flush(client)
    before = len(fake_twilio.sent)
    report = await client.app[CAMPAIGN_FEEDER].run_once()
    assert (report.queued, report.skipped) == (1, 2)
    await run_campaigns(client)
    survey_texts = [r.form for r in fake_twilio.sent[before:] if "回访" in r.form["Body"]]
    assert [f["To"] for f in survey_texts] == [f"+86{phone_number(3)}"]  # round 1 is not asked of either
    by_ticket = await targets(client, created["id"])
    assert {t: x.status for t, x in by_ticket.items()} == {visited: "skipped", redone: "skipped", asked: "sent"}
    assert [m.ticket_id for m in await surveys(client)] == [asked]


async def test_a_blocked_bot_gets_the_question_by_sms_with_its_choices(client, world, make_resolved, campaigns: Campaigns, chat, fake_twilio, fake_telegram):
    ticket_id = await make_resolved(phone=phone_number(1), chat_id=chat.user_id)
    await flush(client)
    created = await campaigns.started()
    fake_telegram.block(chat.user_id)
    await run_campaigns(client)
    (message,) = await surveys(client)
    assert (message.channel, message.status, message.buttons) == ("sms", "sent", None)
    body = fake_twilio.sent[-1].form["Body"]
    assert "差评的整改结果是否满意" in body and "1.满意 2.不满意" in body  # still says what to reply

    await phone_of(client, phone_number(1)).text("1")
    target = (await targets(client, created["id"]))[ticket_id]
    assert (target.channel, target.status, target.answer_channel) == ("telegram", "satisfied", "sms")


async def test_the_targets_list_shows_whom_to_call(client, world, make_resolved, campaigns: Campaigns, clock):
    answered = await make_resolved(phone=phone_number(1))
    unreachable = await make_resolved()  # no phone, no chat
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    await phone_of(client, phone_number(1)).text("满意")

    resp = await client.get(f"/api/v1/campaigns/{created['id']}/targets", params={"status": "skipped,failed"}, headers=world.auth("hanbin"))
    page = await resp.json()
    assert resp.status == 200 and [t["ticket_id"] for t in page["items"]] == [unreachable]
    assert page["items"][0]["channel"] is None and page["next_after_id"] is None
    assert page["items"][0]["answered_at"] is None
    resp = await client.get(f"/api/v1/campaigns/{created['id']}/targets", params={"limit": "1"}, headers=world.auth("operator"))
    page = await resp.json()
    [item] = page["items"]
    assert (item["ticket_id"], item["round"], item["status"], item["channel"], item["answer_channel"]) == (answered, 1, "satisfied", "sms", "sms")
    assert datetime.fromisoformat(item["answered_at"]) == clock.now()
    # The next page, exactly full: nothing after it, so it points to no further page.
    resp = await client.get(f"/api/v1/campaigns/{created['id']}/targets", params={"after_id": str(page["next_after_id"]), "limit": "1"}, headers=world.auth("operator"))
    page = await resp.json()
    assert [t["ticket_id"] for t in page["items"]] == [unreachable] and page["next_after_id"] is None
    resp = await client.get(f"/api/v1/campaigns/{created['id']}/targets", params={"status": "sent,nope"}, headers=world.auth("hanbin"))
    error = (await resp.json())["error"]
    assert resp.status == 422 and error["field"] == "status"
    assert error["message"] == f"unknown status 'nope'; statuses are {', '.join(TARGET_STATUSES)}"  # what it may ask for
    resp = await client.get(f"/api/v1/campaigns/{created['id']}/targets", headers=world.auth("hanyin"))
    assert resp.status == 404


async def test_a_survey_the_carrier_refuses_is_a_failed_question(client, world, make_resolved, campaigns: Campaigns, fake_twilio, clock):
    ticket_id = await make_resolved(phone=phone_number(1))
    await flush(client)
    created = await campaigns.started()
    fake_twilio.fail_next(1, 400, code=21211)  # not a valid number: no retry helps
    await run_campaigns(client)
    assert (await targets(client, created["id"]))[ticket_id].status == "failed"
    read = await campaigns.read(created["id"])
    assert (read["counts"]["failed"], read["counts"]["awaiting_answer"], read["status"]) == (1, 0, "finished")
    assert datetime.fromisoformat(read["finished_at"]) == clock.now()  # when the pass finished it
