"""The fraud detector as part of the app (wiring for gateway.app): built at start-up, its loop owned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway.fraud.detect import Detector
from gateway.web.keys import DEPS, SETTINGS, STORE

FRAUD_DETECTOR: web.AppKey[Detector] = web.AppKey("fraud_detector")


def fraud_ctx(run: bool, start_task: Callable[..., Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the detector (always, so tests and the demo can drive it) and its loop when
    background tasks run. It resumes from the cursor stored in the database."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        detector = Detector(app[STORE], settings, app[DEPS].clock)
        app[FRAUD_DETECTOR] = detector
        task = None
        if run:
            task = start_task(app, detector.run_forever(settings.fraud_interval_seconds), name="fraud-detector")
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return ctx
