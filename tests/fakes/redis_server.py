"""A private redis-server for tests that need Redis to go down and come back: never the shared one."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis


class PrivateRedis:
    """A redis-server of this test alone, on a free port, that the test may stop and start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = aioredis.from_url(self.url)
        try:
            for _ in range(100):
                try:
                    if await client.ping():
                        return
                except Exception:
                    await asyncio.sleep(0.05)
            raise AssertionError("the private redis-server did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A started private redis-server on a free port; stopped at the end."""
    if shutil.which("redis-server") is None:
        from tests.conftest import _unavailable

        _unavailable("redis-server", "not on PATH")
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    server.stop()
