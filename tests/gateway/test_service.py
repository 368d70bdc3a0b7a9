"""The service as an operator runs it: health, readiness, metrics, migrations, `gateway serve`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import aiohttp
from alembic import command
from sqlalchemy import inspect

from gateway.store.db import Store
from gateway.store.migrate import alembic_config
from gateway.web.keys import DISPATCHER
from tests.gateway.evaluations.helpers import report


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["checks"]["database"] == "ok"


async def test_intake_stays_ready_when_redis_is_down(aiohttp_client, settings, clock):
    """Webhooks and the API need only the database: a load balancer must keep sending them; the
    processing readiness says that conversations wait."""
    from gateway.app import create_app

    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    client = await aiohttp_client(create_app(broken, clock=clock, migrate=False, run_background=False))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["checks"]["redis"].startswith("down")
    assert body["intake"] == "ready" and body["processing"] == "not ready"
    resp = await client.get("/readyz/processing")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "not ready" and body["checks"]["database"] == "ok"


async def test_nothing_is_ready_without_the_database(aiohttp_client, settings, clock):
    from gateway.app import create_app

    broken = settings.model_copy(update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/gone"})
    client = await aiohttp_client(create_app(broken, clock=clock, migrate=False, run_background=False))
    for path in ("/readyz", "/readyz/processing"):
        resp = await client.get(path)
        body = await resp.json()
        assert resp.status == 503 and body["intake"] == "not ready" and body["checks"]["database"].startswith("down")


async def test_metrics_count_the_outbox_and_tickets(client, world):
    body = await report(client, world)
    await client.post(f"/r/{body['invitation']['token']}", json={"level": 1, "reasons": [115]})
    await client.app[DISPATCHER].run_once()
    text = await (await client.get("/metrics")).text()
    assert 'gateway_outbox_messages{channel="sms",status="delivered"} 1.0' in text
    assert 'gateway_tickets{status="dispatching"} 1.0' in text
    assert "gateway_tickets_overdue 0.0" in text


def test_migrations_go_down_and_up_again(database_url):
    """The whole schema downgrades to nothing and upgrades again, on SQLite and PostgreSQL."""

    async def roundtrip() -> list[str]:
        store = Store.connect(database_url)

        def run(connection, target: str) -> None:  # type: ignore[no-untyped-def]
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            (command.downgrade if target == "base" else command.upgrade)(config, target)

        async with store.engine.begin() as conn:
            await conn.run_sync(run, "base")
        async with store.engine.connect() as conn:
            empty = await conn.run_sync(lambda c: [t for t in inspect(c).get_table_names() if t != "alembic_version"])
        assert empty == []
        async with store.engine.begin() as conn:
            await conn.run_sync(run, "head")
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        await store.close()
        return names

    names = asyncio.run(roundtrip())
    assert {"evaluation", "ticket", "outbound_message", "campaign_target"} <= set(names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_starts_on_the_embedded_default_and_stops(tmp_path):
    port = _free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db"}
    env.pop("GATEWAY_REDIS_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("gateway serve did not become ready")
            async with session.get(f"http://127.0.0.1:{port}/r/unknowntoken") as resp:
                assert resp.status == 404
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    # SIGTERM is a graceful shutdown: the app's cleanup runs and the process exits 0 (-15 would mean it died).
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    assert (tmp_path / "serve.db").exists()  # serve migrated the embedded SQLite by itself
    assert "start-up objects frozen for the collector" in output  # gateway.collector.settle ran once started


def test_settling_freezes_start_up_objects_and_spaces_collections_out() -> None:
    code = (
        "import gc, json; from gateway.collector import settle; before = gc.get_threshold(); settle(); "
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, after, frozen = json.loads(done.stdout)
    assert before[0] == 700 and after == [50_000, 20, 10]
    assert frozen > 1_000  # what the imports made, out of the collector's sight


def test_the_outbox_takes_department_messages_after_an_upgrade_with_data(database_url):
    """outbound_message.citizen_id becomes optional (reminders to a department's webhook): on SQLite the
    table is rebuilt while delivery_attempt rows point at it, and nothing is lost or left dangling."""
    from sqlalchemy import text

    from gateway.store.migrate import upgrade

    async def run() -> tuple[int, int]:
        store = Store.connect(database_url)

        def to(connection, target: str) -> None:  # type: ignore[no-untyped-def]
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.downgrade(config, target)

        async with store.engine.begin() as conn:
            await conn.run_sync(to, "c41d7e9a0f12")
        async with store.engine.begin() as conn:
            await conn.execute(text("INSERT INTO citizen (id, created_at) VALUES (1, '2026-01-01')"))
            await conn.execute(text(
                "INSERT INTO outbound_message (id, channel, citizen_id, purpose, priority, body, status, "
                "next_attempt_at, attempts, created_at, updated_at) VALUES (1, 'sms', 1, 'reply', 0, 'x', 'sent', '2026-01-01', 1, "
                "'2026-01-01', '2026-01-01')"))
            await conn.execute(text(
                "INSERT INTO delivery_attempt (message_id, at, outcome, detail) VALUES (1, '2026-01-01', 'sent', '')"))
        await upgrade(store.engine)
        async with store.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO outbound_message (id, channel, purpose, priority, body, status, next_attempt_at, "
                "attempts, created_at, updated_at) VALUES (2, 'webhook', 'reminder', 5, '{}', 'queued', '2026-01-01', 0, "
                "'2026-01-01', '2026-01-01')"))
            counts = (
                (await conn.execute(text("SELECT count(*) FROM delivery_attempt"))).scalar_one(),
                (await conn.execute(text("SELECT count(*) FROM outbound_message"))).scalar_one(),
            )
            await conn.execute(text("DELETE FROM delivery_attempt"))
            await conn.execute(text("DELETE FROM outbound_message"))
            await conn.execute(text("DELETE FROM citizen"))
        await store.close()
        return counts

    assert asyncio.run(run()) == (1, 2)
