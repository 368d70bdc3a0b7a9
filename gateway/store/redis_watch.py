"""Whether Redis answers, as every Redis user in the process sees it.

An outage of Redis is not a fault of the message being handled: the SMS inbox drainer and the
conversation timers pause while it lasts (the inbox keeps taking webhooks, which need only the
database), the dispatcher's shared rate limit falls back to one in the process, and nothing uses up
its own retry budget. Whoever meets a connection error reports it here; the first report logs one
line, later ones nothing. Paused parts ask `ready()`, which probes Redis with a PING at growing
intervals (never more often than the backoff allows) and logs one line when it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

# Errors that say "Redis cannot be reached right now", not "this message was wrong". The built-in
# ConnectionError is left out: the database driver raises it too, and that is not a Redis outage.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, BusyLoadingError)


def is_outage(exc: BaseException) -> bool:
    """True for a connection-level failure of Redis (refused, reset, timed out, still loading)."""
    return isinstance(exc, OUTAGE_ERRORS)


class RedisWatch:
    """Redis's reachability in this process, with a backoff between probes while it is down."""

    def __init__(
        self,
        redis: Any,
        *,
        first_probe_seconds: float = 0.5,
        max_probe_seconds: float = 10.0,
        probe_timeout_seconds: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.first_probe_seconds, self.max_probe_seconds = first_probe_seconds, max_probe_seconds
        self.probe_timeout_seconds = probe_timeout_seconds
        self.monotonic = monotonic
        self.available = True
        self.down_since: float | None = None
        self._backoff = first_probe_seconds
        self._next_probe = 0.0
        self._probing: asyncio.Lock | None = None

    def report(self, exc: BaseException) -> None:
        """A Redis call failed with `exc` (an outage error): mark Redis down; one log line per outage."""
        if not self.available:
            return
        self.available = False
        self.down_since = self.monotonic()
        self._backoff = self.first_probe_seconds
        self._next_probe = self.down_since + self._backoff
        log.warning(
            "Redis is unreachable (%s): SMS replies and conversation timers wait, and sends keep to a rate "
            "limit in this process, until it answers again",
            type(exc).__name__,
        )

    def seconds_down(self) -> float:
        return 0.0 if self.down_since is None or self.available else self.monotonic() - self.down_since

    async def ready(self) -> bool:
        """True when Redis is up; while it is down, probe it (at most once per backoff interval)."""
        if self.available:
            return True
        if self.monotonic() < self._next_probe:
            return False
        if self._probing is None:
            self._probing = asyncio.Lock()
        async with self._probing:
            if self.available:
                return True
            try:
                await asyncio.wait_for(self.redis.ping(), timeout=self.probe_timeout_seconds)
            except Exception as exc:  # still down (or answering wrongly): try again later
                if not is_outage(exc) and not isinstance(exc, TimeoutError):
                    log.debug("Redis probe failed", exc_info=exc)
                self._backoff = min(self.max_probe_seconds, self._backoff * 2)
                self._next_probe = self.monotonic() + self._backoff
                return False
            log.warning(
                "Redis answers again after %.0f s: SMS replies and conversation timers resume", self.seconds_down()
            )
            self.available, self.down_since = True, None
            return True

    async def wait_until_ready(self) -> None:
        """Wait (probing with the backoff) until Redis answers."""
        # Probing is the point: no event can say that Redis is back.
        while not await self.ready():  # noqa: ASYNC110
            await asyncio.sleep(max(0.05, self._next_probe - self.monotonic()))


__all__ = ["OUTAGE_ERRORS", "RedisWatch", "is_outage"]
