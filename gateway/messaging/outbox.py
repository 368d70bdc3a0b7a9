"""The durable outbox: messages are rows written in the same transaction as the change that causes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.errors import BrokenInvariant
from gateway.messaging.quiet import QuietHours
from gateway.store.models import Citizen, DeliveryAttempt, OutboundMessage

PRIORITY_ANSWER = 0  # a reply to a citizen who just wrote
PRIORITY_NOTICE = 5  # a department's reply to an evaluator
PRIORITY_BULK = 10  # prompts and campaign surveys

# A message's delivery status only moves forward: the provider's callbacks arrive out of order, and
# one may arrive before the dispatcher has recorded the provider's answer to the send.
STATUS_RANK = {
    "queued": 1,
    "accepted": 1,
    "scheduled": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "read": 4,
    "undelivered": 4,
    "failed": 4,
}
FINAL_STATUSES = ("delivered", "undelivered", "failed", "suppressed", "cancelled")


def later_status(current: str, reported: str) -> str:
    """The status a message has once `reported` comes in: never an earlier one than it has."""
    if current in FINAL_STATUSES:
        return current
    return reported if STATUS_RANK.get(reported, 0) > STATUS_RANK.get(current, 0) else current


async def record_delivery_report(
    session: AsyncSession,
    message: OutboundMessage,
    *,
    reported: str,
    outcome: str,
    provider_id: str,
    error_code: str | None,
    error_reason: str | None,
    opt_out: bool,
    detail: str,
    at: datetime,
) -> bool:
    """A provider's report on a message it took: the status only moves forward (reports come out of order),
    an opt-out error (a carrier's opt-out code) opts the citizen out of that channel for good, and the
    report is kept as a delivery attempt. False, and nothing written, when it moves nothing."""
    moved = later_status(message.status, reported)
    if moved == message.status:
        return False
    message.status, message.updated_at = moved, at
    message.provider_message_id = message.provider_message_id or provider_id
    if error_code:
        message.error_code, message.last_error = error_code, error_reason
        if opt_out:
            citizen = await session.get(Citizen, message.citizen_id)
            if citizen is not None:
                record_opt_out(citizen, channel=message.channel, at=at)
    if message.id is None:
        raise BrokenInvariant("message.id is missing")
    session.add(DeliveryAttempt(message_id=message.id, at=at, outcome=outcome, error_code=error_code, detail=detail))
    return True


_PRIORITY = {"reply": PRIORITY_ANSWER, "notice": PRIORITY_NOTICE, "prompt": PRIORITY_BULK, "survey": PRIORITY_BULK}


# The purpose of the one message a chat gets after its 退订: the confirmation, which the dispatcher lets
# through the opt-out (and never turns into an SMS).
OPT_OUT_CONFIRMATION = "opt_out"


def gateway_confirms_opt_out(channel: str) -> bool:
    """Who confirms an opt-out. On SMS the carrier's or Twilio's opt-out service does, and nothing at
    all goes from the gateway to a number after its STOP. On the bot nobody else can: the chat gets the
    conversation's confirmation, the last message before it opts in again."""
    if channel not in ("sms", "telegram"):
        raise ValueError(f"no opt-out on channel {channel!r}")
    return channel == "telegram"


def record_opt_out(citizen: Citizen, *, channel: str, at: datetime) -> bool:
    """Nothing more goes to the citizen on this channel: an SMS opt-out (STOP, 退订, a carrier's opt-out
    code) or a bot the citizen blocked or left with 退订. At once and for good; the first time is kept.
    True when it is new."""
    if channel == "sms":
        if citizen.sms_opted_out_at is not None:
            return False
        citizen.sms_opted_out_at = at
        return True
    if channel == "telegram":
        if citizen.bot_blocked_at is not None:
            return False
        citizen.bot_blocked_at = at
        return True
    raise ValueError(f"no opt-out on channel {channel!r}")


def record_opt_in(citizen: Citizen, *, channel: str) -> None:
    """The citizen takes the channel back (START, 开通, /start, unblocking the bot)."""
    if channel == "sms":
        citizen.sms_opted_out_at = None
    elif channel == "telegram":
        citizen.bot_blocked_at = None
    else:
        raise ValueError(f"no opt-in on channel {channel!r}")


def reachable_channel(citizen: Citizen, *, bot_enabled: bool) -> str | None:
    """The citizen's own channel: the bot if linked and not blocked, else SMS unless opted out."""
    if bot_enabled and citizen.telegram_chat_id is not None and citizen.bot_blocked_at is None:
        return "telegram"
    if citizen.phone_enc is not None and citizen.sms_opted_out_at is None:
        return "sms"
    return None


async def enqueue(
    session: AsyncSession,
    *,
    channel: str,
    citizen: Citizen,
    purpose: str,
    body: str,
    at: datetime,
    quiet: QuietHours,
    buttons: list[Any] | None = None,
    dedupe_key: str | None = None,
    invitation_id: int | None = None,
    ticket_id: int | None = None,
    campaign_id: int | None = None,
    edit_message_id: int | None = None,
    deferred: list[OutboundMessage] | None = None,
) -> OutboundMessage | None:
    """Queue one message; returns None when a message with the same dedupe key exists already. With
    `deferred` (and no dedupe key), the message is appended to that list instead of being written now:
    the caller adds the list to the session at once, so that many messages take one INSERT."""
    if citizen.id is None:
        raise BrokenInvariant("citizen.id is missing")
    if dedupe_key is not None:
        existing = await session.exec(select(OutboundMessage.id).where(OutboundMessage.dedupe_key == dedupe_key))
        if existing.first() is not None:
            return None
    # Prompts and surveys wait for morning on every channel: a bot message at night wakes people too.
    not_before = quiet.hold_until(purpose, at)
    message = OutboundMessage(
        channel=channel,
        citizen_id=citizen.id,
        purpose=purpose,
        priority=_PRIORITY.get(purpose, PRIORITY_BULK),
        body=body,
        buttons=buttons,
        not_before=not_before,
        next_attempt_at=not_before or at,
        dedupe_key=dedupe_key,
        invitation_id=invitation_id,
        ticket_id=ticket_id,
        campaign_id=campaign_id,
        reply_to_chat_message_id=edit_message_id,
        created_at=at,
        updated_at=at,
    )
    if dedupe_key is None:
        if deferred is not None:
            deferred.append(message)
            return message
        session.add(message)
        await session.flush()
        return message
    try:
        async with session.begin_nested():
            session.add(message)
            await session.flush()
    except IntegrityError:  # a concurrent writer queued the same message first
        return None
    return message
