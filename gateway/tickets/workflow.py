"""The bad-review work-order state machine (Art. 13-16): the one function that changes a ticket's status.

`transition(ticket, action, actor, at, calendar)` checks that the actor may take the action, that the
action applies to the ticket's status, and that it comes within its window; it then updates the ticket
(status, holder, due time), and returns the event to append. It does no I/O: the service layer
(`gateway.tickets.actions`) loads and locks the ticket, resolves org codes into `Context`, stores the
event and carries out the side effects (the reply to the evaluator, the decision on the rating).

Deadlines are counted in working days from the day after receipt and end at 24:00 local time of the
last working day (Art. 15; `WorkingCalendar.due_at`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Union

from gateway.clock import as_utc
from gateway.errors import BrokenInvariant
from gateway.orgs import Caller, city_of, is_city_level
from gateway.store.models import Ticket, TicketEvent
from gateway.tickets.calendar import Due, WorkingCalendar
from gateway.tickets.errors import DeadlinePassed, Forbidden, TransitionNotAllowed, ValidationFailed
from gateway.tickets.schemas import (
    Accept,
    Appeal,
    CallbackResult,
    Classify,
    Close,
    Consult,
    Contact,
    DecideAppeal,
    DecideExtension,
    Redo,
    RequestExtension,
    Resolve,
    TicketAction,
    Transfer,
)

# --- deadlines (Art. 15) ---------------------------------------------------------------------------
GENERAL_WORKING_DAYS = 10  # 限时整改
SIMPLE_WORKING_DAYS = 5  # 立整立改
CONSULTATION_WORKING_DAYS = 15  # 会商: the reply to the evaluator
EXTENSION_WINDOW_WORKING_DAYS = 5  # an extension is requested within 5 working days of receipt
MAX_EXTENSION_WORKING_DAYS = 5
APPEAL_WINDOW_WORKING_DAYS = 2  # 申诉复核
REDO_WORKING_DAYS = 5  # 发回重办
MAX_REDOS = 1

# --- statuses --------------------------------------------------------------------------------------
DISPATCHING = "dispatching"  # at the approval department, to be transferred (Art. 14)
TRANSFERRED = "transferred"  # received by the unit, not yet accepted
ACCEPTED = "accepted"  # accepted, not yet classified (counts as general)
IN_PROGRESS = "in_progress"  # classified; being investigated and rectified
EXTENSION_REQUESTED = "extension_requested"  # waiting for the approval department; work continues
APPEALED = "appealed"  # waiting for the approval department's ruling
RESOLVED = "resolved"  # rectified and replied to the evaluator
CALLBACK_UNSATISFIED = "callback_unsatisfied"  # the callback found the evaluator unsatisfied: to be judged
CLOSED_SATISFIED = "closed_satisfied"
CLOSED_UNSATISFIED = "closed_unsatisfied"  # unsatisfied, judged not the unit's fault (or after the one redo)
CLOSED_NO_ANSWER = "closed_no_answer"  # the evaluator did not answer the callback
CLOSED_INVALID = "closed_invalid"  # an appeal found the rating mistaken or malicious

STATUSES = (
    DISPATCHING,
    TRANSFERRED,
    ACCEPTED,
    IN_PROGRESS,
    EXTENSION_REQUESTED,
    APPEALED,
    RESOLVED,
    CALLBACK_UNSATISFIED,
    CLOSED_SATISFIED,
    CLOSED_UNSATISFIED,
    CLOSED_NO_ANSWER,
    CLOSED_INVALID,
)
# The deadline runs in these statuses: a ticket in one of them past its due time is overdue (Art. 16(一)).
OPEN_STATUSES = (DISPATCHING, TRANSFERRED, ACCEPTED, IN_PROGRESS, EXTENSION_REQUESTED, APPEALED)
CLOSED_STATUSES = (CLOSED_SATISFIED, CLOSED_UNSATISFIED, CLOSED_NO_ANSWER, CLOSED_INVALID)
# Where the unit does the work itself.
WORKING_STATUSES = (ACCEPTED, IN_PROGRESS, EXTENSION_REQUESTED)

_ONE_DAY = timedelta(days=1)

APPROVAL = "approval"  # the approval department of the ticket's level (Art. 14), and nobody above it
UNIT = "unit"  # the handling unit (or platform builder) the ticket was transferred to


def _not_after_redo(ticket: Ticket) -> str | None:
    if ticket.redo_count:
        return "a ticket sent back for a redo stays with its unit on the 5-working-day redo period (Art. 15(五))"
    return None


def _extension_guard(ticket: Ticket) -> str | None:
    if ticket.redo_count:
        return f"the redo period of {REDO_WORKING_DAYS} working days is not extended (Art. 15(五))"
    if ticket.extension_working_days:
        return (
            f"this ticket was already extended by {ticket.extension_working_days} working days; "
            "a ticket is extended once (Art. 15(一))"
        )
    return None


def _consult_guard(ticket: Ticket) -> str | None:
    if ticket.consultation:
        return "a consultation is already under way for this ticket"
    return _not_after_redo(ticket)


def _redo_guard(ticket: Ticket) -> str | None:
    if ticket.redo_count >= MAX_REDOS:
        return "a ticket is sent back for a redo once only (Art. 15(五)); close it instead"
    return None


@dataclass(frozen=True)
class Rule:
    role: str
    sources: tuple[str, ...]
    system_may: bool = False  # an automated step (a callback campaign) may take it too
    guard: Callable[[Ticket], str | None] | None = None  # a refusal that depends on the ticket's past


RULES: dict[str, Rule] = {
    "transfer": Rule(APPROVAL, (DISPATCHING, TRANSFERRED, ACCEPTED, IN_PROGRESS), guard=_not_after_redo),
    "accept": Rule(UNIT, (TRANSFERRED,)),
    "classify": Rule(UNIT, (ACCEPTED,)),
    "contact": Rule(UNIT, WORKING_STATUSES),
    "request_extension": Rule(UNIT, (IN_PROGRESS,), guard=_extension_guard),
    "decide_extension": Rule(APPROVAL, (EXTENSION_REQUESTED,)),
    "appeal": Rule(UNIT, (ACCEPTED, IN_PROGRESS)),
    "decide_appeal": Rule(APPROVAL, (APPEALED,)),
    "consult": Rule(
        APPROVAL, (DISPATCHING, TRANSFERRED, ACCEPTED, IN_PROGRESS, EXTENSION_REQUESTED), guard=_consult_guard
    ),
    "resolve": Rule(UNIT, WORKING_STATUSES),
    "callback_result": Rule(APPROVAL, (RESOLVED,), system_may=True),
    "redo": Rule(APPROVAL, (CALLBACK_UNSATISFIED,), guard=_redo_guard),
    "close": Rule(APPROVAL, (CALLBACK_UNSATISFIED,)),
}


@dataclass(frozen=True)
class SystemActor:
    """An automated step acting for an approval department (a callback campaign recording a survey answer)."""

    name: str
    org_id: int | None = None  # the approval department on whose behalf it acts, when there is one
    kind: str = "system"

    @property
    def code(self) -> str:
        return f"system:{self.name}"


Actor = Union[Caller, SystemActor]


@dataclass(frozen=True)
class OrgInfo:
    """What the rules need to know about an organisation named in an action."""

    id: int
    code: str
    kind: str
    region_code: str


@dataclass(frozen=True)
class Context:
    """Organisations the service looked up for the action: the transfer target, the consulted ones."""

    unit: OrgInfo | None = None
    consulted: Sequence[OrgInfo] = field(default_factory=tuple)
    pending_extension_days: int | None = None  # the days asked for by the pending request, if any
    case_unit_id: int | None = None  # the unit that handled the rated case (谁办理、谁负责)
    contacted: bool = False  # a contact step was recorded since the unit received the ticket


def transition(
    ticket: Ticket,
    action: TicketAction,
    actor: Actor,
    at: datetime,
    calendar: WorkingCalendar,
    context: Context | None = None,
) -> TicketEvent:
    """Apply one action to a ticket and return the event to append; raise a TicketError if it is refused."""
    context = context or Context()
    check_allowed(ticket, action.action, actor)
    from_status = ticket.status
    data: dict[str, Any] = {}
    note = action.note
    handler = _HANDLERS[action.action]
    new_status = handler(ticket, action, at, calendar, context, data)
    ticket.status = new_status
    ticket.updated_at = at
    return TicketEvent(
        ticket_id=ticket.id,  # type: ignore[arg-type]
        at=at,
        actor_org_id=actor.org_id,
        actor=actor.code,
        action=action.action,
        from_status=from_status,
        to_status=new_status,
        note=note,
        data=data,
    )


def check_allowed(ticket: Ticket, action: str, actor: Actor) -> None:
    """Raise unless this actor's role may take the action and the ticket's status admits it."""
    check_actor(ticket, action, actor)
    rule = RULES[action]
    if ticket.status not in rule.sources:
        raise TransitionNotAllowed(_not_from(action, ticket.status), details={"status": ticket.status})
    refusal = rule.guard(ticket) if rule.guard is not None else None
    if refusal is not None:
        raise TransitionNotAllowed(refusal, details={"status": ticket.status})


def check_actor(ticket: Ticket, action: str, actor: Actor) -> None:
    """Raise Forbidden unless the actor's role may take this action on this ticket."""
    rule = RULES[action]
    if isinstance(actor, SystemActor):
        if not rule.system_may:
            raise Forbidden(f"{action} is taken by a department, not by an automated step")
        return
    if rule.role == APPROVAL:
        if actor.org_id != ticket.approval_org_id:
            raise Forbidden(
                f"only the approval department that holds this ticket may {_verb(action)} "
                "(Art. 14: the city bureau for city-level offices, the county department for its county)"
            )
    elif actor.org_id != ticket.unit_org_id:
        raise Forbidden(f"only the handling unit the ticket was transferred to may {_verb(action)}")


def allowed_actions(ticket: Ticket, actor: Actor) -> list[str]:
    """The actions this actor may try now, by role and status (windows and payload are checked on the try)."""
    found = []
    for name, rule in RULES.items():
        if ticket.status not in rule.sources:
            continue
        try:
            check_allowed(ticket, name, actor)
        except (Forbidden, TransitionNotAllowed):
            continue
        found.append(name)
    return found


# --- deadlines --------------------------------------------------------------------------------------


def standard_due(ticket: Ticket, calendar: WorkingCalendar) -> Due:
    """The due time from the ticket's own facts: receipt (or creation), category, consultation, extension."""
    start = as_utc(ticket.received_at or ticket.created_at)
    if ticket.consultation:
        days = CONSULTATION_WORKING_DAYS
    elif ticket.category == "simple":
        days = SIMPLE_WORKING_DAYS
    else:
        days = GENERAL_WORKING_DAYS
    due = calendar.due_at(start, days)
    if ticket.extension_working_days:
        return extend(due, ticket.extension_working_days, calendar)
    return due


def extend(due: Due, working_days: int, calendar: WorkingCalendar) -> Due:
    """A due time moved by whole working days past its last working day."""
    later = calendar.add_working_days(due.day, working_days)
    return Due(at=calendar.end_of_day(later.day), day=later.day, provisional=due.provisional or later.provisional)


def current_due(ticket: Ticket, calendar: WorkingCalendar) -> Due:
    """The due time in force, as a Due (its last working day is the local day before the 24:00 instant)."""
    at = as_utc(ticket.due_at)
    return Due(at=at, day=calendar.local_date(at) - _ONE_DAY, provisional=ticket.due_provisional)


def window_end(ticket: Ticket, working_days: int, calendar: WorkingCalendar) -> Due:
    """The end of a window counted from the unit's receipt of the ticket."""
    if ticket.received_at is None:
        raise BrokenInvariant("ticket.received_at is missing")
    return calendar.due_at(as_utc(ticket.received_at), working_days)


def is_overdue(ticket: Ticket, now: datetime) -> bool:
    """Unfinished and past its due time (at the due instant itself the deadline has passed)."""
    return ticket.status in OPEN_STATUSES and now >= as_utc(ticket.due_at)


def local_deadline(due_at: datetime, calendar: WorkingCalendar) -> str:
    """'2026-03-18 24:00 Asia/Shanghai' for a due instant (the end of its last working day)."""
    last_day = calendar.local_date(as_utc(due_at)) - _ONE_DAY
    return f"{last_day.isoformat()} 24:00 {calendar.timezone_name}"


def _set_due(ticket: Ticket, due: Due, at: datetime, data: dict[str, Any]) -> None:
    data["due_before"] = as_utc(ticket.due_at).isoformat()
    ticket.due_at, ticket.due_provisional = due.at, due.provisional
    data["due_at"] = due.at.isoformat()
    if due.provisional:
        data["due_provisional"] = True
    if due.at > at:
        # A new period (a re-route, an extension, a redo) starts the overdue record afresh; the
        # history keeps the earlier overdue event.
        ticket.overdue_since = None
        ticket.last_reminded_on = None


def _local(instant: datetime, calendar: WorkingCalendar) -> str:
    return as_utc(instant).astimezone(calendar.tz).strftime("%Y-%m-%d %H:%M")


# --- the handlers: each returns the new status and fills the event data -----------------------------


def _transfer(
    ticket: Ticket, action: Transfer, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    unit = ctx.unit
    if unit is None:
        raise ValidationFailed(
            "routing proposed no unit for this ticket: name the handling unit's org code in `unit`", field="unit"
        )
    if unit.kind not in ("unit", "platform_builder"):
        raise ValidationFailed(f"{unit.code} is not a handling unit or platform builder", field="unit")
    if not within_jurisdiction(ticket, unit) and unit.id != ctx.case_unit_id:
        raise Forbidden(
            f"{unit.code} (region {unit.region_code}) is outside the jurisdiction of this ticket's approval "
            f"department (region {ticket.region_code}); transfer it to a unit of that region",
            field="unit",
        )
    if unit.id == ticket.unit_org_id and ticket.status != DISPATCHING:
        raise TransitionNotAllowed(f"the ticket is already with {unit.code}", field="unit")
    data["unit"] = unit.code
    if ticket.status != DISPATCHING:
        data["rerouted"] = True
    # The unit's receipt starts its clock (Art. 15(一)); a re-routed ticket starts afresh with the new unit.
    ticket.unit_org_id = ticket.assignee_org_id = unit.id
    ticket.received_at = at
    ticket.category = "general"
    ticket.extension_working_days = 0
    _set_due(ticket, standard_due(ticket, cal), at, data)
    return TRANSFERRED


def within_jurisdiction(ticket: Ticket, unit: OrgInfo) -> bool:
    """Whether the ticket's approval department may hand it to this unit (属地管理, Art. 13-14)."""
    if is_city_level(ticket.region_code):
        return unit.region_code[:4] == ticket.region_code[:4]
    if unit.region_code == ticket.region_code:
        return True
    # 谁建设、谁负责: a county without a platform builder of its own is served by the city's (as routing does).
    return unit.kind == "platform_builder" and unit.region_code == city_of(ticket.region_code)


def _check_category(ticket: Ticket, category: str, at: datetime, cal: WorkingCalendar, data: dict[str, Any]) -> None:
    if category == "simple" and not ticket.consultation:
        end = window_end(ticket, SIMPLE_WORKING_DAYS, cal)
        if at >= end.at:
            raise DeadlinePassed(
                f"a simple (立整立改) ticket is done within {SIMPLE_WORKING_DAYS} working days of receipt "
                f"(until {local_deadline(end.at, cal)}); it is now {_local(at, cal)}: classify it general",
                field="category",
            )
    ticket.category = category
    data["category"] = category
    _set_due(ticket, standard_due(ticket, cal), at, data)


def _accept(
    ticket: Ticket, action: Accept, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    if action.category is None:
        return ACCEPTED
    _check_category(ticket, action.category, at, cal, data)
    return IN_PROGRESS


def _classify(
    ticket: Ticket, action: Classify, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    _check_category(ticket, action.category, at, cal, data)
    return IN_PROGRESS


def _contact(
    ticket: Ticket, action: Contact, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    data.update(method=action.method, outcome=action.outcome)
    return ticket.status


def _request_extension(
    ticket: Ticket, action: RequestExtension, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    end = window_end(ticket, EXTENSION_WINDOW_WORKING_DAYS, cal)
    if at >= end.at:
        raise DeadlinePassed(
            f"extension requests are accepted within {EXTENSION_WINDOW_WORKING_DAYS} working days of receipt "
            f"(until {local_deadline(end.at, cal)}); this one came on {_local(at, cal)}",
            details={"window_ends_at": end.at.isoformat()},
        )
    data.update(working_days=action.working_days, reason=action.reason)
    return EXTENSION_REQUESTED


def _decide_extension(
    ticket: Ticket, action: DecideExtension, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    data.update(decision=action.decision, reason=action.reason)
    if action.decision == "deny":
        return IN_PROGRESS
    requested = ctx.pending_extension_days or MAX_EXTENSION_WORKING_DAYS
    days = action.working_days or requested
    if days > requested:
        raise ValidationFailed(f"the unit asked for {requested} working days; grant at most that", field="working_days")
    ticket.extension_working_days = days
    data["working_days"] = days
    # Art. 15(一): at most 5 more working days, added to the due date in force.
    _set_due(ticket, extend(current_due(ticket, cal), days, cal), at, data)
    return IN_PROGRESS


def _appeal(
    ticket: Ticket, action: Appeal, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    end = window_end(ticket, APPEAL_WINDOW_WORKING_DAYS, cal)
    if at >= end.at:
        raise DeadlinePassed(
            f"an appeal is made within {APPEAL_WINDOW_WORKING_DAYS} working days of receipt "
            f"(until {local_deadline(end.at, cal)}); this one came on {_local(at, cal)} (Art. 15(三))",
            details={"window_ends_at": end.at.isoformat()},
        )
    data.update(grounds=action.grounds, evidence=action.evidence)
    ticket.assignee_org_id = ticket.approval_org_id
    return APPEALED


def _decide_appeal(
    ticket: Ticket, action: DecideAppeal, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    data.update(decision=action.decision, reason=action.reason)
    if action.decision == "valid":
        # The review stands: the unit carries on, on the clock that has kept running (Art. 15(三)).
        if ticket.unit_org_id is None:
            raise BrokenInvariant("ticket.unit_org_id is missing")
        ticket.assignee_org_id = ticket.unit_org_id
        return IN_PROGRESS
    ticket.closed_at = at
    return CLOSED_INVALID


def _consult(
    ticket: Ticket, action: Consult, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    ticket.consultation = True
    data["orgs"] = [o.code for o in ctx.consulted]
    _set_due(ticket, standard_due(ticket, cal), at, data)
    return ticket.status


def _resolve(
    ticket: Ticket, action: Resolve, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    if ticket.category == "simple" and not ctx.contacted:
        # 立整立改 means contacting the evaluator at once (Art. 15(一)); the step must be on record.
        raise TransitionNotAllowed(
            "a simple (立整立改) ticket records contacting the evaluator (action contact) before it is resolved"
        )
    data.update(rectification=action.rectification, reply=action.reply, round=ticket.redo_count + 1)
    if at >= as_utc(ticket.due_at):
        data["late"] = True
    ticket.reply_text = action.reply
    ticket.resolved_at = at
    # The approval department follows up with the callback survey (Art. 15(五)).
    ticket.assignee_org_id = ticket.approval_org_id
    return RESOLVED


def _callback_result(
    ticket: Ticket, action: CallbackResult, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    data["outcome"] = action.outcome
    if action.answer:
        data["answer"] = action.answer
    if action.channel:
        data["channel"] = action.channel
    if action.campaign_id is not None:
        data["campaign_id"] = action.campaign_id
    if action.outcome == "satisfied":
        ticket.closed_at = at
        return CLOSED_SATISFIED
    if action.outcome == "no_answer":
        ticket.closed_at = at
        return CLOSED_NO_ANSWER
    return CALLBACK_UNSATISFIED


def _redo(ticket: Ticket, action: Redo, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]) -> str:
    if ticket.unit_org_id is None:
        raise BrokenInvariant("ticket.unit_org_id is missing")
    ticket.redo_count += 1
    ticket.assignee_org_id = ticket.unit_org_id
    ticket.resolved_at = None
    data.update(reason=action.reason, redo=ticket.redo_count)
    _set_due(ticket, cal.due_at(at, REDO_WORKING_DAYS), at, data)
    return IN_PROGRESS


def _close(
    ticket: Ticket, action: Close, at: datetime, cal: WorkingCalendar, ctx: Context, data: dict[str, Any]
) -> str:
    data["reason"] = action.reason
    ticket.closed_at = at
    return CLOSED_UNSATISFIED


# Each handler takes its own action type; the table is keyed by that type's `action` word.
Handler = Callable[[Ticket, Any, datetime, WorkingCalendar, Context, dict[str, Any]], str]
_HANDLERS: dict[str, Handler] = {
    "transfer": _transfer,
    "accept": _accept,
    "classify": _classify,
    "contact": _contact,
    "request_extension": _request_extension,
    "decide_extension": _decide_extension,
    "appeal": _appeal,
    "decide_appeal": _decide_appeal,
    "consult": _consult,
    "resolve": _resolve,
    "callback_result": _callback_result,
    "redo": _redo,
    "close": _close,
}

_VERBS = {
    "transfer": "transfer it",
    "accept": "accept it",
    "classify": "classify it",
    "contact": "record contacting the evaluator",
    "request_extension": "request an extension",
    "decide_extension": "decide an extension request",
    "appeal": "appeal the rating",
    "decide_appeal": "rule on an appeal",
    "consult": "start a consultation",
    "resolve": "resolve it",
    "callback_result": "record a callback result",
    "redo": "send it back for a redo",
    "close": "close it",
}

_WHAT_NEXT = {
    DISPATCHING: "it is waiting for the approval department to transfer it",
    TRANSFERRED: "it is waiting for the unit to accept it",
    ACCEPTED: "it is accepted and waiting to be classified",
    IN_PROGRESS: "it is being handled by the unit",
    EXTENSION_REQUESTED: "an extension request is waiting for the approval department",
    APPEALED: "an appeal is waiting for the approval department's ruling",
    RESOLVED: "it is resolved and waiting for the callback result",
    CALLBACK_UNSATISFIED: "the evaluator was unsatisfied: the approval department decides redo or close",
}


def _verb(action: str) -> str:
    return _VERBS[action]


def _not_from(action: str, status: str) -> str:
    where = _WHAT_NEXT.get(status, "it is closed")
    return f"cannot {_verb(action)}: the ticket is {status} ({where})"
