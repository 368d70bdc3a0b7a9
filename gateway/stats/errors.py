"""Statistics errors, translated at the HTTP edge (gateway.errors)."""

from __future__ import annotations

from gateway.errors import DomainError


class InvalidStatsQuery(DomainError):
    """A filter, grouping or period that cannot be answered: 422 naming the field."""

    status = 422
    code = "invalid"
