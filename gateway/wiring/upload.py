"""The upload feed as part of the app (wiring for gateway.app): built at start-up when a province
profile is configured, its loop owned by the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from gateway.province.client import ProvinceClient
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.upload.feed import FeedPolicy, UploadFeed
from gateway.upload.transport import ConsoleProvince, Transport
from gateway.web.keys import DEPS, SETTINGS, STORE

UPLOAD_FEED: web.AppKey[UploadFeed | None] = web.AppKey("upload_feed")


def build_transport(settings: Settings, session: aiohttp.ClientSession) -> Transport:
    """The province's HTTP endpoint, or the console when GATEWAY_PROVINCE_BASE_URL is `console`."""
    profile = settings.province
    if profile is None:
        raise ValueError("no province profile is configured (GATEWAY_PROVINCE_PROFILE)")
    if settings.province_base_url == "console":
        return ConsoleProvince(profile)
    return ProvinceClient(
        profile=profile,
        session=session,
        base_url=settings.province_base_url,
        app_key=settings.province_app_key,
        app_secret=settings.province_app_secret.get_secret_value(),
        token=settings.province_token.get_secret_value(),
    )


def build_feed(settings: Settings, store: Store, transport: Transport, clock: Any) -> UploadFeed:
    profile = settings.province
    if profile is None:
        raise ValueError("no province profile is configured (GATEWAY_PROVINCE_PROFILE)")
    policy = FeedPolicy(
        lease_seconds=settings.upload_lease_seconds,
        max_attempts=settings.upload_max_attempts,
        concurrency=settings.upload_concurrency,
    )
    return UploadFeed(store=store, profile=profile, transport=transport, clock=clock, policy=policy)


def upload_ctx(run: bool, start_task: Callable[..., Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the feed and its HTTP session when a profile is configured, and its loop when
    background tasks run. Without a profile there is no feed (and nothing is ever queued)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if settings.province is None:
            app[UPLOAD_FEED] = None
            yield
            return
        session = aiohttp.ClientSession()
        feed = build_feed(settings, app[STORE], build_transport(settings, session), app[DEPS].clock)
        app[UPLOAD_FEED] = feed
        task = None
        if run:
            task = start_task(app, feed.run_forever(settings.upload_interval_seconds), name="upload-feed")
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await session.close()

    return ctx
