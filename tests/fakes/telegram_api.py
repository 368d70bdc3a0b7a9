"""A loopback stand-in for the Telegram Bot API, and builders for the updates Telegram delivers.

FakeTelegram answers `POST /bot{token}/{method}` with Bot API JSON (`{"ok": true, "result": …}` or
`{"ok": false, "error_code": …, "description": …, "parameters": …}`). aiogram's AiohttpSession posts
every method as a form: urlencoded when no file is attached, multipart otherwise, with nested values
(reply_markup, entities …) as JSON strings. Other clients send JSON bodies or query strings; all are
read into one params dict with Bot API types (ints, bools, objects).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from . import LoopbackServer

BOT_TOKEN = "123456789:AAFakeTokenForTheGatewayTests_0123456"
BOT_USERNAME = "haochaping_test_bot"
BOT_FIRST_NAME = "政务服务好差评"
USER_ID = 700100200

_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
        "allowed_updates",
        "media",
        "commands",
        "scope",
    }
)
_INT_FIELDS = frozenset(
    {
        "chat_id",
        "message_id",
        "from_chat_id",
        "message_thread_id",
        "reply_to_message_id",
        "cache_time",
        "max_connections",
        "offset",
        "limit",
        "timeout",
        "user_id",
    }
)
_BOOL_FIELDS = frozenset(
    {
        "show_alert",
        "disable_notification",
        "protect_content",
        "drop_pending_updates",
        "disable_web_page_preview",
        "allow_sending_without_reply",
    }
)
# Methods that only answer True.
_TRUE_METHODS = frozenset({"answercallbackquery", "sendchataction", "deletemessage", "setmycommands"})

BLOCKED = "Forbidden: bot was blocked by the user"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)


@dataclass(frozen=True)
class Call:
    """One Bot API request the fake received."""

    method: str
    params: dict[str, Any]
    at: datetime
    status: int  # the HTTP status the fake answered


@dataclass
class _Failure:
    remaining: int
    status: int
    description: str
    retry_after: int | None
    chat_id: int | str | None
    method: str | None


class FakeTelegram(LoopbackServer):
    """The Bot API on loopback, recording every call.

    `fail_next(n, 429, retry_after=1)` and `fail_next(n, 403)` inject errors (optionally for one chat
    or one method); `block(chat_id)` makes every call about that chat answer 403 "bot was blocked".
    """

    def __init__(self, token: str = BOT_TOKEN, *, username: str = BOT_USERNAME, first_name: str = BOT_FIRST_NAME):
        super().__init__()
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_user = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.messages: dict[tuple[int | str, int], dict[str, Any]] = {}
        self.blocked: set[int | str] = set()
        self.webhook: dict[str, Any] = {}
        self.delay_seconds = 0.0
        self._failures: list[_Failure] = []
        self._message_ids = itertools.count(1001)

    # -- test controls ----------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        *,
        retry_after: int = 1,
        description: str | None = None,
        chat_id: int | str | None = None,
        method: str | None = None,
    ) -> None:
        """Make the next n matching calls fail (429 carries parameters.retry_after)."""
        if n < 1:
            raise ValueError("n must be at least 1")
        if description is None:
            description = {
                429: f"Too Many Requests: retry after {retry_after}",
                403: BLOCKED,
                400: NOT_MODIFIED,
                401: "Unauthorized",
            }.get(status, "Internal Server Error")
        self._failures.append(
            _Failure(
                remaining=n,
                status=status,
                description=description,
                retry_after=retry_after if status == 429 else None,
                chat_id=_normal_chat(chat_id),
                method=method.lower() if method else None,
            )
        )

    def block(self, chat_id: int | str) -> None:
        """The user behind this chat blocked the bot: every call to the chat answers 403 from now on."""
        self.blocked.add(_normal_chat(chat_id))  # type: ignore[arg-type]

    def unblock(self, chat_id: int | str) -> None:
        self.blocked.discard(_normal_chat(chat_id))  # type: ignore[arg-type]

    def calls_of(self, method: str) -> list[Call]:
        """The recorded calls of one method (case-insensitive), in order."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        """Params of every successful sendMessage."""
        return [c.params for c in self.calls_of("sendMessage") if c.status == 200]

    # -- the server -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        at = datetime.now(timezone.utc)
        await self.pause(self.delay_seconds)
        if request.match_info["token"] != self.token:
            return self._answer(method, params, at, _error(401, "Unauthorized"))
        handler = getattr(self, f"_m_{method.lower()}", None)
        if handler is None and method.lower() not in _TRUE_METHODS:
            return self._answer(method, params, at, _error(404, "Not Found"))
        chat = _normal_chat(params.get("chat_id"))
        failure = self._take_failure(method.lower(), chat)
        if failure is not None:
            parameters = {"retry_after": failure.retry_after} if failure.retry_after is not None else None
            return self._answer(method, params, at, _error(failure.status, failure.description, parameters))
        if chat is not None and chat in self.blocked:
            return self._answer(method, params, at, _error(403, BLOCKED))
        try:
            result = handler(params) if handler is not None else True
        except _BadRequest as exc:
            return self._answer(method, params, at, _error(400, f"Bad Request: {exc}"))
        return self._answer(method, params, at, web.json_response({"ok": True, "result": result}))

    def _answer(self, method: str, params: dict[str, Any], at: datetime, response: web.Response) -> web.Response:
        self.calls.append(Call(method=method, params=params, at=at, status=response.status))
        return response

    def _take_failure(self, method: str, chat: int | str | None) -> _Failure | None:
        for failure in self._failures:
            if failure.method is not None and failure.method != method:
                continue
            if failure.chat_id is not None and failure.chat_id != chat:
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            return failure
        return None

    # -- methods ----------------------------------------------------------------------------------

    def _m_getme(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.bot_user)

    def _m_sendmessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _require_chat(params)
        text = params.get("text")
        if not text:
            raise _BadRequest("message text is empty")
        if len(text) > 4096:
            raise _BadRequest("message is too long")
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": dict(self.bot_user),
            "chat": chat_object(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        markup = params.get("reply_markup")
        # Telegram echoes inline keyboards only; reply keyboards are not part of the Message.
        if isinstance(markup, dict) and markup.get("inline_keyboard"):
            message["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _m_editmessagereplymarkup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        message, known = self._message_to_edit(params)
        markup = params.get("reply_markup")
        new_markup = (
            {"inline_keyboard": markup["inline_keyboard"]}
            if isinstance(markup, dict) and markup.get("inline_keyboard")
            else None
        )
        if known and new_markup == message.get("reply_markup"):
            raise _BadRequest(NOT_MODIFIED.removeprefix("Bad Request: "))
        if new_markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = new_markup
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_editmessagetext(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        text = params.get("text")
        if not text:
            raise _BadRequest("message text is empty")
        if params.get("inline_message_id"):
            return True
        message, known = self._message_to_edit(params)
        markup = params.get("reply_markup")
        new_markup = (
            {"inline_keyboard": markup["inline_keyboard"]}
            if isinstance(markup, dict) and markup.get("inline_keyboard")
            else None
        )
        if known and text == message.get("text") and new_markup == message.get("reply_markup"):
            raise _BadRequest(NOT_MODIFIED.removeprefix("Bad Request: "))
        message["text"] = text
        if new_markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = new_markup
        message["edit_date"] = int(time.time())
        return dict(message)

    def _m_answercallbackquery(self, params: dict[str, Any]) -> bool:
        if not params.get("callback_query_id"):
            raise _BadRequest("query is too old and response timeout expired or query ID is invalid")
        return True

    def _m_setwebhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url") or ""
        self.webhook = {
            "url": url,
            "secret_token": params.get("secret_token"),
            "allowed_updates": params.get("allowed_updates"),
            "max_connections": params.get("max_connections", 40),
            "drop_pending_updates": params.get("drop_pending_updates", False),
        }
        return True

    def _m_deletewebhook(self, params: dict[str, Any]) -> bool:
        self.webhook = {}
        return True

    def _m_getwebhookinfo(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }
        if info["url"]:
            info["max_connections"] = self.webhook.get("max_connections", 40)
            info["ip_address"] = "127.0.0.1"
            if self.webhook.get("allowed_updates"):
                info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    def _message_to_edit(self, params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        chat_id = _require_chat(params)
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise _BadRequest("message identifier is not specified")
        known = self.messages.get((chat_id, message_id))
        if known is not None:
            return known, True
        # A message the fake did not send (one built by an update builder): edit it as if it existed.
        message = {
            "message_id": message_id,
            "from": dict(self.bot_user),
            "chat": chat_object(chat_id),
            "date": int(time.time()),
            "text": "",
        }
        self.messages[(chat_id, message_id)] = message
        return message, False


class _BadRequest(Exception):
    pass


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return web.json_response(payload, status=status)


async def _read_params(request: web.Request) -> dict[str, Any]:
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                raw.update(body)
        else:
            for key, value in (await request.post()).items():
                raw[key] = value if isinstance(value, str) else f"<file {getattr(value, 'filename', key)}>"
    return {key: _typed(key, value) for key, value in raw.items()}


def _typed(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if key in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if key in _INT_FIELDS and value.lstrip("-").isdigit():
        return int(value)
    if key in _BOOL_FIELDS and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _normal_chat(chat_id: Any) -> int | str | None:
    if chat_id is None:
        return None
    if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
        return int(chat_id)
    return chat_id  # type: ignore[no-any-return]


def _require_chat(params: dict[str, Any]) -> int | str:
    chat_id = _normal_chat(params.get("chat_id"))
    if chat_id is None or chat_id == "":
        raise _BadRequest("chat_id is empty")
    return chat_id


def chat_object(chat_id: int | str, *, first_name: str = "张三", title: str = "政务服务群") -> dict[str, Any]:
    """A Chat for an id: positive ids are private chats, -100… supergroups, other negatives groups."""
    if isinstance(chat_id, str):
        return {"id": -1001000000001, "title": title, "username": chat_id.lstrip("@"), "type": "channel"}
    if chat_id > 0:
        return {"id": chat_id, "first_name": first_name, "type": "private"}
    if str(chat_id).startswith("-100"):
        return {"id": chat_id, "title": title, "type": "supergroup"}
    return {"id": chat_id, "title": title, "type": "group"}


# -- updates, as Telegram delivers them to the webhook ----------------------------------------------

_update_ids = itertools.count(880000001)
_incoming_message_ids = itertools.count(501)
_callback_ids = itertools.count(4470000000000000001)


def user_object(
    user_id: int = USER_ID,
    *,
    first_name: str = "张三",
    language_code: str | None = "zh-hans",
    username: str | None = None,
) -> dict[str, Any]:
    """A User (a person, not a bot)."""
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    return user


def bot_user_object(
    token: str = BOT_TOKEN, *, username: str = BOT_USERNAME, first_name: str = BOT_FIRST_NAME
) -> dict[str, Any]:
    """The bot's own User, as it appears in the `from` of messages it sent."""
    return {"id": int(token.split(":", 1)[0]), "is_bot": True, "first_name": first_name, "username": username}


def _message(
    *,
    chat: dict[str, Any],
    sender: dict[str, Any] | None,
    date: int | None,
    message_id: int | None,
    **content: Any,
) -> dict[str, Any]:
    message: dict[str, Any] = {"message_id": message_id if message_id is not None else next(_incoming_message_ids)}
    if sender is not None:
        message["from"] = sender
    message["chat"] = chat
    message["date"] = date if date is not None else int(time.time())
    message.update({k: v for k, v in content.items() if v is not None})
    return message


def _update(kind: str, payload: dict[str, Any], update_id: int | None) -> dict[str, Any]:
    return {"update_id": update_id if update_id is not None else next(_update_ids), kind: payload}


def _command_entities(text: str) -> list[dict[str, Any]] | None:
    if not text.startswith("/"):
        return None
    command = text.split(maxsplit=1)[0]
    return [{"offset": 0, "length": len(command.encode("utf-16-le")) // 2, "type": "bot_command"}]


def text_message_update(
    text: str,
    *,
    user_id: int = USER_ID,
    first_name: str = "张三",
    message_id: int | None = None,
    date: int | None = None,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A private-chat text message from a user (commands get their bot_command entity)."""
    user = user_object(user_id, first_name=first_name)
    message = _message(
        chat={"id": user_id, "first_name": first_name, "type": "private"},
        sender=user,
        date=date,
        message_id=message_id,
        text=text,
        entities=_command_entities(text),
    )
    return _update("message", message, update_id)


def start_update(payload: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """`/start` from a deep link t.me/<bot>?start=<payload> (plain `/start` without a payload)."""
    return text_message_update("/start" if not payload else f"/start {payload}", **kwargs)


def edited_message_update(
    text: str,
    *,
    user_id: int = USER_ID,
    first_name: str = "张三",
    message_id: int | None = None,
    date: int | None = None,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A user edited an earlier private message."""
    sent = date if date is not None else int(time.time()) - 30
    message = _message(
        chat={"id": user_id, "first_name": first_name, "type": "private"},
        sender=user_object(user_id, first_name=first_name),
        date=sent,
        message_id=message_id,
        text=text,
        edit_date=sent + 30,
    )
    return _update("edited_message", message, update_id)


def callback_query_update(
    data: str,
    *,
    user_id: int = USER_ID,
    first_name: str = "张三",
    message_id: int = 1001,
    message_text: str = "请为本次服务评价",
    reply_markup: dict[str, Any] | None = None,
    bot_token: str = BOT_TOKEN,
    callback_id: str | None = None,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A user tapped an inline button of a message the bot sent to their private chat."""
    if reply_markup is None:
        reply_markup = {"inline_keyboard": [[{"text": "5 非常满意", "callback_data": data}]]}
    bot_message = _message(
        chat={"id": user_id, "first_name": first_name, "type": "private"},
        sender=bot_user_object(bot_token),
        date=int(time.time()) - 60,
        message_id=message_id,
        text=message_text,
        reply_markup=reply_markup,
    )
    query = {
        "id": callback_id or str(next(_callback_ids)),
        "from": user_object(user_id, first_name=first_name),
        "message": bot_message,
        "chat_instance": str(-(user_id * 7919 % 10**18)),
        "data": data,
    }
    return _update("callback_query", query, update_id)


def sticker_update(
    *, user_id: int = USER_ID, emoji: str = "👍", message_id: int | None = None, update_id: int | None = None
) -> dict[str, Any]:
    """A private message carrying a sticker and no text."""
    sticker = {
        "file_id": "CAACAgIAAxkBAAEBFakeStickerFileId",
        "file_unique_id": "AgADFakeSticker",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": emoji,
        "file_size": 24576,
    }
    message = _message(
        chat={"id": user_id, "first_name": "张三", "type": "private"},
        sender=user_object(user_id),
        date=None,
        message_id=message_id,
        sticker=sticker,
    )
    return _update("message", message, update_id)


def photo_update(
    *, user_id: int = USER_ID, caption: str | None = None, message_id: int | None = None, update_id: int | None = None
) -> dict[str, Any]:
    """A private message carrying a photo (several sizes), with an optional caption."""
    sizes = [
        {
            "file_id": f"AgACAgUAAxkBAAEFakePhoto{w}",
            "file_unique_id": f"AQADFake{w}",
            "width": w,
            "height": h,
            "file_size": s,
        }
        for w, h, s in ((90, 67, 1234), (320, 240, 15678), (800, 600, 67890))
    ]
    message = _message(
        chat={"id": user_id, "first_name": "张三", "type": "private"},
        sender=user_object(user_id),
        date=None,
        message_id=message_id,
        photo=sizes,
        caption=caption,
    )
    return _update("message", message, update_id)


def group_message_update(
    text: str,
    *,
    chat_id: int = -1001234567890,
    title: str = "政务服务群",
    user_id: int = USER_ID,
    message_id: int | None = None,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A text message in a group the bot was added to (a supergroup for -100… ids)."""
    message = _message(
        chat=chat_object(chat_id, title=title),
        sender=user_object(user_id),
        date=None,
        message_id=message_id,
        text=text,
        entities=_command_entities(text),
    )
    return _update("message", message, update_id)


def channel_post_update(
    text: str,
    *,
    chat_id: int = -1009876543210,
    title: str = "政务公开频道",
    message_id: int | None = None,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A post in a channel the bot administers: no `from`, the channel is the sender_chat."""
    chat = {"id": chat_id, "title": title, "type": "channel"}
    message = _message(chat=chat, sender=None, date=None, message_id=message_id, sender_chat=chat, text=text)
    return _update("channel_post", message, update_id)


__all__ = [
    "BLOCKED",
    "BOT_TOKEN",
    "BOT_USERNAME",
    "USER_ID",
    "Call",
    "FakeTelegram",
    "bot_user_object",
    "callback_query_update",
    "channel_post_update",
    "chat_object",
    "edited_message_update",
    "group_message_update",
    "photo_update",
    "start_update",
    "sticker_update",
    "text_message_update",
    "user_object",
]
