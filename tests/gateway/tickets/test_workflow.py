"""The state machine alone (no database): rules that the API tests reach only with difficulty."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from gateway.orgs import Caller
from gateway.store.models import Ticket
from gateway.tickets.calendar import WorkingCalendar
from gateway.tickets.errors import Forbidden, TransitionNotAllowed, ValidationFailed
from gateway.tickets.schemas import Accept, CallbackResult, Redo, Transfer
from gateway.tickets.workflow import (
    Context,
    OrgInfo,
    SystemActor,
    allowed_actions,
    local_deadline,
    standard_due,
    transition,
    within_jurisdiction,
)

CST = timezone(timedelta(hours=8))
HANBIN = Caller(org_id=10, code="hanbin", kind="county_dept", region_code="610902")
MARKET = Caller(org_id=20, code="hanbin-market", kind="unit", region_code="610902")
MARKET_INFO = OrgInfo(id=20, code="hanbin-market", kind="unit", region_code="610902")


@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    return WorkingCalendar()


def new_ticket(at: datetime, calendar: WorkingCalendar, **fields: object) -> Ticket:
    due = calendar.due_at(at, 10)
    values: dict[str, object] = dict(
        id=1, evaluation_id=1, invitation_id=1, region_code="610902", level=2, responsibility="handling",
        approval_org_id=10, unit_org_id=20, assignee_org_id=10, status="dispatching", due_at=due.at,
        due_provisional=due.provisional, created_at=at, updated_at=at,
    )
    values.update(fields)
    return Ticket(**values)  # type: ignore[arg-type]


def test_transfer_without_a_proposed_unit_asks_for_one(calendar: WorkingCalendar) -> None:
    at = datetime(2026, 3, 4, 10, tzinfo=CST)
    ticket = new_ticket(at, calendar, unit_org_id=None)
    with pytest.raises(ValidationFailed, match="name the handling unit"):
        transition(ticket, Transfer(action="transfer"), HANBIN, at, calendar, Context())
    assert ticket.status == "dispatching"


def test_transition_returns_the_event_and_moves_only_through_rules(calendar: WorkingCalendar) -> None:
    at = datetime(2026, 3, 4, 10, tzinfo=CST)
    ticket = new_ticket(at, calendar)
    created_due = ticket.due_at
    event = transition(ticket, Transfer(action="transfer", note="to the market bureau"), HANBIN, at, calendar, Context(unit=MARKET_INFO))
    # The history says which due time the step replaced and which it set (a firm one: no flag).
    assert event.data == {
        "unit": "hanbin-market", "due_before": created_due.isoformat(), "due_at": ticket.due_at.isoformat(),
    }
    assert (event.action, event.from_status, event.to_status, event.actor, event.actor_org_id) == (
        "transfer", "dispatching", "transferred", "hanbin", 10,
    )
    assert event.note == "to the market bureau" and event.at == at
    assert ticket.status == "transferred" and ticket.received_at == at and ticket.assignee_org_id == 20
    event = transition(ticket, Accept(action="accept", category="simple"), MARKET, at, calendar)
    assert ticket.status == "in_progress" and ticket.category == "simple"
    assert local_deadline(ticket.due_at, calendar) == "2026-03-11 24:00 Asia/Shanghai"


def test_a_system_actor_only_records_callback_results(calendar: WorkingCalendar) -> None:
    at = datetime(2026, 3, 4, 10, tzinfo=CST)
    robot = SystemActor("callback-campaign")
    ticket = new_ticket(at, calendar, status="callback_unsatisfied", received_at=at)
    with pytest.raises(Forbidden, match="redo is taken by a department, not by an automated step"):
        transition(ticket, Redo(action="redo", reason="x"), robot, at, calendar)
    assert allowed_actions(ticket, robot) == []
    ticket.status = "resolved"
    assert allowed_actions(ticket, robot) == ["callback_result"]
    event = transition(ticket, CallbackResult(action="callback_result", outcome="satisfied"), robot, at, calendar)
    assert event.actor == "system:callback-campaign" and ticket.status == "closed_satisfied"


def test_the_redo_is_offered_once(calendar: WorkingCalendar) -> None:
    at = datetime(2026, 3, 4, 10, tzinfo=CST)
    ticket = new_ticket(at, calendar, status="callback_unsatisfied", received_at=at)
    assert allowed_actions(ticket, HANBIN) == ["redo", "close"]
    transition(ticket, Redo(action="redo", reason="x"), HANBIN, at, calendar)
    ticket.status = "callback_unsatisfied"  # as if resolved and surveyed again
    assert allowed_actions(ticket, HANBIN) == ["close"]
    with pytest.raises(TransitionNotAllowed, match="once only"):
        transition(ticket, Redo(action="redo", reason="x"), HANBIN, at, calendar)


def test_a_deadline_in_a_year_without_a_schedule_is_provisional(calendar: WorkingCalendar) -> None:
    year = next(y for y in range(2026, 2100) if not calendar.has_official_schedule(y))
    at = datetime(year, 3, 3, 10, tzinfo=CST)
    ticket = new_ticket(at, calendar)
    due = standard_due(ticket, calendar)
    assert due.provisional is True
    event = transition(ticket, Transfer(action="transfer"), HANBIN, at, calendar, Context(unit=MARKET_INFO))
    assert ticket.due_provisional is True and event.data["due_provisional"] is True  # the history says it is a guess
    # Without a schedule the fallback is plain Monday-Friday: count it here independently.
    expected, counted = date(year, 3, 3), 0
    while counted < 10:
        expected += timedelta(days=1)
        counted += expected.weekday() < 5
    assert due.day == expected


@pytest.mark.parametrize(
    ("ticket_region", "unit", "allowed"),
    [
        ("610902", OrgInfo(1, "hanbin-tax", "unit", "610902"), True),
        ("610902", OrgInfo(2, "hanyin-market", "unit", "610921"), False),
        ("610902", OrgInfo(3, "city-police", "unit", "610900"), False),
        ("610902", OrgInfo(4, "platform", "platform_builder", "610900"), True),
        ("610902", OrgInfo(5, "other-city-platform", "platform_builder", "610800"), False),
        ("610900", OrgInfo(2, "hanyin-market", "unit", "610921"), True),
        ("610900", OrgInfo(6, "xian-unit", "unit", "610100"), False),
    ],
)
def test_jurisdiction_of_transfers(ticket_region: str, unit: OrgInfo, allowed: bool, calendar: WorkingCalendar) -> None:
    ticket = new_ticket(datetime(2026, 3, 4, 10, tzinfo=CST), calendar, region_code=ticket_region)
    assert within_jurisdiction(ticket, unit) is allowed
