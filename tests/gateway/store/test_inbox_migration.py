"""The migration that splits `inbound_message`: the bot's update ids move to `bot_update`, and every SMS
inbox row gets the state its empty columns used to imply; the downgrade gives the old shape back. Run on
a database of its own at the revision before, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.store.migrate import alembic_config
from tests.conftest import PG_ADMIN_URL, _pg_admin, _unavailable

REVISION = "a4f0c3e5b404"
AT = datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 25, 1, 10, tzinfo=timezone.utc)

# provider_id -> (provider, sender_hash, sender_enc, body, processed_at, error), as the old code wrote them
OLD_ROWS = {
    "901": ("telegram", None, None, None, AT, None),  # a bot update, recorded with its effects
    "SM-pending": ("twilio", "h1", "enc", "5", None, None),
    "SM-done": ("twilio", "h1", None, None, LATER, None),
    "SM-dead": ("twilio", "h2", "enc", "好", LATER, "given up after 5 attempts"),
    "SM-purged": ("twilio", "h3", None, None, LATER, "given up after 5 attempts"),
    "SM-old": ("twilio", None, None, None, AT, None),  # stored before the inbox existed
}
EXPECTED_STATES = {
    "SM-pending": "pending",
    "SM-done": "processed",
    "SM-dead": "dead",
    "SM-purged": "purged",
    "SM-old": "processed",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"gw_test_mig_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate(url: str, target: str, *, down: bool = False) -> None:
    engine = create_async_engine(url)

    def run(connection) -> None:  # type: ignore[no-untyped-def]
        config = alembic_config(url)
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, target)

    async with engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()
    await engine.dispose()


async def _query(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = [tuple(r) for r in (await conn.execute(text(sql))).all()]
    await engine.dispose()
    return rows


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: set(__import__("sqlalchemy").inspect(sync).get_table_names()))
    await engine.dispose()
    return names


async def test_the_split_keeps_every_row_and_its_meaning(empty_database: str) -> None:
    url = empty_database
    before = ScriptDirectory.from_config(alembic_config(url)).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    await _migrate(url, before)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for provider_id, (provider, sender_hash, sender_enc, body, processed_at, error) in OLD_ROWS.items():
            await conn.execute(
                text(
                    "INSERT INTO inbound_message (provider, provider_id, received_at, sender_hash, sender_enc, body,"
                    " processed_at, attempts, error) VALUES (:p, :pid, :at, :h, :e, :b, :done, 0, :err)"
                ),
                {"p": provider, "pid": provider_id, "at": AT, "h": sender_hash, "e": sender_enc, "b": body,
                 "done": processed_at, "err": error},
            )
    await engine.dispose()

    await _migrate(url, REVISION)
    assert await _query(url, "SELECT update_id, citizen_id FROM bot_update") == [(901, None)]
    states = dict(await _query(url, "SELECT provider_id, state FROM inbound_message"))
    assert states == EXPECTED_STATES  # the bot's row left the inbox
    kept = await _query(url, "SELECT body, sender_enc, error FROM inbound_message WHERE provider_id = 'SM-dead'")
    assert kept == [("好", "enc", "given up after 5 attempts")]  # a dead letter keeps what an operator needs

    # Only the four states are accepted.
    engine = create_async_engine(url)
    with pytest.raises(Exception, match="(?i)check"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE inbound_message SET state = 'lost' WHERE provider_id = 'SM-done'"))
    await engine.dispose()

    await _migrate(url, before, down=True)
    assert "bot_update" not in await _tables(url)
    back = await _query(url, "SELECT provider, provider_id, processed_at IS NULL, error FROM inbound_message")
    assert sorted(back) == sorted(
        (provider, provider_id, processed_at is None, error)
        for provider_id, (provider, _h, _e, _b, processed_at, error) in OLD_ROWS.items()
    )
