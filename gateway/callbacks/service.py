"""Callback-survey campaigns (回访, Art. 15(五)): starting one, reading its progress, pausing, resuming,
cancelling, and answers taken by phone staff.

A campaign's targets are chosen once, when it is created, with one INSERT … SELECT: the resolved tickets
awaiting their callback in the department's jurisdiction that match the filters and are not already in
an open callback of the same round. Sending is the feeder's job (`gateway.callbacks.feeder`).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, Integer, String, case, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.callbacks.answers import ANSWERED_STATUSES, record_answer
from gateway.callbacks.errors import (
    CampaignConflict,
    CampaignForbidden,
    CampaignInvalid,
    CampaignNotFound,
    NoTargets,
    TargetNotFound,
)
from gateway.callbacks.schemas import (
    TARGET_STATUSES,
    AnswerIn,
    AnswerOut,
    CampaignCounts,
    CampaignFilters,
    CampaignIn,
    CampaignRead,
    TargetPage,
    TargetQuery,
    TargetRead,
)
from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.orgs import Caller, org_by_code, ticket_scope
from gateway.store.models import OPEN_TARGET_STATUSES, Campaign, CampaignTarget, Organisation, OutboundMessage, Ticket
from gateway.tickets.errors import TicketError
from gateway.tickets.schemas import MAX_ID
from gateway.tickets.workflow import RESOLVED

log = logging.getLogger(__name__)

LIVE_STATUSES = ("scheduled", "running", "paused")
_EARLIEST = date(2000, 1, 1)
_LATEST = date(2200, 1, 1)


def require_approval(caller: Caller) -> None:
    """Callback campaigns are run by approval departments (Art. 15(五): 各级行政审批部门)."""
    if not caller.is_approval:
        raise CampaignForbidden(
            "callback campaigns are run by approval departments (the city bureau or a county department, Art. 15(五))"
        )


async def create_campaign(
    session: AsyncSession, *, caller: Caller, body: CampaignIn, deps: Deps
) -> tuple[Campaign, list[int] | None]:
    """Create the campaign and its targets in one statement; returns it and the explicit ids not taken."""
    require_approval(caller)
    now = deps.clock.now()
    filters = body.filters()
    conditions = await _conditions(session, filters, deps.calendar.tz)
    starts_at = max(body.starts_at, now) if body.starts_at is not None else now
    campaign = Campaign(
        org_id=caller.org_id,
        name=body.name.strip(),
        filters=filters.stored(),
        status="scheduled" if starts_at > now else "running",
        starts_at=starts_at,
        created_at=now,
    )
    session.add(campaign)
    await session.flush()
    if campaign.id is None:
        raise BrokenInvariant("campaign.id is missing")
    added = await _insert_targets(session, campaign_id=campaign.id, caller=caller, conditions=conditions, at=now)
    if added == 0:
        raise NoTargets(
            "no ticket matched: a campaign surveys resolved tickets awaiting their callback, in your "
            "jurisdiction, that are not already in an open callback"
        )
    not_targeted = None
    if filters.ticket_ids is not None:
        taken = set(
            (
                await session.exec(select(CampaignTarget.ticket_id).where(CampaignTarget.campaign_id == campaign.id))
            ).all()
        )
        not_targeted = [i for i in filters.ticket_ids if i not in taken]
    log.info("campaign created", extra={"campaign_id": campaign.id, "org_id": caller.org_id, "targets": added})
    return campaign, not_targeted


async def _conditions(session: AsyncSession, filters: CampaignFilters, tz: ZoneInfo) -> list[Any]:
    conditions: list[Any] = []
    if filters.resolved_from is not None and filters.resolved_from > _EARLIEST:
        conditions.append(col(Ticket.resolved_at) >= _local_midnight(min(filters.resolved_from, _LATEST), tz))
    if filters.resolved_to is not None and filters.resolved_to < _LATEST:
        conditions.append(
            col(Ticket.resolved_at) < _local_midnight(max(filters.resolved_to, _EARLIEST) + timedelta(days=1), tz)
        )
    if filters.region_code is not None:
        conditions.append(Ticket.region_code == filters.region_code)
    if filters.unit is not None:
        unit = await org_by_code(session, filters.unit)
        if unit is None:
            raise CampaignInvalid(f"unit {filters.unit!r} is not a registered organisation", field="unit")
        conditions.append(Ticket.unit_org_id == unit.id)
    if filters.level is not None:
        conditions.append(Ticket.level == filters.level)
    if filters.ticket_ids is not None:
        conditions.append(col(Ticket.id).in_(filters.ticket_ids))
    return conditions


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


async def _insert_targets(
    session: AsyncSession, *, campaign_id: int, caller: Caller, conditions: list[Any], at: datetime
) -> int:
    """INSERT … SELECT: no round trip per ticket, so 100,000 targets take seconds."""
    held = aliased(CampaignTarget)
    round_no = col(Ticket.redo_count) + 1
    already_open = (
        select(held.id)
        .where(held.ticket_id == Ticket.id, held.round == round_no, col(held.status).in_(OPEN_TARGET_STATUSES))
        .exists()
    )
    # sqlmodel's select is typed for at most four columns; this INSERT … SELECT takes seven.
    source = (
        select(  # type: ignore[call-overload]
            literal(campaign_id, Integer),
            Ticket.id,
            Ticket.citizen_id,
            round_no,
            literal("pending", String),
            literal("", String),
            literal(at, DateTime(timezone=True)),
        )
        .where(
            ticket_scope(caller),
            Ticket.approval_org_id == caller.org_id,
            Ticket.status == RESOLVED,
            ~already_open,
            *conditions,
        )
        .order_by(col(Ticket.id))
    )
    # (In id order: two campaigns racing for the same tickets meet them in the same order, so one waits
    # for the other instead of deadlocking.)
    dialect = postgresql if session.bind is not None and session.bind.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(CampaignTarget)
        .from_select(["campaign_id", "ticket_id", "citizen_id", "round", "status", "answer_text", "created_at"], source)
        # A campaign created at the same moment may take some of the same tickets: the partial unique
        # index (one open target per ticket and round) makes this one skip them.
        .on_conflict_do_nothing()
    )
    result = await session.exec(statement)
    return int(result.rowcount or 0)


# --- reading ----------------------------------------------------------------------------------------


async def visible_campaign(
    session: AsyncSession, *, caller: Caller, campaign_id: int, for_update: bool = False
) -> Campaign:
    """The campaign if the caller runs it (the operator may read every campaign); 404 otherwise."""
    if not 1 <= campaign_id <= MAX_ID:
        raise CampaignNotFound(campaign_id)
    query = select(Campaign).where(Campaign.id == campaign_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    campaign = (await session.exec(query)).first()
    if campaign is None or not (campaign.org_id == caller.org_id or (caller.kind == "operator" and not for_update)):
        raise CampaignNotFound(campaign_id)
    return campaign


async def campaign_counts(session: AsyncSession, campaign_id: int) -> CampaignCounts:
    """The campaign's funnel, read from the targets and their messages' current state (exact, no write)."""
    was_sent = case((col(OutboundMessage.sent_at).is_not(None), 1), else_=0)
    rows = (
        await session.exec(
            select(CampaignTarget.status, OutboundMessage.status, was_sent, func.count())
            .select_from(CampaignTarget)
            .outerjoin(OutboundMessage, col(OutboundMessage.id) == CampaignTarget.message_id)
            .where(CampaignTarget.campaign_id == campaign_id)
            .group_by(CampaignTarget.status, OutboundMessage.status, was_sent)
        )
    ).all()
    n: dict[str, int] = dict.fromkeys(CampaignCounts.model_fields, 0)
    for target_status, message_status, sent, count in rows:
        n["targets"] += count
        if sent:
            n["sent"] += count
        if message_status == "delivered":
            n["delivered"] += count
        if target_status == "pending":
            n["pending"] += count
        elif target_status in ("queued", "sent", "delivered"):
            # The target's own status may lag the outbox by one feeder pass: the message says where it is.
            if message_status in ("failed", "undelivered"):
                n["failed"] += count
            elif message_status in ("suppressed", "cancelled"):
                n["skipped"] += count
            elif message_status in ("sent", "delivered"):
                n["awaiting_answer"] += count
            else:
                n["queued"] += count
        elif target_status in n:
            n[target_status] += count
    n["answered"] = n["satisfied"] + n["unsatisfied"]
    return CampaignCounts(**n)


async def campaign_read(
    session: AsyncSession, *, campaign: Campaign, not_targeted: list[int] | None = None
) -> CampaignRead:
    if campaign.id is None:
        raise BrokenInvariant("campaign.id is missing")
    counts = await campaign_counts(session, campaign.id)
    org = await session.get(Organisation, campaign.org_id)
    filters = dict(campaign.filters)
    if "ticket_ids" in filters:
        filters["ticket_ids_count"] = len(filters.pop("ticket_ids"))
    return CampaignRead(
        id=campaign.id,
        name=campaign.name,
        org=org.code if org else "",
        status=campaign.status,
        filters=filters,
        starts_at=as_utc(campaign.starts_at),
        created_at=as_utc(campaign.created_at),
        finished_at=as_utc(campaign.finished_at) if campaign.finished_at else None,
        counts=counts,
        satisfaction_rate=round(counts.satisfied / counts.answered, 4) if counts.answered else None,
        not_targeted=not_targeted,
    )


async def list_targets(session: AsyncSession, *, campaign: Campaign, query: TargetQuery) -> TargetPage:
    """The campaign's targets in id order, one page at a time (for phone staff: who has not answered)."""
    stmt = select(CampaignTarget).where(CampaignTarget.campaign_id == campaign.id)
    if query.status:
        wanted = query.status.split(",")
        unknown = [s for s in wanted if s not in TARGET_STATUSES]
        if unknown:
            raise CampaignInvalid(
                f"unknown status {unknown[0]!r}; statuses are {', '.join(TARGET_STATUSES)}", field="status"
            )
        stmt = stmt.where(col(CampaignTarget.status).in_(wanted))
    if query.after_id is not None:
        stmt = stmt.where(col(CampaignTarget.id) > query.after_id)
    rows = (await session.exec(stmt.order_by(col(CampaignTarget.id)).limit(query.limit + 1))).all()
    page = rows[: query.limit]
    items = [
        TargetRead(
            id=t.id,
            ticket_id=t.ticket_id,
            round=t.round,
            status=t.status,
            channel=t.channel,
            answered_at=as_utc(t.answered_at) if t.answered_at else None,
            answer_channel=t.answer_channel,
            answer_text=t.answer_text,
        )
        for t in page
    ]
    return TargetPage(items=items, next_after_id=page[-1].id if len(rows) > query.limit and page else None)


# --- pause, resume, cancel -----------------------------------------------------------------------------


async def pause_campaign(session: AsyncSession, *, caller: Caller, campaign_id: int, deps: Deps) -> Campaign:
    """Stop sending; survey messages not yet taken by the dispatcher are taken back (resume sends them)."""
    campaign = await _for_action(session, caller, campaign_id, "pause", ("scheduled", "running"))
    now = deps.clock.now()
    campaign.status = "paused"
    await _withdraw_queued(session, campaign_id=campaign_id, at=now, target_status="pending")
    log.info("campaign paused", extra={"campaign_id": campaign_id})
    return campaign


async def resume_campaign(session: AsyncSession, *, caller: Caller, campaign_id: int, deps: Deps) -> Campaign:
    campaign = await _for_action(session, caller, campaign_id, "resume", ("paused",))
    campaign.status = "scheduled" if as_utc(campaign.starts_at) > deps.clock.now() else "running"
    log.info("campaign resumed", extra={"campaign_id": campaign_id})
    return campaign


async def cancel_campaign(session: AsyncSession, *, caller: Caller, campaign_id: int, deps: Deps) -> Campaign:
    """Send nothing more. Questions already delivered still take their answers (the citizen has them)."""
    campaign = await _for_action(session, caller, campaign_id, "cancel", LIVE_STATUSES)
    now = deps.clock.now()
    campaign.status, campaign.finished_at = "cancelled", now
    await _withdraw_queued(session, campaign_id=campaign_id, at=now, target_status="skipped")
    await session.exec(
        update(CampaignTarget)
        .where(col(CampaignTarget.campaign_id) == campaign_id, col(CampaignTarget.status) == "pending")
        .values(status="skipped")
    )
    log.info("campaign cancelled", extra={"campaign_id": campaign_id})
    return campaign


async def _for_action(
    session: AsyncSession, caller: Caller, campaign_id: int, action: str, sources: tuple[str, ...]
) -> Campaign:
    campaign = await visible_campaign(session, caller=caller, campaign_id=campaign_id, for_update=True)
    if campaign.status not in sources:
        raise CampaignConflict(
            f"cannot {action} campaign {campaign_id}: it is {campaign.status}", details={"status": campaign.status}
        )
    return campaign


async def _withdraw_queued(session: AsyncSession, *, campaign_id: int, at: datetime, target_status: str) -> None:
    """Take back the campaign's messages still waiting in the outbox (not those a dispatcher is sending).

    The message row stays, cancelled, and the target keeps pointing at it: a resumed campaign queues the
    same row again, so the outbox's dedupe key (one survey per campaign and ticket) still holds.
    """
    await session.exec(
        update(OutboundMessage)
        .where(col(OutboundMessage.campaign_id) == campaign_id, col(OutboundMessage.status) == "queued")
        .values(status="cancelled", updated_at=at)
    )
    withdrawn = select(OutboundMessage.id).where(
        col(OutboundMessage.campaign_id) == campaign_id, col(OutboundMessage.status) == "cancelled"
    )
    await session.exec(
        update(CampaignTarget)
        .where(
            col(CampaignTarget.campaign_id) == campaign_id,
            col(CampaignTarget.status) == "queued",
            col(CampaignTarget.message_id).in_(withdrawn),
        )
        .values(status=target_status)
        .execution_options(synchronize_session=False)
    )


# --- answers taken by phone -------------------------------------------------------------------------


async def record_phone_answer(
    session: AsyncSession, *, caller: Caller, campaign_id: int, body: AnswerIn, deps: Deps
) -> AnswerOut:
    """Phone staff enter the answer they heard (Art. 15(五): 电话、短信回访)."""
    campaign = await visible_campaign(session, caller=caller, campaign_id=campaign_id)
    if campaign.org_id != caller.org_id:
        raise CampaignNotFound(campaign_id)
    target = (
        await session.exec(
            select(CampaignTarget)
            .where(CampaignTarget.campaign_id == campaign_id, CampaignTarget.ticket_id == body.ticket_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).first()
    if target is None:
        raise TargetNotFound(f"ticket {body.ticket_id} is not in campaign {campaign_id}", field="ticket_id")
    if target.status in ANSWERED_STATUSES:
        raise CampaignConflict(
            f"ticket {body.ticket_id} already has its answer in this campaign ({target.status})",
            field="ticket_id",
            details={"status": target.status},
        )
    try:
        await record_answer(
            session, target=target, satisfied=body.satisfied, channel="phone", text=body.reason, deps=deps
        )
    except TicketError as exc:
        raise CampaignConflict(
            f"ticket {body.ticket_id}: {exc.message}", field="ticket_id", details=exc.details
        ) from None
    ticket = await session.get(Ticket, target.ticket_id)
    if ticket is None or campaign.id is None:
        raise BrokenInvariant("ticket, campaign.id is missing")
    return AnswerOut(
        campaign_id=campaign.id, ticket_id=target.ticket_id, target_status=target.status, ticket_status=ticket.status
    )
