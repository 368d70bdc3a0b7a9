"""Overdue work orders (Art. 16(一)): flag them, and remind whoever holds them once per working day.

A pass (`sweep`) first flags every unfinished ticket past its due time (`overdue_since`, and an event in
its history), then, on working days, reminds each organisation holding overdue tickets once, listing
those not yet reminded today. The day's claim on the tickets, the reminder and the events in their
history commit in one transaction: with a webhook configured the reminder is an outbox message
(channel `webhook`) that the dispatcher delivers, retrying with backoff until the webhook takes it, so
it is neither lost nor sent twice by several gateway processes; without one, it is a log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import col, select

from gateway.clock import as_utc
from gateway.deps import Deps
from gateway.errors import BrokenInvariant
from gateway.messaging.outbox import PRIORITY_NOTICE
from gateway.passes import run_passes
from gateway.store.db import Store
from gateway.store.models import Organisation, OutboundMessage, Ticket, TicketEvent
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


class LogNotifier:
    """The default without a webhook: a warning line per reminder, for the operator's log pipeline."""

    name = "log"

    def notify(self, reminder: Reminder) -> None:
        log.warning(
            "overdue tickets: %s holds %d (%s)",
            reminder.org_code,
            len(reminder.tickets),
            ", ".join(str(t.id) for t in reminder.tickets),
            extra={"org": reminder.org_code, "ticket_ids": [t.id for t in reminder.tickets]},
        )


WEBHOOK = "webhook"
LOG = "log"


async def sweep(store: Store, deps: Deps, *, via: str = LOG) -> int:
    """One pass: flag newly overdue tickets and remind their holders (`via` "webhook": queued in the
    outbox for the dispatcher; "log": logged); returns how many tickets were reminded."""
    now = deps.clock.now()
    await _flag(store, now)
    today = deps.calendar.local_date(now)
    if not deps.calendar.is_working_day(today):
        return 0  # reminders go out on working days only
    reminders = await _claim(store, deps, now, today, via=via)
    if via == LOG:
        for reminder in reminders:
            LogNotifier().notify(reminder)
    return sum(len(r.tickets) for r in reminders)


async def run_forever(
    store: Store,
    deps: Deps,
    interval_seconds: float,
    *,
    via: str = LOG,
    wake: Callable[[], None] = lambda: None,
) -> None:
    """The background loop owned by the app; a failed pass is logged and the loop carries on."""

    async def one_pass() -> int:
        count = await sweep(store, deps, via=via)
        if count:
            log.info("overdue reminders %s", "queued" if via == WEBHOOK else "logged", extra={"tickets": count})
            wake()  # the dispatcher sends them now rather than at its next poll
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


async def _claim(store: Store, deps: Deps, now: datetime, today: date, *, via: str) -> list[Reminder]:
    """Mark today's reminder on each due ticket, grouped by the organisation that holds it, and record
    the reminders (outbox message and history events) in the same transaction."""
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
        groups: dict[int, Reminder] = {}
        for ticket in tickets:
            # Conditional: of several processes sweeping at once, one claims each ticket for the day.
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
            if ticket.assignee_org_id not in groups:
                if holder.id is None:
                    raise BrokenInvariant("the holder's id is missing")
                groups[ticket.assignee_org_id] = Reminder(
                    org_id=holder.id,
                    org_code=holder.code,
                    org_name=holder.name,
                    day=today,
                )
            groups[ticket.assignee_org_id].tickets.append(
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
        reminders = [groups[k] for k in sorted(groups)]
        for reminder in reminders:
            if via == WEBHOOK:
                session.add(
                    OutboundMessage(
                        channel=WEBHOOK,
                        citizen_id=None,
                        purpose="reminder",
                        priority=PRIORITY_NOTICE,
                        body=json.dumps(reminder.as_json(), ensure_ascii=False),
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
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
                        data={"org": reminder.org_code, "channel": via, "day": reminder.day.isoformat()},
                    )
                )
    return reminders
