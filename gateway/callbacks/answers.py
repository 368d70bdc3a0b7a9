"""Recording callback answers: on the campaign target and, through the ticket workflow, on the ticket.

Answers come from the conversation (an SMS reply, a bot button: `SurveyRecorder`, the runner's
`SurveyAnswers` hook) and from phone staff through the API (`gateway.callbacks.service`). Both end in
`record_answer`, inside the caller's transaction, so the target, the ticket event and anything the
answer cancels are written together.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.store.models import OPEN_TARGET_STATUSES, Campaign, CampaignTarget, OutboundMessage, Ticket, TicketEvent
from gateway.tickets.actions import record_callback_result
from gateway.tickets.errors import TicketError, TransitionNotAllowed
from gateway.tickets.workflow import SystemActor

log = logging.getLogger(__name__)

CAMPAIGN_ACTOR = "callback-campaign"
# Targets whose survey has gone out (or is about to) and may still be answered by the citizen.
ASKED_STATUSES = ("queued", "sent", "delivered")
ANSWERED_STATUSES = ("satisfied", "unsatisfied", "no_answer")
# How the conversation names its channels, and how the ticket workflow does.
_TICKET_CHANNEL = {"sms": "sms", "bot": "telegram", "telegram": "telegram", "phone": "phone"}


def current_round(ticket: Ticket) -> int:
    """The ticket's rectification round: 1, and one more after each redo."""
    return ticket.redo_count + 1


def same_round(ticket: Ticket, target: CampaignTarget) -> bool:
    """Whether a callback question is about the ticket's current round. An answer (or a silence) about
    round 1 that arrives after a redo says nothing about round 2, and must not close it (Art. 15(五))."""
    return current_round(ticket) == target.round


def campaign_actor(campaign: Campaign) -> SystemActor:
    """The campaign records answers for the approval department that runs it (Art. 15(五))."""
    return SystemActor(CAMPAIGN_ACTOR, org_id=campaign.org_id)


async def record_answer(
    session: AsyncSession,
    *,
    target: CampaignTarget,
    satisfied: bool,
    channel: str,
    text: str,
    deps: Deps,
) -> TicketEvent | None:
    """Record an answer on the target and the ticket; the ticket's refusal (it no longer awaits its
    callback) is raised after the target is left untouched."""
    campaign = await session.get(Campaign, target.campaign_id)
    if campaign is None:
        raise BrokenInvariant("campaign is missing")
    ticket = await session.get(Ticket, target.ticket_id)
    if ticket is not None and not same_round(ticket, target):
        raise TransitionNotAllowed(
            f"this question was about round {target.round} of the rectification; the ticket is in round "
            f"{current_round(ticket)} now",
            details={"status": ticket.status},
        )
    at = deps.clock.now()
    ticket_channel = _TICKET_CHANNEL.get(channel, "other")
    event = await record_callback_result(
        session,
        ticket_id=target.ticket_id,
        outcome="satisfied" if satisfied else "unsatisfied",
        deps=deps,
        actor=campaign_actor(campaign),
        answer=text,
        channel=ticket_channel,  # type: ignore[arg-type]
        campaign_id=campaign.id,
    )
    _mark_answered(target, satisfied=satisfied, channel=ticket_channel, text=text, at=at)
    await settle_ticket(session, keep=target, at=at)
    await session.flush()
    return event


def _mark_answered(target: CampaignTarget, *, satisfied: bool, channel: str, text: str, at: datetime) -> None:
    target.status = "satisfied" if satisfied else "unsatisfied"
    target.answered_at = at
    target.answer_channel = channel
    target.answer_text = text.strip()[:1000]


async def settle_ticket(session: AsyncSession, *, keep: CampaignTarget, at: datetime) -> None:
    """The ticket has its callback result: its other open targets (in other campaigns) are not asked,
    and survey messages about it that have not left yet are withdrawn (phone staff may reach the
    citizen before the campaign's message goes out)."""
    others = (
        await session.exec(
            select(CampaignTarget.id, CampaignTarget.message_id).where(
                CampaignTarget.ticket_id == keep.ticket_id,
                col(CampaignTarget.id) != keep.id,
                col(CampaignTarget.status).in_(OPEN_TARGET_STATUSES),
            )
        )
    ).all()
    message_ids = [m for _, m in others if m is not None] + ([keep.message_id] if keep.message_id else [])
    if message_ids:
        await session.exec(
            update(OutboundMessage)
            .where(col(OutboundMessage.id).in_(message_ids), col(OutboundMessage.status) == "queued")
            .values(status="cancelled", updated_at=at)
        )
    if others:
        await session.exec(
            update(CampaignTarget)
            .where(
                col(CampaignTarget.id).in_([i for i, _ in others]), col(CampaignTarget.status).in_(OPEN_TARGET_STATUSES)
            )
            .values(status="skipped")
        )


async def open_target_for(session: AsyncSession, *, ticket_id: int, citizen_id: int) -> CampaignTarget | None:
    """The citizen's open callback question about this ticket (the newest, should there be two)."""
    query = (
        select(CampaignTarget)
        .where(
            CampaignTarget.ticket_id == ticket_id,
            CampaignTarget.citizen_id == citizen_id,
            col(CampaignTarget.status).in_(ASKED_STATUSES),
        )
        .order_by(col(CampaignTarget.id).desc())
        .with_for_update()
    )
    return (await session.exec(query)).first()


class SurveyRecorder:
    """The conversation runner's `SurveyAnswers`: a citizen's answer to a callback question."""

    async def answer(
        self, session: AsyncSession, *, ticket_id: int, citizen_id: int, satisfied: bool, channel: str, deps: Deps
    ) -> None:
        target = await open_target_for(session, ticket_id=ticket_id, citizen_id=citizen_id)
        if target is None:  # answered meanwhile on another channel, or by phone
            log.info("survey answer without an open question", extra={"ticket_id": ticket_id, "citizen_id": citizen_id})
            return
        try:
            await record_answer(session, target=target, satisfied=satisfied, channel=channel, text="", deps=deps)
        except TicketError as exc:
            # The approval department recorded a result on the ticket itself meanwhile. The citizen's
            # words still go on the target; the ticket keeps the result it has.
            log.info(
                "survey answer for a ticket no longer awaiting its callback",
                extra={"ticket_id": ticket_id, "reason": exc.message},
            )
            _mark_answered(
                target, satisfied=satisfied, channel=_TICKET_CHANNEL.get(channel, "other"), text="", at=deps.clock.now()
            )
            await session.flush()

    async def reason(
        self, session: AsyncSession, *, ticket_id: int, citizen_id: int, text: str, channel: str, deps: Deps
    ) -> None:
        """Why the citizen is not satisfied: kept on the target and in the ticket's history, for the
        approval department's judgment (redo or close)."""
        text = text.strip()[:1000]
        if not text:
            return
        target = (
            await session.exec(
                select(CampaignTarget)
                .where(
                    CampaignTarget.ticket_id == ticket_id,
                    CampaignTarget.citizen_id == citizen_id,
                    CampaignTarget.status == "unsatisfied",
                )
                .order_by(col(CampaignTarget.id).desc())
                .with_for_update()
            )
        ).first()
        if target is None:
            return
        target.answer_text = (f"{target.answer_text}\n{text}" if target.answer_text else text)[:1000]
        ticket = await session.get(Ticket, ticket_id)
        if ticket is None:
            raise BrokenInvariant("ticket is missing")
        session.add(
            TicketEvent(
                ticket_id=ticket_id,
                at=deps.clock.now(),
                actor="citizen",
                action="callback_reason",
                from_status=ticket.status,
                to_status=ticket.status,
                note="the evaluator said why they are not satisfied with the rectification",
                data={
                    "text": text,
                    "channel": _TICKET_CHANNEL.get(channel, "other"),
                    "campaign_id": target.campaign_id,
                },
            )
        )
        await session.flush()


__all__ = [
    "ANSWERED_STATUSES",
    "ASKED_STATUSES",
    "CAMPAIGN_ACTOR",
    "SurveyRecorder",
    "campaign_actor",
    "current_round",
    "record_answer",
    "same_round",
    "settle_ticket",
]
