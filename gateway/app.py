"""create_app(settings): wiring only (STYLE 1). Every connection is opened and closed in cleanup_ctx."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Coroutine
from types import ModuleType
from typing import Any

from aiohttp import web

from gateway.clock import Clock
from gateway.deps import Deps
from gateway.messaging.dispatcher import Dispatcher, DispatchPolicy
from gateway.messaging.providers import ConsoleProvider, Provider
from gateway.messaging.ratelimit import LocalRateLimiter, RedisRateLimiter
from gateway.settings import Settings
from gateway.store.db import Store
from gateway.store.migrate import upgrade
from gateway.web.http import CALLERS, CallerCache, error_middleware
from gateway.web.keys import (
    API_OPERATIONS,
    BOT,
    DEPS,
    DISPATCHER,
    INBOX,
    INBOX_WRITER,
    PROVIDERS,
    REDIS,
    RUNNER,
    SETTINGS,
    STATE_STORE,
    STORE,
    TASKS,
)
from gateway.web.operations import Operation

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate: bool | None = None,
    run_background: bool | None = None,
) -> web.Application:
    """Build the gateway application; nothing connects until the app starts."""
    app = web.Application(middlewares=[error_middleware], client_max_size=256 * 1024)
    app[SETTINGS] = settings
    app[DEPS] = Deps.build(settings, clock)
    app[TASKS] = set()
    app[CALLERS] = CallerCache()
    app.cleanup_ctx.append(_store_ctx(migrate if migrate is not None else settings.is_sqlite))
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_providers_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx(settings.run_dispatcher if run_background is None else run_background))
    app.cleanup_ctx.append(_inbox_ctx(settings.run_dispatcher if run_background is None else run_background))

    from gateway.wiring.cases import cases_ctx

    app.cleanup_ctx.append(cases_ctx)

    from gateway.wiring.reminders import overdue_ctx

    app.cleanup_ctx.append(
        overdue_ctx(settings.run_dispatcher if run_background is None else run_background, start_task)
    )

    from gateway.wiring.campaigns import campaigns_ctx

    app.cleanup_ctx.append(
        campaigns_ctx(settings.run_dispatcher if run_background is None else run_background, start_task)
    )

    from gateway.wiring.upload import upload_ctx

    run_upload = settings.run_dispatcher if run_background is None else run_background
    app.cleanup_ctx.append(upload_ctx(run_upload, start_task))

    from gateway.wiring.fraud import fraud_ctx

    app.cleanup_ctx.append(fraud_ctx(settings.run_dispatcher if run_background is None else run_background, start_task))

    from gateway.wiring.stats import stats_ctx

    app.cleanup_ctx.append(stats_ctx(settings.run_dispatcher if run_background is None else run_background, start_task))

    from gateway.web.health import routes as health_routes
    from gateway.web.rating import routes as rating_routes

    app.add_routes(health_routes)
    app.add_routes(rating_routes)
    from gateway.sms.webhooks import routes as sms_routes

    app.add_routes(sms_routes)
    if settings.bot_enabled:  # without a token the bot is off: no route, and the rest works
        from gateway.bot.webhook import mount as mount_bot

        mount_bot(app)

    operations: list[Operation] = []
    for module in api_views():
        app.add_routes(module.routes)
        operations.extend(module.OPERATIONS)
    app[API_OPERATIONS] = tuple(operations)

    from gateway.console.web import build_console, console_ctx

    app.cleanup_ctx.append(console_ctx)
    app.add_subapp("/console", build_console())
    return app


# The department API's views modules. Each exports `routes` (an aiohttp RouteTableDef) and `OPERATIONS`
# (a list of `gateway.web.operations.Operation`): the app registers the first and documents the second.
API_VIEWS = (
    "gateway.evaluations.views",
    "gateway.tickets.views",
    "gateway.callbacks.views",
    "gateway.fraud.views",
    "gateway.stats.views",
    "gateway.web.openapi",
)


def api_views() -> list[ModuleType]:
    """The modules named in `API_VIEWS`, imported."""
    return [importlib.import_module(name) for name in API_VIEWS]


def api_operations() -> list[Operation]:
    """Every documented operation of the department API."""
    return [operation for module in api_views() for operation in module.OPERATIONS]


def _store_ctx(migrate: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = Store.connect(app[SETTINGS].database_url, pool_size=app[SETTINGS].db_pool_size)
        if migrate:
            await upgrade(store.engine)
        app[STORE] = store
        yield
        await store.close()

    return ctx


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    from conversations.state import MemoryStateStore
    from gateway.callbacks.answers import SurveyRecorder
    from gateway.dialogue import Runner
    from gateway.store.locks import LocalLocks, RedisLocks

    if not settings.redis_url:
        app[STATE_STORE] = MemoryStateStore()
        app[RUNNER] = Runner(
            store=app[STORE], states=app[STATE_STORE], locks=LocalLocks(), deps=app[DEPS], surveys=SurveyRecorder()
        )
        yield
        return
    import redis.asyncio as aioredis

    from gateway.store.redis_state import RedisStateStore
    from gateway.store.redis_watch import RedisWatch

    # Timeouts: a Redis that hangs counts as an outage (the processing pauses) instead of stalling it.
    client = aioredis.from_url(settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5)
    app[REDIS] = client
    app[STATE_STORE] = RedisStateStore(client)
    app[RUNNER] = Runner(
        store=app[STORE],
        states=app[STATE_STORE],
        locks=RedisLocks(client),
        deps=app[DEPS],
        surveys=SurveyRecorder(),
        redis_watch=RedisWatch(client),
    )
    yield
    await client.aclose()


async def _providers_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    providers: dict[str, Provider] = {}
    closers: list[Any] = []
    if settings.sms_provider == "twilio":
        from gateway.sms.twilio_provider import TwilioProvider

        twilio = TwilioProvider.from_settings(settings)
        providers["sms"] = twilio
        closers.append(twilio)
    else:
        providers["sms"] = ConsoleProvider()
    if settings.bot_enabled:
        from gateway.bot.provider import TelegramProvider

        telegram = TelegramProvider.from_settings(settings)
        providers["telegram"] = telegram
        closers.append(telegram)
        app[BOT] = telegram.bot  # one Bot (one HTTP session) for sending and for the webhook's answers
    if settings.overdue_reminder_webhook:  # overdue reminders to the departments' system, through the outbox
        from gateway.wiring.reminders import ReminderWebhook

        reminder_webhook = ReminderWebhook.from_settings(settings)
        providers["webhook"] = reminder_webhook
        closers.append(reminder_webhook)
    app[PROVIDERS] = providers
    yield
    for closer in closers:
        await closer.close()


def _dispatcher_ctx(run: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings, deps = app[SETTINGS], app[DEPS]
        redis = app.get(REDIS)
        providers: dict[str, Provider] = app[PROVIDERS]
        limiter = (
            RedisRateLimiter(redis, settings.sms_rate_per_second, watch=app[RUNNER].redis_watch)
            if redis is not None
            else LocalRateLimiter(settings.sms_rate_per_second)
        )
        dispatcher = Dispatcher(
            store=app[STORE],
            providers=providers,
            vault=deps.vault,
            clock=deps.clock,
            quiet=deps.quiet,
            limiter=limiter,
            policy=DispatchPolicy(
                batch_size=settings.dispatch_batch_size,
                max_attempts=settings.dispatch_max_attempts,
                lease_seconds=settings.dispatch_lease_seconds,
                status_callback_url=f"{settings.public_url}/webhooks/twilio/status",
                sms_rate_per_second=settings.sms_rate_per_second,
                sms_signature=settings.sms_signature,
            ),
        )
        app[DISPATCHER] = dispatcher
        if run:
            from gateway.dialogue import run_timers_forever

            start_task(app, dispatcher.run_forever(settings.dispatch_interval_seconds), name="dispatcher")
            start_task(
                app, run_timers_forever(app[RUNNER], max(5.0, settings.dispatch_interval_seconds)), name="timers"
            )
        yield
        await stop_tasks(app)

    return ctx


def _inbox_ctx(run: bool):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        from gateway.sms.inbox import InboxDrainer, InboxPolicy, InboxWriter

        settings = app[SETTINGS]
        writer = InboxWriter(app[STORE])
        app[INBOX_WRITER] = writer
        policy = InboxPolicy(
            batch_size=settings.inbox_batch_size,
            group_size=settings.inbox_group_size,
            lease_seconds=settings.inbox_lease_seconds,
            max_attempts=settings.inbox_max_attempts,
            # SQLite has one writer at a time: side-by-side conversations would only queue.
            concurrency=1 if app[STORE].dialect == "sqlite" else InboxPolicy.concurrency,
        )
        drainer = InboxDrainer(app[RUNNER], policy=policy, on_replies=app[DISPATCHER].wake, intake_busy=writer.busy)
        app[INBOX] = drainer
        if run:
            start_task(app, drainer.run_forever(settings.dispatch_interval_seconds), name="sms-inbox")
        yield
        await writer.close()

    return ctx


def start_task(app: web.Application, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    """Start a background task the app owns (STYLE 12): kept, logged if it dies, cancelled at shutdown."""
    task = asyncio.create_task(coro, name=name)
    app[TASKS].add(task)

    def done(t: asyncio.Task[Any]) -> None:
        app[TASKS].discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("background task %s died", name, exc_info=t.exception())

    task.add_done_callback(done)
    return task


async def stop_tasks(app: web.Application) -> None:
    owned: set[asyncio.Task[Any]] = app[TASKS]
    tasks = list(owned)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
