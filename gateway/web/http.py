"""HTTP edge helpers: JSON errors that name the field, request parsing, Bearer authentication."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.errors import DomainError
from gateway.orgs import Caller, authenticate
from gateway.web.keys import STORE

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """Raised anywhere in a request; answered as {"error": {"code", "message", "field"?, "details"?}}."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.details = status, code, message, field, details

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return web.json_response({"error": body}, status=self.status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 410: "expired"}


async def read_json(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body; any fault is a 4xx that says which field and why."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    data = decode_json_object(await request.read())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def read_large_json(request: web.Request, *, max_bytes: int) -> dict[str, Any]:
    """A JSON object body of up to `max_bytes` (more than the app's usual limit), not yet validated."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    too_large = ApiError(413, "payload_too_large", f"the body is larger than {max_bytes} bytes; send fewer items")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    raw = bytearray()
    while chunk := await request.content.read(1 << 16):
        raw += chunk
        if len(raw) > max_bytes:
            raise too_large
    return decode_json_object(bytes(raw), refuse_nul=False)


def decode_json_object(raw: bytes, *, refuse_nul: bool = True) -> dict[str, Any]:
    """Decode a body to a JSON object; any fault is a 4xx that says where. `refuse_nul=False` leaves the
    NUL check (see `nul_at`) to the caller, which answers each item of a list on its own."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "the body must be a JSON object")
    where = nul_at(data) if refuse_nul else None
    if where is not None:  # PostgreSQL cannot store it, and no field of ours has a use for it
        raise ApiError(
            422, "invalid", f"{where or 'body'}: must not contain the NUL character (\\u0000)", field=where or None
        )
    return data


def nul_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) holding a NUL character, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return inner
            found = nul_at(item, inner)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_at(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def parse_query(request: web.Request, model: type[M]) -> M:
    """The query string as a model: an unknown or repeated parameter is a 422 naming it."""
    data: dict[str, str] = {}
    for name, value in request.query.items():
        if name in data:
            raise ApiError(422, "invalid", f"{name}: given more than once", field=name)
        if "\x00" in value or "\x00" in name:
            raise ApiError(422, "invalid", f"{name}: must not contain the NUL character", field=name)
        data[name] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> ApiError:
    details: list[dict[str, Any]] = [
        {"field": ".".join(str(p) for p in err["loc"]) or None, "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = details[0]
    return ApiError(
        422,
        "invalid",
        f"{first['field']}: {first['message']}" if first["field"] else first["message"],
        field=first["field"],
        details=details,
    )


class CallerCache:
    """Callers of keys that were valid a moment ago, so a department posting many requests is looked up
    once per `ttl_seconds`, not once per request. A key revoked in the database stops working within that
    time; an invalid key is never remembered, and is looked up every time."""

    def __init__(self, ttl_seconds: float = 10.0, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds, self.monotonic = ttl_seconds, monotonic
        self._callers: dict[bytes, tuple[Caller, float]] = {}

    def get(self, key: str) -> Caller | None:
        found = self._callers.get(_digest(key))
        if found is None or found[1] <= self.monotonic():
            return None
        return found[0]

    def put(self, key: str, caller: Caller) -> None:
        if len(self._callers) >= 10_000:  # many keys at once: start afresh rather than grow
            self._callers.clear()
        self._callers[_digest(key)] = (caller, self.monotonic() + self.ttl_seconds)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


CALLERS: web.AppKey[CallerCache] = web.AppKey("api_callers")


async def require_caller(request: web.Request) -> Caller:
    """Authenticate the Bearer API key before the body is read (STYLE 6)."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <api key>")
    cache = request.app.get(CALLERS)
    caller = cache.get(key) if cache is not None else None
    if caller is not None:
        return caller
    async with request.app[STORE].transaction() as session:
        caller = await authenticate(session, key)
    if caller is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    if cache is not None:
        cache.put(key, caller)
    return caller


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors become clear 4xx answers; anything unexpected is logged with a request id."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except DomainError as exc:
        response = ApiError(exc.status, exc.code, exc.message, field=exc.field, details=exc.details).response()
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith(("/api/", "/webhooks/")):
            code = _CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
            response = ApiError(exc.status, code, exc.reason).response()
            if "Allow" in exc.headers:  # a 405 says which methods the resource takes (RFC 9110 §15.5.6)
                response.headers["Allow"] = exc.headers["Allow"]
        else:
            raise
    except Exception:
        log.exception("unexpected error", extra={"request_id": request_id, "path": request.path})
        response = ApiError(500, "internal", f"something went wrong; quote request id {request_id}").response()
    response.headers["X-Request-Id"] = request_id
    return response
