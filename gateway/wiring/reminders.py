"""Delivering overdue reminders over HTTP, and the app's overdue loop (wiring for gateway.app)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway.tickets.overdue import LogNotifier, Notifier, Reminder, run_forever
from gateway.web.keys import DEPS, SETTINGS, STORE

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10.0
OVERDUE_NOTIFIER: web.AppKey[Notifier] = web.AppKey("overdue_notifier")


class ReminderFailed(Exception):
    """The webhook did not accept the reminder."""


class WebhookNotifier:
    """POSTs each reminder as JSON (GATEWAY_OVERDUE_WEBHOOK_URL); anything but a 2xx is a failure."""

    name = "webhook"

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def notify(self, reminder: Reminder) -> None:
        try:
            async with self.session.post(self.url, json=reminder.as_json()) as response:
                if not 200 <= response.status < 300:
                    raise ReminderFailed(f"webhook answered {response.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ReminderFailed(f"webhook unreachable: {type(exc).__name__}: {exc}") from None


def overdue_ctx(run: bool, start_task: Callable[..., Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the notifier (and its HTTP session), and the sweep loop when background tasks run."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        session: aiohttp.ClientSession | None = None
        notifier: Notifier
        if settings.overdue_reminder_webhook:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS))
            notifier = WebhookNotifier(session, settings.overdue_reminder_webhook)
        else:
            notifier = LogNotifier()
        app[OVERDUE_NOTIFIER] = notifier
        task = None
        if run:
            task = start_task(
                app,
                run_forever(app[STORE], app[DEPS], notifier, settings.overdue_sweep_interval_seconds),
                name="overdue-sweep",
            )
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if session is not None:
            await session.close()

    return ctx
