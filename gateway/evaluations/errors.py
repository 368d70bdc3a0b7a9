"""Domain errors of the evaluation rules; the HTTP layer maps them to status codes."""


class EvaluationError(Exception):
    """Base: `field` names the input at fault when there is one."""

    status = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidCase(EvaluationError):
    status = 422


class CaseConflict(EvaluationError):
    status = 409


class Forbidden(EvaluationError):
    status = 403


class InvitationNotFound(EvaluationError):
    status = 404


class InvitationExpired(EvaluationError):
    status = 410


class AlreadyRated(EvaluationError):
    status = 409


class InvalidRating(EvaluationError):
    status = 422
