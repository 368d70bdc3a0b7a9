"""Typed application keys for the objects the app shares (STYLE 1)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import aiogram
    from redis.asyncio import Redis

    from conversations.state import StateStore
    from gateway.deps import Deps
    from gateway.dialogue import Runner
    from gateway.messaging.dispatcher import Dispatcher
    from gateway.messaging.providers import Provider
    from gateway.settings import Settings
    from gateway.sms.inbox import InboxDrainer, InboxWriter
    from gateway.store.db import Store
    from gateway.web.operations import Operation

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
STORE: web.AppKey[Store] = web.AppKey("store")
DEPS: web.AppKey[Deps] = web.AppKey("deps")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
PROVIDERS: web.AppKey[dict[str, Provider]] = web.AppKey("providers")
REDIS: web.AppKey[Redis] = web.AppKey("redis")
STATE_STORE: web.AppKey[StateStore] = web.AppKey("state_store")
TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("tasks")
RUNNER: web.AppKey[Runner] = web.AppKey("conversation_runner")
INBOX_WRITER: web.AppKey[InboxWriter] = web.AppKey("sms_inbox_writer")
INBOX: web.AppKey[InboxDrainer] = web.AppKey("sms_inbox")
# The Telegram bot, when TELEGRAM_BOT_TOKEN is set: the aiogram Bot shared by the outbox provider and the
# webhook handlers (answerCallbackQuery), and the aiogram Dispatcher holding the bot's routers.
BOT: web.AppKey[aiogram.Bot] = web.AppKey("telegram_bot")
BOT_DISPATCHER: web.AppKey[aiogram.Dispatcher] = web.AppKey("telegram_dispatcher")
# The department API's documented operations, collected from the views modules of `gateway.app.API_VIEWS`.
API_OPERATIONS: web.AppKey[tuple[Operation, ...]] = web.AppKey("api_operations")
