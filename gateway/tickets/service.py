"""Opening bad-review tickets (Art. 13): created in the same transaction as the bad rating."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.deps import Deps
from gateway.store.models import Evaluation, Invitation, Organisation, ServiceCase, Ticket, TicketEvent
from gateway.store.sets import in_set
from gateway.store.upsert import insert_rows
from gateway.tickets.routing import Route, route
from gateway.tickets.workflow import DISPATCHING, GENERAL_WORKING_DAYS

# Until a department classifies it, a ticket is general (限时整改, Art. 15(一)), and it starts waiting at
# the approval department to be transferred (Art. 14).
INITIAL_STATUS = DISPATCHING


@dataclass(frozen=True)
class BadRating:
    """A bad rating whose work order is to be opened: its evaluation, invitation and rated cases."""

    evaluation: Evaluation
    invitation: Invitation
    cases: list[ServiceCase]


async def open_tickets(session: AsyncSession, ratings: Sequence[BadRating], *, deps: Deps) -> list[Ticket]:
    """The work orders of bad ratings made in one transaction (one rating, or a group of conversations'):
    each routed, with its due time and its first event; the tickets stored by one INSERT and their first
    events by another."""
    from gateway.stats.rollup import ticket_changed

    at = deps.clock.now()
    due = deps.calendar.due_at(at, GENERAL_WORKING_DAYS)
    opened: list[tuple[Ticket, BadRating, Route]] = []
    for rating in ratings:
        evaluation, invitation, cases = rating.evaluation, rating.invitation, rating.cases
        path = await route(
            session,
            region_code=invitation.region_code,
            cases=cases,
            reason_codes=evaluation.reason_codes,
            catalogue=deps.catalogue,
        )
        ticket = Ticket(
            evaluation_id=evaluation.id,  # type: ignore[arg-type]
            invitation_id=invitation.id,  # type: ignore[arg-type]
            case_id=cases[0].id if len(cases) == 1 else None,
            citizen_id=invitation.citizen_id,
            region_code=invitation.region_code,
            level=evaluation.level,
            responsibility=path.responsibility,
            approval_org_id=path.approval_org_id,
            unit_org_id=path.unit_org_id,
            assignee_org_id=path.approval_org_id,
            status=INITIAL_STATUS,
            category="general",
            due_at=due.at,
            due_provisional=due.provisional,
            created_at=at,
            updated_at=at,
        )
        opened.append((ticket, rating, path))
    session.add_all([ticket for ticket, _, _ in opened])
    await session.flush()
    unit_ids = sorted({i for _, _, path in opened for i in path.units})
    codes = dict((await session.exec(_CODES_OF, params={"ids": unit_ids})).all()) if unit_ids else {}
    events = []
    for ticket, rating, path in opened:
        # The statistics' roll-ups count it; its rating was recorded in this transaction, so it has no ruling.
        await ticket_changed(session, ticket, before={}, calendar=deps.calendar, ruled=False)
        events.append(
            event_row(
                ticket,
                at=at,
                actor="system",
                action="created",
                from_status=None,
                note=path.note,
                data={
                    "evaluation_id": rating.evaluation.id,
                    "level": rating.evaluation.level,
                    "reasons": rating.evaluation.reason_codes,
                    "approval_org_id": path.approval_org_id,
                    "proposed_unit_org_id": path.unit_org_id,
                    "responsibility": path.responsibility,
                    "units": [codes[i] for i in path.units if i in codes],
                    "due_at": due.at.isoformat(),
                    "due_provisional": due.provisional,
                },
            )
        )
    await insert_rows(session, TicketEvent, events)  # one INSERT for the tickets' first events
    return [ticket for ticket, _, _ in opened]


_CODES_OF = select(Organisation.id, Organisation.code).where(in_set(col(Organisation.id), "ids"))


def event_row(
    ticket: Ticket, *, at: datetime, actor: str, action: str, from_status: str | None, note: str, data: dict[str, Any]
) -> dict[str, Any]:
    """A ticket event as a row for `insert_rows`, the ticket's status as it now stands its `to_status`
    (events that are only written, never read back in their transaction, skip the ORM's object)."""
    return {
        "ticket_id": ticket.id,
        "at": at,
        "actor_org_id": None,
        "actor": actor,
        "action": action,
        "from_status": from_status,
        "to_status": ticket.status,
        "note": note,
        "data": data,
    }


async def note_reasons(
    session: AsyncSession, *, ticket: Ticket, codes: list[int], text: str, deps: Deps, at: datetime
) -> dict[str, Any]:
    """Reasons that arrived after the rating, for the ticket: the route re-proposed while undispatched
    (written at the caller's next flush), and the event to insert (`event_row`)."""
    data: dict[str, object] = {"reasons": codes, "text": text.strip()[:1000]}
    if ticket.status == INITIAL_STATUS and codes:
        cases = [c for c in [await session.get(ServiceCase, ticket.case_id)] if c] if ticket.case_id else []
        path = (
            await route(
                session, region_code=ticket.region_code, cases=cases, reason_codes=codes, catalogue=deps.catalogue
            )
            if cases
            else None
        )
        if path is not None and (path.unit_org_id, path.responsibility) != (ticket.unit_org_id, ticket.responsibility):
            ticket.unit_org_id, ticket.responsibility = path.unit_org_id, path.responsibility
            data.update(proposed_unit_org_id=path.unit_org_id, responsibility=path.responsibility, route_note=path.note)
    ticket.updated_at = at
    return event_row(
        ticket,
        at=at,
        actor="citizen",
        action="reasons_added",
        from_status=ticket.status,
        note="the evaluator gave the reasons for the bad rating",
        data=data,
    )
