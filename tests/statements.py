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
