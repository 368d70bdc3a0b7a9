"""The province profile: what one provincial platform calls things, where it listens, how it signs.

A profile is a TOML file (GATEWAY_PROVINCE_PROFILE: a path, or the name of a profile shipped in
`gateway/upload/profiles/`). It is parsed with tomllib into the models below, which forbid unknown
keys: a typo in a profile stops the gateway at start-up instead of silently dropping a field upstream.
Secrets (the app secret, a bearer token) never live in the file; they come from the settings.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.store.models import EVALUATION_CHANNELS

PROFILES_DIR = Path(__file__).parent / "profiles"


class ProfileError(ValueError):
    """The profile cannot be used: the message names the file and what is wrong in it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    base_url: str
    path: str = "/"
    # A GET answering the province's own counts for a day (see docs/upload.md); empty: none.
    count_path: str = ""
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # 1: one record a request, the record as the JSON body. More: `batch_field` holds a list of them.
    batch_size: int = Field(default=1, ge=1, le=500)
    batch_field: str = "data"


class Auth(_Strict):
    # hmac: app key, time stamp and HMAC-SHA256(app secret, app key + time stamp + body) in headers.
    # bearer: Authorization: Bearer <token>.
    kind: Literal["hmac", "bearer"]
    app_key_header: str = "X-App-Key"
    timestamp_header: str = "X-Timestamp"
    signature_header: str = "X-Signature"


class Levels(_Strict):
    # "5-1": 5 非常满意 … 1 非常不满意 (the gateway's own coding, and deployed provincial interfaces');
    # "1-5": 1 非常满意 … 5 非常不满意 (GB/T 39046-2020 appendix A.8).
    direction: Literal["5-1", "1-5"]


class Times(_Strict):
    # A strftime pattern, or "iso8601", or "epoch_ms".
    format: str = "%Y-%m-%d %H:%M:%S"
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class Fields(_Strict):
    """The province's name for each of the gateway's fields; a field left out is not sent."""

    record_id: str  # "<evaluation id>:<version>": the same for every retry of one record
    version: str | None = None
    occasion: str | None = None  # 首次 for the evaluation, 追加 for each later change
    case_no: str | None = None
    item_code: str | None = None
    item_name: str | None = None
    org_code: str | None = None
    region_code: str | None = None
    channel: str
    level: str
    staff_id: str | None = None
    staff_level: str | None = None
    reason_codes: str | None = None
    content: str | None = None
    evaluated_at: str
    changed_at: str | None = None
    evaluator_type: str | None = None
    valid: str | None = None
    rectification: str | None = None
    callback_result: str | None = None


class Values(_Strict):
    """The province's words or codes for the gateway's enumerations."""

    first: str = "首次"
    later: str = "追加"
    person: str = "个人"
    legal: str = "法人"
    valid: str = "1"
    invalid: str = "0"
    satisfied: str = "满意"
    unsatisfied: str = "不满意"
    no_answer: str = "未回访"
    reason_separator: str = ","


class Response(_Strict):
    # With code_field, a 2xx answer is an acceptance only when that field holds one of ok_codes; any
    # other code is the province refusing the record, with message_field as its words.
    code_field: str = ""
    ok_codes: list[str] = Field(default_factory=lambda: ["0", "200"])
    message_field: str = "msg"


class Counts(_Strict):
    """How the count endpoint is asked and answers: rows of (channel, level, count) for a day."""

    date_param: str = "date"
    date_format: str = "%Y-%m-%d"
    rows_field: str = "data"
    count_field: str = "count"


class ProvinceProfile(_Strict):
    name: str
    endpoint: Endpoint
    auth: Auth
    levels: Levels
    channels: dict[str, str]
    fields: Fields
    times: Times = Times()
    values: Values = Values()
    response: Response = Response()
    counts: Counts = Counts()
    # Fixed fields sent with every record (a source-system code the province assigned, say).
    constants: dict[str, str | int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_channel_mapped(self) -> ProvinceProfile:
        unknown = sorted(set(self.channels) - set(EVALUATION_CHANNELS))
        if unknown:
            raise ValueError(
                f"[channels] names unknown channels {unknown}; the gateway's are {list(EVALUATION_CHANNELS)}"
            )
        missing = [c for c in EVALUATION_CHANNELS if c not in self.channels]
        if missing:
            raise ValueError(
                f"[channels] has no mapping for channel(s) {missing}: every channel needs the province's code"
            )
        # DESIGN §4: the gateway never creates a "default" (系统默认) rating, so no channel may claim to be one.
        default = [c for c, code in self.channels.items() if "默认" in code]
        if default:
            raise ValueError(
                f"[channels] maps {default} to a 系统默认 code; the gateway never uploads a default rating"
            )
        return self

    def channel_code(self, channel: str) -> str:
        return self.channels[channel]

    def level_code(self, level: int) -> int:
        """Our level (5 非常满意 … 1 非常不满意) in the province's direction."""
        return level if self.levels.direction == "5-1" else 6 - level


def resolve_path(name_or_path: str) -> Path:
    """A shipped profile's name (`gbt39046`, `provincial`) or a path to a TOML file."""
    shipped = PROFILES_DIR / f"{name_or_path}.toml"
    if "/" not in name_or_path and not name_or_path.endswith(".toml") and shipped.exists():
        return shipped
    return Path(name_or_path)


def load_profile(name_or_path: str) -> ProvinceProfile:
    """Read and check a profile; every problem is a ProfileError naming the file and the key."""
    path = resolve_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"province profile {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"province profile {path}: not valid TOML: {exc}") from None
    try:
        return ProvinceProfile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {what}" if where else what)
        raise ProfileError(f"province profile {path}: " + "; ".join(problems)) from None
