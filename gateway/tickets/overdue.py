"""Overdue work orders (Art. 16(一)): flag them, and remind whoever holds them once per working day.

A pass (`sweep`) first flags every unfinished ticket past its due time (`overdue_since`, and an event in
its history), then, on working days, sends each organisation holding overdue tickets one reminder
listing those not yet reminded today. The day is claimed on the tickets before the reminder leaves, so
several gateway processes never send the same reminder twice; a reminder that fails is released and
tried again on the next pass.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import or_, update
from sqlmodel import col, select

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.passes import run_passes
from gateway.store.db import Store
from gateway.store.models import Organisation, Ticket, TicketEvent
from gateway.tickets.workflow import OPEN_STATUSES, local_deadline

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:overdue"
BATCH_SIZE = 500  # tickets handled per pass; the next pass takes the rest


@dataclass(frozen=True)
class OverdueTicket:
    id: int
    status: str
    region_code: str
    unit: str | None
    due_at: str
    due_local: str
    overdue_since: str


@dataclass(frozen=True)
class Reminder:
    """One reminder: an organisation and its overdue tickets not yet reminded today."""

    org_id: int
    org_code: str
    org_name: str
    day: date
    tickets: list[OverdueTicket] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "overdue_tickets",
            "org": {"code": self.org_code, "name": self.org_name},
            "day": self.day.isoformat(),
            "count": len(self.tickets),
            "tickets": [asdict(t) for t in self.tickets],
        }


class Notifier(Protocol):
    """Where reminders go; `notify` raises when the reminder could not be delivered."""

    name: str

    async def notify(self, reminder: Reminder) -> None: ...


class LogNotifier:
    """The default without a webhook: a warning line per reminder, for the operator's log pipeline."""

    name = "log"

    async def notify(self, reminder: Reminder) -> None:
        log.warning(
            "overdue tickets: %s holds %d (%s)",
            reminder.org_code,
            len(reminder.tickets),
            ", ".join(str(t.id) for t in reminder.tickets),
            extra={"org": reminder.org_code, "ticket_ids": [t.id for t in reminder.tickets]},
        )


async def sweep(store: Store, deps: Deps, notifier: Notifier) -> int:
    """One pass: flag newly overdue tickets, send today's reminders; returns how many tickets were reminded."""
    now = deps.clock.now()
    await _flag(store, now)
    today = deps.calendar.local_date(now)
    if not deps.calendar.is_working_day(today):
        return 0  # reminders go out on working days only
    reminded = 0
    for reminder, previous in await _claim(store, deps, now, today):
        try:
            await notifier.notify(reminder)
        except Exception as exc:  # any failure: release the claim so the next pass tries again
            log.warning(
                "overdue reminder to %s failed; retrying on the next pass: %s",
                reminder.org_code,
                exc,
                extra={"org": reminder.org_code},
            )
            await _release(store, reminder, previous)
            continue
        await _record(store, reminder, notifier.name, now)
        reminded += len(reminder.tickets)
    return reminded


async def run_forever(store: Store, deps: Deps, notifier: Notifier, interval_seconds: float) -> None:
    """The background loop owned by the app; a failed pass is logged and the loop carries on."""

    async def one_pass() -> int:
        count = await sweep(store, deps, notifier)
        if count:
            log.info("overdue reminders sent", extra={"tickets": count})
        return count

    await run_passes(one_pass, interval_seconds=interval_seconds, what="overdue sweep")


async def _flag(store: Store, now: datetime) -> None:
    async with store.transaction() as session:
        rows = (
            await session.exec(
                select(Ticket.id, Ticket.status, Ticket.due_at)
                .where(
                    col(Ticket.status).in_(OPEN_STATUSES),
                    col(Ticket.due_at) <= now,
                    col(Ticket.overdue_since).is_(None),
                )
                .order_by(col(Ticket.id))
                .limit(BATCH_SIZE)
            )
        ).all()
        for ticket_id, status, due_at in rows:
            if ticket_id is None:
                continue
            # Conditional, so that of several processes only one flags the ticket and writes the event.
            result = await session.exec(
                update(Ticket)
                .where(col(Ticket.id) == ticket_id, col(Ticket.overdue_since).is_(None), col(Ticket.status) == status)
                .values(overdue_since=due_at)
            )
            if result.rowcount == 1:
                session.add(
                    TicketEvent(
                        ticket_id=ticket_id,
                        at=now,
                        actor=SYSTEM_ACTOR,
                        action="overdue",
                        from_status=status,
                        to_status=status,
                        note="the due time passed before the ticket was resolved (Art. 16(一))",
                        data={"due_at": as_utc(due_at).isoformat()},
                    )
                )


async def _claim(store: Store, deps: Deps, now: datetime, today: date) -> list[tuple[Reminder, dict[int, date | None]]]:
    """Mark today's reminder on each due ticket, grouped by the organisation that holds it."""
    async with store.transaction() as session:
        tickets = (
            await session.exec(
                select(Ticket)
                .where(
                    col(Ticket.status).in_(OPEN_STATUSES),
                    col(Ticket.due_at) <= now,
                    or_(col(Ticket.last_reminded_on).is_(None), col(Ticket.last_reminded_on) < today),
                )
                .order_by(col(Ticket.id))
                .limit(BATCH_SIZE)
            )
        ).all()
        if not tickets:
            return []
        org_ids = {t.assignee_org_id for t in tickets} | {t.unit_org_id for t in tickets if t.unit_org_id is not None}
        orgs = {
            o.id: o for o in (await session.exec(select(Organisation).where(col(Organisation.id).in_(org_ids)))).all()
        }
        groups: dict[int, tuple[Reminder, dict[int, date | None]]] = {}
        per_org: dict[int, list[OverdueTicket]] = defaultdict(list)
        for ticket in tickets:
            previous = ticket.last_reminded_on
            result = await session.exec(
                update(Ticket)
                .where(
                    col(Ticket.id) == ticket.id,
                    or_(col(Ticket.last_reminded_on).is_(None), col(Ticket.last_reminded_on) < today),
                )
                .values(last_reminded_on=today)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                continue  # another process claimed it
            holder = orgs[ticket.assignee_org_id]
            unit = orgs.get(ticket.unit_org_id) if ticket.unit_org_id is not None else None
            due = as_utc(ticket.due_at)
            per_org[ticket.assignee_org_id].append(
                OverdueTicket(
                    id=ticket.id,  # type: ignore[arg-type]
                    status=ticket.status,
                    region_code=ticket.region_code,
                    unit=unit.code if unit else None,
                    due_at=due.isoformat(),
                    due_local=local_deadline(due, deps.calendar),
                    overdue_since=as_utc(ticket.overdue_since or due).isoformat(),
                )
            )
            if ticket.assignee_org_id not in groups:
                groups[ticket.assignee_org_id] = (
                    Reminder(org_id=holder.id, org_code=holder.code, org_name=holder.name, day=today),  # type: ignore[arg-type]
                    {},
                )
            groups[ticket.assignee_org_id][1][ticket.id] = previous  # type: ignore[index]
        for org_id, items in per_org.items():
            groups[org_id][0].tickets.extend(items)
    return [groups[k] for k in sorted(groups)]


async def _release(store: Store, reminder: Reminder, previous: dict[int, date | None]) -> None:
    async with store.transaction() as session:
        for ticket_id, before in previous.items():
            await session.exec(
                update(Ticket)
                .where(col(Ticket.id) == ticket_id, col(Ticket.last_reminded_on) == reminder.day)
                .values(last_reminded_on=before)
            )


async def _record(store: Store, reminder: Reminder, channel: str, now: datetime) -> None:
    async with store.transaction() as session:
        for item in reminder.tickets:
            session.add(
                TicketEvent(
                    ticket_id=item.id,
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action="overdue_reminder",
                    from_status=item.status,
                    to_status=item.status,
                    note=f"{reminder.org_code} reminded of the overdue ticket",
                    data={"org": reminder.org_code, "channel": channel, "day": reminder.day.isoformat()},
                )
            )
