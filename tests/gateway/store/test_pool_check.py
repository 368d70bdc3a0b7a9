"""Pooled PostgreSQL connections: one idle past the limit is checked and replaced when dead; one in
steady use is not checked (a check costs three round trips on asyncpg)."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import text

from gateway.store.db import Store


def _admin_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _kill(url: str, pid: int) -> None:
    conn = await asyncpg.connect(_admin_url(url), timeout=5)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def _backend_pid(store: Store) -> int:
    async with store.transaction() as session:
        return int((await session.exec(text("SELECT pg_backend_pid()"))).scalar_one())  # type: ignore[call-overload]


def _count_pings(store: Store) -> list[int]:
    """Every check of a pooled connection from now on, counted."""
    pings: list[int] = []
    dialect = store.engine.sync_engine.dialect
    original = dialect.do_ping

    def counting(dbapi_connection):  # type: ignore[no-untyped-def]
        pings.append(1)
        return original(dbapi_connection)

    dialect.do_ping = counting  # type: ignore[method-assign]
    return pings


async def test_a_connection_that_died_while_idle_is_replaced_before_use(pg_database):
    store = Store.connect(pg_database, pool_size=1, ping_after_idle_seconds=0.2)
    pings = _count_pings(store)
    try:
        first = await _backend_pid(store)
        await _kill(pg_database, first)  # the database restarted, or an operator killed the session
        await asyncio.sleep(0.3)
        second = await _backend_pid(store)  # no error reaches the caller
        assert second != first and pings == [1]
    finally:
        await store.close()


async def test_a_connection_in_steady_use_is_not_checked(pg_database):
    store = Store.connect(pg_database, pool_size=1, ping_after_idle_seconds=60)
    pings = _count_pings(store)
    try:
        pids = {await _backend_pid(store) for _ in range(5)}
        assert len(pids) == 1 and pings == []
    finally:
        await store.close()
