"""Inbox messages of different senders handled in one transaction (`converse_group`): one commit for the
group; a refused or failing conversation, or one busy elsewhere, leaves nothing of the group and each
message goes alone, with its own answer or its own retry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlmodel import col, select

from gateway import dialogue
from gateway.dialogue import conversation_key
from gateway.evaluations.errors import AlreadyRated
from gateway.evaluations.service import RatingGroup, cases_of
from gateway.sms.inbox import InboxDrainer, InboxPolicy
from gateway.store.models import Citizen, Evaluation, InboundMessage, Invitation, OutboundMessage
from gateway.web.keys import DEPS, RUNNER, STORE
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

    real_add = dialogue.RatingGroup.add

    def raced_in_group(group, *, invitation, **kwargs):  # type: ignore[no-untyped-def]
        if invitation.citizen_id == victim:
            raise AlreadyRated("already rated")
        real_add(group, invitation=invitation, **kwargs)

    monkeypatch.setattr(dialogue, "record_rating", raced)
    monkeypatch.setattr(dialogue.RatingGroup, "add", raced_in_group)
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


async def test_a_group_whose_service_was_rated_meanwhile_claims_and_stores_nothing(client, world):  # type: ignore[no-untyped-def]
    await _five_replies(client, world)
    store, deps = client.app[STORE], client.app[DEPS]
    invitations = await _rows(client, Invitation)
    async with store.transaction() as session:  # the second service was rated through the page a moment ago
        await session.exec(update(Invitation).where(col(Invitation.id) == invitations[1].id).values(status="rated"))
    with pytest.raises(AlreadyRated):
        async with store.transaction() as session:
            group = RatingGroup(at=deps.clock.now())
            for invitation in await _rows_in(session, Invitation, 3):
                group.add(
                    invitation=invitation, level=5, channel="sms", deps=deps, cases=await cases_of(session, invitation)
                )
            await group.write(session, deps)
    assert [i.status for i in await _rows(client, Invitation)] == ["open", "rated", "open", "open", "open"]
    assert await _rows(client, Evaluation) == []

    async with store.transaction() as session:  # the others, as a group: one claim and one INSERT
        group = RatingGroup(at=deps.clock.now())
        for invitation in [i for i in await _rows_in(session, Invitation, 5) if i.status == "open"]:
            group.add(
                invitation=invitation, level=4, channel="sms", deps=deps, cases=await cases_of(session, invitation)
            )
        rated = await group.write(session, deps)
    assert [r.evaluation.invitation_id for r in rated] == [i.id for i in invitations if i.id != invitations[1].id]
    stored = await _rows(client, Invitation)
    assert [i.status for i in stored] == ["rated"] * SENDERS
    evaluations = await _rows(client, Evaluation)
    assert [(e.invitation_id, e.level, e.created_at) for e in evaluations] == [
        (i.id, 4, i.rated_at) for i in stored if i.id != invitations[1].id
    ]


async def _rows_in(session: Any, model: Any, limit: int) -> list[Any]:
    return list((await session.exec(select(model).order_by(model.id).limit(limit))).all())


async def test_a_failing_conversation_stays_for_a_retry_and_its_group_goes_on(client, world, monkeypatch):  # type: ignore[no-untyped-def]
    citizens = await _five_replies(client, world)
    victim = citizens[3]
    real = dialogue.load_contexts

    async def failing(session, *, citizen_ids, deps):  # type: ignore[no-untyped-def]
        if victim in citizen_ids:
            raise RuntimeError("a database hiccup")
        return await real(session, citizen_ids=citizen_ids, deps=deps)

    monkeypatch.setattr(dialogue, "load_contexts", failing)
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


SCRIPTS = [["1", "1"], ["5", "4"], ["2", "窗口让我跑了三趟"], ["4"], ["3", "2"], ["1", "2 3"], ["你好", "5"], ["2"]]


async def _play(client: Any, world: Any, prefix: str, group_size: int) -> tuple[list[dict[str, Any]], int]:
    """Each citizen plays its script, one message per round, the inbox drained between rounds by a
    drainer of the given group size; what each citizen ends with."""
    phones = []
    for i in range(len(SCRIPTS)):
        await report(client, world, case_no=f"HB-{prefix}-{i}", citizen={"phone": f"139{prefix}{i:04d}"})
        phones.append(Phone(client, f"+86139{prefix}{i:04d}"))
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(group_size=group_size))
    commits = _count_commits(client)
    for round_ in range(max(len(s) for s in SCRIPTS)):
        for i, (phone, script) in enumerate(zip(phones, SCRIPTS, strict=True)):
            if round_ < len(script):
                await phone.text(script[round_], drain=False, sid=f"SM{prefix}{round_}{i:028d}")
        assert await drainer.drain() == sum(1 for s in SCRIPTS if round_ < len(s))
    transactions = len(commits)
    from gateway.stats.rollup import recount, stored
    from gateway.store.models import ConversationTimer, EvaluationAddendum, Invitation, Ticket, TicketEvent

    async with client.app[STORE].transaction() as session:  # the statistics kept equal a recount of the rows
        assert await stored(session) == await recount(session, client.app[RUNNER].deps.calendar)

    async with client.app[STORE].transaction() as session:
        invitations = {i.group_no: i.citizen_id for i in (await session.exec(select(Invitation))).all()}
    evaluations = await _rows(client, Evaluation)
    replies = [m for m in await _rows(client, OutboundMessage) if m.purpose == "reply"]
    addenda, tickets = await _rows(client, EvaluationAddendum), await _rows(client, Ticket)
    timers, events = await _rows(client, ConversationTimer), await _rows(client, TicketEvent)
    results = []
    for i in range(len(SCRIPTS)):
        citizen_id = invitations[f"HB-{prefix}-{i}"]
        mine = [e for e in evaluations if e.citizen_id == citizen_id]
        results.append(
            {
                "ratings": [(e.level, e.reason_codes, e.content, e.staff_level) for e in mine],
                "addenda": sorted(
                    (a.kind, a.reason_codes, a.staff_level) for a in addenda if a.evaluation_id in {e.id for e in mine}
                ),
                "tickets": [
                    (
                        t.status,
                        t.unit_org_id,
                        t.responsibility,
                        t.due_at,
                        [(v.action, v.note, {k: x for k, x in v.data.items() if k != "evaluation_id"}) for v in events if v.ticket_id == t.id],
                    )
                    for t in tickets
                    if t.evaluation_id in {e.id for e in mine}
                ],
                "answers": [m.body for m in replies if m.citizen_id == citizen_id],
                "timers": [(t.channel, t.due_at) for t in timers if t.citizen_id == citizen_id],
            }
        )
    return results, transactions


async def test_a_group_ends_every_conversation_as_one_by_one_would(client, world):  # type: ignore[no-untyped-def]
    alone, alone_commits = await _play(client, world, "0001", group_size=1)
    grouped, commits = await _play(client, world, "0002", group_size=8)
    assert grouped == alone
    # The 12 conversations committed one by one, or in two groups (the webhooks and claims commit alike).
    assert alone_commits - commits >= 12 - 2 - 2
    assert any(r["tickets"] for r in grouped) and any(r["addenda"] for r in grouped)  # the scripts reach far
    # The reminder for missing reasons: still set where the reasons have not come, gone where they have.
    assert [bool(r["timers"]) for r in grouped] == [False, False, False, False, False, False, False, True]


async def _statements_of_a_group(client: Any, world: Any, prefix: str, senders: int) -> tuple[int, int]:
    """Statements of the group that takes `senders` bad ratings (1), then of the group that takes
    their reasons (1): each a group of its own. On SQLite, whose driver sends a many-row INSERT one row
    at a time, the INSERTs are left out."""
    from tests.statements import statements_sent

    phones = []
    for i in range(senders):
        await report(client, world, case_no=f"HB-{prefix}-{i}", citizen={"phone": f"139{prefix}{i:04d}"})
        phones.append(Phone(client, f"+86139{prefix}{i:04d}"))
    drainer = InboxDrainer(client.app[RUNNER], policy=InboxPolicy(group_size=senders))
    counts = []
    for round_ in range(2):
        for i, phone in enumerate(phones):
            await phone.text("1", drain=False, sid=f"SM{prefix}{round_}{i:028d}")
        seen = statements_sent(client.app[STORE])
        assert await drainer.drain_once() == senders
        sqlite = client.app[STORE].engine.dialect.name == "sqlite"
        counts.append(sum(1 for text in seen if not (sqlite and text.lstrip().startswith("INSERT"))))
    return counts[0], counts[1]


async def test_a_group_of_bad_ratings_and_their_reasons_costs_the_same_statements_whatever_its_size(client, world):  # type: ignore[no-untyped-def]
    from gateway.store.models import EvaluationAddendum, Ticket, TicketEvent

    two = await _statements_of_a_group(client, world, "0003", 2)
    six = await _statements_of_a_group(client, world, "0004", 6)
    # The tickets and their first events, the reasons' addenda, the reads of what the roll-ups and the
    # tickets need and the tickets' second events: a few statements per group, not per rating.
    assert six == two
    assert len(await _rows(client, Ticket)) == 8 == len(await _rows(client, EvaluationAddendum))
    assert sorted(e.action for e in await _rows(client, TicketEvent)) == ["created"] * 8 + ["reasons_added"] * 8


async def test_a_group_takes_an_evaluations_reasons_once(client, world):  # type: ignore[no-untyped-def]
    from gateway.errors import BrokenInvariant
    from gateway.evaluations.service import ReasonsGroup

    deps = client.app[DEPS]
    evaluation = Evaluation(id=1, invitation_id=1, scope="all", level=1, channel="sms", created_at=deps.clock.now())
    group = ReasonsGroup()
    group.add(evaluation=evaluation, codes=[], text="排队太久", channel="sms", deps=deps)
    # Two addenda of one evaluation in one write would each count the other as already there.
    with pytest.raises(BrokenInvariant, match="added once per group"):
        group.add(evaluation=evaluation, codes=[], text="还是太久", channel="sms", deps=deps)


async def test_a_group_refuses_an_unknown_reason_by_its_field(client, world):  # type: ignore[no-untyped-def]
    from gateway.evaluations.errors import InvalidRating
    from gateway.evaluations.service import ReasonsGroup

    deps = client.app[DEPS]
    evaluation = Evaluation(id=1, invitation_id=1, scope="all", level=1, channel="sms", created_at=deps.clock.now())
    group = ReasonsGroup()
    with pytest.raises(InvalidRating) as refused:
        group.add(evaluation=evaluation, codes=[999], text="", channel="sms", deps=deps)
    assert (refused.value.field, refused.value.message) == ("reasons", "reason code 999 is not in the catalogue")
    assert group.pending == []


def test_the_worker_remembers_a_bounded_number_of_senders(monkeypatch):  # type: ignore[no-untyped-def]
    from gateway.dialogue import Runner

    monkeypatch.setattr(dialogue, "CITIZEN_IDS_KEPT", 3)
    runner = Runner(store=None, states=None, locks=None, deps=None)  # type: ignore[arg-type]
    for i in range(5):
        runner.remember(f"sender-{i}", i)
    assert runner.citizen_ids == {"sender-2": 2, "sender-3": 3, "sender-4": 4}  # the oldest go first


async def test_reasons_given_with_the_rating_are_not_dated_before_it(client, world, monkeypatch):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from gateway.store.models import EvaluationAddendum, Ticket, TicketEvent

    for i in range(2):
        await report(client, world, case_no=f"HB-T-{i}", citizen={"phone": f"1390000{i:04d}"})
    await Phone(client, "+8613900000000").text("1 排队太久", drain=False, sid=f"SM{0:032x}")
    await Phone(client, "+8613900000001").text("5", drain=False, sid=f"SM{1:032x}")
    clock = client.app[DEPS].clock
    moments = iter(range(1, 10_000))
    start = clock.now()
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(milliseconds=next(moments)))  # time moves on
    assert await InboxDrainer(client.app[RUNNER], policy=InboxPolicy(group_size=8)).drain_once() == 2
    (evaluation,) = [e for e in await _rows(client, Evaluation) if e.level == 1]
    (addendum,) = await _rows(client, EvaluationAddendum)
    (ticket,) = await _rows(client, Ticket)
    created, reasons = await _rows(client, TicketEvent)
    assert (created.action, reasons.action) == ("created", "reasons_added")
    assert addendum.content == "排队太久" and addendum.created_at >= evaluation.created_at
    assert reasons.at >= created.at and ticket.updated_at >= ticket.created_at
