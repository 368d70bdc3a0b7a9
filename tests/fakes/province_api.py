"""A loopback stand-in for a provincial 好差评 platform's upload interface.

FakeProvince reads the same province profile as the gateway (field names, signing headers, answer
codes), checks the HMAC signature (or the bearer token) of every request, and counts what it was sent:
every request, every record, and each record id once (`accepted`), so a test can tell a repeat from a
loss. On demand it answers errors, holds its answer past the client's time-out, or refuses records it
finds invalid with a message, as a province does. Its count endpoint answers its own per-day counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.upload.profile import ProvinceProfile

from . import LoopbackServer

APP_KEY = "ankang-gateway"
APP_SECRET = "province-secret-0123456789abcdef"
TOKEN = "province-bearer-token-abcdef"


@dataclass
class _Failure:
    remaining: int
    status: int
    message: str
    delay_seconds: float = 0.0


@dataclass
class FakeProvince(LoopbackServer):
    profile: ProvinceProfile
    app_key: str = APP_KEY
    app_secret: str = APP_SECRET
    token: str = TOKEN
    latency_seconds: float = 0.0  # how long each accepted request takes to be answered
    requests: int = 0  # every request that reached the endpoint, whatever it was answered
    unauthorised: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)  # records of requests answered with success
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # by record id, the last version kept
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (record id, message)
    count_extra: Counter[tuple[str, str]] = field(default_factory=Counter)  # to make the counts disagree
    _failures: list[_Failure] = field(default_factory=list)
    _invalid: Callable[[dict[str, Any]], str | None] | None = None
    _hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        super().__init__()

    def __hash__(self) -> int:
        return id(self)

    # --- what a test asks for ---------------------------------------------------------------------
    def fail_next(
        self, count: int, *, status: int = 503, message: str = "系统繁忙，请稍后重试", delay_seconds: float = 0.0,
    ) -> None:
        """The next `count` requests get this answer (after `delay_seconds`; a long delay is a time-out)."""
        self._failures.append(_Failure(count, status, message, delay_seconds))

    def refuse(self, check: Callable[[dict[str, Any]], str | None]) -> None:
        """Refuse (400 with the message) every request holding a record for which `check` gives a message."""
        self._invalid = check

    def hold(self) -> asyncio.Event:
        """Hold every answer until the returned event is set (records arrive; nothing is answered)."""
        self._hold = asyncio.Event()
        return self._hold

    @property
    def repeats(self) -> int:
        """Records received more than once (in successful requests)."""
        counts = Counter(self._id(r) for r in self.received)
        return sum(n - 1 for n in counts.values())

    def _id(self, record: dict[str, Any]) -> str:
        return str(record.get(self.profile.fields.record_id))

    # --- the server -------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(self.profile.endpoint.path, self._upload)
        if self.profile.endpoint.count_path:
            app.router.add_get(self.profile.endpoint.count_path, self._counts)
        return app

    def _answer(self, status: int, code: str, message: str) -> web.Response:
        response = self.profile.response
        body: dict[str, Any] = {response.message_field: message}
        if response.code_field:
            body[response.code_field] = code
        return web.json_response(body, status=status)

    def _authorised(self, request: web.Request, body: bytes) -> bool:
        auth = self.profile.auth
        if auth.kind == "bearer":
            return hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.token}")
        key = request.headers.get(auth.app_key_header, "")
        stamp = request.headers.get(auth.timestamp_header, "")
        given = request.headers.get(auth.signature_header, "")
        expected = hmac.new(self.app_secret.encode(), key.encode() + stamp.encode() + body, hashlib.sha256).hexdigest()
        return key == self.app_key and stamp.isdigit() and hmac.compare_digest(given, expected)

    async def _upload(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        self.arrived.set()
        if not self._authorised(request, body):
            self.unauthorised += 1
            return self._answer(401, "401", "签名校验失败")
        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.pop(0)
            await self.pause(failure.delay_seconds)
            return self._answer(failure.status, str(failure.status), failure.message)
        if self._hold is not None:
            await self.until(self._hold)
        document = json.loads(body)
        records = document if isinstance(document, list) else (
            document[self.profile.endpoint.batch_field] if self.profile.endpoint.batch_size > 1 else [document]
        )
        for record in records:
            problem = self._invalid(record) if self._invalid is not None else None
            if problem is not None:
                self.rejected.append((self._id(record), problem))
                return self._answer(400, "400", problem)
        for record in records:
            self.received.append(record)
            self.accepted[self._id(record)] = record
        # Stored before the answer: a client that dies now has delivered without hearing so.
        await self.pause(self.latency_seconds)
        return self._answer(200, self.profile.response.ok_codes[0], "成功")

    async def _counts(self, request: web.Request) -> web.Response:
        auth = self.profile.auth
        if auth.kind == "hmac" and request.headers.get(auth.app_key_header) != self.app_key:
            return self._answer(401, "401", "签名校验失败")
        fields, spec = self.profile.fields, self.profile.counts
        day = request.query.get(spec.date_param, "")
        counts: Counter[tuple[str, str]] = Counter()
        for record in self.accepted.values():
            first = fields.occasion is None or record.get(fields.occasion) == self.profile.values.first
            if first and str(record.get(fields.evaluated_at, "")).startswith(day):
                counts[(str(record[fields.channel]), str(record[fields.level]))] += 1
        counts.update(self.count_extra)
        rows = [{fields.channel: c, fields.level: lv, spec.count_field: n}
                for (c, lv), n in sorted(counts.items()) if n]
        return web.json_response({spec.rows_field: rows, "code": "200"})
