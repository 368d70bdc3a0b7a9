"""What a views module declares about each of its API endpoints, for the OpenAPI document.

A leaf: it imports no views and no app, so every views module (and `gateway.web.openapi`) can import it.
Each API views module exports `routes` and `OPERATIONS: list[Operation]`; `gateway.app.API_VIEWS` names
those modules, and the app registers their routes and collects their operations in one loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel


@dataclass(frozen=True)
class PathParam:
    name: str
    description: str
    maximum: int | None = None
    example: int | None = None


@dataclass(frozen=True)
class Operation:
    """One documented endpoint."""

    method: str
    path: str  # OpenAPI form: /api/v1/tickets/{id}
    summary: str
    tag: str
    operation_id: str
    response: type[BaseModel] | None = None
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: Sequence[PathParam] = ()
    description: str = ""
    errors: Sequence[int] = (401,)
    secured: bool = True
    extra_responses: Mapping[int, str] = field(default_factory=dict)
    media_types: Mapping[str, str] = field(default_factory=dict)  # a file answer: media type -> description


__all__ = ["Operation", "PathParam"]
