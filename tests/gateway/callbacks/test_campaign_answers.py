"""Answers to a callback question, as citizens and phone staff give them; the one redo (Art. 15(五));
no answer within the configured days."""

from __future__ import annotations

import pytest

from gateway.callbacks.feeder import FeedReport
from gateway.store.models import CampaignTarget, Ticket, TicketEvent
from gateway.wiring.campaigns import CAMPAIGN_FEEDER
from tests.fakes.twilio_api import AUTH_TOKEN, signed_form, status_callback_params
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


async def _surveyed(client, make_resolved, campaigns: Campaigns, n: int = 1) -> tuple[int, list[int]]:  # type: ignore[no-untyped-def]
    tickets = [await make_resolved(phone=phone_number(i + 1)) for i in range(n)]
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    return created["id"], tickets


async def _ticket(client, ticket_id: int) -> Ticket:  # type: ignore[no-untyped-def]
    (ticket,) = await rows(client, Ticket, Ticket.id == ticket_id)
    return ticket


@pytest.mark.parametrize(
    ("text", "status", "answer_text"),
    [("满意", "satisfied", ""), ("１", "satisfied", ""), ("2", "unsatisfied", ""), ("不满意，还是没人管", "unsatisfied", "还是没人管")],
)
async def test_answers_by_sms(client, world, make_resolved, campaigns, fake_twilio, text, status, answer_text):
    campaign_id, [ticket_id] = await _surveyed(client, make_resolved, campaigns)
    await phone_of(client, phone_number(1)).text(text)
    await flush(client)
    target = (await targets(client, campaign_id))[ticket_id]
    assert (target.status, target.answer_text, target.answer_channel) == (status, answer_text, "sms")
    expected = {"satisfied": "closed_satisfied", "unsatisfied": "callback_unsatisfied"}[status]
    assert (await _ticket(client, ticket_id)).status == expected
    reply = fake_twilio.sent[-1].form["Body"]
    if status == "satisfied":
        assert "已记录您的回访意见：满意" in reply
    elif answer_text:
        assert "并已收到您的说明" in reply
    else:
        assert "请简要说明原因" in reply  # the flow asks for a short reason


async def test_a_reason_asked_for_is_kept_for_the_judgment(client, world, make_resolved, campaigns, fake_twilio):
    campaign_id, [ticket_id] = await _surveyed(client, make_resolved, campaigns)
    handset = phone_of(client, phone_number(1))
    await handset.text("2")
    await handset.text("窗口还是让我跑了三趟")
    await flush(client)
    target = (await targets(client, campaign_id))[ticket_id]
    assert (target.status, target.answer_text) == ("unsatisfied", "窗口还是让我跑了三趟")
    events = await rows(client, TicketEvent, TicketEvent.ticket_id == ticket_id)
    assert [e.action for e in events[-2:]] == ["callback_result", "callback_reason"]
    assert events[-1].actor == "citizen" and events[-1].data["text"] == "窗口还是让我跑了三趟"
    reason = events[-1]
    assert (reason.data["channel"], reason.data["campaign_id"]) == ("sms", campaign_id)
    assert reason.from_status == reason.to_status == "callback_unsatisfied" and "not satisfied" in reason.note
    assert "已收到您的说明" in fake_twilio.sent[-1].form["Body"]


@pytest.mark.parametrize("text", ["3", "满意度", "😀", "你们什么时候上班", ""])
async def test_garbage_records_nothing(client, world, make_resolved, campaigns, fake_twilio, text):
    campaign_id, [ticket_id] = await _surveyed(client, make_resolved, campaigns)
    resp = await phone_of(client, phone_number(1)).text(text)
    assert resp.status == 200
    await flush(client)
    target = (await targets(client, campaign_id))[ticket_id]
    assert (target.status, target.answer_text, target.answered_at) == ("sent", "", None)
    assert (await _ticket(client, ticket_id)).status == "resolved"
    assert "回访" not in fake_twilio.sent[-1].form["Body"]  # a short help text, not the question again


async def test_an_answer_counts_once(client, world, make_resolved, campaigns, chat):
    ticket_id = await make_resolved(phone=phone_number(1), chat_id=chat.user_id)
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    await chat.tap(f"sv:{ticket_id}:2")
    await chat.tap(f"sv:{ticket_id}:1")  # a second tap on the old keyboard: the question is closed
    await flush(client)
    assert (await targets(client, created["id"]))[ticket_id].status == "unsatisfied"
    results = [e for e in await rows(client, TicketEvent, TicketEvent.ticket_id == ticket_id) if e.action == "callback_result"]
    assert len(results) == 1


async def test_phone_staff_enter_answers(client, world, make_resolved, campaigns, fake_twilio):
    campaign_id, [reached, unreached] = await _surveyed(client, make_resolved, campaigns, n=2)
    status, body = await campaigns.answer(campaign_id, ticket_id=unreached, satisfied=False, reason="电话回访：仍不满意，材料清单未更新")
    assert status == 200, body
    assert body == {"campaign_id": campaign_id, "ticket_id": unreached, "target_status": "unsatisfied", "ticket_status": "callback_unsatisfied"}
    target = (await targets(client, campaign_id))[unreached]
    assert (target.answer_channel, target.answer_text) == ("phone", "电话回访：仍不满意，材料清单未更新")
    event = (await rows(client, TicketEvent, TicketEvent.ticket_id == unreached))[-1]
    assert event.data["channel"] == "phone" and event.data["answer"] == "电话回访：仍不满意，材料清单未更新"
    assert (event.actor, event.actor_org_id) == ("system:callback-campaign", (await campaign_row(client, campaign_id)).org_id)

    # Answered already (by phone): the citizen's SMS later finds no open question.
    status, body = await campaigns.answer(campaign_id, ticket_id=unreached, satisfied=True)
    assert status == 409 and body["error"]["code"] == "transition_not_allowed"
    assert (body["error"]["field"], body["error"]["details"]) == ("ticket_id", {"status": "unsatisfied"})
    assert "already has its answer" in body["error"]["message"]
    status, body = await campaigns.answer(campaign_id, ticket_id=999_999, satisfied=True)
    assert status == 404 and body["error"]["field"] == "ticket_id"
    assert f"not in campaign {campaign_id}" in body["error"]["message"]
    status, body = await campaigns.answer(campaign_id, org="hanyin", ticket_id=reached, satisfied=True)
    assert status == 404  # another department's campaign
    status, body = await campaigns.answer(campaign_id, org="operator", ticket_id=reached, satisfied=True)
    assert status == 404 and f"campaign {campaign_id} " in body["error"]["message"]  # the operator reads, not answers
    assert (await targets(client, campaign_id))[reached].status == "sent"
    status, body = await campaigns.answer(campaign_id, ticket_id=reached, satisfied="yes")
    assert status == 422 and body["error"]["field"] == "satisfied"


async def test_a_phone_answer_for_a_ticket_that_has_its_result_is_refused_and_records_nothing(
    client, world, make_resolved, campaigns, api  # type: ignore[no-untyped-def]
):
    campaign_id, [ticket_id] = await _surveyed(client, make_resolved, campaigns)
    await api.ok("hanbin", ticket_id, "callback_result", outcome="satisfied", channel="visit", answer="上门回访：满意")
    status, body = await campaigns.answer(campaign_id, ticket_id=ticket_id, satisfied=False, reason="电话回访：不满意")
    assert status == 409, body
    error = body["error"]
    assert (error["code"], error["field"], error["details"]) == ("transition_not_allowed", "ticket_id", {"status": "closed_satisfied"})
    assert error["message"].startswith(f"ticket {ticket_id}: ")
    target = (await targets(client, campaign_id))[ticket_id]
    assert (target.status, target.answered_at, target.answer_text) == ("sent", None, "")  # the question stays as it was
    assert (await _ticket(client, ticket_id)).status == "closed_satisfied"


async def test_a_phone_answer_before_the_survey_goes_out_withdraws_it(client, world, make_resolved, campaigns, fake_twilio):
    ticket_id = await make_resolved(phone=phone_number(1))
    await flush(client)
    created = await campaigns.started()
    await client.app[CAMPAIGN_FEEDER].run_once()  # queued, not sent yet
    status, _ = await campaigns.answer(created["id"], ticket_id=ticket_id, satisfied=True)
    assert status == 200
    before = len(fake_twilio.sent)
    await run_campaigns(client)
    assert len(fake_twilio.sent) == before  # the question is not asked after the answer
    read = await campaigns.read(created["id"])
    assert (read["counts"]["sent"], read["counts"]["satisfied"], read["status"]) == (0, 1, "finished")


async def test_the_redo_limit_across_two_rounds(client, world, make_resolved, campaigns, api, clock):
    first, [ticket_id] = await _surveyed(client, make_resolved, campaigns)
    await phone_of(client, phone_number(1)).text("不满意，还是没人管")
    await api.ok("hanbin", ticket_id, "redo", reason="整改不到位")
    clock.advance(days=1)
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="重新整改", reply="已重新整改，材料清单已更新。")
    await flush(client)

    second = await campaigns.started(name=" 第二轮回访 ")
    assert (second["name"], second["counts"]["targets"]) == ("第二轮回访", 1)
    await run_campaigns(client)
    (target,) = await rows(client, CampaignTarget, CampaignTarget.campaign_id == second["id"])
    assert target.round == 2 and target.status == "sent"
    await phone_of(client, phone_number(1)).text("不满意")
    await flush(client)
    assert (await _ticket(client, ticket_id)).status == "callback_unsatisfied"

    status, body = await api.act("hanbin", ticket_id, "redo", reason="还要再整改")
    assert status == 409 and "once only" in body["error"]["message"]
    await api.ok("hanbin", ticket_id, "close", reason="经研判非承办单位原因")
    assert (await _ticket(client, ticket_id)).status == "closed_unsatisfied"
    assert {(t.campaign_id, t.round, t.status) for t in await rows(client, CampaignTarget)} == {
        (first, 1, "unsatisfied"), (second["id"], 2, "unsatisfied"),
    }


async def test_no_answer_after_the_configured_days(client, world, make_resolved, campaigns, clock, settings):
    campaign_id, [silent, answers_late] = await _surveyed(client, make_resolved, campaigns, n=2)
    days = settings.survey_no_answer_days
    feeder = client.app[CAMPAIGN_FEEDER]
    clock.advance(days=days, seconds=-1)
    assert await feeder.run_once() == FeedReport()  # nothing to queue, expire or finish yet
    await phone_of(client, phone_number(2)).text("1")  # just in time
    clock.advance(seconds=1)
    assert await feeder.run_once() == FeedReport(expired=1, finished=1)  # the last question closed: done
    by_ticket = await targets(client, campaign_id)
    assert (by_ticket[silent].status, by_ticket[answers_late].status) == ("no_answer", "satisfied")
    assert (await _ticket(client, silent)).status == "closed_no_answer"
    event = (await rows(client, TicketEvent, TicketEvent.ticket_id == silent))[-1]
    assert event.data == {"outcome": "no_answer", "channel": "sms", "campaign_id": campaign_id}
    # Recorded by the campaign for the department that runs it (the ticket's history names it).
    assert (event.actor, event.actor_org_id) == ("system:callback-campaign", (await campaign_row(client, campaign_id)).org_id)

    # A late "1" finds the question closed: it is read as a new message, nothing is recorded.
    clock.advance(hours=1)
    await phone_of(client, phone_number(1)).text("1")
    assert (await targets(client, campaign_id))[silent].status == "no_answer"
    read = await campaigns.read(campaign_id)  # every question has its answer or its no-answer: done
    assert (read["status"], read["counts"]["no_answer"], read["satisfaction_rate"]) == ("finished", 1, 1.0)


async def test_with_two_open_questions_an_answer_goes_to_the_ticket_it_names(client, world, make_resolved, campaigns, chat):
    first = await make_resolved(phone=phone_number(1), chat_id=chat.user_id)
    second = await make_resolved(phone=phone_number(1), chat_id=chat.user_id)
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    await chat.tap(f"sv:{first}:2")
    await flush(client)
    answered = await targets(client, created["id"])
    assert (answered[first].status, answered[second].status) == ("unsatisfied", "sent")
    assert (await _ticket(client, second)).status == "resolved"


async def test_a_citizens_answer_after_the_department_recorded_the_result_is_kept_and_changes_nothing(
    client, world, make_resolved, campaigns, api, fake_twilio
):
    # The survey is out; the department reaches the citizen another way and enters the result on the
    # ticket itself; then the citizen's own answer to the survey arrives.
    campaign_id, [ticket_id] = await _surveyed(client, make_resolved, campaigns)
    await api.ok("hanbin", ticket_id, "callback_result", outcome="satisfied", channel="visit", answer="上门回访：满意")
    before = len(fake_twilio.sent)
    await phone_of(client, phone_number(1)).text("2")
    await flush(client)

    target = (await targets(client, campaign_id))[ticket_id]
    assert (target.status, target.answer_channel) == ("unsatisfied", "sms")  # the citizen's word is kept
    assert target.answered_at is not None
    ticket = await _ticket(client, ticket_id)
    assert ticket.status == "closed_satisfied"  # the ticket keeps the result it has
    results = [e for e in await rows(client, TicketEvent, TicketEvent.ticket_id == ticket_id) if e.action == "callback_result"]
    assert [(e.actor, e.data["outcome"], e.data["channel"]) for e in results] == [("hanbin", "satisfied", "visit")]
    # The citizen is answered as usual: the flow's acknowledgement, not an error, not the question again.
    assert len(fake_twilio.sent) == before + 1
    assert "已记录您的回访意见：不满意" in fake_twilio.sent[-1].form["Body"]
    counts = (await campaigns.read(campaign_id))["counts"]
    assert (counts["awaiting_answer"], counts["answered"], counts["unsatisfied"]) == (0, 1, 1)


async def test_an_answer_in_one_campaign_withdraws_the_tickets_question_in_another(
    client, world, make_resolved, campaigns, api, clock, fake_twilio
):
    # Campaign 1 queues round 1's question (not sent yet) for two tickets. The department enters an
    # unsatisfied result on the first ticket itself, sends it back, and the unit resolves it again:
    # campaign 2 asks round 2. The ticket now has open questions in two campaigns.
    ticket_id = await make_resolved(phone=phone_number(1))
    other_id = await make_resolved(phone=phone_number(2))
    await flush(client)
    first = await campaigns.started()
    await client.app[CAMPAIGN_FEEDER].run_once()
    await api.ok("hanbin", ticket_id, "callback_result", outcome="unsatisfied", channel="phone", answer="电话回访：不满意")
    await api.ok("hanbin", ticket_id, "redo", reason="整改不到位")
    clock.advance(days=1)
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="重新整改", reply="已重新整改。")
    second = await campaigns.started(name="第二轮回访")
    assert second["counts"]["targets"] == 1
    assert (await targets(client, first["id"]))[ticket_id].status == "queued"

    # Phone staff get the round-2 answer: round 1's question is withdrawn before it goes out.
    status, body = await campaigns.answer(second["id"], ticket_id=ticket_id, satisfied=True)
    assert status == 200, body
    assert body["ticket_status"] == "closed_satisfied"
    old = (await targets(client, first["id"]))[ticket_id]
    assert old.status == "skipped"
    sent_before = [m.form["To"] for m in fake_twilio.sent]
    await run_campaigns(client)
    asked = [m.form["To"] for m in fake_twilio.sent[len(sent_before):] if "回访" in m.form["Body"]]
    assert asked == [f"+86{phone_number(2)}"]  # only the other ticket's citizen is asked
    by_ticket = await targets(client, first["id"])
    assert (by_ticket[ticket_id].status, by_ticket[other_id].status) == ("skipped", "sent")
    assert (await _ticket(client, ticket_id)).status == "closed_satisfied"
    # The second campaign has all its answers: it finishes while the first still waits for one.
    statuses = [(await campaign_row(client, c["id"])).status for c in (first, second)]
    assert statuses == ["running", "finished"]


async def test_two_campaigns_expiring_together_each_record_their_own_no_answers(
    client, world, make_resolved, campaigns, clock, settings  # type: ignore[no-untyped-def]
):
    first_id, [first_ticket] = await _surveyed(client, make_resolved, campaigns)
    second_ticket = await make_resolved(phone=phone_number(2))
    await flush(client)
    second_id = (await campaigns.started())["id"]  # asks only the ticket the first campaign did not
    await run_campaigns(client)
    assert set(await targets(client, second_id)) == {second_ticket}
    clock.advance(days=settings.survey_no_answer_days, seconds=1)
    assert (await client.app[CAMPAIGN_FEEDER].run_once()).expired == 2
    for campaign_id, ticket_id in ((first_id, first_ticket), (second_id, second_ticket)):
        assert (await targets(client, campaign_id))[ticket_id].status == "no_answer"
        event = (await rows(client, TicketEvent, TicketEvent.ticket_id == ticket_id))[-1]
        assert event.data == {"outcome": "no_answer", "channel": "sms", "campaign_id": campaign_id}


async def test_one_pass_records_every_silence_and_leaves_the_questions_the_ticket_moved_past(
    client, world, make_resolved, campaigns, api, clock, settings  # type: ignore[no-untyped-def]
):
    # Three questions out in one campaign: the first ticket got its result from the department itself
    # meanwhile (a visit), the second's SMS came back delivered, the third's is only sent.
    campaign_id, [visited, delivered, sent] = await _surveyed(client, make_resolved, campaigns, n=3)
    await api.ok("hanbin", visited, "callback_result", outcome="satisfied", channel="visit", answer="上门回访：满意")
    sid = {m.ticket_id: m.provider_message_id for m in await surveys(client)}[delivered]
    params = status_callback_params(message_sid=sid, status="delivered", to=f"+86{phone_number(2)}")
    headers, data = signed_form(f"{PUBLIC}/webhooks/twilio/status", params, AUTH_TOKEN)
    assert (await client.post("/webhooks/twilio/status", data=data, headers=headers)).status == 204
    await run_campaigns(client)
    assert (await targets(client, campaign_id))[delivered].status == "delivered"

    clock.advance(days=settings.survey_no_answer_days, seconds=1)
    assert (await client.app[CAMPAIGN_FEEDER].run_once()).expired == 2  # one pass, both silences
    by_ticket = await targets(client, campaign_id)
    assert {t: x.status for t, x in by_ticket.items()} == {visited: "skipped", delivered: "no_answer", sent: "no_answer"}
    assert [(await _ticket(client, t)).status for t in (visited, delivered, sent)] == [
        "closed_satisfied", "closed_no_answer", "closed_no_answer",
    ]
    results = [e for e in await rows(client, TicketEvent, TicketEvent.ticket_id == visited) if e.action == "callback_result"]
    assert [(e.actor, e.data["outcome"]) for e in results] == [("hanbin", "satisfied")]  # the silence adds nothing


async def test_questions_sent_before_a_pause_or_a_cancel_still_close_as_no_answer(
    client, world, make_resolved, campaigns, clock, settings  # type: ignore[no-untyped-def]
):
    # Two campaigns, each with its question out; then one is paused and the other cancelled. Neither
    # sends anything more, but the citizens' silence still closes the tickets (Art. 15(五)): otherwise
    # a ticket of a campaign paused and never resumed would wait for its callback for ever.
    paused_id, [paused_ticket] = await _surveyed(client, make_resolved, campaigns)
    cancelled_ticket = await make_resolved(phone=phone_number(2))
    await flush(client)
    cancelled_id = (await campaigns.started())["id"]
    await run_campaigns(client)
    assert (await campaigns.act(paused_id, "pause"))[0] == 200
    assert (await campaigns.act(cancelled_id, "cancel"))[0] == 200

    clock.advance(days=settings.survey_no_answer_days, seconds=1)
    assert await client.app[CAMPAIGN_FEEDER].run_once() == FeedReport(expired=2)
    for campaign_id, ticket_id, status in ((paused_id, paused_ticket, "paused"), (cancelled_id, cancelled_ticket, "cancelled")):
        assert (await targets(client, campaign_id))[ticket_id].status == "no_answer"
        assert (await _ticket(client, ticket_id)).status == "closed_no_answer"
        assert (await campaign_row(client, campaign_id)).status == status  # the campaign itself stays as it was
