"""Which citizen a private chat speaks for (Citizen.telegram_chat_id, unique), and deep-link linking.

A chat gets a citizen row the first time its user writes (the outbox needs someone to answer); such a
row holds only the chat id until a deep link `t.me/<bot>?start=<invitation token>` binds the chat to
the invitation's citizen. Linking never takes a chat or a citizen away from someone else: the token is
a bearer link (a forwarded SMS carries it too), so it may rate that one service on the page, but it
must not redirect another person's later invitations, evaluations and ticket replies to a new chat.
So a chat is bound to a citizen who has a phone number only after its user answers, in the chat, a
code sent by SMS to that number (`ChatLinkChallenge`), with attempts limited per chat and per citizen.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from conversations import Reply
from gateway.bot import texts
from gateway.bot.models import ChatLinkChallenge
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.dialogue import invitation_ref, render_buttons
from gateway.errors import BrokenInvariant
from gateway.evaluations.errors import InvitationNotFound
from gateway.evaluations.service import invitation_by_token
from gateway.messaging.outbox import enqueue, record_opt_in
from gateway.store.db import Store
from gateway.store.models import BotUpdate, Citizen, Evaluation, Invitation, OutboundMessage
from gateway.store.upsert import insert_if_absent

log = logging.getLogger(__name__)


LinkResult = Literal[
    "linked",
    "already",
    "invalid",
    "expired",
    "invitation_elsewhere",
    "chat_elsewhere",
    # proof of the phone (a code sent by SMS, answered in the chat)
    "code_sent",
    "too_many",
    "unverifiable",
    "code_wrong",
    "code_failed",
    "code_expired",
]

CODE_DIGITS = 6
CODE_VALID_SECONDS = 600  # a code answers within 10 minutes
CODE_MAX_WRONG = 5  # wrong answers to one code before it is void
LIMIT_WINDOW_SECONDS = 86_400  # the codes counted for the two limits below: those of the last 24 hours
CODES_PER_CITIZEN = 3  # an SMS with a code to one phone: a forwarded link cannot flood the citizen
CODES_PER_CHAT = 5  # codes one chat may ask for, whatever the links it holds


async def chat_citizen(session: AsyncSession, chat_id: int) -> Citizen | None:
    return (await session.exec(select(Citizen).where(Citizen.telegram_chat_id == chat_id))).first()


async def citizen_id_for_chat(store: Store, chat_id: int) -> int | None:
    """The citizen a chat speaks for, or None when it never wrote and was never linked."""
    async with store.transaction() as session:
        citizen = await chat_citizen(session, chat_id)
        return citizen.id if citizen is not None else None


async def ensure_chat_citizen(store: Store, deps: Deps, chat_id: int) -> int:
    """The chat's citizen, created on first contact (needed to answer through the outbox)."""
    for _ in range(2):
        async with store.transaction() as session:
            found = await chat_citizen(session, chat_id)
            if found is not None:
                if found.id is None:
                    raise BrokenInvariant("found.id is missing")
                return found.id
            try:
                citizen = await new_chat_citizen(session, chat_id, deps.clock.now())
            except IntegrityError:
                continue  # a concurrent update from the same chat created it first: read it
            if citizen.id is None:
                raise BrokenInvariant("citizen.id is missing")
            return citizen.id
    raise RuntimeError("could not resolve the chat's citizen")


async def new_chat_citizen(session: AsyncSession, chat_id: int, at: datetime) -> Citizen:
    citizen = Citizen(telegram_chat_id=chat_id, created_at=at)
    async with session.begin_nested():
        session.add(citizen)
        await session.flush()
    return citizen


async def first_delivery(session: AsyncSession, update_id: int, citizen_id: int | None, at: datetime) -> bool:
    """Record the update id; False when Telegram delivered this update before (it re-delivers)."""
    return await insert_if_absent(session, BotUpdate, update_id=update_id, citizen_id=citizen_id, processed_at=at)


@dataclass
class Link:
    result: LinkResult
    citizen: Citizen  # whom the chat speaks for now (the one to answer)
    invitation: Invitation | None
    phone_masked: str | None = None  # where the code went (code_sent)
    attempts_left: int = 0  # code_wrong


async def link_chat(session: AsyncSession, *, chat_id: int, token: str, deps: Deps) -> Link:
    """Bind the chat to the citizen of the invitation behind a deep-link token, where that is safe."""
    now = deps.clock.now()
    here = await chat_citizen(session, chat_id)

    async def answerer() -> Citizen:
        return here if here is not None else await new_chat_citizen(session, chat_id, now)

    try:
        invitation = await invitation_by_token(session, token)
    except InvitationNotFound:
        return Link("invalid", await answerer(), None)
    # A link works only while its service can still be rated (Art. 11: 7 working days), so an old
    # SMS found later cannot bind anybody's chat.
    if now >= as_utc(invitation.expires_at):
        return Link("expired", await answerer(), invitation)
    owner = await session.get(Citizen, invitation.citizen_id) if invitation.citizen_id is not None else None
    if owner is None:
        # A case reported without contact details: whoever holds its link is its evaluator.
        citizen = await answerer()
        invitation.citizen_id = citizen.id
        await session.flush()
        return Link("linked", citizen, invitation)
    if here is not None and here.id == owner.id:
        return Link("already", owner, invitation)
    if owner.telegram_chat_id is not None:
        return Link("invitation_elsewhere", await answerer(), invitation)
    if here is not None and not await is_blank(session, here):
        return Link("chat_elsewhere", here, invitation)
    if owner.phone_enc is not None:
        # Holding the link proves nothing (SMS are forwarded); holding the phone does.
        return await _send_code(
            session, chat_id=chat_id, owner=owner, invitation=invitation, answerer=await answerer(), deps=deps
        )
    return await _bind(session, chat_id=chat_id, here=here, owner=owner, invitation=invitation)


async def _bind(
    session: AsyncSession, *, chat_id: int, here: Citizen | None, owner: Citizen, invitation: Invitation
) -> Link:
    if here is not None:
        # The chat's row holds nothing but the chat id (it wrote before being linked): the chat
        # moves to the invitation's citizen; the empty row stays, as the messages sent to it refer to it.
        here.telegram_chat_id = None
        await session.flush()
    owner.telegram_chat_id = chat_id
    record_opt_in(owner, channel="telegram")  # a newly linked chat is open
    await session.flush()
    return Link("linked", owner, invitation)


def _code_hash(deps: Deps, chat_id: int, code: str) -> str:
    # Keyed, and bound to the chat: the code proves the phone only in the chat that asked for it.
    return deps.vault.lookup_hash(f"tg-link:{chat_id}:{code}")


async def _send_code(
    session: AsyncSession, *, chat_id: int, owner: Citizen, invitation: Invitation, answerer: Citizen, deps: Deps
) -> Link:
    """Queue a one-time code to the owner's phone (same transaction as the challenge), within the limits."""
    now = deps.clock.now()
    if owner.sms_opted_out_at is not None:
        return Link("unverifiable", answerer, invitation)  # an opted-out number is never messaged again
    since = now - timedelta(seconds=LIMIT_WINDOW_SECONDS)
    recent = select(func.count()).select_from(ChatLinkChallenge).where(col(ChatLinkChallenge.created_at) >= since)
    per_citizen = (await session.exec(recent.where(ChatLinkChallenge.citizen_id == owner.id))).one()
    per_chat = (await session.exec(recent.where(ChatLinkChallenge.chat_id == chat_id))).one()
    if per_citizen >= CODES_PER_CITIZEN or per_chat >= CODES_PER_CHAT:
        log.info(
            "link code refused: limit",
            extra={"citizen_id": owner.id, "per_citizen": per_citizen, "per_chat": per_chat},
        )
        return Link("too_many", answerer, invitation)
    # A new code replaces the chat's earlier one: only the latest is answered.
    table = ChatLinkChallenge.__table__  # type: ignore[attr-defined]  # a Core UPDATE; SQLModel's stubs omit __table__
    await session.exec(
        update(table)
        .where(table.c.chat_id == chat_id, table.c.status == "pending")
        .values(status="superseded", resolved_at=now)
    )
    if owner.id is None:
        raise BrokenInvariant("owner.id is missing")
    if invitation.id is None:
        raise BrokenInvariant("invitation.id is missing")
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    challenge = ChatLinkChallenge(
        chat_id=chat_id,
        citizen_id=owner.id,
        invitation_id=invitation.id,
        code_hash=_code_hash(deps, chat_id, code),
        created_at=now,
        expires_at=now + timedelta(seconds=CODE_VALID_SECONDS),
    )
    session.add(challenge)
    await session.flush()
    await enqueue(
        session,
        channel="sms",
        citizen=owner,
        purpose="reply",
        at=now,
        quiet=deps.quiet,
        body=texts.link_code_sms(deps.settings.sms_signature, code, CODE_VALID_SECONDS // 60),
        dedupe_key=f"tg-link-code:{challenge.id}",
    )
    log.info("link code sent", extra={"citizen_id": owner.id, "challenge_id": challenge.id})
    return Link("code_sent", answerer, invitation, phone_masked=owner.phone_masked)


def as_code(text: str) -> str | None:
    """The code in a chat message: six digits (full-width too), spaces around allowed; else None."""
    normalised = unicodedata.normalize("NFKC", text).strip()
    if len(normalised) == CODE_DIGITS and normalised.isascii() and normalised.isdigit():
        return normalised
    return None


async def pending_challenge(session: AsyncSession, chat_id: int) -> ChatLinkChallenge | None:
    """The chat's latest unanswered code, if any (expired ones included: the answer says so)."""
    return (
        await session.exec(
            select(ChatLinkChallenge)
            .where(ChatLinkChallenge.chat_id == chat_id, ChatLinkChallenge.status == "pending")
            .order_by(col(ChatLinkChallenge.id).desc())
        )
    ).first()


async def answer_code(
    session: AsyncSession, *, chat_id: int, challenge: ChatLinkChallenge, code: str, deps: Deps
) -> Link:
    """Check a code typed in the chat; the right one binds the chat to the citizen whose phone got it."""
    now = deps.clock.now()
    here = await chat_citizen(session, chat_id)
    if here is None:
        here = await new_chat_citizen(session, chat_id, now)
    invitation = await session.get(Invitation, challenge.invitation_id)
    if now >= as_utc(challenge.expires_at):
        challenge.status, challenge.resolved_at = "expired", now
        return Link("code_expired", here, invitation)
    if not hmac.compare_digest(_code_hash(deps, chat_id, code), challenge.code_hash):
        challenge.attempts += 1
        if challenge.attempts >= CODE_MAX_WRONG:
            challenge.status, challenge.resolved_at = "failed", now
            log.info("link code failed", extra={"challenge_id": challenge.id})
            return Link("code_failed", here, invitation)
        return Link("code_wrong", here, invitation, attempts_left=CODE_MAX_WRONG - challenge.attempts)
    challenge.status, challenge.resolved_at = "verified", now
    owner = await session.get(Citizen, challenge.citizen_id)
    if owner is None or invitation is None:
        return Link("invalid", here, invitation)
    # What held when the code was sent is checked again: the moments between are not trusted.
    if here.id == owner.id:
        return Link("already", owner, invitation)
    if owner.telegram_chat_id is not None:
        return Link("invitation_elsewhere", here, invitation)
    if not await is_blank(session, here):
        return Link("chat_elsewhere", here, invitation)
    log.info("chat linked after code", extra={"citizen_id": owner.id, "challenge_id": challenge.id})
    return await _bind(session, chat_id=chat_id, here=here, owner=owner, invitation=invitation)


async def is_blank(session: AsyncSession, citizen: Citizen) -> bool:
    """A citizen row with no phone, no invitation and no evaluation: only a chat that wrote once."""
    if citizen.phone_hash is not None or citizen.phone_enc is not None:
        return False
    if (
        await session.exec(select(Invitation.id).where(Invitation.citizen_id == citizen.id).limit(1))
    ).first() is not None:
        return False
    return (
        await session.exec(select(Evaluation.id).where(Evaluation.citizen_id == citizen.id).limit(1))
    ).first() is None


async def queue_reply(
    session: AsyncSession,
    deps: Deps,
    citizen: Citizen,
    reply: Reply,
    *,
    edit_message_id: int | None = None,
    dedupe_key: str | None = None,
) -> OutboundMessage | None:
    """Queue one bot message to the citizen's chat, in the caller's transaction."""
    return await enqueue(
        session,
        channel="telegram",
        citizen=citizen,
        purpose="reply",
        body=reply.text,
        buttons=render_buttons(reply),
        at=deps.clock.now(),
        quiet=deps.quiet,
        edit_message_id=edit_message_id,
        dedupe_key=dedupe_key,
    )


__all__ = [
    "Link",
    "answer_code",
    "as_code",
    "pending_challenge",
    "chat_citizen",
    "citizen_id_for_chat",
    "ensure_chat_citizen",
    "first_delivery",
    "invitation_ref",
    "is_blank",
    "link_chat",
    "new_chat_citizen",
    "queue_reply",
    "render_buttons",
]
