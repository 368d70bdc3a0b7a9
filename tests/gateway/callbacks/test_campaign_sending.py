"""How a campaign is sent: in small chunks behind the answers to citizens, never in quiet hours, paused,
resumed and cancelled, and with nothing sent twice when a process dies in the middle."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import datetime, timezone

import pytest

from gateway.app import create_app
from gateway.callbacks.feeder import CampaignFeeder
from gateway.store.models import CampaignTarget, OutboundMessage
from gateway.web.keys import DISPATCHER
from gateway.wiring.campaigns import CAMPAIGN_FEEDER
from tests.gateway.bot.conftest import Unpaced
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


def survey_recipients(fake_twilio) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(r.form["To"] for r in fake_twilio.sent if "回访" in r.form["Body"])


async def _resolved(make_resolved, client, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    tickets = [await make_resolved(phone=phone_number(i)) for i in range(1, n + 1)]
    await flush(client)
    return tickets


async def test_the_feeder_keeps_a_small_chunk_ahead_and_answers_go_first(client, world, make_resolved, campaigns: Campaigns, fake_twilio, make_open_ticket):
    await _resolved(make_resolved, client, 5)
    client.app[CAMPAIGN_FEEDER].queue_ahead = 2
    created = await campaigns.started()
    feeder, dispatcher = client.app[CAMPAIGN_FEEDER], client.app[DISPATCHER]

    assert (await feeder.run_once()).queued == 2
    again = await feeder.run_once()
    assert (again.queued, again.skipped) == (0, 0)  # two waiting already
    assert [m.status for m in await surveys(client)] == ["queued", "queued"]
    read = await campaigns.read(created["id"])
    assert (read["counts"]["pending"], read["counts"]["queued"]) == (3, 2)
    dispatcher.policy = dataclasses.replace(dispatcher.policy, batch_size=1)
    await dispatcher.run_once()  # one survey leaves …
    assert (await feeder.run_once()).queued == 1  # … and the chunk is topped up to two again

    # A citizen writes in while the surveys wait: the answer (priority 0) leaves before them.
    await make_open_ticket(phone="13900000001")
    await flush(client)
    await phone_of(client, "13900000001").text("你好")
    dispatcher.policy = dataclasses.replace(dispatcher.policy, batch_size=1)
    before = len(fake_twilio.sent)
    await dispatcher.run_once()
    assert fake_twilio.sent[before].form["To"] == "+8613900000001"

    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(i)}": 1 for i in range(1, 6)})


async def test_the_apps_loops_send_a_campaign_and_each_chunk_wakes_the_dispatcher(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    await _resolved(make_resolved, client, 3)
    feeder, dispatcher = client.app[CAMPAIGN_FEEDER], client.app[DISPATCHER]
    feeder.queue_ahead = 1  # one survey a pass: the feeder's loop must run pass after pass
    await campaigns.started()
    # The dispatcher's loop polls the outbox once a minute; a chunk the feeder queues wakes it at once.
    loops = [
        asyncio.create_task(dispatcher.run_forever(60)),
        asyncio.create_task(feeder.run_forever(0.3)),
    ]
    try:
        async with asyncio.timeout(15):
            while sum(survey_recipients(fake_twilio).values()) < 3:
                await asyncio.sleep(0.01)
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(i)}": 1 for i in range(1, 4)})


async def test_questions_a_dispatcher_is_sending_still_count_as_queued(client, world, make_resolved, campaigns: Campaigns, fake_twilio, settings, clock):
    await _resolved(make_resolved, client, 3)
    created = await campaigns.started()
    feeder, dispatcher = client.app[CAMPAIGN_FEEDER], client.app[DISPATCHER]
    assert (await feeder.run_once()).queued == 3
    dispatcher.policy = dataclasses.replace(dispatcher.policy, batch_size=1)
    assert len(await dispatcher.claim()) == 1  # one leased by a dispatcher (then lost), two waiting
    counts = (await campaigns.read(created["id"]))["counts"]
    assert (counts["pending"], counts["queued"], counts["sent"]) == (0, 3, 0)
    clock.advance(seconds=settings.dispatch_lease_seconds + 1)
    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(i)}": 1 for i in range(1, 4)})


async def test_quiet_hours_hold_the_campaign_not_the_answers(client, world, make_resolved, campaigns: Campaigns, fake_twilio, clock):
    await _resolved(make_resolved, client, 2)
    clock.set(datetime(2026, 3, 4, 13, 30, tzinfo=timezone.utc))  # 21:30 in Asia/Shanghai
    created = await campaigns.started()
    await run_campaigns(client)
    assert await surveys(client) == [] and not survey_recipients(fake_twilio)
    assert (await campaigns.read(created["id"]))["counts"]["pending"] == 2

    await phone_of(client, phone_number(1)).text("帮助")  # a citizen who writes at night is answered at night
    await flush(client)
    assert fake_twilio.sent[-1].form["To"] == f"+86{phone_number(1)}"

    clock.set(datetime(2026, 3, 5, 0, 0, tzinfo=timezone.utc))  # 08:00 next morning
    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(1)}": 1, f"+86{phone_number(2)}": 1})


async def test_a_survey_queued_before_quiet_hours_waits_for_morning(client, world, make_resolved, campaigns: Campaigns, fake_twilio, clock):
    await _resolved(make_resolved, client, 1)
    clock.set(datetime(2026, 3, 4, 12, 59, 59, tzinfo=timezone.utc))  # 20:59:59
    await campaigns.started()
    await client.app[CAMPAIGN_FEEDER].run_once()
    clock.advance(seconds=2)  # 21:00:01 when the dispatcher gets to it
    await flush(client)
    (message,) = await surveys(client)
    assert message.status == "queued" and not survey_recipients(fake_twilio)
    clock.set(datetime(2026, 3, 5, 0, 0, 1, tzinfo=timezone.utc))
    await run_campaigns(client)
    assert sum(survey_recipients(fake_twilio).values()) == 1


async def test_pause_takes_back_what_waits_and_resume_sends_it_once(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    await _resolved(make_resolved, client, 5)
    client.app[CAMPAIGN_FEEDER].queue_ahead = 2
    created = await campaigns.started()
    await client.app[CAMPAIGN_FEEDER].run_once()

    status, body = await campaigns.act(created["id"], "pause")
    assert status == 200 and body["status"] == "paused"
    assert (body["counts"]["pending"], body["counts"]["queued"]) == (5, 0)
    await run_campaigns(client)
    assert not survey_recipients(fake_twilio)
    assert (await campaigns.act(created["id"], "pause"))[0] == 409

    status, body = await campaigns.act(created["id"], "resume")
    assert status == 200 and body["status"] == "running"
    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(i)}": 1 for i in range(1, 6)})
    assert len(await surveys(client)) == 5  # the withdrawn rows went out again, no new ones


async def test_a_pause_takes_back_only_what_waits(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    answered, sent, also_sent = await _resolved(make_resolved, client, 3)
    created = await campaigns.started()
    await client.app[CAMPAIGN_FEEDER].run_once()  # three queued
    status, _ = await campaigns.answer(created["id"], ticket_id=answered, satisfied=True)  # its survey withdrawn
    assert status == 200
    await flush(client)  # the other two leave; the feeder has not yet seen them go

    status, body = await campaigns.act(created["id"], "pause")
    assert status == 200, body
    counts = body["counts"]
    assert (counts["pending"], counts["awaiting_answer"], counts["satisfied"]) == (0, 2, 1)
    assert (await campaigns.act(created["id"], "resume"))[0] == 200
    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(2)}": 1, f"+86{phone_number(3)}": 1})
    by_ticket = await targets(client, created["id"])
    assert {t: x.status for t, x in by_ticket.items()} == {answered: "satisfied", sent: "sent", also_sent: "sent"}


async def test_cancel_sends_nothing_more_but_takes_answers_to_what_was_sent(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    tickets = await _resolved(make_resolved, client, 5)
    feeder = client.app[CAMPAIGN_FEEDER]
    feeder.queue_ahead = 2
    created = await campaigns.started()
    await feeder.run_once()
    await flush(client)  # two sent
    await feeder.run_once()  # two more queued

    status, body = await campaigns.act(created["id"], "cancel")
    assert status == 200 and body["status"] == "cancelled" and body["finished_at"]
    assert (body["counts"]["skipped"], body["counts"]["awaiting_answer"]) == (3, 2)
    await run_campaigns(client)
    assert sum(survey_recipients(fake_twilio).values()) == 2
    for action in ("pause", "resume", "cancel"):
        status, body = await campaigns.act(created["id"], action)
        assert status == 409 and body["error"]["message"].startswith(f"cannot {action} campaign {created['id']}: ")
        assert "cancelled" in body["error"]["message"] and body["error"]["details"] == {"status": "cancelled"}

    await phone_of(client, phone_number(1)).text("1")
    assert (await targets(client, created["id"]))[tickets[0]].status == "satisfied"
    assert (await campaign_row(client, created["id"])).status == "cancelled"
    # The tickets not asked are free for another campaign.
    again = await campaigns.started()
    assert set(await targets(client, again["id"])) == set(tickets[2:])


async def test_two_campaigns_at_once_each_send_and_stop_only_their_own(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    tickets = await _resolved(make_resolved, client, 4)
    feeder = client.app[CAMPAIGN_FEEDER]
    feeder.queue_ahead = 1
    first = await campaigns.started(name="第一批", ticket_ids=tickets[:2])
    second = await campaigns.started(name="第二批", ticket_ids=tickets[2:])
    assert (await feeder.run_once()).queued == 2  # one waiting for each campaign, each counting its own
    assert {m.campaign_id: m.dedupe_key for m in await surveys(client)} == {
        first["id"]: f"survey:{first['id']}:{tickets[0]}", second["id"]: f"survey:{second['id']}:{tickets[2]}",
    }

    status, body = await campaigns.act(first["id"], "cancel")
    assert status == 200 and (body["counts"]["skipped"], body["counts"]["pending"]) == (2, 0)
    counts = (await campaigns.read(second["id"]))["counts"]
    assert (counts["pending"], counts["queued"], counts["skipped"]) == (1, 1, 0)  # the other campaign is untouched
    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(3)}": 1, f"+86{phone_number(4)}": 1})


class CrashingFeeder(CampaignFeeder):
    """Dies after writing a chunk to the outbox, before the transaction commits."""

    async def _queue(self, session, campaign, now):  # type: ignore[no-untyped-def]
        await super()._queue(session, campaign, now)
        raise RuntimeError("killed between the outbox insert and the commit")


async def test_a_crash_inside_a_chunk_leaves_nothing(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    await _resolved(make_resolved, client, 3)
    created = await campaigns.started()
    app = client.app
    crashing = CrashingFeeder(store=app[CAMPAIGN_FEEDER].store, deps=app[CAMPAIGN_FEEDER].deps, queue_ahead=10)
    with pytest.raises(RuntimeError):
        await crashing.run_once()
    assert await surveys(client) == []
    assert {t.status for t in (await targets(client, created["id"])).values()} == {"pending"}
    await run_campaigns(client)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(i)}": 1 for i in range(1, 4)})


async def test_a_cancel_during_a_feeder_pass_stays_a_cancel(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    [ticket_id] = await _resolved(make_resolved, client, 1)
    created = await campaigns.started()
    status, _ = await campaigns.answer(created["id"], ticket_id=ticket_id, satisfied=True)
    assert status == 200  # nothing left to send or to answer: the next sweep would finish the campaign

    class CancelledMidPass(CampaignFeeder):
        async def _asking(self) -> list[int]:
            # Lands after the pass has read its running campaigns, before it finishes them.
            assert (await campaigns.act(created["id"], "cancel"))[0] == 200
            return await super()._asking()

    app = client.app
    feeder = CancelledMidPass(store=app[CAMPAIGN_FEEDER].store, deps=app[CAMPAIGN_FEEDER].deps, queue_ahead=10)
    assert (await feeder.run_once()).finished == 0
    assert (await campaign_row(client, created["id"])).status == "cancelled"


async def test_a_restart_mid_campaign_sends_nothing_twice(client, world, make_resolved, campaigns: Campaigns, fake_twilio, settings, clock, aiohttp_client):
    await _resolved(make_resolved, client, 5)
    first = client.app
    first[CAMPAIGN_FEEDER].queue_ahead = 2
    await campaigns.started()
    await first[CAMPAIGN_FEEDER].run_once()
    await flush(client)  # two sent
    await first[CAMPAIGN_FEEDER].run_once()  # two more queued …
    claimed = await first[DISPATCHER].claim()  # … and leased by a dispatcher that then dies
    assert len(claimed) == 2

    # A new process on the same database.
    second = await aiohttp_client(create_app(settings, clock=clock, migrate=False, run_background=False))
    second.app[DISPATCHER].limiter = Unpaced()
    second.app[CAMPAIGN_FEEDER].queue_ahead = 2
    await run_campaigns(second)
    # The last pending one goes; the leased two wait for their lease to run out, without stalling the rest.
    assert sum(survey_recipients(fake_twilio).values()) == 3
    clock.advance(seconds=settings.dispatch_lease_seconds + 1)
    await run_campaigns(second)
    assert survey_recipients(fake_twilio) == Counter({f"+86{phone_number(i)}": 1 for i in range(1, 6)})
    messages = await rows(second, OutboundMessage, OutboundMessage.purpose == "survey")
    assert len(messages) == 5 and len({m.dedupe_key for m in messages}) == 5
    assert {t.status for t in await rows(second, CampaignTarget)} == {"sent"}


async def test_a_pause_that_lands_during_a_feeder_pass_queues_nothing(client, world, make_resolved, campaigns: Campaigns, fake_twilio):
    await _resolved(make_resolved, client, 3)
    created = await campaigns.started()

    class PausedMidPass(CampaignFeeder):
        async def _feed(self, campaign_id, now, report):  # type: ignore[no-untyped-def]
            # Lands after the pass has listed the campaign as running, before it feeds it: the campaign
            # is read again under its lock.
            assert (await campaigns.act(created["id"], "pause"))[0] == 200
            return await super()._feed(campaign_id, now, report)

    app = client.app
    feeder = PausedMidPass(store=app[CAMPAIGN_FEEDER].store, deps=app[CAMPAIGN_FEEDER].deps, queue_ahead=10)
    assert (await feeder.run_once()).queued == 0
    await flush(client)
    assert not survey_recipients(fake_twilio)
    assert (await campaign_row(client, created["id"])).status == "paused"
