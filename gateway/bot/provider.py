"""The Telegram provider: the dispatcher sends the bot's outbox rows through aiogram's Bot.

It translates Telegram's answers into the outbox's terms (`Sent` / `SendFailed`): 429 carries
Telegram's own `retry_after`, 403 means the citizen blocked the bot (an opt-out: the dispatcher records
it and re-sends the words by SMS), "message is not modified" means the edit is already there.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    AiogramError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramRetryAfter,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from gateway.messaging.providers import Outgoing, SendFailed, Sent
from gateway.settings import Settings

log = logging.getLogger(__name__)

# Seconds for one Bot API call; the dispatcher retries a call that timed out.
REQUEST_TIMEOUT_SECONDS = 30
# Telegram's limit for one message text.
MAX_TEXT_CHARS = 4096

# Edits that cannot be done (the message is gone, or older than Telegram allows to edit): the words
# are sent as a new message instead, so the citizen still sees them.
_CANNOT_EDIT = ("message to edit not found", "message can't be edited", "message_id_invalid")


def make_bot(settings: Settings) -> Bot:
    """The aiogram Bot, pointed at TELEGRAM_API_BASE (a loopback fake in tests)."""
    session = AiohttpSession(
        api=TelegramAPIServer.from_base(settings.telegram_api_base), timeout=REQUEST_TIMEOUT_SECONDS
    )
    # Plain text only: citizens' and departments' words must never be read as HTML or Markdown.
    default = DefaultBotProperties(parse_mode=None, link_preview_is_disabled=True)
    return Bot(token=settings.telegram_bot_token.get_secret_value(), session=session, default=default)


def keyboard(rows: list[Any] | None) -> InlineKeyboardMarkup | None:
    """The outbox's button rows ({"text", "data"}) as an inline keyboard; None for no buttons."""
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=str(b["text"]), callback_data=str(b["data"])) for b in row]
            for row in rows
            if row
        ]
    )


class TelegramProvider:
    """Sends through the Bot API; `bot` is shared with the webhook handlers (answerCallbackQuery)."""

    channel = "telegram"

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramProvider:
        return cls(make_bot(settings))

    async def send(self, message: Outgoing) -> Sent:
        """sendMessage, or an edit of the message the tapped button was on (edit_message_id)."""
        try:
            chat_id = int(message.to)
        except ValueError:
            raise SendFailed("the chat id is not a number", code="chat_id", permanent=True) from None
        text = message.body[:MAX_TEXT_CHARS]
        markup = keyboard(message.buttons)
        try:
            if message.edit_message_id is None:
                return _sent(await self.bot.send_message(chat_id=chat_id, text=text, reply_markup=markup))
            try:
                if text:
                    result = await self.bot.edit_message_text(
                        chat_id=chat_id, message_id=message.edit_message_id, text=text, reply_markup=markup
                    )
                else:
                    result = await self.bot.edit_message_reply_markup(
                        chat_id=chat_id, message_id=message.edit_message_id, reply_markup=markup
                    )
            except TelegramBadRequest as exc:
                if _not_modified(exc):
                    return Sent(provider_message_id=str(message.edit_message_id))
                if text and any(reason in exc.message.lower() for reason in _CANNOT_EDIT):
                    log.info("message could not be edited; sending it anew", extra={"message_id": message.message_id})
                    return _sent(await self.bot.send_message(chat_id=chat_id, text=text, reply_markup=markup))
                raise
            return (
                _sent(result) if isinstance(result, Message) else Sent(provider_message_id=str(message.edit_message_id))
            )
        except TelegramRetryAfter as exc:
            raise SendFailed(exc.message, code="429", retry_after_seconds=float(exc.retry_after)) from None
        except TelegramForbiddenError as exc:
            # Blocked by the user, or the account is deactivated: nothing will reach this chat again.
            raise SendFailed(exc.message, code="403", permanent=True, opt_out=True) from None
        except TelegramBadRequest as exc:
            if _not_modified(exc):
                return Sent(provider_message_id=str(message.edit_message_id or ""))
            raise SendFailed(exc.message, code="400", permanent=True) from None
        except TelegramMigrateToChat as exc:  # a group chat: the bot serves private chats only
            raise SendFailed(exc.message, code="migrated", permanent=True) from None
        except AiogramError as exc:
            # Network errors, 5xx, timeouts, an undecodable answer, and configuration faults (401, 404)
            # an operator can fix: all retried with backoff by the dispatcher.
            code = type(exc).__name__[:32]
            raise SendFailed(str(exc) or code, code=code) from None

    async def close(self) -> None:
        await self.bot.session.close()


def _sent(message: Message) -> Sent:
    return Sent(provider_message_id=str(message.message_id))


def _not_modified(exc: TelegramBadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


__all__ = ["REQUEST_TIMEOUT_SECONDS", "TelegramProvider", "keyboard", "make_bot"]
