"""Schemas of the campaign API: what a department sends to start a campaign, and what it reads back."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from gateway.jsontypes import WholeInt, whole_number
from gateway.tickets.schemas import MAX_ID, ORG_CODE

MAX_EXPLICIT_TICKETS = 10_000  # a longer list is a filter's job (and would not fit the request size limit)
TARGET_STATUSES = (
    "pending",
    "queued",
    "sent",
    "delivered",
    "failed",
    "satisfied",
    "unsatisfied",
    "no_answer",
    "skipped",
)
# The bounds come before the validator so that they show in the OpenAPI document as minimum and maximum.
TicketId = Annotated[StrictInt, Ge(1), Le(MAX_ID), BeforeValidator(whole_number)]


class CampaignFilters(BaseModel):
    """Which tickets to survey. Every field is optional and they combine with AND; always only resolved
    tickets awaiting their callback, in the caller's jurisdiction, not already in an open callback."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    resolved_from: date | None = Field(
        default=None, description="local day (Asia/Shanghai) the ticket was resolved, inclusive"
    )
    resolved_to: date | None = Field(default=None, description="local day, inclusive")
    region_code: str | None = Field(default=None, pattern=r"^\d{6}$", description="行政区划 code of the ticket (exact)")
    unit: str | None = Field(default=None, pattern=ORG_CODE, description="org code of the handling unit")
    level: Literal[1, 2] | None = Field(default=None, description="rating level: 1 非常不满意, 2 不满意")
    ticket_ids: list[TicketId] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EXPLICIT_TICKETS,
        description="an explicit list of ticket ids instead of (or narrowed by) the filters above",
    )

    @field_validator("ticket_ids")
    @classmethod
    def _once_each(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _ordered_days(self) -> CampaignFilters:
        if self.resolved_from and self.resolved_to and self.resolved_from > self.resolved_to:
            raise ValueError("resolved_from is after resolved_to")
        return self

    def stored(self) -> dict[str, Any]:
        """The filters as kept on the campaign (JSON)."""
        return self.model_dump(mode="json", exclude_none=True)


class CampaignIn(CampaignFilters):
    """The body of POST /api/v1/campaigns."""

    name: str = Field(default="", max_length=200, description="a label for the department's own use")
    starts_at: AwareDatetime | None = Field(
        default=None, description="when sending may begin (with a UTC offset); default now. Quiet hours still apply."
    )

    @field_validator("starts_at")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            utc = value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("starts_at is out of range") from None
        if not 2000 <= utc.year <= 2200:
            raise ValueError("starts_at is out of range")
        return utc

    def filters(self) -> CampaignFilters:
        return CampaignFilters.model_validate(self.model_dump(exclude={"name", "starts_at"}))


class CampaignCounts(BaseModel):
    """Where the campaign's targets are. `sent`, `delivered` and `failed` count survey messages; a
    target answered by phone may never have had one."""

    targets: int = Field(description="tickets in the campaign")
    pending: int = Field(description="not yet handed to the outbox")
    queued: int = Field(description="in the outbox, waiting to be sent (quiet hours, rate limit, retries)")
    sent: int = Field(
        description="survey messages the provider accepted (including those delivered and answered later)"
    )
    delivered: int = Field(description="survey messages confirmed delivered (SMS delivery receipts)")
    failed: int = Field(description="survey messages that could not be delivered")
    skipped: int = Field(
        description="targets not sent: unreachable or opted out, the ticket left `resolved`, answered in another campaign, or cancelled"
    )
    awaiting_answer: int = Field(description="sent and not answered yet")
    answered: int = Field(description="satisfied + unsatisfied")
    satisfied: int
    unsatisfied: int
    no_answer: int = Field(description="no answer within GATEWAY_SURVEY_NO_ANSWER_DAYS days of sending")


class CampaignRead(BaseModel):
    id: int
    name: str
    org: str = Field(description="code of the approval department that runs it")
    status: Literal["scheduled", "running", "paused", "cancelled", "finished"]
    filters: dict[str, Any] = Field(
        description="the filters it was started with; an explicit list shows as `ticket_ids_count`"
    )
    starts_at: datetime
    created_at: datetime
    finished_at: datetime | None
    counts: CampaignCounts
    satisfaction_rate: float | None = Field(description="satisfied / answered, null before the first answer")
    not_targeted: list[int] | None = Field(
        default=None,
        description=(
            "only in the answer to POST, for an explicit list: the ids not taken (not found in your jurisdiction, "
            "not resolved and awaiting a callback, or already in an open callback)"
        ),
    )


class AnswerIn(BaseModel):
    """An answer taken by phone staff (回访 by telephone, Art. 15(五))."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    ticket_id: WholeInt = Field(ge=1, le=MAX_ID)
    satisfied: StrictBool
    reason: str = Field(
        default="", max_length=1000, description="what the evaluator said (the reason when unsatisfied)"
    )


class AnswerOut(BaseModel):
    campaign_id: int
    ticket_id: int
    target_status: str
    ticket_status: str


class TargetQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(
        default=None,
        pattern=r"^[a-z_]{1,16}(,[a-z_]{1,16}){0,8}$",
        description="one target status or a comma-separated list",
    )
    limit: int = Field(default=100, ge=1, le=500)
    after_id: int | None = Field(default=None, ge=0, le=MAX_ID, description="next_after_id of the previous page")


class TargetRead(BaseModel):
    id: int
    ticket_id: int
    round: int
    status: str
    channel: str | None = Field(description="sms or telegram: where the survey went; null if not sent")
    answered_at: datetime | None
    answer_channel: str | None = Field(description="sms, telegram or phone")
    answer_text: str


class TargetPage(BaseModel):
    items: list[TargetRead]
    next_after_id: int | None
