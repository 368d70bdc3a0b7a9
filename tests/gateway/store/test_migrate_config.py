"""`gateway migrate` takes any database URL: one with %-escapes (a password with @ or %, a Unix socket
path in the query) reaches Alembic unchanged."""

from __future__ import annotations

import pytest

from gateway.store.migrate import alembic_config


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://gateway:p%40ss%25word@db.internal/gateway",
        "postgresql+asyncpg://postgres@/gateway?host=%2Fvar%2Frun%2Fpostgresql",
        "sqlite+aiosqlite:///./gateway.db",
    ],
)
def test_the_database_url_reaches_alembic_unchanged(url: str) -> None:
    assert alembic_config(url).get_main_option("sqlalchemy.url") == url
