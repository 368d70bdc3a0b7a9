"""The roll-ups equal a recount from the raw rows after any sequence of ratings, addenda, rulings and ticket
actions (the ticket roll-ups follow every step of a bad review's work order, an upheld appeal included)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from sqlmodel import select

from gateway.clock import FrozenClock
from gateway.deps import Deps
from gateway.evaluations.records import record_written
from gateway.evaluations.schemas import CaseIn
from gateway.evaluations.service import add_reasons, add_staff_rating, record_rating, report_case
from gateway.orgs import Caller, org_by_code
from gateway.settings import Settings
from gateway.stats.rollup import rebuild, recount, stored
from gateway.store.db import Store
from gateway.store.models import Evaluation, EvaluationDecision, Organisation, Ticket
from gateway.tickets.actions import apply_action
from gateway.tickets.errors import TicketError
from gateway.tickets.schemas import (
    Accept,
    Appeal,
    CallbackResult,
    Close,
    DecideAppeal,
    DecideExtension,
    Redo,
    RequestExtension,
    Resolve,
    Transfer,
)
from tests.conftest import START, register_world

_numbers = itertools.count(1)

UNITS = [("hanbin-market", "610902"), ("hanbin-tax", "610902"), ("hanyin-market", "610921")]
rate_op = st.tuples(
    st.just("rate"), st.sampled_from(range(len(UNITS))), st.integers(1, 5), st.booleans(), st.sampled_from(["a", "b"]),
    st.integers(1, 3), st.sampled_from(["web", "sms", "bot"]),
)
later_op = st.tuples(
    st.sampled_from(["reasons", "staff", "rule"]), st.integers(0, 50), st.integers(1, 5),
    st.sampled_from(["invalid", "malicious", "fraud"]),
)
clock_op = st.tuples(st.just("advance"), st.integers(1, 30))
ticket_op = st.tuples(
    st.just("ticket"), st.integers(0, 50), st.integers(0, 3), st.sampled_from(["satisfied", "unsatisfied", "no_answer"])
)
operations = st.lists(st.one_of(rate_op, later_op, clock_op, ticket_op, ticket_op), min_size=1, max_size=16)


def _ticket_steps(ticket: Ticket, outcome: str) -> list[tuple[str, Any]]:
    """The actions that may move a ticket on from its status, and who takes them."""
    return {
        "dispatching": [("approval", Transfer(action="transfer"))],
        "transferred": [("unit", Accept(action="accept", category="general"))],
        "accepted": [("unit", Resolve(action="resolve", rectification="补正", reply="已整改，感谢监督。"))],
        "in_progress": [
            ("unit", Resolve(action="resolve", rectification="补正", reply="已整改，感谢监督。")),
            ("unit", Appeal(action="appeal", grounds="malicious", evidence="窗口录音")),
            ("unit", RequestExtension(action="request_extension", working_days=3, reason="需调取档案")),
        ],
        "extension_requested": [("approval", DecideExtension(action="decide_extension", decision="approve"))],
        "appealed": [
            ("approval", DecideAppeal(action="decide_appeal", decision="malicious", reason="录音为证")),
            ("approval", DecideAppeal(action="decide_appeal", decision="valid")),
        ],
        "resolved": [("approval", CallbackResult(action="callback_result", outcome=outcome))],
        "callback_unsatisfied": [
            ("approval", Redo(action="redo", reason="整改不到位")),
            ("approval", Close(action="close", reason="非承办单位原因")),
        ],
    }.get(ticket.status, [])


async def _run(store: Store, deps: Deps, clock: FrozenClock, ops: list[tuple[Any, ...]]) -> None:
    catalogue = deps.catalogue
    for op in ops:
        async with store.transaction() as session:
            if op[0] == "advance":
                clock.advance(hours=op[1])
            elif op[0] == "rate":
                _, unit_index, level, with_reasons, item, cases, channel = op
                code, region = UNITS[unit_index]
                unit = await org_by_code(session, code)
                assert unit is not None
                caller = Caller.of(unit)
                batch = f"B{next(_numbers)}" if cases > 1 else None
                invitation = None
                for _ in range(cases):  # a batch: several cases, one rating
                    data = CaseIn(
                        case_no=f"P{next(_numbers)}", item_code=f"ITEM-{item}", item_name=f"事项{item}", org_code=code,
                        region_code=region, service_channel="window", staff_id=f"S-{unit_index}",
                        completed_at=clock.now() - timedelta(minutes=5), batch_no=batch,
                    )
                    invitation = (await report_case(session, caller=caller, data=data, deps=deps)).invitation
                assert invitation is not None
                reasons = [r.code for r in catalogue.for_level(level)][:2] if with_reasons else []
                await record_rating(session, invitation=invitation, level=level, channel=channel, deps=deps,
                                    reasons=reasons, require_content=False)
            elif op[0] == "ticket":
                tickets = (await session.exec(Ticket.__table__.select().order_by(Ticket.id))).all()  # type: ignore[call-overload, arg-type]
                if not tickets:
                    continue
                ticket = await session.get(Ticket, tickets[op[1] % len(tickets)].id)
                assert ticket is not None
                steps = _ticket_steps(ticket, op[3])
                if not steps:
                    continue
                role, action = steps[op[2] % len(steps)]
                org = await session.get(Organisation, ticket.approval_org_id if role == "approval" else ticket.assignee_org_id)
                assert org is not None
                try:  # a refused step changes nothing (its savepoint is rolled back)
                    await apply_action(session, ticket_id=ticket.id, action=action, actor=Caller.of(org), deps=deps)  # type: ignore[arg-type]
                except TicketError:
                    pass
            else:
                evaluations = (await session.exec(Evaluation.__table__.select())).all()  # type: ignore[call-overload]
                if not evaluations:
                    continue
                row = evaluations[op[1] % len(evaluations)]
                evaluation = await session.get(Evaluation, row.id)
                assert evaluation is not None
                if op[0] == "reasons":
                    codes = [r.code for r in catalogue.for_level(evaluation.level)][-2:]
                    await add_reasons(session, evaluation=evaluation, codes=codes, text="", channel="sms", deps=deps)
                elif op[0] == "staff":
                    await add_staff_rating(session, evaluation=evaluation, staff_level=op[2], channel="sms", deps=deps)
                else:
                    decision = EvaluationDecision(evaluation_id=evaluation.id, decision=op[3], org_id=2,  # type: ignore[arg-type]
                                                  created_at=clock.now())
                    session.add(decision)
                    await session.flush()
                    await record_written(session, kind="decision", record=decision, deps=deps, at=clock.now())


def test_rollups_equal_a_recount(settings: Settings) -> None:
    clock = FrozenClock(START)
    deps = Deps.build(settings, clock)
    loop = asyncio.new_event_loop()
    store = Store.connect(settings.database_url)
    try:
        loop.run_until_complete(register_world(store, clock))

        @given(ops=operations)
        @hypothesis_settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(ops: list[tuple[Any, ...]]) -> None:
            loop.run_until_complete(_run(store, deps, clock, ops))

            async def compare() -> None:
                async with store.transaction() as session:
                    assert await stored(session) == await recount(session, deps.calendar)

            loop.run_until_complete(compare())

        check()

        async def rebuilt_equal() -> None:
            async with store.transaction() as session:
                before = await stored(session)
                await rebuild(session, deps.calendar)
                assert await stored(session) == before

        loop.run_until_complete(rebuilt_equal())
    finally:
        loop.run_until_complete(store.close())
        loop.close()


def test_a_ruling_and_a_ticket_action_at_once_leave_the_ticket_rollups_equal(settings: Settings) -> None:
    """A fraud ruling on a bad review and an action on its ticket, in two transactions at once (PostgreSQL:
    SQLite serialises writers): the ruling locks the ticket, the action waits, then sees the ruling, and
    the ticket roll-ups still equal the recount (without the lock the ticket would be taken out twice)."""
    if not settings.database_url.startswith("postgresql"):
        return
    clock = FrozenClock(START)
    deps = Deps.build(settings, clock)

    async def scenario() -> None:
        store = Store.connect(settings.database_url)
        try:
            await register_world(store, clock)
            await _run(store, deps, clock, [("rate", 0, 1, False, "a", 1, "web"), ("ticket", 0, 0, "satisfied")])
            async with store.transaction() as session:
                [ticket] = (await session.exec(select(Ticket))).all()
                hanbin = await org_by_code(session, "hanbin")
                assert ticket.status == "transferred" and hanbin is not None
            ruling_done = asyncio.Event()

            async def action() -> None:
                async with store.transaction() as session:
                    unit = await session.get(Organisation, ticket.assignee_org_id)
                    assert unit is not None
                    await apply_action(session, ticket_id=ticket.id, action=Accept(action="accept", category="general"),  # type: ignore[arg-type]
                                       actor=Caller.of(unit), deps=deps)
                    assert ruling_done.is_set(), "the action went ahead while the ruling held the ticket"

            async with store.transaction() as session:
                decision = EvaluationDecision(evaluation_id=ticket.evaluation_id, decision="fraud", org_id=hanbin.id,  # type: ignore[arg-type]
                                              created_at=clock.now())
                session.add(decision)
                await session.flush()
                await record_written(session, kind="decision", record=decision, deps=deps, at=clock.now())
                racing = asyncio.create_task(action())
                await asyncio.sleep(0.5)  # the action reaches the ticket's lock and waits
                assert not racing.done()
                ruling_done.set()
            await racing
            async with store.transaction() as session:
                [accepted] = (await session.exec(select(Ticket))).all()
                assert accepted.status == "in_progress"
                assert await stored(session) == await recount(session, deps.calendar)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_transaction_writes_each_rollup_table_once_at_its_commit(settings: Settings) -> None:
    """Ratings of several units in one transaction (a batch of conversations): their contributions are
    merged and each roll-up table gets one upsert, at the commit, and the tables still equal the recount."""
    from sqlalchemy import event

    clock = FrozenClock(START)
    deps = Deps.build(settings, clock)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.lstrip())

    async def scenario() -> None:
        store = Store.connect(settings.database_url)
        try:
            await register_world(store, clock)
            ops = [("rate", unit, level, True, "a", 1, "sms") for unit, level in ((0, 5), (1, 2), (2, 1), (0, 4))]
            event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
            await _run_in_one_transaction(store, deps, clock, ops)
            event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
            upserts = [s.split(" (")[0] for s in statements if s.startswith("INSERT INTO stats_")]
            assert sorted(upserts) == sorted(set(upserts)), upserts  # one statement per table
            assert {"INSERT INTO stats_unit_daily", "INSERT INTO stats_daily", "INSERT INTO stats_reason_daily"} <= set(upserts)
            async with store.transaction() as session:
                assert await stored(session) == await recount(session, deps.calendar)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_tally_in_a_rolled_back_savepoint_is_not_counted(settings: Settings) -> None:
    from collections import Counter

    from gateway.stats.models import StatsUnitDaily
    from gateway.stats.rollup import apply

    key = (START.date(), "610902", 1, 5, "valid")

    async def scenario() -> None:
        store = Store.connect(settings.database_url)
        try:
            await register_world(store, FrozenClock(START))
            async with store.transaction() as session:
                await apply(session, {(StatsUnitDaily, key): Counter(n=1)})
                try:
                    async with session.begin_nested():
                        await apply(session, {(StatsUnitDaily, key): Counter(n=10)})
                        raise RuntimeError("the step is refused")
                except RuntimeError:
                    pass
                await apply(session, {(StatsUnitDaily, key): Counter(n=100)})
            async with store.transaction() as session:
                assert (await stored(session))[(StatsUnitDaily, key)]["n"] == 101
        finally:
            await store.close()

    asyncio.run(scenario())


async def _run_in_one_transaction(store: Store, deps: Deps, clock: FrozenClock, ops: list[tuple[Any, ...]]) -> None:
    async with store.transaction() as session:
        for _, unit_index, level, with_reasons, item, _cases, channel in ops:
            code, region = UNITS[unit_index]
            unit = await org_by_code(session, code)
            assert unit is not None
            data = CaseIn(
                case_no=f"P{next(_numbers)}", item_code=f"ITEM-{item}", item_name=f"事项{item}", org_code=code,
                region_code=region, service_channel="window", staff_id=f"S-{unit_index}",
                completed_at=clock.now() - timedelta(minutes=5),
            )
            invitation = (await report_case(session, caller=Caller.of(unit), data=data, deps=deps)).invitation
            reasons = [r.code for r in deps.catalogue.for_level(level)][:2] if with_reasons else []
            await record_rating(session, invitation=invitation, level=level, channel=channel, deps=deps,
                                reasons=reasons, require_content=False)
