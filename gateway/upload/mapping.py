"""From an upload record's payload (the gateway's terms) to the province's fields, and the signature.

The only place that knows the province's names, codes, level direction and time format is the profile;
this module applies it at send time, to records written in the gateway's own terms.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from gateway.upload.profile import ProvinceProfile


def format_time(instant: str | datetime, profile: ProvinceProfile) -> str | int:
    """An instant (aware, or ISO 8601 text) in the profile's time zone and format."""
    at = datetime.fromisoformat(instant) if isinstance(instant, str) else instant
    if profile.times.format == "epoch_ms":
        return int(at.timestamp() * 1000)
    local = at.astimezone(ZoneInfo(profile.times.timezone))
    if profile.times.format == "iso8601":
        return local.isoformat(timespec="seconds")
    return local.strftime(profile.times.format)


def to_province(payload: dict[str, Any], profile: ProvinceProfile) -> dict[str, Any]:
    """The record as the province's JSON object: only the fields the profile names, in its codes."""
    values = profile.values
    version = int(payload["version"])
    ours: dict[str, Any] = {
        "record_id": payload["record_id"],
        "version": version,
        "occasion": values.first if version == 1 else values.later,
        "case_no": payload.get("case_no"),
        "item_code": payload.get("item_code"),
        "item_name": payload.get("item_name"),
        "org_code": payload.get("org_code"),
        "region_code": payload.get("region_code"),
        "channel": profile.channel_code(payload["channel"]),
        "level": profile.level_code(int(payload["level"])),
        "staff_id": payload.get("staff_id"),
        "staff_level": profile.level_code(payload["staff_level"]) if payload.get("staff_level") else None,
        "reason_codes": values.reason_separator.join(str(code) for code in payload.get("reason_codes") or []),
        "content": payload.get("content") or "",
        "evaluated_at": format_time(payload["evaluated_at"], profile),
        "changed_at": format_time(payload["changed_at"], profile),
        "evaluator_type": values.legal if payload.get("evaluator_type") == "legal" else values.person,
        "valid": values.valid if payload.get("valid", True) else values.invalid,
        "rectification": payload.get("rectification"),
        "callback_result": getattr(values, payload["callback_result"]) if payload.get("callback_result") else None,
    }
    body: dict[str, Any] = dict(profile.constants)
    for field, name in profile.fields.model_dump().items():
        if name is not None and ours.get(field) is not None:
            body[name] = ours[field]
    return body


def request_body(payloads: list[dict[str, Any]], profile: ProvinceProfile) -> bytes:
    """One record as the body (batch size 1), or several under the profile's batch field."""
    records = [to_province(p, profile) for p in payloads]
    document: Any = records[0] if profile.endpoint.batch_size == 1 else {profile.endpoint.batch_field: records}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def hmac_signature(secret: str, app_key: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 over app key, time stamp and the exact body bytes (docs/upload.md)."""
    message = app_key.encode("utf-8") + timestamp.encode("ascii") + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def local_day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The UTC instants where a local calendar day starts and ends (reconciliation's day)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(date.fromordinal(day.toordinal() + 1), time(0), tzinfo=zone)
    return start, end
