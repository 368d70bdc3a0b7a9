"""The provincial platform over HTTP: one signed POST per request, and what its answer means (the
upload feed's `Transport`; a transport package like `gateway.sms` for Twilio)."""

from __future__ import annotations

import json
import logging
import time
from datetime import date
from typing import Any

import aiohttp

from gateway.upload.mapping import hmac_signature, request_body
from gateway.upload.profile import ProvinceProfile
from gateway.upload.transport import CountsUnavailable, Delivery, ProvinceCount

log = logging.getLogger(__name__)


class ProvinceClient:
    """The HTTP transport: POST the mapped records to the profile's endpoint, signed."""

    def __init__(
        self,
        *,
        profile: ProvinceProfile,
        session: aiohttp.ClientSession,
        base_url: str = "",
        app_key: str = "",
        app_secret: str = "",
        token: str = "",
    ) -> None:
        self.profile = profile
        self.session = session
        self.base_url = (base_url or profile.endpoint.base_url).rstrip("/")
        self._app_key, self._app_secret, self._token = app_key, app_secret, token

    def headers(self, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        auth = self.profile.auth
        if auth.kind == "bearer":
            headers["Authorization"] = f"Bearer {self._token}"
        else:
            timestamp = str(int(time.time() * 1000))
            headers[auth.app_key_header] = self._app_key
            headers[auth.timestamp_header] = timestamp
            headers[auth.signature_header] = hmac_signature(self._app_secret, self._app_key, timestamp, body)
        return headers

    async def send(self, payloads: list[dict[str, Any]]) -> Delivery:
        body = request_body(payloads, self.profile)
        headers = self.headers(body)
        if len(payloads) == 1:
            headers["Idempotency-Key"] = str(payloads[0]["record_id"])
        url = self.base_url + self.profile.endpoint.path
        timeout = aiohttp.ClientTimeout(total=self.profile.endpoint.timeout_seconds)
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as response:
                text = await response.text(errors="replace")
                return self._read(response.status, text, response.headers.get("Retry-After"))
        except TimeoutError:
            waited = self.profile.endpoint.timeout_seconds
            return Delivery("retry", code="timeout", detail=f"no answer within {waited:g} s")
        except aiohttp.ClientError as exc:
            return Delivery("retry", code="unreachable", detail=f"{type(exc).__name__}: {exc}"[:500])

    def _read(self, status: int, text: str, retry_after: str | None) -> Delivery:
        document = _json(text)
        message = _message(document, self.profile.response.message_field) or text[:500]
        if status in (408, 429) or status >= 500:
            return Delivery("retry", code=f"http_{status}", detail=message, retry_after_seconds=_seconds(retry_after))
        if status in (401, 403):
            # Our key, secret or clock is wrong, not the record: keep it, and say so loudly.
            log.error("the province refused our credentials", extra={"status": status, "detail": message[:200]})
            return Delivery("retry", code=f"http_{status}", detail=message)
        if 400 <= status < 500:
            return Delivery("rejected", code=f"http_{status}", detail=message)
        if not 200 <= status < 300:
            return Delivery("retry", code=f"http_{status}", detail=message)
        code_field = self.profile.response.code_field
        if not code_field:
            return Delivery("accepted")
        code = document.get(code_field) if isinstance(document, dict) else None
        if code is not None and str(code) in self.profile.response.ok_codes:
            return Delivery("accepted", code=str(code))
        return Delivery("rejected", code=f"code_{code}", detail=message or f"answer without an accepted {code_field}")

    async def counts(self, day: date) -> list[ProvinceCount] | None:
        """The province's own counts for a local day, or None when the profile has no count endpoint."""
        endpoint, spec = self.profile.endpoint, self.profile.counts
        if not endpoint.count_path:
            return None
        params = {spec.date_param: day.strftime(spec.date_format)}
        body = b""
        headers = self.headers(body)
        headers.pop("Content-Type", None)
        timeout = aiohttp.ClientTimeout(total=endpoint.timeout_seconds)
        async with self.session.get(
            self.base_url + endpoint.count_path, params=params, headers=headers, timeout=timeout
        ) as response:
            text = await response.text(errors="replace")
            if response.status != 200:
                raise CountsUnavailable(f"the province's count endpoint answered {response.status}: {text[:200]}")
        document = _json(text)
        rows = document.get(spec.rows_field) if isinstance(document, dict) else None
        if not isinstance(rows, list):
            raise CountsUnavailable(f"the province's count answer has no list {spec.rows_field!r}")
        fields = self.profile.fields
        out = []
        for row in rows:
            if isinstance(row, dict):
                out.append(
                    ProvinceCount(
                        channel=str(row.get(fields.channel)),
                        level=str(row.get(fields.level)),
                        count=int(row.get(spec.count_field) or 0),
                    )
                )
        return out


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _message(document: Any, field_name: str) -> str:
    if isinstance(document, dict) and document.get(field_name) is not None:
        return str(document[field_name])[:1000]
    return ""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


__all__ = ["ProvinceClient"]
