"""The evaluation log: every record chained in its writer's transaction, read back as stored."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from gateway.audit.log import (
    GENESIS,
    Head,
    canonical,
    canonical_record,
    current_head,
    entry_document,
    entry_text,
    fast_canonical,
    publish_head,
)
from gateway.audit.verify import verify
from gateway.evaluations.service import invitation_by_token, record_rating
from gateway.web.keys import DEPS
from tests.gateway.audit.conftest import populate, report


_ENTRIES = text("SELECT seq, kind, record_id, record, prev_hash, hash, created_at FROM evaluation_log ORDER BY seq")


async def entries(store: Any) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(_ENTRIES)).all())


async def test_every_record_is_chained_in_the_order_written(client: Any, world: Any, store: Any) -> None:
    written = await populate(client, world)
    rows = await entries(store)
    assert [r.kind for r in rows] == written.kinds
    assert [r.seq for r in rows] == list(range(1, len(written.kinds) + 1))
    prev = GENESIS
    for row in rows:
        assert row.prev_hash == prev
        assert row.hash == hashlib.sha256(bytes.fromhex(prev) + row.record.encode()).hexdigest()
        document = json.loads(row.record)
        assert row.record == rfc8785.dumps(document).decode()  # stored exactly as hashed: canonical
        assert document["seq"] == row.seq and document["kind"] == row.kind and document["record"]["id"] == row.record_id
        prev = row.hash
    bad = json.loads(rows[1].record)["record"]
    assert bad["level"] == 2 and bad["reason_codes"] == [213] and bad["content"] == '同一份证明交了三次\n"两次"'
    assert bad["created_at"] == "2026-03-04T02:00:01.000000Z"  # UTC, microseconds, whatever the session's zone
    assert json.loads(rows[3].record)["record"]["kind"] == "reasons"
    assert json.loads(rows[-1].record)["record"]["decision"] == "malicious"
    async with store.transaction() as session:
        assert await current_head(session) == Head(len(rows), rows[-1].hash)
    result = await verify(store.engine)
    assert result.ok, result.summary()
    assert result.records == len(rows) and result.head == Head(len(rows), rows[-1].hash)


async def test_a_rolled_back_rating_leaves_no_entry_and_no_gap(client: Any, world: Any, store: Any) -> None:
    deps = client.app[DEPS]
    token = await report(client, world)
    with pytest.raises(RuntimeError, match="crash"):
        async with store.transaction() as session:
            invitation = await invitation_by_token(session, token)
            await record_rating(session, invitation=invitation, level=4, channel="web", deps=deps)
            raise RuntimeError("crash after the rating, before the commit")
    assert await entries(store) == []
    async with store.transaction() as session:
        invitation = await invitation_by_token(session, token)
        await record_rating(session, invitation=invitation, level=4, channel="web", deps=deps)
    assert [r.seq for r in await entries(store)] == [1]
    assert (await verify(store.engine)).ok


async def test_a_record_written_in_a_rolled_back_savepoint_is_not_logged(client: Any, world: Any, store: Any) -> None:
    deps = client.app[DEPS]
    kept, dropped = await report(client, world), await report(client, world)
    async with store.transaction() as session:
        invitation = await invitation_by_token(session, kept)
        await record_rating(session, invitation=invitation, level=4, channel="web", deps=deps)
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                other = await invitation_by_token(session, dropped)
                await record_rating(session, invitation=other, level=3, channel="web", deps=deps)
                raise RuntimeError("undo this one only")
    assert [(r.seq, r.kind) for r in await entries(store)] == [(1, "evaluation")]
    assert (await verify(store.engine)).ok


async def test_the_database_refuses_to_change_the_log(client: Any, world: Any, store: Any) -> None:
    await populate(client, world)
    async with store.transaction() as session:
        await publish_head(session, at=client.app[DEPS].clock.now(), where="public_stats")
    statements = [
        "UPDATE evaluation_log SET record = '{}' WHERE seq = 1",
        "DELETE FROM evaluation_log WHERE seq = 1",
        "DELETE FROM evaluation_log",
        "UPDATE published_head SET hash = 'x'",
        "DELETE FROM published_head",
    ]
    if store.dialect == "postgresql":
        statements += ["TRUNCATE evaluation_log CASCADE", "TRUNCATE published_head"]
    for statement in statements:
        with pytest.raises(Exception, match="append-only") as caught:
            async with store.engine.begin() as conn:
                await conn.execute(text(statement))
        assert "refused" in str(caught.value), statement
    assert len(await entries(store)) == 6
    assert (await verify(store.engine)).ok


async def test_publish_head_records_each_head_once_per_place(client: Any, world: Any, store: Any) -> None:
    clock = client.app[DEPS].clock
    async with store.transaction() as session:
        assert await current_head(session) is None
        assert await publish_head(session, at=clock.now(), where="public_stats") is None
    await populate(client, world)
    async with store.transaction() as session:
        head = await publish_head(session, at=clock.now(), where="public_stats")
        again = await publish_head(session, at=clock.now() + timedelta(minutes=5), where="public_stats")
        elsewhere = await publish_head(session, at=clock.now(), where="upload")
    assert head == again == elsewhere == await _head(store)
    await report(client, world)  # nothing rated: the head stays
    async with store.engine.connect() as conn:
        published = (await conn.execute(text("SELECT seq, hash, place FROM published_head ORDER BY id"))).all()
    assert [tuple(p) for p in published] == [(head.seq, head.hash, "public_stats"), (head.seq, head.hash, "upload")]
    with pytest.raises(ValueError, match="where"):
        async with store.transaction() as session:
            await publish_head(session, at=clock.now(), where="")
    result = await verify(store.engine)
    assert result.ok and result.published == 2, result.summary()


async def _head(store: Any) -> Head:
    async with store.transaction() as session:
        head = await current_head(session)
    assert head is not None
    return head


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_int = st.integers(-(2**53) + 1, 2**53 - 1)
_record = st.fixed_dictionaries(
    {
        "id": _int,
        "content": _text,
        "reason_codes": st.lists(_int, max_size=4),
        "staff_id": st.none() | _text,
        "level": st.integers(1, 5),
        "created_at": st.just("2026-03-04T02:00:00.000000Z"),
    }
)


@settings(max_examples=300, deadline=None)
@given(seq=st.integers(1, 2**53 - 1), kind=st.sampled_from(["evaluation", "addendum", "decision"]), record=_record)
def test_the_fast_encoder_verify_uses_is_rfc_8785(seq: int, kind: str, record: dict[str, Any]) -> None:
    document = entry_document(seq, kind, record)
    assert fast_canonical(document) == canonical(document)


@settings(max_examples=100, deadline=None)
@given(seq=st.integers(1, 2**53 - 1), kind=st.sampled_from(["evaluation", "addendum", "decision"]), record=_record)
def test_an_entry_joined_from_its_canonical_record_is_the_canonical_entry(
    seq: int, kind: str, record: dict[str, Any]
) -> None:
    assert entry_text(seq, kind, canonical_record(record)) == canonical(entry_document(seq, kind, record))


async def test_times_do_not_depend_on_the_session_time_zone(
    client: Any, world: Any, store: Any, database_url: Any
) -> None:
    """A PostgreSQL session in Asia/Shanghai appends and verifies the same UTC text as any other."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite stores no time zone")
    from sqlalchemy.ext.asyncio import create_async_engine

    from gateway.store.db import Store

    shanghai = Store(create_async_engine(database_url, connect_args={"server_settings": {"timezone": "Asia/Shanghai"}}))
    try:
        token = await report(client, world)
        async with shanghai.transaction() as session:
            zone = (await session.exec(text("SHOW timezone"))).one()  # type: ignore[call-overload]
            invitation = await invitation_by_token(session, token)
            await record_rating(session, invitation=invitation, level=4, channel="web", deps=client.app[DEPS])
        assert zone[0] == "Asia/Shanghai"
        record = json.loads((await entries(store))[0].record)["record"]
        assert record["created_at"] == "2026-03-04T02:00:00.000000Z"
        assert (await verify(shanghai.engine)).ok and (await verify(store.engine)).ok
    finally:
        await shanghai.close()


async def test_a_commit_appends_from_the_flushed_record_without_reading_it_back(
    client: Any, world: Any, store: Any
) -> None:
    """The entry's text comes from the values just flushed; on PostgreSQL the whole append (lock, hash,
    insert, head) is one statement."""
    from sqlalchemy import event

    token = await report(client, world)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    async with store.transaction() as session:
        invitation = await invitation_by_token(session, token)
        await record_rating(session, invitation=invitation, level=2, reasons=[213], channel="web", deps=client.app[DEPS])
        await session.flush()
        event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
    at_commit = [s for s in statements if not s.upper().startswith(("COMMIT", "RELEASE"))]
    assert not any(" FROM evaluation " in s or " FROM evaluation\n" in s for s in at_commit), at_commit
    # The statistics' roll-ups are written at the commit too, before the log (one lock order).
    rollups = [s for s in at_commit if s.startswith("INSERT INTO stats_")]
    log_statements = at_commit[len(rollups) :]
    assert rollups and at_commit[: len(rollups)] == rollups, at_commit
    if store.dialect == "postgresql":
        assert len(log_statements) == 1 and "evaluation_log_append" in log_statements[0], at_commit
    assert [r.seq for r in await entries(store)] == [1]
    assert (await verify(store.engine)).ok


async def test_a_time_with_another_offset_is_logged_as_the_database_keeps_it(
    client: Any, world: Any, store: Any
) -> None:
    """A record whose time carries a non-UTC offset: SQLite keeps its wall time and drops the offset, so
    its entry is built from the stored row, never from the Python value."""
    from datetime import timezone

    from gateway.evaluations.records import record_written
    from gateway.store.models import EvaluationAddendum

    await populate(client, world)
    shanghai = timezone(timedelta(hours=8))
    async with store.transaction() as session:
        addendum = EvaluationAddendum(
            evaluation_id=1,
            kind="staff",
            reason_codes=[],
            staff_level=5,
            channel="web",
            created_at=client.app[DEPS].clock.now().astimezone(shanghai),
        )
        session.add(addendum)
        await session.flush()
        await record_written(session, kind="addendum", record=addendum, deps=client.app[DEPS], at=addendum.created_at)
    result = await verify(store.engine)
    assert result.ok and result.records == 7, result.summary()


async def test_a_missing_head_row_is_rebuilt_from_the_log_by_the_next_append(
    client: Any, world: Any, store: Any
) -> None:
    from tests.gateway.audit.conftest import tamper

    await populate(client, world)
    last = (await entries(store))[-1]
    await tamper(store, "DELETE FROM evaluation_log_head")
    token = await report(client, world)
    async with store.transaction() as session:
        invitation = await invitation_by_token(session, token)
        await record_rating(session, invitation=invitation, level=5, channel="web", deps=client.app[DEPS])
    rows = await entries(store)
    assert [r.seq for r in rows][-2:] == [6, 7] and rows[-1].prev_hash == last.hash
    assert await _head(store) == Head(7, rows[-1].hash)
    assert (await verify(store.engine)).ok
