"""INSERT … ON CONFLICT DO NOTHING for both dialects: a duplicate costs no savepoint round trips."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession


def dialect_insert(session: AsyncSession, model: Any) -> Any:
    """An INSERT for the session's dialect, which knows `on_conflict_do_nothing`."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql if dialect == "postgresql" else sqlite).insert(model)


async def insert_if_absent(session: AsyncSession, model: Any, **values: Any) -> bool:
    """Insert a row unless a unique key already holds it; True when this call inserted it."""
    statement = dialect_insert(session, model).values(**values).on_conflict_do_nothing()
    result = await session.exec(statement)
    return bool(result.rowcount)
