"""POST /webhooks/telegram: Telegram's updates, checked against the webhook secret before anything else.

Telegram sends the secret given to setWebhook in X-Telegram-Bot-Api-Secret-Token on every call; a call
without it (or with another) is answered 401 before the body is read, and nothing is recorded. A
genuine update is handled in the request (the database work takes milliseconds; the replies are only
queued) and answered 200, also when it is of a kind the bot ignores. An unexpected error is answered
500 so that Telegram delivers the update again; the update id makes the second delivery act once.
While Redis (the conversation state) is unreachable the answer is 503, with one log line per outage.
"""

from __future__ import annotations

import hmac
import json
import logging
import re

from aiogram.exceptions import AiogramError
from aiogram.types import BotCommand, Update
from aiogram.types.update import UpdateTypeLookupError
from aiohttp import web
from pydantic import ValidationError

from gateway.bot.handlers import build_dispatcher
from gateway.bot.provider import make_bot
from gateway.settings import Settings
from gateway.store.redis_watch import is_outage
from gateway.web.keys import BOT, BOT_DISPATCHER, DISPATCHER, RUNNER, SETTINGS

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# What Telegram accepts as a secret_token (setWebhook): 1-256 characters A-Z, a-z, 0-9, _ and -.
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")

COMMANDS = (("start", "开始使用"), ("my", "我的评价和差评办理进度"), ("help", "使用说明"))


def mount(app: web.Application) -> None:
    """Add the webhook route and the bot's dispatcher to the app (only when the bot is configured)."""
    settings = app[SETTINGS]
    if not settings.telegram_webhook_secret.get_secret_value():
        log.warning("TELEGRAM_WEBHOOK_SECRET is empty: every call to %s is refused until it is set", WEBHOOK_PATH)
    app[BOT_DISPATCHER] = build_dispatcher()
    app.router.add_post(WEBHOOK_PATH, telegram_webhook)


def _authentic(request: web.Request) -> bool:
    expected = request.app[SETTINGS].telegram_webhook_secret.get_secret_value()
    given = request.headers.get(SECRET_HEADER)
    if not expected or given is None:
        return False
    # Bytes, so a header with non-ASCII characters compares (unequal) instead of raising.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


async def telegram_webhook(request: web.Request) -> web.Response:
    if not _authentic(request):  # before the body is read (STYLE 6)
        log.warning("telegram webhook with a missing or wrong secret refused")
        return web.Response(status=401, text="unauthorized")
    try:
        data = json.loads(await request.read())
    except ValueError:
        return web.Response(status=400, text="the body is not JSON")
    if not isinstance(data, dict):
        return web.Response(status=400, text="the body is not a JSON object")
    app = request.app
    bot = app[BOT]
    try:
        update = Update.model_validate(data, context={"bot": bot})
        kind = update.event_type
    except (ValidationError, UpdateTypeLookupError) as exc:
        # A kind of update this version does not know (the Bot API grows): nothing to do, and a
        # retry would not change that.
        log.info("telegram update ignored", extra={"update_id": data.get("update_id"), "reason": type(exc).__name__})
        return web.Response(status=200)
    watch = app[RUNNER].redis_watch
    if watch is not None and not await watch.ready():
        return _redis_down()
    try:
        await app[BOT_DISPATCHER].feed_update(bot, update, runner=app[RUNNER])
    except Exception as exc:
        if watch is None or not is_outage(exc):
            raise
        watch.report(exc)
        return _redis_down()
    log.debug("telegram update handled", extra={"update_id": update.update_id, "kind": kind})
    app[DISPATCHER].wake()  # the replies are in the outbox: send them now rather than at the next poll
    return web.Response(status=200)


def _redis_down() -> web.Response:
    # Telegram delivers the update again later (the update id keeps it to one effect): nothing is lost
    # while Redis, which holds the conversation state, cannot be reached.
    return web.Response(status=503, text="conversation state unavailable; deliver again later")


class WebhookSetupError(Exception):
    """The settings cannot register a webhook; the message says which and why."""


async def register_webhook(settings: Settings, *, drop_pending_updates: bool = False) -> tuple[str, list[str]]:
    """setWebhook to GATEWAY_PUBLIC_URL + /webhooks/telegram with the secret, for the update kinds the
    routers handle; also sets the command menu. Returns the URL and the update kinds."""
    if not settings.bot_enabled:
        raise WebhookSetupError("TELEGRAM_BOT_TOKEN is not set: the bot is off")
    secret = settings.telegram_webhook_secret.get_secret_value()
    if not _SECRET.fullmatch(secret):
        raise WebhookSetupError(
            "TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ - (Telegram's rule); generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    url = settings.public_url + WEBHOOK_PATH
    allowed = build_dispatcher().resolve_used_update_types()
    bot = make_bot(settings)
    try:
        await bot.set_webhook(
            url=url, secret_token=secret, allowed_updates=allowed, drop_pending_updates=drop_pending_updates
        )
        await bot.set_my_commands([BotCommand(command=name, description=words) for name, words in COMMANDS])
    except AiogramError as exc:
        raise WebhookSetupError(f"Telegram refused the webhook {url}: {exc}") from None
    finally:
        await bot.session.close()
    return url, allowed


__all__ = ["SECRET_HEADER", "WEBHOOK_PATH", "WebhookSetupError", "mount", "register_webhook", "telegram_webhook"]
