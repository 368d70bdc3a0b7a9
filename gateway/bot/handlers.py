"""The bot's aiogram routers, built per application by `build_dispatcher()` (no module-level Router).

Transports translate, they never decide (STYLE 2): a text or a tapped button becomes an
`Inbound` for `gateway.dialogue.converse`, the same runner as SMS, which records the effects and
queues the replies in the outbox in one transaction. The handlers here only do what is specific to
Telegram: the /start deep link, /my, acknowledging a tap at once, closing an answered keyboard.
Nothing is sent inline except answerCallbackQuery; every update acts once (dedup by update_id).
"""

from __future__ import annotations

import logging

from aiogram import Bot, Dispatcher, F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.exceptions import AiogramError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, ChatMemberUpdated, InlineKeyboardMarkup, Message, Update

from conversations import Inbound, Reply, rating_prompt
from conversations.buttons import ReasonSubmit, parse_button
from gateway.bot import texts
from gateway.bot.chats import (
    CODE_VALID_SECONDS,
    Link,
    answer_code,
    as_code,
    chat_citizen,
    citizen_id_for_chat,
    ensure_chat_citizen,
    first_delivery,
    invitation_ref,
    is_blank,
    link_chat,
    new_chat_citizen,
    pending_challenge,
    queue_reply,
)
from gateway.bot.mine import my_evaluations
from gateway.deps import Deps
from gateway.dialogue import Runner, converse
from gateway.errors import BrokenInvariant
from gateway.messaging.outbox import record_opt_in, record_opt_out
from gateway.store.models import Citizen

log = logging.getLogger(__name__)

CHANNEL = "telegram"
ACK_TIMEOUT_SECONDS = 5  # answerCallbackQuery is best-effort: a slow answer must not hold the webhook
TICK = "✅"  # conversations.render marks the selected choices of a multi-select keyboard with it


def build_dispatcher() -> Dispatcher:
    """A fresh aiogram Dispatcher with the gateway's routers; each app builds its own."""
    dispatcher = Dispatcher(disable_fsm=True, name="gateway-bot")  # conversation state lives in conversations/
    dispatcher.include_router(_private_chats())
    return dispatcher


def _private_chats() -> Router:
    # Private chats only: a chat is one citizen. Groups and channels are not served; their updates
    # match no handler and are answered 200 with nothing done.
    router = Router(name="private-chats")
    private = F.chat.type == ChatType.PRIVATE
    router.message.filter(private)
    router.edited_message.filter(private)
    router.my_chat_member.filter(private)
    router.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)

    router.message.register(on_start, CommandStart())
    router.message.register(on_my, Command("my"))
    router.message.register(on_help, Command("help"))
    router.message.register(on_text, F.text)
    router.message.register(on_other_message)
    router.edited_message.register(on_edited_message)
    router.callback_query.register(on_button)
    router.my_chat_member.register(on_member_status)
    return router


# Commands.


async def on_start(message: Message, command: CommandObject, runner: Runner, event_update: Update) -> None:
    """/start: with a deep-link token, link the chat and show that service's prompt; without, say what this is."""
    deps, chat_id = runner.deps, message.chat.id
    async with runner.store.transaction() as session:
        if not await first_delivery(session, event_update.update_id, None, deps.clock.now()):
            return
        token = (command.args or "").strip()
        if token:
            link = await link_chat(session, chat_id=chat_id, token=token, deps=deps)
            citizen, reply = link.citizen, _link_reply(link, deps)
            log.info("deep link", extra={"result": link.result, "citizen_id": citizen.id})
        else:
            citizen = await chat_citizen(session, chat_id) or await new_chat_citizen(session, chat_id, deps.clock.now())
            about = [texts.ABOUT] + ([texts.HOW_TO_LINK] if await is_blank(session, citizen) else []) + [texts.COMMANDS]
            reply = Reply("\n".join(about))
        # Pressing Start re-opens the chat after a block or a TD, as START does by SMS.
        record_opt_in(citizen, channel=CHANNEL)
        await queue_reply(session, deps, citizen, reply)


def _link_reply(link: Link, deps: Deps) -> Reply:
    invitation = link.invitation
    if invitation is None or link.result == "invalid":
        return Reply(texts.LINK_INVALID)
    if link.result == "expired":
        return Reply(texts.LINK_EXPIRED)
    if link.result == "invitation_elsewhere":
        return Reply(texts.invitation_elsewhere(deps.rating_url(invitation.token)))
    if link.result == "chat_elsewhere":
        return Reply(texts.chat_elsewhere(deps.rating_url(invitation.token)))
    if link.result == "code_sent":
        minutes = CODE_VALID_SECONDS // 60
        return Reply(texts.code_sent(link.phone_masked or "", minutes, deps.rating_url(invitation.token)))
    if link.result == "too_many":
        return Reply(texts.too_many_codes(deps.rating_url(invitation.token)))
    if link.result == "unverifiable":
        return Reply(texts.unverifiable(deps.rating_url(invitation.token)))
    if link.result == "code_wrong":
        return Reply(texts.code_wrong(link.attempts_left))
    if link.result == "code_failed":
        return Reply(texts.CODE_FAILED)
    if link.result == "code_expired":
        return Reply(texts.CODE_EXPIRED)
    lead = texts.LINKED + "\n" if link.result == "linked" else ""
    if invitation.status != "open":
        return Reply(lead + texts.ALREADY_RATED)
    prompt = rating_prompt(invitation_ref(invitation, deps.settings.timezone))
    return Reply(lead + prompt.text, prompt.choices)


async def on_my(message: Message, runner: Runner, event_update: Update) -> None:
    """/my: recent evaluations, their work orders and the departments' replies."""

    async def answer(session, citizen: Citizen) -> Reply:  # type: ignore[no-untyped-def]
        if citizen.id is None:
            raise BrokenInvariant("citizen.id is missing")
        text = await my_evaluations(session, citizen_id=citizen.id, deps=runner.deps)
        if text == texts.MY_EMPTY and await is_blank(session, citizen):
            text += "\n" + texts.HOW_TO_LINK
        return Reply(text)

    await _answer_command(runner, message.chat.id, event_update.update_id, answer)


async def on_help(message: Message, runner: Runner, event_update: Update) -> None:
    async def answer(session, citizen: Citizen) -> Reply:  # type: ignore[no-untyped-def]
        return Reply(texts.HELP)

    await _answer_command(runner, message.chat.id, event_update.update_id, answer)


async def _answer_command(runner: Runner, chat_id: int, update_id: int, answer) -> None:  # type: ignore[no-untyped-def]
    deps = runner.deps
    citizen_id = await ensure_chat_citizen(runner.store, deps, chat_id)
    async with runner.store.transaction() as session:
        if not await first_delivery(session, update_id, citizen_id, deps.clock.now()):
            return
        citizen = await session.get(Citizen, citizen_id)
        # After TD (or a block) nothing is sent to the chat until /start; the outbox would carry
        # a bot message to the citizen's SMS instead, which is not what a /my typed here asked for.
        if citizen is None or citizen.bot_blocked_at is not None:
            return
        await queue_reply(session, deps, citizen, await answer(session, citizen))


# Messages: the conversation.


async def on_text(message: Message, runner: Runner, event_update: Update) -> None:
    """Typed text goes to the conversation, read with the same grammar as an SMS (a link code first)."""
    code = as_code(message.text or "")
    if code is not None and await _answered_code(runner, message.chat.id, code, event_update.update_id):
        return
    citizen_id = await ensure_chat_citizen(runner.store, runner.deps, message.chat.id)
    await converse(
        runner,
        channel=CHANNEL,
        citizen_id=citizen_id,
        update_id=event_update.update_id,
        inbound=Inbound(kind="text", at=runner.deps.clock.now(), text=message.text or ""),
    )


async def _answered_code(runner: Runner, chat_id: int, code: str, update_id: int) -> bool:
    """Six digits while the chat waits for a link code are that code's answer; False when none is awaited."""
    deps = runner.deps
    async with runner.store.transaction() as session:
        challenge = await pending_challenge(session, chat_id)
        if challenge is None:
            return False
        if not await first_delivery(session, update_id, None, deps.clock.now()):
            return True
        link = await answer_code(session, chat_id=chat_id, challenge=challenge, code=code, deps=deps)
        record_opt_in(link.citizen, channel=CHANNEL)
        log.info("link code answered", extra={"result": link.result, "citizen_id": link.citizen.id})
        await queue_reply(session, deps, link.citizen, _link_reply(link, deps))
    return True


async def on_other_message(message: Message, runner: Runner, event_update: Update) -> None:
    """Stickers, photos, voice …: a caption is read as text; without one the flow gives its short help."""
    citizen_id = await citizen_id_for_chat(runner.store, message.chat.id)
    if citizen_id is None:  # not a chat the gateway knows: nothing to answer about
        return
    await converse(
        runner,
        channel=CHANNEL,
        citizen_id=citizen_id,
        update_id=event_update.update_id,
        inbound=Inbound(kind="text", at=runner.deps.clock.now(), text=message.caption or ""),
    )


async def on_edited_message(message: Message, runner: Runner, event_update: Update) -> None:
    """An edit is not read again: what was recorded stays (Art. 19); the citizen is told so."""
    citizen_id = await citizen_id_for_chat(runner.store, message.chat.id)
    if citizen_id is None:
        return

    async def answer(session, citizen: Citizen) -> Reply:  # type: ignore[no-untyped-def]
        return Reply(texts.EDITED)

    await _answer_command(runner, message.chat.id, event_update.update_id, answer)


# Buttons.


async def on_button(query: CallbackQuery, bot: Bot, runner: Runner, event_update: Update) -> None:
    """A tap: acknowledged at once, then handed to the conversation like any input."""
    await _acknowledge(bot, query)
    message = query.message
    if message is None:
        return
    citizen_id = await citizen_id_for_chat(runner.store, message.chat.id)
    if citizen_id is None:
        return
    # The runner loads only this citizen's invitations: data naming anybody else's records nothing.
    outcome = await converse(
        runner,
        channel=CHANNEL,
        citizen_id=citizen_id,
        update_id=event_update.update_id,
        inbound=Inbound(kind="button", at=runner.deps.clock.now(), data=query.data or ""),
        source_message_id=message.message_id,
    )
    # The conversation says whether the tap answered its keyboard's question (`Transition.answered`).
    if outcome.duplicate or outcome.transition is None or not outcome.transition.answered:
        return
    if isinstance(message, Message) and message.text:
        await _close_keyboard(runner, citizen_id, message, query.data or "", event_update.update_id)


async def _acknowledge(bot: Bot, query: CallbackQuery) -> None:
    # Until answered, the client shows a spinner on the button. Best-effort: the tap is handled anyway.
    try:
        await bot.answer_callback_query(callback_query_id=query.id, request_timeout=ACK_TIMEOUT_SECONDS)
    except AiogramError as exc:
        log.info("callback query not acknowledged", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})


async def _close_keyboard(runner: Runner, citizen_id: int, message: Message, data: str, update_id: int) -> None:
    """Replace an answered keyboard by the choice, so the message shows what was recorded."""
    deps = runner.deps
    body = f"{message.text}\n\n{texts.chosen(chosen_labels(message.reply_markup, data))}"
    async with runner.store.transaction() as session:
        citizen = await session.get(Citizen, citizen_id)
        if citizen is None or citizen.bot_blocked_at is not None:
            return
        await queue_reply(
            session, deps, citizen, Reply(body), edit_message_id=message.message_id, dedupe_key=f"tg-close:{update_id}"
        )


def chosen_labels(markup: InlineKeyboardMarkup | None, data: str) -> list[str]:
    """The captions of what was chosen: the tapped button, or the ticked ones when 提交 was tapped."""
    buttons = [button for row in (markup.inline_keyboard if markup else []) for button in row]
    if isinstance(parse_button(data), ReasonSubmit):  # 提交: what was ticked
        return [b.text.removeprefix(TICK).strip() for b in buttons if b.text.startswith(TICK)]
    return [b.text for b in buttons if b.callback_data == data][:1]


# Chat membership.


async def on_member_status(event: ChatMemberUpdated, runner: Runner, event_update: Update) -> None:
    """Telegram says the user blocked (or unblocked) the bot: prompts go by SMS meanwhile."""
    status = event.new_chat_member.status
    if status not in (ChatMemberStatus.KICKED, ChatMemberStatus.MEMBER):
        return
    now = runner.deps.clock.now()
    async with runner.store.transaction() as session:
        citizen = await chat_citizen(session, event.chat.id)
        if citizen is None or not await first_delivery(session, event_update.update_id, citizen.id, now):
            return
        if status == ChatMemberStatus.KICKED:
            record_opt_out(citizen, channel=CHANNEL, at=now)
        else:
            record_opt_in(citizen, channel=CHANNEL)
        log.info("bot membership changed", extra={"citizen_id": citizen.id, "status": str(status)})


__all__ = ["build_dispatcher", "chosen_labels"]
