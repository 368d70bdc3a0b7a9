"""The SQL statements a store sends from now on, recorded for a test to count or read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from gateway.store.db import Store


def statements_sent(store: Store, *, starting: str = "") -> list[str]:
    """Every statement the store's engine sends from now on whose text starts with `starting`."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith(starting):
            seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    return seen


def round_trips(store: Store) -> list[str]:
    """Every statement a PostgreSQL store sends from now on, however it is sent: through SQLAlchemy (its
    statements, and BEGIN, COMMIT and savepoints) or straight to asyncpg (`fetch_rows`)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    def logged(query: Any) -> None:  # asyncpg's own calls: transactions and fetch_rows
        seen.append(query.query)

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(logged)

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    event.listen(store.engine.sync_engine, "checkout", checkout)
    return seen
