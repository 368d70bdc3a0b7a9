"""Run the Alembic migrations that ship inside the package (`gateway migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # The option is interpolated by configparser: a URL's %-escapes (a password with @ or %, a Unix
    # socket's ?host=%2Fvar%2Frun%2Fpostgresql) must be doubled to stay what they are.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision, on an engine the caller owns."""

    def _upgrade(connection) -> None:  # type: ignore[no-untyped-def]
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # SQLite changes a column by rebuilding its table (copy, drop, rename); with foreign keys
            # enforced, dropping a table that other rows point at fails. SQLite's documented procedure:
            # foreign keys off (only possible outside a transaction), migrate, check, on again.
            await conn.run_sync(_foreign_keys, False)
        try:
            async with conn.begin():
                await conn.run_sync(_upgrade)
                if sqlite:
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"the migration left rows pointing nowhere: {broken[:5]}")
        finally:
            if sqlite:
                await conn.run_sync(_foreign_keys, True)


def _foreign_keys(connection, on: bool) -> None:  # type: ignore[no-untyped-def]
    # On the driver's connection: SQLAlchemy would start a transaction first (BEGIN IMMEDIATE), and
    # inside one SQLite ignores this pragma.
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()
