"""Delivering overdue reminders over HTTP (the outbox's `webhook` channel), and the app's overdue loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway.messaging.providers import Outgoing, SendFailed, Sent
from gateway.settings import Settings
from gateway.tickets.overdue import LOG, WEBHOOK, run_forever
from gateway.web.keys import DEPS, DISPATCHER, SETTINGS, STORE

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10.0
# A 4xx says the request itself is wrong, and sending it again cannot help; these say "not now".
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})


class ReminderWebhook:
    """The outbox provider for channel `webhook`: POSTs the reminder's JSON to GATEWAY_OVERDUE_WEBHOOK_URL.

    A 2xx is delivered. Timeouts, connection errors, 5xx, 408 and 429 are retried by the dispatcher
    with backoff; any other 4xx fails for good (visible in the outbox). Each call carries
    `Idempotency-Key: overdue-reminder-<outbox id>`, the same on every retry: delivery is at least once.
    """

    channel = WEBHOOK

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url

    @classmethod
    def from_settings(cls, settings: Settings) -> ReminderWebhook:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS))
        return cls(session, settings.overdue_reminder_webhook)

    async def send(self, message: Outgoing) -> Sent:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"overdue-reminder-{message.message_id}"}
        try:
            async with self.session.post(self.url, data=message.body.encode("utf-8"), headers=headers) as response:
                if 200 <= response.status < 300:
                    return Sent(provider_message_id=None, status="delivered")
                retry_after = response.headers.get("Retry-After", "")
                raise SendFailed(
                    f"webhook answered {response.status}",
                    code=str(response.status),
                    permanent=400 <= response.status < 500 and response.status not in _TRANSIENT_4XX,
                    retry_after_seconds=float(retry_after) if retry_after.isdigit() else None,
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SendFailed(f"webhook unreachable: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        await self.session.close()


def overdue_ctx(run: bool, start_task: Callable[..., Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the sweep loop when background tasks run. Reminders go to the webhook through
    the outbox when GATEWAY_OVERDUE_WEBHOOK_URL is set (its provider is wired with the others), else to the log."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        via = WEBHOOK if settings.overdue_reminder_webhook else LOG
        task = None
        if run:
            task = start_task(
                app,
                run_forever(
                    app[STORE], app[DEPS], settings.overdue_sweep_interval_seconds, via=via, wake=app[DISPATCHER].wake
                ),
                name="overdue-sweep",
            )
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx
