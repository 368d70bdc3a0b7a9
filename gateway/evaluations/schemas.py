"""Request and answer schemas of the evaluation API (cases in, ratings in)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.jsontypes import WholeInt

_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"


def _no_control_characters(value: str | None) -> str | None:
    # NUL and other control characters have no place in names; PostgreSQL refuses NUL outright.
    if value is not None and any(not ch.isprintable() for ch in value):
        raise ValueError("must not contain control characters")
    return value


class CitizenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: str | None = Field(default=None, max_length=32, description="mobile number; stored encrypted")
    telegram_chat_id: WholeInt | None = Field(default=None, description="private chat with the bot")
    name: str | None = Field(default=None, max_length=50)

    _printable = field_validator("name", "phone")(_no_control_characters)


class CaseIn(BaseModel):
    """A finished service case (办件) reported by a department system."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    case_no: str = Field(pattern=_CODE, description="the department's own case number")
    item_code: str = Field(pattern=_CODE)
    item_name: str = Field(min_length=1, max_length=200)
    org_code: str = Field(pattern=_CODE, description="the handling unit (承办单位)")
    region_code: str = Field(pattern=r"^\d{6}$", description="行政区划 code of the office")
    office_name: str | None = Field(default=None, max_length=200)
    staff_id: str | None = Field(default=None, pattern=_CODE)
    service_channel: Literal["window", "online", "self_service", "app"]
    completed_at: AwareDatetime
    citizen: CitizenIn = Field(default_factory=CitizenIn)
    batch_no: str | None = Field(default=None, pattern=_CODE)
    theme_no: str | None = Field(default=None, pattern=_CODE)

    _printable = field_validator("item_name", "office_name")(_no_control_characters)

    @model_validator(mode="after")
    def _one_grouping(self) -> CaseIn:
        if self.batch_no and self.theme_no:
            raise ValueError("a case belongs to a batch (batch_no) or a theme (theme_no), not both")
        if self.staff_id and self.service_channel != "window":
            raise ValueError("staff_id is only for window cases (Art. 7)")
        return self


class RatingIn(BaseModel):
    """A rating: level 5 非常满意 … 1 非常不满意; levels 1-2 need reasons or text (Art. 8)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    level: WholeInt = Field(ge=1, le=5)
    reasons: list[WholeInt] = Field(default_factory=list, max_length=20)
    text: str = Field(default="", max_length=500)
    staff_level: WholeInt | None = Field(default=None, ge=1, le=5)
    case_no: str | None = Field(default=None, pattern=_CODE, description="rate one item of a theme")

    @field_validator("text")
    @classmethod
    def _printable(cls, value: str) -> str:
        return "".join(ch for ch in value if ch.isprintable() or ch in "\n\t").strip()


class EvaluationIn(RatingIn):
    """A rating submitted by a window evaluator device or phone staff on the citizen's behalf."""

    token: str = Field(min_length=8, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    channel: Literal["evaluator", "phone", "department", "app", "qr", "web"]


class InvitationOut(BaseModel):
    token: str
    rating_url: str
    qr_png_url: str
    qr_svg_url: str
    expires_at: datetime
    expires_provisional: bool
    kind: str
    status: str


class CaseOut(BaseModel):
    case_id: int
    created: bool
    invitation: InvitationOut
    messages_queued: list[dict[str, object]]


MAX_CASES_PER_BATCH = 1000


class CaseBatchIn(BaseModel):
    """Many finished cases in one request; each is checked and answered on its own."""

    model_config = ConfigDict(extra="forbid")
    cases: list[CaseIn] = Field(
        min_length=1,
        max_length=MAX_CASES_PER_BATCH,
        description=f"1 to {MAX_CASES_PER_BATCH} cases, each as for POST /api/v1/cases",
    )


class ErrorOut(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[dict[str, object]] | None = None


class CaseBatchItemOut(BaseModel):
    """One case's answer: `status` is what POST /api/v1/cases would have answered for it alone."""

    index: int = Field(description="the case's position in the request, from 0")
    case_no: str | None = Field(description="the case number sent, when there was one")
    status: int = Field(description="201 created, 200 reported before with the same content, else 4xx")
    case: CaseOut | None = Field(default=None, description="present when status is 200 or 201")
    error: ErrorOut | None = Field(default=None, description="present when status is 4xx")


class CaseBatchOut(BaseModel):
    results: list[CaseBatchItemOut] = Field(description="one per case, in the order sent")
    created: int = Field(description="cases created by this request")
    existing: int = Field(description="cases reported before with the same content")
    refused: int = Field(description="cases answered with an error; nothing of them was recorded")


class AddendumOut(BaseModel):
    """Content given after the rating (reasons asked for in a conversation, the staff rating), as recorded."""

    id: int
    kind: Literal["reasons", "staff"]
    reasons: list[int]
    text: str
    staff_level: int | None
    channel: str
    created_at: datetime


class EvaluationCurrent(BaseModel):
    """The evaluation as it stands now: the original fields with every addendum applied, in order."""

    reasons: list[int] = Field(description="the original reason codes, then those added later (each once)")
    text: str = Field(description="the original text and the texts added later, one per line")
    staff_level: int | None = Field(description="the latest staff rating given (Art. 7), if any")
    updated_at: datetime = Field(description="time of the latest addendum, or of the rating")


class EvaluationOut(BaseModel):
    id: int
    invitation_token: str
    scope: str
    level: int
    reasons: list[int]
    text: str
    staff_level: int | None
    channel: str
    created_at: datetime
    ticket_id: int | None
    applies_to: list[str] = Field(default_factory=list, description="case numbers the rating applies to (batch, theme)")
    counts: bool = Field(default=True, description="false once an appeal ruled it invalid or malicious")
    addenda: list[AddendumOut] = Field(
        default_factory=list, description="content added after the rating, oldest first; the fields above stay as given"
    )
    current: EvaluationCurrent


class EvaluationQuery(BaseModel):
    """Filters of GET /api/v1/evaluations; combined with AND, always within the caller's jurisdiction."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=500)
    before_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="id of the last item of the previous page"
    )
    case_no: str | None = Field(
        default=None, pattern=_CODE, description="the ratings that apply to this case number (a batch's or theme's too)"
    )
    token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{8,16}$", description="the invitation's token")


class EvaluationPage(BaseModel):
    items: list[EvaluationOut] = Field(description="newest first")
    next_before_id: int | None
