"""The campaign feeder as part of the app (wiring for gateway.app): built at start-up, its loop owned."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway.callbacks.feeder import CampaignFeeder
from gateway.messaging.dispatcher import DispatchPolicy
from gateway.settings import Settings
from gateway.web.keys import DEPS, DISPATCHER, SETTINGS, STORE

CAMPAIGN_FEEDER: web.AppKey[CampaignFeeder] = web.AppKey("campaign_feeder")


def queue_ahead(settings: Settings) -> int:
    """How many survey messages a campaign keeps in the outbox: GATEWAY_CAMPAIGN_QUEUE_AHEAD, or by default
    two feeder passes of sending at the channels' rates. The dispatcher claims messages in batches and
    sends a batch at the rate limit, so this bounds how long an answer to a citizen can wait behind a
    batch of surveys (about two seconds), while the feeder still keeps up with the rate."""
    if settings.campaign_queue_ahead:
        return settings.campaign_queue_ahead
    rate = settings.sms_rate_per_second + (DispatchPolicy().telegram_rate_per_second if settings.bot_enabled else 0.0)
    return max(10, math.ceil(2 * rate * settings.campaign_feed_interval_seconds))


def campaigns_ctx(run: bool, start_task: Callable[..., Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the feeder (always, so tests and the CLI can drive it) and its loop when
    background tasks run. It goes after the dispatcher's context: a fed chunk wakes the dispatcher."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        dispatcher = app.get(DISPATCHER)
        feeder = CampaignFeeder(
            store=app[STORE],
            deps=app[DEPS],
            queue_ahead=queue_ahead(settings),
            on_queued=dispatcher.wake if dispatcher is not None else None,
        )
        app[CAMPAIGN_FEEDER] = feeder
        task = None
        if run:
            task = start_task(app, feeder.run_forever(settings.campaign_feed_interval_seconds), name="campaign-feeder")
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx
