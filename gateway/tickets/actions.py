"""Carrying out work-order actions: lock the ticket, apply the rules, store the event and its effects.

Everything an action causes (the event, the reply queued for the evaluator, the decision on the rating)
is written in the caller's transaction, inside a savepoint: a refused action leaves nothing behind even
when the caller catches the error and carries on (a callback campaign recording many answers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.evaluations.records import record_written
from gateway.messaging.outbox import enqueue, reachable_channel
from gateway.orgs import Caller, can_see_ticket, org_by_code
from gateway.store.models import (
    Citizen,
    EvaluationDecision,
    Invitation,
    Organisation,
    ServiceCase,
    Ticket,
    TicketEvent,
)
from gateway.tickets.errors import StaleTicket, TicketNotFound, ValidationFailed
from gateway.tickets.messages import reply_notice
from gateway.tickets.schemas import (
    MAX_ID,
    CallbackResult,
    Consult,
    DecideAppeal,
    DecideExtension,
    Resolve,
    TicketAction,
    Transfer,
)
from gateway.tickets.workflow import Actor, Context, OrgInfo, SystemActor, check_allowed, transition
from gateway.upload.records import TICKET_CHANGES, queue_upload

log = logging.getLogger(__name__)

# The actor a callback campaign records survey answers as (Art. 15(五): run for the approval departments).
CALLBACK_CAMPAIGN = SystemActor("callback-campaign")


def may_see(actor: Actor, ticket: Ticket) -> bool:
    """Jurisdiction (DESIGN §5): departments see their own; automated steps are trusted code."""
    if isinstance(actor, SystemActor):
        return True
    return can_see_ticket(actor, ticket)


async def load_for_update(session: AsyncSession, ticket_id: int) -> Ticket | None:
    """The ticket, freshly read and row-locked until the transaction ends (PostgreSQL FOR UPDATE).

    SQLite has no row locks; the store starts every transaction with BEGIN IMMEDIATE, which serialises
    writers, so the read below already sees the latest committed row.
    """
    if not 1 <= ticket_id <= MAX_ID:
        return None
    query = select(Ticket).where(Ticket.id == ticket_id).with_for_update().execution_options(populate_existing=True)
    return (await session.exec(query)).first()


@dataclass
class _Reply:
    citizen: Citizen
    channel: str
    body: str


async def apply_action(
    session: AsyncSession, *, ticket_id: int, action: TicketAction, actor: Actor, deps: Deps
) -> TicketEvent:
    """Take one action on a ticket for an actor; returns the stored event or raises a TicketError."""
    async with session.begin_nested():
        return await _apply(session, ticket_id=ticket_id, action=action, actor=actor, deps=deps)


async def _apply(
    session: AsyncSession, *, ticket_id: int, action: TicketAction, actor: Actor, deps: Deps
) -> TicketEvent:
    at = deps.clock.now()
    ticket = await load_for_update(session, ticket_id)
    if ticket is None or not may_see(actor, ticket):
        raise TicketNotFound(ticket_id)
    if action.expected_version is not None and action.expected_version != ticket.version:
        raise StaleTicket(
            f"the ticket changed since you read it (version {action.expected_version}, now {ticket.version}); "
            "reload it and decide again",
            field="expected_version",
            details={"version": ticket.version, "status": ticket.status},
        )
    # Role and status first: a refused move says so before any of its input is looked up.
    check_allowed(ticket, action.action, actor)
    context = await _context(session, ticket, action)
    reply = await _prepare_reply(session, ticket, action, deps) if isinstance(action, Resolve) else None
    version = ticket.version
    from gateway.stats.rollup import ticket_changed, ticket_tally

    counted = await ticket_tally(session, ticket, deps.calendar)  # the statistics' share before the action
    event = transition(ticket, action, actor, at, deps.calendar, context)
    # The conditional UPDATE is the race guard on every backend: of two actions that both read
    # version v, only one moves it to v + 1; the other is refused as stale.
    claimed = await session.exec(
        update(Ticket).where(col(Ticket.id) == ticket.id, col(Ticket.version) == version).values(version=version + 1)
    )
    if claimed.rowcount != 1:
        raise StaleTicket("another action changed the ticket at the same moment; reload it and decide again")
    ticket.version = version + 1
    session.add(event)
    await session.flush()
    await ticket_changed(session, ticket, before=counted, calendar=deps.calendar)
    await _effects(session, ticket=ticket, action=action, actor=actor, event=event, reply=reply, deps=deps)
    log.info(
        "ticket action",
        extra={"ticket_id": ticket.id, "action": action.action, "actor": event.actor, "to_status": event.to_status},
    )
    return event


async def _context(session: AsyncSession, ticket: Ticket, action: TicketAction) -> Context:
    """Look up what the pure rules need: the organisations an action names, the pending request."""
    if isinstance(action, Transfer):
        case_unit = None
        if ticket.case_id is not None:
            case = await session.get(ServiceCase, ticket.case_id)
            case_unit = case.org_id if case else None
        if action.unit:
            org = await org_by_code(session, action.unit)
            if org is None:
                raise ValidationFailed(f"unit {action.unit!r} is not a registered organisation", field="unit")
        elif ticket.unit_org_id is not None:
            org = await session.get(Organisation, ticket.unit_org_id)
        else:
            org = None
        return Context(unit=_info(org) if org else None, case_unit_id=case_unit)
    if isinstance(action, Consult):
        consulted = []
        for code in dict.fromkeys(action.orgs):
            org = await org_by_code(session, code)
            if org is None:
                raise ValidationFailed(f"organisation {code!r} is not registered", field="orgs")
            consulted.append(_info(org))
        return Context(consulted=tuple(consulted))
    if isinstance(action, DecideExtension):
        request = (
            await session.exec(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == ticket.id, TicketEvent.action == "request_extension")
                .order_by(col(TicketEvent.id).desc())
            )
        ).first()
        days = request.data.get("working_days") if request is not None else None
        return Context(pending_extension_days=days if isinstance(days, int) else None)
    if isinstance(action, Resolve) and ticket.category == "simple":
        since = ticket.received_at
        contact = select(TicketEvent.id).where(TicketEvent.ticket_id == ticket.id, TicketEvent.action == "contact")
        if since is not None:
            contact = contact.where(col(TicketEvent.at) >= since)
        return Context(contacted=(await session.exec(contact)).first() is not None)
    return Context()


def _info(org: Organisation) -> OrgInfo:
    if org.id is None:
        raise BrokenInvariant("org.id is missing")
    return OrgInfo(id=org.id, code=org.code, kind=org.kind, region_code=org.region_code)


async def _prepare_reply(session: AsyncSession, ticket: Ticket, action: Resolve, deps: Deps) -> _Reply | None:
    """The reply notice for the evaluator's own channel, checked before anything changes."""
    citizen = await session.get(Citizen, ticket.citizen_id) if ticket.citizen_id is not None else None
    if citizen is None:
        return None
    channel = reachable_channel(citizen, bot_enabled=deps.settings.bot_enabled)
    if channel is None:
        return None
    invitation = await session.get(Invitation, ticket.invitation_id)
    if invitation is None:
        raise BrokenInvariant("invitation is missing")
    body = reply_notice(
        channel=channel, signature=deps.settings.sms_signature, item_name=invitation.item_name, reply=action.reply
    )
    return _Reply(citizen=citizen, channel=channel, body=body)


async def _effects(
    session: AsyncSession,
    *,
    ticket: Ticket,
    action: TicketAction,
    actor: Actor,
    event: TicketEvent,
    reply: _Reply | None,
    deps: Deps,
) -> None:
    if isinstance(action, DecideAppeal) and action.decision != "valid":
        # Art. 15(三), 19: the rating stays as given; a decision row makes it stop counting.
        if actor.org_id is None:
            raise BrokenInvariant("actor.org_id is missing")
        decision = EvaluationDecision(
            evaluation_id=ticket.evaluation_id,
            ticket_id=ticket.id,
            decision=action.decision,
            org_id=actor.org_id,
            note=action.reason,
            created_at=event.at,
        )
        session.add(decision)
        await session.flush()
        await record_written(session, kind="decision", record=decision, deps=deps, at=event.at)
    if isinstance(action, Resolve):
        data = dict(event.data)
        if reply is None:
            data["reply_channel"] = None
            data["reply_note"] = "the evaluator cannot be reached (no channel, or opted out): reply by other means"
        else:
            round_no = event.data.get("round", 1)
            message = await enqueue(
                session,
                channel=reply.channel,
                citizen=reply.citizen,
                purpose="notice",
                body=reply.body,
                at=event.at,
                quiet=deps.quiet,
                dedupe_key=f"ticket-reply:{ticket.id}:{round_no}",
                ticket_id=ticket.id,
            )
            data["reply_channel"] = reply.channel
            data["message_id"] = message.id if message is not None else None
        event.data = data
        await session.flush()
    if event.action in TICKET_CHANGES and deps.settings.province is not None:
        # The rectification and the callback's outcome go up with the evaluation (Art. 18).
        change = TICKET_CHANGES[event.action]
        await queue_upload(session, evaluation_id=ticket.evaluation_id, change=change, at=event.at)


async def record_callback_result(
    session: AsyncSession,
    *,
    ticket_id: int,
    outcome: Literal["satisfied", "unsatisfied", "no_answer"],
    deps: Deps,
    actor: Actor = CALLBACK_CAMPAIGN,
    answer: str = "",
    channel: Literal["phone", "sms", "telegram", "visit", "other"] | None = None,
    campaign_id: int | None = None,
) -> TicketEvent:
    """Record a callback survey answer on a resolved ticket (Art. 15(五)); the campaign's entry point."""
    action = CallbackResult(
        action="callback_result", outcome=outcome, answer=answer[:1000], channel=channel, campaign_id=campaign_id
    )
    return await apply_action(session, ticket_id=ticket_id, action=action, actor=actor, deps=deps)


__all__ = [
    "CALLBACK_CAMPAIGN",
    "Caller",
    "SystemActor",
    "apply_action",
    "load_for_update",
    "may_see",
    "record_callback_result",
]
