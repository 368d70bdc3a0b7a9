"""Database engine and transactions: one code path for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import TextClause, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.store.models import Evaluation

log = logging.getLogger(__name__)

# A pooled PostgreSQL connection idle longer than this is checked before use. A check on every checkout
# (SQLAlchemy's pool_pre_ping) costs three round trips on asyncpg (BEGIN, an empty statement, ROLLBACK):
# more than a reply's own reads. A connection in steady use is not checked; one that died within this
# many seconds of its last use fails its statement once, and the pool then replaces it (README, Settings).
PING_AFTER_IDLE_SECONDS = 5.0


class Store:
    """Owns the engine; `transaction()` is the unit of work every state change goes through."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @classmethod
    def connect(
        cls, url: str, *, pool_size: int = 10, ping_after_idle_seconds: float = PING_AFTER_IDLE_SECONDS
    ) -> Store:
        """Create the engine (no I/O yet)."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _serialise_sqlite_writers(engine)
        else:
            # Connections beyond the pool are opened and closed per use: size the pool for the
            # process's concurrency (dispatcher 16 + inbox 8 + the web), not for its peaks. The pool hands
            # out the connection used last (LIFO): a process serving one request at a time keeps using one
            # connection, whose PostgreSQL backend has its plans and pages at hand (docs/benchmarks.md).
            engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=max(5, pool_size // 5), pool_use_lifo=True
            )
            _ping_after_idle(engine, ping_after_idle_seconds)
        return cls(engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        async with self._sessions() as session:
            async with session.begin():
                yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncSession]:
        """A session for work that reads, then changes everything it changes in one statement (PostgreSQL).

        Statements sent with `fetch_rows` go to asyncpg directly and, outside a transaction, each commits
        on its own: no BEGIN, no COMMIT. Such reads share no snapshot and take no locks, as in a READ
        COMMITTED transaction, and the one statement that writes is atomic by itself. A statement sent
        through the session itself (an occasional read) begins a transaction as usual, which then holds
        the statements after it and commits at the end of the block."""
        if self.dialect != "postgresql":
            raise ValueError("autocommit sessions are for PostgreSQL")
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                session.info[_DRIVER] = _Driver(connection, raw.driver_connection)
                yield session
                if session.in_transaction():  # begun by a statement sent through the session
                    await session.commit()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


@dataclass(frozen=True)
class _Driver:
    connection: AsyncConnection
    driver: Any  # the asyncpg connection under it


_DRIVER = "gateway.driver"
_POSITIONAL: dict[str, tuple[str, tuple[str, ...]]] = {}


async def fetch_rows(session: AsyncSession, statement: TextClause, params: dict[str, Any]) -> list[Sequence[Any]]:
    """Run a text statement of named parameters; its rows.

    In a `Store.autocommit` session the statement goes straight to asyncpg: SQLAlchemy's work around a
    statement (its execution context, the cursor's adaptation, the result's metadata) costs more CPU than
    a short statement itself. Elsewhere through the session. A unique key's refusal is an `IntegrityError`
    either way, any other refusal by the server a `DBAPIError`; a connection that failed is discarded, not
    returned to the pool."""
    driver: _Driver | None = session.info.get(_DRIVER)
    if driver is None:
        return list((await session.exec(statement, params=params)).all())  # type: ignore[call-overload]
    positional = _POSITIONAL.get(statement.text)
    if positional is None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        positional = _POSITIONAL[statement.text] = (_NAMED.sub(number, statement.text), tuple(names))
    sql, order = positional
    try:
        return list(await driver.driver.fetch(sql, *(params[name] for name in order)))
    except asyncpg.IntegrityConstraintViolationError as error:
        raise exc.IntegrityError(sql, params, error) from error
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
        await driver.connection.invalidate()
        raise
    except asyncpg.PostgresError as error:
        # Refused by the server (a deadlock, a value too long): raised as SQLAlchemy raises it.
        raise exc.DBAPIError(sql, params, error) from error


def autocommits(session: AsyncSession) -> bool:
    """Whether the session is a `Store.autocommit` one (each statement its own transaction)."""
    return _DRIVER in session.info


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def _ping_after_idle(engine: AsyncEngine, seconds: float) -> None:
    """Check a pooled connection before use when it has been idle more than `seconds`: a dead one (a
    database restart, a killed backend, a dropped link) is replaced by a new connection instead of
    failing the caller's first statement."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since <= seconds:
            return  # new, or in steady use
        try:
            sync_engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            log.warning("a pooled database connection was dead; opening a new one")
            raise exc.DisconnectionError("pooled connection failed its check") from error


def _serialise_sqlite_writers(engine: AsyncEngine) -> None:
    # SQLite's deferred transactions deadlock when two readers both upgrade to writers; starting every
    # transaction with BEGIN IMMEDIATE makes writers queue on the busy timeout instead.
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@event.listens_for(Evaluation, "before_update")
def _evaluation_is_immutable(*_args: object) -> None:
    # Art. 19: results are unalterable; the database triggers enforce the same below the ORM.
    raise PermissionError("evaluations are immutable: record an addendum or a decision instead")


@event.listens_for(Evaluation, "before_delete")
def _evaluation_is_undeletable(*_args: object) -> None:
    raise PermissionError("evaluations are never deleted")
