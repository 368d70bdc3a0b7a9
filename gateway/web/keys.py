"""Typed application keys for the objects the app shares (STYLE 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.deps import Deps
    from gateway.messaging.dispatcher import Dispatcher
    from gateway.settings import Settings
    from gateway.store.db import Store
    from gateway.web.operations import Operation

SETTINGS: web.AppKey["Settings"] = web.AppKey("settings")
STORE: web.AppKey["Store"] = web.AppKey("store")
DEPS: web.AppKey["Deps"] = web.AppKey("deps")
DISPATCHER: web.AppKey["Dispatcher"] = web.AppKey("dispatcher")
PROVIDERS: web.AppKey[dict[str, Any]] = web.AppKey("providers")
REDIS: web.AppKey[Any] = web.AppKey("redis")
STATE_STORE: web.AppKey[Any] = web.AppKey("state_store")
TASKS: web.AppKey[set[Any]] = web.AppKey("tasks")
RUNNER: web.AppKey[Any] = web.AppKey("conversation_runner")  # gateway.dialogue.Runner
INBOX_WRITER: web.AppKey[Any] = web.AppKey("sms_inbox_writer")  # gateway.sms.inbox.InboxWriter
INBOX: web.AppKey[Any] = web.AppKey("sms_inbox")  # gateway.sms.inbox.InboxDrainer
# The Telegram bot, when TELEGRAM_BOT_TOKEN is set: the aiogram Bot shared by the outbox provider and the
# webhook handlers (answerCallbackQuery), and the aiogram Dispatcher holding the bot's routers.
BOT: web.AppKey[Any] = web.AppKey("telegram_bot")  # aiogram.Bot
BOT_DISPATCHER: web.AppKey[Any] = web.AppKey("telegram_dispatcher")  # aiogram.Dispatcher
# The department API's documented operations, collected from the views modules of `gateway.app.API_VIEWS`.
API_OPERATIONS: web.AppKey[tuple["Operation", ...]] = web.AppKey("api_operations")
