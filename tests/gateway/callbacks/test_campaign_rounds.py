"""A callback question is about one rectification round: an answer to round 1 that comes after a redo
must not close round 2 (Art. 15(五)); `gateway.callbacks.answers.same_round` is the one rule."""

from __future__ import annotations

from gateway.store.models import CampaignTarget, Ticket
from gateway.wiring.campaigns import CAMPAIGN_FEEDER
from tests.gateway.callbacks.conftest import flush, phone_number, phone_of, rows, run_campaigns


async def test_a_round_one_answer_after_a_redo_does_not_close_round_two(client, world, make_resolved, campaigns, api, clock):  # type: ignore[no-untyped-def]
    ticket_id = await make_resolved(phone=phone_number(1))
    await flush(client)
    await campaigns.started()
    await run_campaigns(client)
    (target,) = await rows(client, CampaignTarget)
    assert (target.round, target.status) == (1, "sent")
    # Phone staff reach the citizen first; the department orders the one redo; the unit resolves again.
    await api.ok("hanbin", ticket_id, "callback_result", outcome="unsatisfied")
    await api.ok("hanbin", ticket_id, "redo", reason="整改不到位")
    clock.advance(days=1)
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="重新整改", reply="已重新整改。")
    await flush(client)
    (ticket,) = await rows(client, Ticket, Ticket.id == ticket_id)
    assert (ticket.status, ticket.redo_count) == ("resolved", 1)

    await phone_of(client, phone_number(1)).text("满意")  # the round-1 SMS, answered late
    await flush(client)
    (ticket,) = await rows(client, Ticket, Ticket.id == ticket_id)
    assert ticket.status == "resolved"  # round 2 still awaits its own callback


async def test_round_ones_silence_after_a_redo_does_not_close_round_two(client, world, make_resolved, campaigns, api, clock, settings):  # type: ignore[no-untyped-def]
    ticket_id = await make_resolved(phone=phone_number(1))
    await flush(client)
    created = await campaigns.started()
    await run_campaigns(client)
    # The round-1 SMS stays unanswered; the department takes the result by phone, orders the redo, and
    # the unit resolves again while that SMS is still out.
    await api.ok("hanbin", ticket_id, "callback_result", outcome="unsatisfied")
    await api.ok("hanbin", ticket_id, "redo", reason="整改不到位")
    clock.advance(days=1)
    await api.ok("hanbin-market", ticket_id, "resolve", rectification="重新整改", reply="已重新整改。")
    await flush(client)

    clock.advance(days=settings.survey_no_answer_days)
    assert (await client.app[CAMPAIGN_FEEDER].run_once()).expired == 0
    (target,) = await rows(client, CampaignTarget, CampaignTarget.campaign_id == created["id"])
    assert (target.round, target.status) == (1, "skipped")
    (ticket,) = await rows(client, Ticket, Ticket.id == ticket_id)
    assert ticket.status == "resolved"  # round 2 still awaits its own callback
    assert (await campaigns.read(created["id"]))["status"] == "finished"
