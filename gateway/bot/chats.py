"""Which citizen a private chat speaks for (Citizen.telegram_chat_id, unique), and deep-link linking.

A chat gets a citizen row the first time its user writes (the outbox needs someone to answer); such a
row holds only the chat id until a deep link `t.me/<bot>?start=<invitation token>` binds the chat to
the invitation's citizen. Linking never takes a chat or a citizen away from someone else: the token is
a bearer link (a forwarded SMS carries it too), so it may rate that one service on the page, but it
must not redirect another person's later invitations, evaluations and ticket replies to a new chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from conversations import Reply
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.dialogue import invitation_ref, render_buttons
from gateway.errors import BrokenInvariant
from gateway.evaluations.errors import InvitationNotFound
from gateway.evaluations.service import invitation_by_token
from gateway.messaging.outbox import enqueue
from gateway.store.db import Store
from gateway.store.models import Citizen, Evaluation, InboundMessage, Invitation, OutboundMessage
from gateway.store.upsert import insert_if_absent

PROVIDER = "telegram"  # InboundMessage.provider of Telegram updates; provider_id is the update_id

LinkResult = Literal["linked", "already", "invalid", "expired", "invitation_elsewhere", "chat_elsewhere"]


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
    return await insert_if_absent(
        session, InboundMessage, provider=PROVIDER, provider_id=str(update_id), citizen_id=citizen_id, received_at=at, processed_at=at
    )


@dataclass
class Link:
    result: LinkResult
    citizen: Citizen  # whom the chat speaks for now (the one to answer)
    invitation: Invitation | None


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
    if here is not None:
        # The chat's row holds nothing but the chat id (it wrote before being linked): the chat
        # moves to the invitation's citizen; the empty row stays, as the messages sent to it refer to it.
        here.telegram_chat_id = None
        await session.flush()
    owner.telegram_chat_id = chat_id
    owner.bot_blocked_at = None
    await session.flush()
    return Link("linked", owner, invitation)


async def is_blank(session: AsyncSession, citizen: Citizen) -> bool:
    """A citizen row with no phone, no invitation and no evaluation: only a chat that wrote once."""
    if citizen.phone_hash is not None or citizen.phone_enc is not None:
        return False
    if (await session.exec(select(Invitation.id).where(Invitation.citizen_id == citizen.id).limit(1))).first() is not None:
        return False
    return (await session.exec(select(Evaluation.id).where(Evaluation.citizen_id == citizen.id).limit(1))).first() is None


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
        session, channel="telegram", citizen=citizen, purpose="reply", body=reply.text, buttons=render_buttons(reply),
        at=deps.clock.now(), quiet=deps.quiet, edit_message_id=edit_message_id, dedupe_key=dedupe_key,
    )


__all__ = [
    "PROVIDER",
    "Link",
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
