"""INSERT … ON CONFLICT DO NOTHING for both dialects: a duplicate costs no savepoint round trips."""

from __future__ import annotations

from collections.abc import Sequence
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


_ROWS_INSERTS: dict[tuple[Any, ...], Any] = {}


def rows_insert(
    dialect: str, model: Any, *, conflict: Sequence[str] | None = None, returning: Sequence[str] = ()
) -> Any:
    """A Core INSERT of the model's table, built once per shape, for `insert_rows`.

    `conflict`: skip rows a unique key already holds (the columns of that key; empty: any key)."""
    key = (dialect, model, None if conflict is None else tuple(conflict), tuple(returning))
    statement = _ROWS_INSERTS.get(key)
    if statement is None:
        table = model.__table__
        statement = (postgresql if dialect == "postgresql" else sqlite).insert(table)
        if conflict is not None:
            statement = statement.on_conflict_do_nothing(index_elements=list(conflict) or None)
        if returning:
            statement = statement.returning(*(table.c[name] for name in returning))
        _ROWS_INSERTS[key] = statement
    return statement


async def insert_rows(
    session: AsyncSession,
    model: Any,
    rows: list[dict[str, Any]],
    *,
    conflict: Sequence[str] | None = None,
    returning: Sequence[str] = (),
) -> list[Any]:
    """Insert many rows (each with the same keys) in one statement; the `returning` columns of the rows
    inserted, in no particular order.

    The rows go as parameters of a statement built once (SQLAlchemy sends them as one multi-row INSERT
    and reuses its compiled form); `insert(...).values(rows)` would be compiled anew on every call,
    which costs more CPU than running it."""
    if not rows:
        return []
    connection = await session.connection()
    statement = rows_insert(connection.dialect.name, model, conflict=conflict, returning=returning)
    result = await connection.execute(statement, rows)
    return list(result.all()) if returning else []
