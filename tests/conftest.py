"""Shared fixtures: the same suite runs on SQLite and PostgreSQL, with memory and Redis state.

PostgreSQL and Redis come from GATEWAY_TEST_POSTGRES_URL / GATEWAY_TEST_REDIS_URL (defaults: the local
servers). Without them the tests that need them are skipped with the reason, except under CI=true,
where a missing server is an error: CI must not pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.clock import FrozenClock
from gateway.orgs import add_org, issue_key
from gateway.settings import Settings, load_settings
from gateway.store.db import Store
from gateway.store.migrate import upgrade
from gateway.web.keys import DEPS, PROVIDERS, STORE

pytest_plugins = ["tests.fakes.fixtures"] if (Path(__file__).parent / "fakes" / "fixtures.py").exists() else []

PG_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


_BACKGROUND: list[object] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """The static checks (tests/test_static_checks.py) start as soon as the suite is collected and run
    beside the other tests; each check's test waits for its result."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        module = getattr(item, "module", None)
        if item.path.name == "test_static_checks.py" and hasattr(module, "start"):
            module.start(item)  # type: ignore[union-attr]
            _BACKGROUND.append(module)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for module in _BACKGROUND:
        module.stop_all()  # type: ignore[attr-defined]


def _unavailable(what: str, why: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI but unavailable: {why}")
    pytest.skip(f"{what} not available here ({why}); set it up to run these tests")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated once."""
    name = f"gw_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # connection refused, auth, missing driver
        _unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"

    async def migrate() -> None:
        store = Store.connect(url)
        await upgrade(store.engine)
        await store.close()

    asyncio.run(migrate())
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"

    async def migrate() -> None:
        store = Store.connect(f"sqlite+aiosqlite:///{path}")
        await upgrade(store.engine)
        await store.close()

    asyncio.run(migrate())
    return path


# Emptying the tables row by row and restarting the used sequences takes a few milliseconds; a TRUNCATE of
# every table makes new files for each table and index and cost far more per test (docs/quality.md,
# "Suite time"). The evaluation log refuses DELETE and TRUNCATE (Art. 19); as the owner, the tests switch
# its triggers (and the foreign keys' triggers, so the order does not matter) off for this transaction.
_RESET = """
DO $$
DECLARE
    t record;
BEGIN
    PERFORM set_config('session_replication_role', 'replica', true);
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version' LOOP
        EXECUTE format('DELETE FROM public.%I', t.tablename);
    END LOOP;
    FOR t IN SELECT sequencename, start_value FROM pg_sequences
             WHERE schemaname = 'public' AND last_value IS NOT NULL LOOP
        PERFORM setval(format('public.%I', t.sequencename), t.start_value, false);
    END LOOP;
END $$
"""


async def _truncate(url: str) -> None:
    """Empty every table and restart its ids, as `TRUNCATE … RESTART IDENTITY CASCADE` would."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10)
    try:
        await conn.execute(_RESET)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that uses the store runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_database")
        asyncio.run(_truncate(url))
        yield url


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A Redis database flushed before use."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    except Exception as exc:
        await client.aclose()
        _unavailable("Redis", f"{type(exc).__name__}: {exc}")
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


# Wednesday 2026-03-04 10:00 Asia/Shanghai: a working day, outside quiet hours.
START = datetime(2026, 3, 4, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(database_url=database_url, public_url="http://gateway.test", run_dispatcher=False)


@dataclass
class World:
    """Registered organisations of one city (安康 6109xx) and their API keys."""

    keys: dict[str, str]

    def auth(self, org: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[org]}"}


ORGS = [
    # code, name, kind, region, parent
    ("operator", "平台运营方", "operator", "610900", None),
    ("city", "安康市行政审批服务局", "city_bureau", "610900", None),
    ("hanbin", "汉滨区行政审批服务局", "county_dept", "610902", "city"),
    ("hanyin", "汉阴县行政审批服务局", "county_dept", "610921", "city"),
    ("city-police", "安康市公安局", "unit", "610900", None),
    ("hanbin-market", "汉滨区市场监督管理局", "unit", "610902", "hanbin"),
    ("hanbin-tax", "汉滨区税务局", "unit", "610902", "hanbin"),
    ("hanyin-market", "汉阴县市场监督管理局", "unit", "610921", "hanyin"),
    ("platform", "安康市政务服务平台建设单位", "platform_builder", "610900", None),
]


async def register_world(store: Store, clock: FrozenClock) -> World:
    keys = {}
    async with store.transaction() as session:
        for code, name, kind, region, parent in ORGS:
            org = await add_org(session, code=code, name=name, kind=kind, region_code=region, parent_code=parent, at=clock.now())
            keys[code] = await issue_key(session, org=org, label="test", at=clock.now())
    return World(keys)


@pytest.fixture
async def app(settings: Settings, clock: FrozenClock):  # type: ignore[no-untyped-def]
    return create_app(settings, clock=clock, migrate=False, run_background=False)


@pytest.fixture
async def client(app, aiohttp_client):  # type: ignore[no-untyped-def]
    return await aiohttp_client(app)


@pytest.fixture
async def world(client) -> World:  # type: ignore[no-untyped-def]
    return await register_world(client.app[STORE], client.app[DEPS].clock)  # type: ignore[arg-type]


def case_payload(case_no: str = "HB-2026-0001", **overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "case_no": case_no,
        "item_code": "11610902MB0001",
        "item_name": "个体工商户设立登记",
        "org_code": "hanbin-market",
        "region_code": "610902",
        "service_channel": "window",
        "staff_id": "HB-017",
        "completed_at": "2026-03-04T09:30:00+08:00",
        "citizen": {"phone": "13812341234"},
    }
    payload.update(overrides)
    return payload


def sent_messages(client) -> list:  # type: ignore[no-untyped-def]
    return client.app[PROVIDERS]["sms"].sent


@pytest.fixture
def paired_redis_url(database_url: str) -> Iterator[str]:
    """The conversation state paired with the database, as deployed: SQLite with in-process state,
    PostgreSQL with Redis (state, locks and rate limits). The SMS, bot and channel-parity suites use it,
    so each of their tests runs once on each pairing (docs/quality.md)."""
    if not database_url.startswith("postgresql"):
        yield ""  # no GATEWAY_REDIS_URL: in-process state and locks
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except Exception as exc:
        client.close()
        _unavailable("Redis", f"{type(exc).__name__}: {exc}")
    yield REDIS_URL
    client.flushdb()
    client.close()
