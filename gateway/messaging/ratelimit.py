"""Send-rate limits: per sender, shared by every gateway process through Redis when it is configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.store.redis_watch import RedisWatch, is_outage


class RateLimiter(Protocol):
    async def acquire(self, key: str, rate_per_second: float | None = None) -> None: ...


class BatchRateLimiter(RateLimiter, Protocol):
    async def take(self, key: str, wanted: int, rate_per_second: float | None = None) -> int:
        """Wait until at least one send is allowed; return how many (1 to `wanted`) are allowed now."""
        ...


class LocalRateLimiter:
    """A token bucket in this process: enough for the embedded default."""

    def __init__(
        self, rate_per_second: float, *, burst: float | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_second
        self.burst = burst if burst is not None else max(1.0, rate_per_second)
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, key: str, rate_per_second: float | None = None) -> None:
        rate = rate_per_second or self.rate
        burst = max(1.0, rate) if rate_per_second else self.burst
        while True:
            async with self._lock:
                now = self._monotonic()
                tokens, last = self._buckets.get(key, (burst, now))
                tokens = min(burst, tokens + (now - last) * rate)
                if tokens >= 1:
                    self._buckets[key] = (tokens - 1, now)
                    return
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / rate
            await asyncio.sleep(wait)

    async def take(self, key: str, wanted: int, rate_per_second: float | None = None) -> int:
        rate = rate_per_second or self.rate
        burst = max(1.0, rate) if rate_per_second else self.burst
        while True:
            async with self._lock:
                now = self._monotonic()
                tokens, last = self._buckets.get(key, (burst, now))
                tokens = min(burst, tokens + (now - last) * rate)
                granted = min(max(1, wanted), int(tokens))
                if granted >= 1:
                    self._buckets[key] = (tokens - granted, now)
                    return granted
                self._buckets[key] = (tokens, now)
                wait = (1 - tokens) / rate
            await asyncio.sleep(wait)


# A fixed one-second window counter per key; INCR and EXPIRE run atomically in one script.
_WINDOW_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 1100) end
return n
"""


# Up to ARGV[2] sends at once, within the window's limit ARGV[1]; returns how many were granted (maybe 0).
_TAKE_SCRIPT = """
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.min(tonumber(ARGV[2]), limit - used)
if granted <= 0 then return 0 end
if redis.call('INCRBY', KEYS[1], granted) == granted then redis.call('PEXPIRE', KEYS[1], 1100) end
return granted
"""


class RedisRateLimiter:
    """At most `rate` sends per second per key across all processes (keys gw:rate:{key}:{second}).

    Sending does not need Redis: while it is unreachable (see `RedisWatch`) each process keeps to the
    rate on its own with a local bucket, and a message never fails, or uses up its attempts, for it.
    """

    def __init__(self, redis: Any, rate_per_second: float, *, watch: RedisWatch | None = None) -> None:
        self.redis = redis
        self.rate = max(1, int(rate_per_second))
        self._script = redis.register_script(_WINDOW_SCRIPT)
        self._take_script = redis.register_script(_TAKE_SCRIPT)
        self.watch = watch if watch is not None else RedisWatch(redis)
        self.fallback = LocalRateLimiter(rate_per_second)

    async def acquire(self, key: str, rate_per_second: float | None = None) -> None:
        if not await self.watch.ready():
            await self.fallback.acquire(key, rate_per_second)
            return
        try:
            await self._shared(key, rate_per_second)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.watch.report(exc)
            await self.fallback.acquire(key, rate_per_second)

    async def _shared(self, key: str, rate_per_second: float | None) -> None:
        limit = max(1, int(rate_per_second)) if rate_per_second else self.rate
        while True:
            now = time.time()
            second = int(now)
            count = await self._script(keys=[f"gw:rate:{key}:{second}"])
            if int(count) <= limit:
                return
            await asyncio.sleep(max(0.005, second + 1 - now))

    async def take(self, key: str, wanted: int, rate_per_second: float | None = None) -> int:
        """Many sends' worth of the window at once (`acquire` counts one per call): one round trip a batch."""
        if not await self.watch.ready():
            return await self.fallback.take(key, wanted, rate_per_second)
        try:
            return await self._take_shared(key, wanted, rate_per_second)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.watch.report(exc)
            return await self.fallback.take(key, wanted, rate_per_second)

    async def _take_shared(self, key: str, wanted: int, rate_per_second: float | None) -> int:
        limit = max(1, int(rate_per_second)) if rate_per_second else self.rate
        while True:
            now = time.time()
            second = int(now)
            granted = int(await self._take_script(keys=[f"gw:rate:{key}:{second}"], args=[limit, max(1, wanted)]))
            if granted > 0:
                return granted
            await asyncio.sleep(max(0.005, second + 1 - now))
