"""The statistics as part of the app (wiring for gateway.app): the public figures' cache and the
bad-review alert pass, its webhook and its loop owned by the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway.passes import run_passes
from gateway.stats.alerts import WEBHOOK_TIMEOUT_SECONDS, AlertFailed, Send, log_sender, one_pass
from gateway.stats.public import FiguresCache
from gateway.stats.views import STATS_CACHE, STATS_PAGES
from gateway.web.keys import DEPS, REDIS, SETTINGS, STORE


def webhook_sender(session: aiohttp.ClientSession, url: str) -> Send:
    async def send(body: dict[str, Any]) -> None:
        try:
            async with session.post(url, json=body) as response:
                if not 200 <= response.status < 300:
                    raise AlertFailed(f"webhook answered {response.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AlertFailed(f"webhook unreachable: {type(exc).__name__}") from None

    return send


def alerts_ctx(run: bool, start_task: Callable[..., Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the alert pass, when background tasks run."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings, deps = app[SETTINGS], app[DEPS]
        session: aiohttp.ClientSession | None = None
        send: Send = log_sender
        if settings.overdue_reminder_webhook:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS))
            send = webhook_sender(session, settings.overdue_reminder_webhook)
        task = None
        if run:

            async def a_pass() -> int:
                now = deps.clock.now()
                return await one_pass(app[STORE], send, today=deps.calendar.local_date(now), at=now)

            task = start_task(
                app,
                run_passes(a_pass, interval_seconds=settings.stats_alert_interval_seconds, what="stats alert"),
                name="stats-alerts",
            )
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if session is not None:
            await session.close()

    return ctx


def stats_ctx(run: bool, start_task: Any) -> Any:
    """Cleanup context: the public figures' cache (shared through Redis when configured) and the alert pass."""
    alerts = alerts_ctx(run, start_task)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[STATS_CACHE] = FiguresCache(app[SETTINGS].public_stats_ttl_seconds, redis=app.get(REDIS))
        app[STATS_PAGES] = {}
        async for _ in alerts(app):
            yield

    return ctx


__all__ = ["alerts_ctx", "stats_ctx", "webhook_sender"]
