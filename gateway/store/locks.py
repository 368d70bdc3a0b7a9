"""Per-key locks that serialise one citizen's messages: in process, or across processes via Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

# Release only a lock we still own (a lock that timed out may belong to another process now).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A group's locks: all of them, with one token, only if every one is free; given back together.
_TAKE_ALL = """
for i, name in ipairs(KEYS) do
    if redis.call('EXISTS', name) == 1 then return 0 end
end
for i, name in ipairs(KEYS) do
    redis.call('SET', name, ARGV[1], 'PX', ARGV[2])
end
return 1
"""
_RELEASE_ALL = """
local released = 0
for i, name in ipairs(KEYS) do
    if redis.call('GET', name) == ARGV[1] then released = released + redis.call('DEL', name) end
end
return released
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

    @asynccontextmanager
    async def hold_all_or_none(self, keys: Sequence[str]) -> AsyncIterator[bool]:
        """Every key's lock at once when none is held or awaited now (yields True), else none of them
        (yields False). It never waits, so two groups cannot deadlock."""
        if any(key in self._locks for key in keys):
            yield False
            return
        locks = [self._locks.setdefault(key, asyncio.Lock()) for key in keys]
        for key, lock in zip(keys, locks, strict=True):
            self._users[key] = 1
            await lock.acquire()  # free and unwaited: taken without suspending
        try:
            yield True
        finally:
            for key, lock in zip(keys, locks, strict=True):
                lock.release()
                self._users[key] -= 1
                if self._users[key] == 0:
                    del self._users[key], self._locks[key]


class RedisLocks:
    """SET NX PX with a token; waits by polling briefly. Keys: gw:lock:{key}."""

    def __init__(self, redis: Any, *, ttl_ms: int = 10_000, wait_seconds: float = 10.0) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.wait_seconds = wait_seconds
        self._release = redis.register_script(_RELEASE)
        self._take_all = redis.register_script(_TAKE_ALL)
        self._release_all = redis.register_script(_RELEASE_ALL)

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

    @asynccontextmanager
    async def hold_all_or_none(self, keys: Sequence[str]) -> AsyncIterator[bool]:
        """Every key's lock, taken atomically in one exchange, when all are free (yields True); else
        none (yields False). It never waits, so two groups cannot deadlock; the locks go back in one
        exchange too, each only if still ours."""
        names, token = [f"gw:lock:{key}" for key in keys], uuid.uuid4().hex
        held = bool(await self._take_all(keys=names, args=[token, self.ttl_ms]))
        try:
            yield held
        finally:
            if held:
                await self._release_all(keys=names, args=[token])
