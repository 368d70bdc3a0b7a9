"""A department client posting one case at a time: on PostgreSQL the case is read with one statement and
written with one, without BEGIN and COMMIT; the rules are those of every other report."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlmodel import select

from gateway.evaluations.intake import CaseAnswer, CaseWriter
from gateway.evaluations.schemas import CaseIn
from gateway.orgs import Caller
from gateway.stats.rollup import recount, stored
from gateway.store.models import Citizen, Organisation
from gateway.web.keys import DEPS, STORE
from tests.conftest import case_payload
from tests.gateway.evaluations.helpers import count, counts, report
from tests.statements import round_trips


def _postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite writes a case table by table, in a transaction")


async def test_a_lone_case_is_two_statements_on_postgresql(client, world, database_url):
    _postgresql_only(database_url)
    await report(client, world, case_no="WARM-1")  # the key's caller is remembered from here on
    sent = round_trips(client.app[STORE])
    body = await report(client, world, case_no="LONE-1", citizen={"phone": "13912340001", "name": "张三"})
    assert len(sent) == 2, sent  # the look-up and the write: no BEGIN, no COMMIT, nothing else
    assert body["created"] and body["messages_queued"][0]["channel"] == "sms"
    sent.clear()
    again = await report(client, world, case_no="LONE-1", citizen={"phone": "13912340001", "name": "张三"})
    assert again == {**body, "created": False}
    assert await counts(client) == {"ServiceCase": 2, "Invitation": 2, "Evaluation": 0, "Ticket": 0, "OutboundMessage": 2}
    async with client.app[STORE].transaction() as session:
        assert await stored(session) == await recount(session, client.app[DEPS].calendar)
        citizen = (await session.exec(select(Citizen).where(Citizen.phone_masked == "139****0001"))).one()
    assert client.app[DEPS].vault.decrypt(citizen.name_enc) == "张三"


async def _caller(client, code: str) -> Caller:  # type: ignore[no-untyped-def]
    async with client.app[STORE].transaction() as session:
        return Caller.of((await session.exec(select(Organisation).where(Organisation.code == code))).one())


async def test_two_processes_reporting_at_once_collide_and_retry(client, world):
    """Two writers (as two gateway processes) read the same absence, then write: the citizen's and the
    case's unique keys refuse the second write, which is tried again and finds the first one's rows."""
    store, deps = client.app[STORE], client.app[DEPS]
    caller = await _caller(client, "hanbin-market")
    writers = [CaseWriter(store, deps) for _ in range(2)]
    try:
        for round_ in range(5):
            phone = f"1381234{round_:04d}"
            same_citizen = [CaseIn.model_validate(case_payload(f"T-{round_}-{n}", citizen={"phone": phone})) for n in range(2)]
            answers = await asyncio.gather(*(w.report(caller, d) for w, d in zip(writers, same_citizen, strict=True)))
            assert all(isinstance(a, CaseAnswer) and a.created for a in answers), answers
            same_case = CaseIn.model_validate(case_payload(f"S-{round_}", citizen={"phone": phone}))
            answers = await asyncio.gather(*(w.report(caller, same_case) for w in writers))
            assert sorted(a.created for a in answers if isinstance(a, CaseAnswer)) == [False, True], answers
            assert answers[0].case_id == answers[1].case_id  # type: ignore[union-attr]
    finally:
        for writer in writers:
            await writer.close()
    assert await count(client, Citizen) == 5
    assert (await counts(client))["ServiceCase"] == 15
    async with store.transaction() as session:
        assert await stored(session) == await recount(session, deps.calendar)


async def test_a_connection_that_died_fails_one_case_and_is_replaced(client, world, database_url):
    _postgresql_only(database_url)
    await report(client, world, case_no="WARM-1")
    store = client.app[STORE]
    async with store.engine.connect() as connection:  # the pool hands this one out next (LIFO)
        pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    await asyncio.sleep(0.1)
    first = await client.post("/api/v1/cases", json=case_payload("DEAD-1"), headers=world.auth("hanbin-market"))
    assert first.status == 500  # the statement on the dead connection fails once, as any statement would
    body = await report(client, world, case_no="DEAD-1")
    assert body["created"]


async def test_case_numbers_other_units_have_used_are_new_cases(client, world):
    """The look-up finds earlier reports by unit and by case number apart (each on its key's index); a
    unit's earlier case is no earlier report of another unit's case with the same number."""
    await report(client, world, case_no="X-1")  # hanbin-market's X-1
    items = [case_payload("X-1", org_code="hanbin-tax"), case_payload("X-2")]
    resp = await client.post("/api/v1/cases/batch", json={"cases": items}, headers=world.auth("hanbin"))
    body = await resp.json()
    assert resp.status == 200, body
    assert [r["status"] for r in body["results"]] == [201, 201]
    assert (await counts(client))["ServiceCase"] == 3


async def test_in_a_report_with_a_batch_the_statistics_wait_for_the_commit(client, world, database_url):
    """A report that keeps a transaction (a case of a batch goes in a savepoint after the plain cases)
    writes the plain cases' statistics at the commit, as every transaction does, not with their rows."""
    _postgresql_only(database_url)
    await report(client, world, case_no="WARM-1")
    sent = round_trips(client.app[STORE])
    items = [case_payload("M-1"), case_payload("M-2", batch_no="B-1")]
    resp = await client.post("/api/v1/cases/batch", json={"cases": items}, headers=world.auth("hanbin-market"))
    assert resp.status == 200 and (await resp.json())["created"] == 2
    chained = [s for s in sent if s.startswith("WITH p0")]
    assert len(chained) == 1 and "stats_" not in chained[0]
    released = max(n for n, s in enumerate(sent) if s.startswith("RELEASE SAVEPOINT"))
    upserts = [n for n, s in enumerate(sent) if s.startswith("INSERT INTO stats_")]
    assert [n for n in upserts if n > released], sent  # the plain cases' statistics, at the commit
    async with client.app[STORE].transaction() as session:
        assert await stored(session) == await recount(session, client.app[DEPS].calendar)
