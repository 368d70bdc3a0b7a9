"""Per-key locks that serialise one citizen's messages: in process, or across processes via Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# Release only a lock we still own (a lock that timed out may belong to another process now).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LocalLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:  # forget idle keys so the dict does not grow with every sender
                del self._users[key], self._locks[key]


class RedisLocks:
    """SET NX PX with a token; waits by polling briefly. Keys: gw:lock:{key}."""

    def __init__(self, redis: Any, *, ttl_ms: int = 10_000, wait_seconds: float = 10.0) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.wait_seconds = wait_seconds
        self._release = redis.register_script(_RELEASE)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        name, token = f"gw:lock:{key}", uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        delay = 0.002
        while not await self.redis.set(name, token, nx=True, px=self.ttl_ms):
            if loop.time() > deadline:
                raise TimeoutError(f"conversation lock {key} is busy")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            await self._release(keys=[name], args=[token])
