"""Inbox messages of different senders handled in one transaction (`converse_group`): one commit for the
group; a refused or failing conversation, or one busy elsewhere, leaves nothing of the group and each
message goes alone, with its own answer or its own retry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import select

from gateway import dialogue
from gateway.dialogue import conversation_key
from gateway.evaluations.errors import AlreadyRated
from gateway.sms.inbox import InboxDrainer, InboxPolicy
from gateway.store.models import Citizen, Evaluation, InboundMessage, OutboundMessage
from gateway.web.keys import RUNNER, STORE
from tests.gateway.evaluations.helpers import report
from tests.gateway.sms.conftest import Phone

SENDERS = 5


async def _five_replies(client: Any, world: Any) -> list[int]:
    """Five citizens, each with a service to rate, each texting 5 (stored, not yet processed); their ids."""
    for i in range(SENDERS):
        await report(client, world, case_no=f"HB-G-{i}", citizen={"phone": f"1390000{i:04d}"})
    for i in range(SENDERS):
        await Phone(client, f"+861390000{i:04d}").text("5", drain=False, sid=f"SM{i:032x}")
    async with client.app[STORE].transaction() as session:
        return [c for c in (await session.exec(select(Citizen.id).order_by(Citizen.id))).all() if c is not None]


async def _rows(client: Any, model: Any) -> list[Any]:
    async with client.app[STORE].transaction() as session:
        return list((await session.exec(select(model).order_by(model.id))).all())


def _count_commits(client: Any) -> list[int]:
    commits: list[int] = []

    def committed(_conn: Any) -> None:
        commits.append(1)

    event.listen(client.app[STORE].engine.sync_engine, "commit", committed)
    return commits


@pytest.mark.parametrize(("group_size", "commits"), [(8, 2), (1, 1 + SENDERS)])
async def test_a_batch_of_senders_commits_once(client, world, group_size, commits):  # type: ignore[no-untyped-def]
    await _five_replies(client, world)
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(group_size=group_size))
    seen = _count_commits(client)
    assert await drainer.drain_once() == SENDERS
    assert len(seen) == commits  # the claim, then one for the group (or one per message)
    assert sorted(e.level for e in await _rows(client, Evaluation)) == [5] * SENDERS
    replies = [m for m in await _rows(client, OutboundMessage) if m.purpose == "reply"]
    assert len({m.citizen_id for m in replies}) == SENDERS == len(replies)
    assert all(m.state == "processed" for m in await _rows(client, InboundMessage))


async def test_a_refused_rating_leaves_nothing_of_the_group_and_each_goes_alone(client, world, monkeypatch):  # type: ignore[no-untyped-def]
    citizens = await _five_replies(client, world)
    victim = citizens[1]
    real = dialogue.record_rating

    async def raced(session, *, invitation, **kwargs):  # type: ignore[no-untyped-def]
        if invitation.citizen_id == victim:  # rated through the page a moment ago
            raise AlreadyRated("already rated")
        return await real(session, invitation=invitation, **kwargs)

    monkeypatch.setattr(dialogue, "record_rating", raced)
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy())
    seen = _count_commits(client)
    assert await drainer.drain_once() == SENDERS
    assert len(seen) > 2  # the group rolled back; the messages went one by one
    evaluations = await _rows(client, Evaluation)
    assert sorted(e.citizen_id for e in evaluations) == [c for c in citizens if c != victim]  # none twice
    replies = [m for m in await _rows(client, OutboundMessage) if m.purpose == "reply"]
    assert sorted(m.citizen_id for m in replies) == citizens  # one answer each
    (refusal,) = [m for m in replies if m.citizen_id == victim]
    assert "已评价过" in refusal.body
    assert all(m.state == "processed" for m in await _rows(client, InboundMessage))


async def test_a_failing_conversation_stays_for_a_retry_and_its_group_goes_on(client, world, monkeypatch):  # type: ignore[no-untyped-def]
    citizens = await _five_replies(client, world)
    victim = citizens[3]
    real = dialogue.load_context

    async def failing(session, *, citizen_id, deps):  # type: ignore[no-untyped-def]
        if citizen_id == victim:
            raise RuntimeError("a database hiccup")
        return await real(session, citizen_id=citizen_id, deps=deps)

    monkeypatch.setattr(dialogue, "load_context", failing)
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy())
    assert await drainer.drain_once() == SENDERS
    assert sorted(e.citizen_id for e in await _rows(client, Evaluation)) == [c for c in citizens if c != victim]
    inbox = await _rows(client, InboundMessage)
    (left,) = [m for m in inbox if m.state == "pending"]
    assert left.error.startswith("RuntimeError") and left.attempts == 1 and left.body == "5"


async def test_a_conversation_busy_elsewhere_sends_its_group_one_by_one(client, world):  # type: ignore[no-untyped-def]
    citizens = await _five_replies(client, world)
    runner = client.app[RUNNER]
    key = conversation_key(runner.deps, "sms", citizens[2])
    entered, release = asyncio.Event(), asyncio.Event()

    async def timer_holding_the_lock() -> None:
        async with runner.locks.hold(key):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(timer_holding_the_lock())
    await entered.wait()
    drainer = InboxDrainer(runner, policy=InboxPolicy())
    draining = asyncio.create_task(drainer.drain_once())
    await asyncio.sleep(0.2)
    assert not draining.done()  # the busy citizen's message waits for its lock, alone
    release.set()
    assert await asyncio.wait_for(draining, 10) == SENDERS
    await holder
    assert len(await _rows(client, Evaluation)) == SENDERS
