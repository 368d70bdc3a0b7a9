"""`gateway audit verify` against tampering done as the database owner, with the triggers switched off."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect

from gateway.audit.log import GENESIS, KIND_ORDER, canonical, publish_head
from gateway.audit.verify import verify
from gateway.evaluations.service import invitation_by_token, record_rating
from gateway.store.db import Store
from gateway.store.migrate import alembic_config
from gateway.web.keys import DEPS
from tests.gateway.audit.conftest import populate, report, tamper
from tests.gateway.audit.test_audit_log import entries

# Small pages, so that every check also runs across page boundaries.
PAGE = 2


async def publish(client: Any, store: Any) -> None:
    async with store.transaction() as session:
        await publish_head(session, at=client.app[DEPS].clock.now(), where="public_stats")


async def test_an_intact_log_verifies_from_the_command_line(
    client: Any, world: Any, store: Any, database_url: Any
) -> None:
    await populate(client, world)
    await publish(client, store)
    done = await asyncio.to_thread(_cli, database_url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    last = (await entries(store))[-1]
    assert lines == [
        f"evaluation log intact: 6 records checked, head seq 6 sha256 {last.hash}, 1 published heads agree"
    ]


async def test_a_changed_level_in_the_log_is_named_by_its_seq(
    client: Any, world: Any, store: Any, database_url: Any
) -> None:
    await populate(client, world)
    row = (await entries(store))[1]
    altered = row.record.replace('"level":2', '"level":5')
    assert altered != row.record
    await tamper(store, ("UPDATE evaluation_log SET record = :record WHERE seq = 2", {"record": altered}))
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and result.seq == 2 and result.records == 1
    assert "does not hash to its stored hash" in (result.problem or "")
    done = await asyncio.to_thread(_cli, database_url)
    assert done.returncode == 1 and "seq 2:" in done.stderr and "evaluation #2" in done.stderr


async def test_a_deleted_entry_is_found(client: Any, world: Any, store: Any) -> None:
    await populate(client, world)
    await tamper(store, "DELETE FROM evaluation_log WHERE seq = 3")
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and result.seq == 3 and "an entry was deleted" in (result.problem or "")


async def test_deleting_the_newest_entries_shows_against_the_head(client: Any, world: Any, store: Any) -> None:
    await populate(client, world)
    await tamper(store, "DELETE FROM evaluation_log WHERE seq >= 5")
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and result.seq == 6 and "head row says seq 6" in (result.problem or "")


async def test_a_changed_source_row_is_found(client: Any, world: Any, store: Any) -> None:
    await populate(client, world)
    await tamper(store, "UPDATE evaluation SET level = 5, reason_codes = '[]' WHERE id = 2")
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and result.seq == 2
    assert "evaluation #2 differs from its logged record" in (result.problem or "")
    assert "level: logged 2, stored 5" in (result.problem or "")


async def test_a_deleted_source_row_is_found(client: Any, world: Any, store: Any) -> None:
    await populate(client, world)
    await tamper(store, "DELETE FROM evaluation_decision")
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and result.seq == 6 and "decision #1 is no longer in the database" in (result.problem or "")


async def test_a_record_written_around_the_log_is_found(client: Any, world: Any, store: Any) -> None:
    await populate(client, world)
    await tamper(
        store,
        "INSERT INTO evaluation_addendum (evaluation_id, kind, reason_codes, content, channel, created_at) "
        "VALUES (1, 'staff', '[]', '', 'web', '2026-03-04 02:00:09')",
    )
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and "addendum #3 is in the database but not in the log" in (result.problem or "")


async def test_a_consistently_rewritten_tail_fails_against_the_published_head(
    client: Any, world: Any, store: Any
) -> None:
    """Someone rewrites the rating at seq 2 and every hash after it, and the rating itself: only the
    head published before the rewrite can tell."""
    await populate(client, world)
    await publish(client, store)
    rows = await entries(store)
    statements: list[str | tuple[str, dict[str, object]]] = [
        "UPDATE evaluation SET level = 3, reason_codes = '[]' WHERE id = 2"
    ]
    prev = rows[0].hash
    for row in rows[1:]:
        record = row.record
        if row.seq == 2:
            document = json.loads(record)
            document["record"].update(level=3, reason_codes=[])
            record = canonical(document)
        digest = hashlib.sha256(bytes.fromhex(prev) + record.encode()).hexdigest()
        statements.append(
            (
                "UPDATE evaluation_log SET record = :record, prev_hash = :prev, hash = :hash WHERE seq = :seq",
                {"record": record, "prev": prev, "hash": digest, "seq": row.seq},
            )
        )
        prev = digest
    statements.append(f"UPDATE evaluation_log_head SET hash = '{prev}'")
    await tamper(store, *statements)
    result = await verify(store.engine, page_size=PAGE)
    assert not result.ok and result.seq == 6, result.summary()
    assert "the head published at public_stats" in (result.problem or "")
    assert "history was rewritten at or before it" in (result.problem or "")


async def test_many_concurrent_ratings_make_one_unbroken_chain(
    client: Any, world: Any, store: Any, database_url: Any
) -> None:
    """Ratings committed at the same moment from many connections (and a second store, as another
    process would) queue on the head: seq 1..n, each linked to the one before."""
    deps = client.app[DEPS]
    tokens = [await report(client, world) for _ in range(40)]
    other = Store.connect(database_url, pool_size=20)

    async def rate(token: str, index: int) -> None:
        target = store if index % 2 else other
        async with target.transaction() as session:
            invitation = await invitation_by_token(session, token)
            await record_rating(
                session, invitation=invitation, level=1 + index % 5, channel="web", deps=deps, require_content=False
            )
            await asyncio.sleep(0)  # let the others reach their commits too

    try:
        await asyncio.gather(*(rate(token, i) for i, token in enumerate(tokens)))
    finally:
        await other.close()
    rows = await entries(store)
    assert [r.seq for r in rows] == list(range(1, 41))
    assert sorted(r.record_id for r in rows) == list(range(1, 41))
    prev = GENESIS
    for row in rows:
        assert row.prev_hash == prev
        prev = row.hash
    assert (await verify(store.engine)).ok


async def test_records_written_before_the_migration_are_chained_by_it(
    client: Any, world: Any, store: Any, database_url: Any
) -> None:
    written = await populate(client, world)
    before = await entries(store)

    def run(connection, target: str) -> None:  # type: ignore[no-untyped-def]
        config = alembic_config(database_url)
        config.attributes["connection"] = connection
        (command.downgrade if target == "c41d7e9a0f12" else command.upgrade)(config, target)

    async with store.engine.begin() as conn:
        await conn.run_sync(run, "c41d7e9a0f12")
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    assert "evaluation_log" not in names and "published_head" not in names
    async with store.engine.begin() as conn:
        await conn.run_sync(run, "head")
    after = await entries(store)
    assert len(after) == len(written.kinds)
    result = await verify(store.engine, page_size=PAGE)
    assert result.ok, result.summary()
    # By created_at, then kind (evaluation, addendum, decision), then id: here the order they were written.
    assert [(r.kind, r.record_id) for r in after] == [(r.kind, r.record_id) for r in before]
    assert [json.loads(r.record)["record"]["created_at"] for r in after] == sorted(
        json.loads(r.record)["record"]["created_at"] for r in after
    )
    assert KIND_ORDER["evaluation"] < KIND_ORDER["addendum"] < KIND_ORDER["decision"]
    deps = client.app[DEPS]
    token = await report(client, world)
    async with store.transaction() as session:
        await record_rating(
            session, invitation=await invitation_by_token(session, token), level=4, channel="web", deps=deps
        )
    assert (await verify(store.engine)).records == len(written.kinds) + 1


def _cli(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--page-size", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_verify_on_a_database_without_the_log_says_to_migrate(tmp_path: Any) -> None:
    done = _cli(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert done.returncode == 2 and "is the schema migrated (gateway migrate)?" in done.stderr


@pytest.mark.parametrize(("page_size", "jobs"), [(100_000, 2), (3, 1), (1, 3)])
async def test_every_range_size_and_number_of_connections_finds_the_same_first_problem(
    client: Any, world: Any, store: Any, page_size: int, jobs: int
) -> None:
    """Ranges checked side by side in one snapshot: the first problem in log order is the one named,
    whichever connection found a problem first, and a later problem does not hide an earlier one."""
    await populate(client, world)
    assert (await verify(store.engine, page_size=page_size, jobs=jobs)).ok
    await tamper(
        store,
        "UPDATE evaluation SET content = 'rewritten' WHERE id = 3",
        "UPDATE evaluation_addendum SET staff_level = 1 WHERE id = 2",
    )
    result = await verify(store.engine, page_size=page_size, jobs=jobs)
    assert not result.ok and result.seq == 3 and result.records == 2, result.summary()
    assert "evaluation #3 differs from its logged record: content: logged '', stored 'rewritten'" in (
        result.problem or ""
    )
