"""The OpenAPI document of the department API, generated from the code.

Each API views module lists its operations (`OPERATIONS`, a list of `gateway.web.operations.Operation`:
method, path, the pydantic models of its query, body and answer); the app collects them from the modules
named in `gateway.app.API_VIEWS` and keeps them under `API_OPERATIONS`; `document()` turns them and the models' JSON Schemas into OpenAPI 3.1. Nothing is
written by hand, so the document cannot drift from the models the views validate with. A test checks
that every /api/v1 route the app registers is in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from gateway.web.keys import API_OPERATIONS
from gateway.web.operations import Operation, PathParam

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/{model}"


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


class OpenApiDocument(BaseModel):
    """This document (OpenAPI 3.1)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


OPENAPI_OPERATION = Operation(
    "GET",
    "/api/v1/openapi.json",
    "This OpenAPI document",
    tag="meta",
    operation_id="getOpenApi",
    response=OpenApiDocument,
    errors=(),
    secured=False,
)


# --- building the document -----------------------------------------------------------------------


def document(
    ops: Iterable[Operation], *, title: str = "好差评 gateway department API", version: str = "1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for these operations."""
    ops = list(ops)
    models: dict[type[BaseModel], None] = {ErrorBody: None}
    for op in ops:
        for model in (op.body, op.response):
            if model is not None:
                models[model] = None
    key_map, definitions = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
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
                'jurisdiction. Errors are JSON: {"error": {"code", "message", "field"?}}.'
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
    out: dict[str, Any] = {
        "name": param.name,
        "in": "path",
        "required": True,
        "description": param.description,
        "schema": schema,
    }
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


_documents: dict[tuple[str, ...], dict[str, Any]] = {}


def cached_document(ops: Sequence[Operation]) -> dict[str, Any]:
    """The document of these operations, built once per set of operations."""
    key = tuple(f"{o.method} {o.path} {o.operation_id}" for o in ops)
    if key not in _documents:
        _documents[key] = document(ops)
    return _documents[key]


routes = web.RouteTableDef()


@routes.get("/api/v1/openapi.json")
async def openapi_view(request: web.Request) -> web.Response:
    """The document is public: it describes the API and holds no data."""
    operations: tuple[Operation, ...] = request.app[API_OPERATIONS]
    return web.json_response(cached_document(operations))


OPERATIONS = [OPENAPI_OPERATION]

__all__ = ["OPERATIONS", "Operation", "PathParam", "cached_document", "document", "routes"]
