"""Reading work orders: the scoped list, one ticket with its history, and the logged contact read."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, exists, not_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.evaluations.reading import addenda_of, addenda_out, current_of
from gateway.messaging.outbox import reachable_channel
from gateway.orgs import Caller, org_by_code, ticket_scope
from gateway.privacy import mask_phone, redact
from gateway.store.models import (
    Citizen,
    ContactAccess,
    Evaluation,
    EvaluationDecision,
    Invitation,
    Organisation,
    ServiceCase,
    Ticket,
    TicketEvent,
)
from gateway.tickets.actions import may_see
from gateway.tickets.calendar import WorkingCalendar
from gateway.tickets.errors import Forbidden, NoContact, TicketNotFound, ValidationFailed
from gateway.tickets.schemas import (
    MAX_ID,
    CitizenRef,
    ContactRead,
    EvaluationRef,
    EventRead,
    OrgRef,
    TicketDetail,
    TicketPage,
    TicketQuery,
    TicketSummary,
)
from gateway.tickets.workflow import (
    OPEN_STATUSES,
    STATUSES,
    WORKING_STATUSES,
    allowed_actions,
    is_overdue,
    local_deadline,
)

log = logging.getLogger(__name__)

_EARLIEST = date(1970, 1, 1)
_LATEST = date(9000, 1, 1)


async def list_tickets(session: AsyncSession, *, caller: Caller, query: TicketQuery, deps: Deps) -> TicketPage:
    """Tickets in the caller's jurisdiction, newest first, filtered, one page at a time."""
    now = deps.clock.now()
    stmt = await _filtered(session, caller=caller, query=query, now=now, tz=deps.calendar.tz)
    if query.cursor is not None:
        stmt = stmt.where(col(Ticket.id) < min(int(query.cursor), MAX_ID))
    rows = (await session.exec(stmt.order_by(col(Ticket.id).desc()).limit(query.limit + 1))).all()
    page = rows[: query.limit]
    orgs = await _orgs(session, _org_ids(t for t, _ in page))
    items = [_summary(t, item_name, orgs, now, deps.calendar) for t, item_name in page]
    has_more = len(rows) > query.limit
    return TicketPage(items=items, next_cursor=str(page[-1][0].id) if has_more and page else None)


async def list_by_urgency(
    session: AsyncSession, *, caller: Caller, query: TicketQuery, deps: Deps, offset: int
) -> tuple[list[TicketSummary], bool]:
    """The same filtered tickets as `list_tickets`, overdue first, then open by due time, then the rest."""
    now = deps.clock.now()
    stmt = await _filtered(session, caller=caller, query=query, now=now, tz=deps.calendar.tz)
    is_open = col(Ticket.status).in_(OPEN_STATUSES)
    rank = case((and_(is_open, col(Ticket.due_at) <= now), 0), (is_open, 1), else_=2)
    stmt = stmt.order_by(rank, col(Ticket.due_at), col(Ticket.id)).offset(offset).limit(query.limit + 1)
    rows = (await session.exec(stmt)).all()
    page = rows[: query.limit]
    orgs = await _orgs(session, _org_ids(t for t, _ in page))
    return [_summary(t, item_name, orgs, now, deps.calendar) for t, item_name in page], len(rows) > query.limit


async def _filtered(session: AsyncSession, *, caller: Caller, query: TicketQuery, now: datetime, tz: ZoneInfo) -> Any:
    """The scoped and filtered SELECT of (ticket, item name), without order or paging."""
    stmt = (
        select(Ticket, Invitation.item_name)
        .join(Invitation, col(Invitation.id) == Ticket.invitation_id)
        .where(ticket_scope(caller))
    )
    if query.status:
        wanted = query.status.split(",")
        unknown = [s for s in wanted if s not in STATUSES]
        if unknown:
            raise ValidationFailed(f"unknown status {unknown[0]!r}; statuses are {', '.join(STATUSES)}", field="status")
        stmt = stmt.where(col(Ticket.status).in_(wanted))
    if query.region:
        stmt = stmt.where(Ticket.region_code == query.region)
    if query.unit:
        unit = await org_by_code(session, query.unit)
        if unit is None:
            raise ValidationFailed(f"unit {query.unit!r} is not a registered organisation", field="unit")
        stmt = stmt.where(Ticket.unit_org_id == unit.id)
    if query.overdue is not None:
        overdue = and_(col(Ticket.status).in_(OPEN_STATUSES), col(Ticket.due_at) <= now)
        stmt = stmt.where(overdue if query.overdue else not_(overdue))
    if query.level is not None:
        stmt = stmt.where(Ticket.level == query.level)
    # Days outside the years any ticket can have are no bound at all (and keep the arithmetic in range).
    if query.created_from is not None and query.created_from > _EARLIEST:
        stmt = stmt.where(col(Ticket.created_at) >= _local_midnight(query.created_from, tz))
    if query.created_to is not None and query.created_to < _LATEST:
        stmt = stmt.where(col(Ticket.created_at) < _local_midnight(query.created_to + timedelta(days=1), tz))
    if query.case_no is not None:
        # The case's own ticket, or the ticket of its batch or theme rated as a whole.
        stmt = stmt.where(
            exists().where(
                col(ServiceCase.invitation_id) == col(Ticket.invitation_id),
                col(ServiceCase.case_no) == query.case_no,
                or_(col(Ticket.case_id).is_(None), col(Ticket.case_id) == ServiceCase.id),
            )
        )
    return stmt


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(timezone.utc)


async def get_visible(session: AsyncSession, *, caller: Caller, ticket_id: int) -> Ticket:
    if not 1 <= ticket_id <= MAX_ID:
        raise TicketNotFound(ticket_id)
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None or not may_see(caller, ticket):
        raise TicketNotFound(ticket_id)
    return ticket


async def ticket_detail(session: AsyncSession, *, caller: Caller, ticket_id: int, deps: Deps) -> TicketDetail:
    """One ticket with its evaluation, due time, overdue flag, the caller's next actions and its history."""
    ticket = await get_visible(session, caller=caller, ticket_id=ticket_id)
    await session.refresh(ticket)
    now = deps.clock.now()
    invitation = await session.get(Invitation, ticket.invitation_id)
    evaluation = await session.get(Evaluation, ticket.evaluation_id)
    if invitation is None or evaluation is None:
        raise BrokenInvariant("invitation, evaluation is missing")
    case = await session.get(ServiceCase, ticket.case_id) if ticket.case_id is not None else None
    citizen = await session.get(Citizen, ticket.citizen_id) if ticket.citizen_id is not None else None
    voided = (
        await session.exec(select(EvaluationDecision.id).where(EvaluationDecision.evaluation_id == evaluation.id))
    ).first() is not None
    events = (
        await session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(col(TicketEvent.id)))
    ).all()
    orgs = await _orgs(session, _org_ids([ticket]) | {e.actor_org_id for e in events if e.actor_org_id is not None})
    summary = _summary(ticket, invitation.item_name, orgs, now, deps.calendar)
    addenda = (await addenda_of(session, [evaluation.id]))[evaluation.id]  # type: ignore[list-item,index]
    covered = (
        await session.exec(
            select(ServiceCase.case_no).where(ServiceCase.invitation_id == invitation.id).order_by(col(ServiceCase.id))
        )
    ).all()
    return TicketDetail(
        **summary.model_dump(),
        case_no=case.case_no if case else None,
        applies_to=[case.case_no] if case else list(covered),
        office_name=invitation.office_name,
        evaluation=EvaluationRef(
            id=evaluation.id,
            level=evaluation.level,
            reasons=evaluation.reason_codes,
            text=redact(evaluation.content),
            staff_level=evaluation.staff_level,
            channel=evaluation.channel,
            created_at=as_utc(evaluation.created_at),
            counts=not voided,
            addenda=addenda_out(addenda),
            current=current_of(evaluation, addenda),
        ),
        citizen=CitizenRef(
            phone_masked=citizen.phone_masked,
            reachable_by=reachable_channel(citizen, bot_enabled=deps.settings.bot_enabled),
        )
        if citizen
        else None,
        reply_text=ticket.reply_text,
        allowed_actions=allowed_actions(ticket, caller),
        events=[
            EventRead(
                id=e.id,
                at=as_utc(e.at),
                actor=e.actor,
                actor_org=orgs[e.actor_org_id].code if e.actor_org_id in orgs else None,
                action=e.action,
                from_status=e.from_status,
                to_status=e.to_status,
                note=e.note,
                data=e.data,
            )
            for e in events
        ],
    )


async def read_contact(session: AsyncSession, *, caller: Caller, ticket_id: int, deps: Deps) -> ContactRead:
    """The evaluator's full number for the handling unit, logged as a ContactAccess (Art. 16(四))."""
    ticket = await get_visible(session, caller=caller, ticket_id=ticket_id)
    if caller.org_id != ticket.unit_org_id:
        raise Forbidden(
            "only the handling unit reads the evaluator's full number, to contact them (Art. 16(四)); "
            "the ticket shows it masked"
        )
    if ticket.status not in WORKING_STATUSES:
        hint = {
            "dispatching": "it has not been transferred to your unit yet",
            "transferred": "accept the ticket first",
        }.get(ticket.status, f"the ticket is {ticket.status}")
        raise Forbidden(f"the number is available while your unit handles the ticket: {hint}")
    citizen = await session.get(Citizen, ticket.citizen_id) if ticket.citizen_id is not None else None
    if citizen is None or citizen.phone_enc is None:
        raise NoContact("the evaluator left no phone number; reply through the ticket (resolve) instead")
    phone = deps.vault.decrypt(citizen.phone_enc)
    session.add(ContactAccess(org_id=caller.org_id, ticket_id=ticket.id, citizen_id=citizen.id, at=deps.clock.now()))  # type: ignore[arg-type]
    await session.flush()
    log.info("evaluator contact read", extra={"ticket_id": ticket.id, "org": caller.code, "phone": mask_phone(phone)})
    return ContactRead(ticket_id=ticket.id, phone=phone, phone_masked=mask_phone(phone))


def _org_ids(tickets: Iterable[Ticket]) -> set[int]:
    ids: set[int] = set()
    for t in tickets:
        ids.update(i for i in (t.approval_org_id, t.unit_org_id, t.assignee_org_id) if i is not None)
    return ids


async def _orgs(session: AsyncSession, ids: set[int]) -> dict[int, Organisation]:
    if not ids:
        return {}
    rows = (await session.exec(select(Organisation).where(col(Organisation.id).in_(ids)))).all()
    return {o.id: o for o in rows}  # type: ignore[misc]


def _ref(org: Organisation) -> OrgRef:
    return OrgRef(code=org.code, name=org.name, kind=org.kind)


def _summary(
    ticket: Ticket, item_name: str, orgs: dict[int, Organisation], now: datetime, calendar: WorkingCalendar
) -> TicketSummary:
    def opt(value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None

    return TicketSummary(
        id=ticket.id,
        status=ticket.status,
        category=ticket.category,
        level=ticket.level,
        responsibility=ticket.responsibility,
        region_code=ticket.region_code,
        item_name=item_name,
        approval_org=_ref(orgs[ticket.approval_org_id]),
        unit_org=_ref(orgs[ticket.unit_org_id]) if ticket.unit_org_id in orgs else None,
        assignee_org=_ref(orgs[ticket.assignee_org_id]),
        created_at=as_utc(ticket.created_at),
        received_at=opt(ticket.received_at),
        due_at=as_utc(ticket.due_at),
        due_local=local_deadline(ticket.due_at, calendar),
        due_provisional=ticket.due_provisional,
        overdue=is_overdue(ticket, now),
        overdue_since=opt(ticket.overdue_since),
        consultation=ticket.consultation,
        extension_working_days=ticket.extension_working_days,
        redo_count=ticket.redo_count,
        resolved_at=opt(ticket.resolved_at),
        closed_at=opt(ticket.closed_at),
        version=ticket.version,
    )
