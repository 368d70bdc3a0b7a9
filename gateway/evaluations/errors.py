"""Domain errors of the evaluation rules; the edges translate them like every `DomainError`."""

from __future__ import annotations

from gateway.errors import DomainError


class EvaluationError(DomainError):
    """Base: `field` names the input at fault when there is one."""

    status = 422
    code = "invalid"


class InvalidCase(EvaluationError):
    status = 422


class CaseConflict(EvaluationError):
    status = 409
    code = "conflict"


class Forbidden(EvaluationError):
    status = 403
    code = "forbidden"


class InvitationNotFound(EvaluationError):
    status = 404
    code = "not_found"


class InvitationExpired(EvaluationError):
    status = 410
    code = "expired"


class AlreadyRated(EvaluationError):
    status = 409
    code = "conflict"


class InvalidRating(EvaluationError):
    status = 422
