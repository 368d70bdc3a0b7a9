"""Domain errors of the work-order rules; each edge translates them (HTTP: status and a JSON body).

Every message says what happened and what to do next, in words a department clerk can act on.
"""

from __future__ import annotations

from gateway.errors import DomainError


class TicketError(DomainError):
    """Base of the work-order errors."""


class TicketNotFound(TicketError):
    """No such ticket, or one the caller may not even see (the two are indistinguishable on purpose)."""

    status = 404
    code = "not_found"

    def __init__(self, ticket_id: int | None = None) -> None:
        what = f"ticket {ticket_id}" if ticket_id is not None else "the ticket"
        super().__init__(f"{what} does not exist or is outside your jurisdiction")


class Forbidden(TicketError):
    """The caller sees the ticket but its role may not do this (e.g. a unit deciding its own appeal)."""

    status = 403
    code = "forbidden"


class TransitionNotAllowed(TicketError):
    """The action does not apply to the ticket in its current status (or was used up, like the one redo)."""

    status = 409
    code = "transition_not_allowed"


class StaleTicket(TransitionNotAllowed):
    """The ticket changed since the caller read it (another action won the race)."""

    code = "stale_ticket"


class DeadlinePassed(TicketError):
    """A request that the regulation only accepts within a window came after the window closed.

    422, not 409: the ticket's state is not in conflict and retrying cannot help; the request itself
    can no longer be processed as asked.
    """

    status = 422
    code = "deadline_passed"


class ValidationFailed(TicketError):
    """The input is well-formed JSON but cannot be used (unknown unit, unit outside the jurisdiction…)."""

    status = 422
    code = "invalid"


class NoContact(TicketError):
    """The evaluator left no phone number to read."""

    status = 404
    code = "no_contact"
