"""The OpenAPI document of the department API, generated from the code.

Each views module lists its operations (`Operation`: method, path, the pydantic models of its query,
body and answer); `document()` turns them and the models' JSON Schemas into OpenAPI 3.1. Nothing is
written by hand, so the document cannot drift from the models the views validate with. A test checks
that every /api/v1 route the app registers is in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"


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


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="a stable word: unauthorized, forbidden, not_found, invalid, deadline_passed, …")
    message: str = Field(description="what went wrong and what to do")
    field: str | None = Field(default=None, description="the input at fault")
    details: Any = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorInfo


_ERROR_TEXT = {
    400: "The body is not JSON (or not UTF-8)",
    401: "Missing or invalid API key",
    403: "Your organisation may not do this",
    404: "Not found, or outside your jurisdiction",
    409: "Conflicts with the current state",
    410: "Expired",
    415: "Send the body as application/json",
    422: "Invalid input",
}


# --- the existing evaluation endpoints -----------------------------------------------------------


def _evaluation_operations() -> list[Operation]:
    from gateway.evaluations.schemas import (
        CaseIn,
        CaseOut,
        EvaluationIn,
        EvaluationOut,
        EvaluationPage,
        EvaluationQuery,
    )

    return [
        Operation(
            "POST", "/api/v1/cases", "Report a finished service case (办件)", tag="cases", operation_id="reportCase",
            body=CaseIn, response=CaseOut, status=201, errors=(400, 401, 403, 409, 415, 422),
            description="Idempotent on (org, case_no): the same report again answers 200 with the same invitation.",
            extra_responses={200: "Already reported with the same content"},
        ),
        Operation(
            "POST", "/api/v1/evaluations", "Record a rating on the citizen's behalf (evaluator device, phone staff)",
            tag="evaluations", operation_id="submitEvaluation", body=EvaluationIn, response=EvaluationOut, status=201,
            errors=(400, 401, 403, 404, 409, 410, 415, 422),
        ),
        Operation(
            "GET", "/api/v1/evaluations", "List evaluations in your jurisdiction", tag="evaluations",
            operation_id="listEvaluations", query=EvaluationQuery, response=EvaluationPage, errors=(401, 422),
            description=(
                "Each item keeps the rating as given and adds `addenda` (reasons, text or a staff rating given "
                "later, each with its time) and `current` (the effective values). Filter by `case_no` or `token`."
            ),
        ),
    ]


def operations() -> list[Operation]:
    """Every documented operation of the department API."""
    from gateway.callbacks.views import OPERATIONS as campaign_operations
    from gateway.fraud.views import OPERATIONS as fraud_operations
    from gateway.stats.views import OPERATIONS as stats_operations
    from gateway.tickets.views import OPERATIONS as ticket_operations

    return [
        *_evaluation_operations(), *ticket_operations, *campaign_operations, *fraud_operations, *stats_operations,
        OPENAPI_OPERATION,
    ]


class OpenApiDocument(BaseModel):
    """This document (OpenAPI 3.1)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


OPENAPI_OPERATION = Operation(
    "GET", "/api/v1/openapi.json", "This OpenAPI document", tag="meta", operation_id="getOpenApi",
    response=OpenApiDocument, errors=(), secured=False,
)


# --- building the document -----------------------------------------------------------------------


def document(ops: Iterable[Operation], *, title: str = "好差评 gateway department API", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document for these operations."""
    ops = list(ops)
    models: dict[type[BaseModel], None] = {ErrorBody: None}
    for op in ops:
        for model in (op.body, op.response):
            if model is not None:
                models[model] = None
    key_map, definitions = models_json_schema(
        [(m, "validation") for m in models], ref_template=_REF
    )
    schemas = definitions.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return key_map[(model, "validation")]

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
        }
        if op.description:
            item["description"] = op.description
        parameters = [_path_parameter(p) for p in op.path_params]
        if op.query is not None:
            parameters.extend(_query_parameters(op.query))
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            item["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(op.body)}}}
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": "OK" if op.status == 200 else "Created"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": ref(op.response)}}
        if op.media_types:
            ok["content"] = {
                media: {"schema": {"type": "string", "description": text}} for media, text in op.media_types.items()
            }
        responses[str(op.status)] = ok
        for status, text in op.extra_responses.items():
            responses[str(status)] = {"description": text, **({"content": ok["content"]} if "content" in ok else {})}
        for status in op.errors:
            responses[str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": ref(ErrorBody)}},
            }
        item["responses"] = responses
        item["security"] = [{"bearer": []}] if op.secured else []
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Department API of the 好差评 evaluation gateway. Every call carries "
                "`Authorization: Bearer <api key>`; a key belongs to one organisation and sees only its "
                "jurisdiction. Errors are JSON: {\"error\": {\"code\", \"message\", \"field\"?}}."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "the organisation's API key (gk_…)"}
            },
        },
    }


def _path_parameter(param: PathParam) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": 1}
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    out: dict[str, Any] = {"name": param.name, "in": "path", "required": True, "description": param.description, "schema": schema}
    if param.example is not None:
        out["example"] = param.example
    return out


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is optional by being absent; it has no null value to send."""
    options = prop.get("anyOf")
    if not options:
        return dict(prop)
    kept = [o for o in options if o.get("type") != "null"]
    out = {k: v for k, v in prop.items() if k != "anyOf"}
    if len(kept) == 1:
        out.update(kept[0])
    else:
        out["anyOf"] = kept
    if out.get("default", ...) is None:
        del out["default"]
    return out


@lru_cache(maxsize=1)
def _cached_document() -> dict[str, Any]:
    return document(operations())


routes = web.RouteTableDef()


@routes.get("/api/v1/openapi.json")
async def openapi_view(request: web.Request) -> web.Response:
    """The document is public: it describes the API and holds no data."""
    return web.json_response(_cached_document())


__all__ = ["Operation", "PathParam", "document", "operations", "routes"]
