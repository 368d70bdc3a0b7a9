"""The base of the domain errors that the edges translate (HTTP: a status and a JSON body; bot and SMS: a sentence)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """`status` is the HTTP answer, `code` a stable machine word, `field` the input at fault."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details


class BrokenInvariant(RuntimeError):
    """A value the data's own rules guarantee is missing (a foreign key's row, an id after flush): a bug or a
    damaged row, never the caller's fault. Not a `DomainError`: the edge logs it and answers 500."""
