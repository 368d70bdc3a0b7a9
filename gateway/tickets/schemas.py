"""Schemas of the work-order API: one command model per action (a discriminated union), and the reads."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from gateway.evaluations.schemas import AddendumOut, EvaluationCurrent
from gateway.jsontypes import WholeInt

ORG_CODE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_ID = 2**31 - 1  # the ticket table's integer keys; larger numbers cannot name a ticket

Category = Literal["simple", "general"]
Text = Annotated[str, Field(min_length=1, max_length=2000)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: str = Field(default="", max_length=1000, description="a free comment kept on the event")
    expected_version: WholeInt | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="the ticket version the caller read; a different current version answers 409 stale_ticket",
    )


class Transfer(_Action):
    """Approval department: hand the ticket to a handling unit or the platform builder (Art. 14), or re-route it."""

    action: Literal["transfer"]
    unit: str | None = Field(
        default=None, pattern=ORG_CODE, description="org code of the unit; default: the unit proposed by routing"
    )


class Accept(_Action):
    """Handling unit: take the ticket; may classify it at once."""

    action: Literal["accept"]
    category: Category | None = Field(default=None, description="simple (立整立改, 5 working days) or general (10)")


class Classify(_Action):
    """Handling unit: classify an accepted ticket (Art. 15(一))."""

    action: Literal["classify"]
    category: Category


class Contact(_Action):
    """Handling unit: record contacting the evaluator (immediately for simple tickets)."""

    action: Literal["contact"]
    method: Literal["phone", "sms", "visit", "other"]
    outcome: Text


class RequestExtension(_Action):
    """Handling unit: ask the approval department for more time, within 5 working days of receipt."""

    action: Literal["request_extension"]
    working_days: WholeInt = Field(ge=1, le=5)
    reason: Text


class DecideExtension(_Action):
    """Approval department: approve (possibly fewer days) or deny a pending extension request."""

    action: Literal["decide_extension"]
    decision: Literal["approve", "deny"]
    working_days: WholeInt | None = Field(
        default=None, ge=1, le=5, description="days granted when approving; default: the days requested"
    )
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _days_only_when_approving(self) -> DecideExtension:
        if self.decision == "deny" and self.working_days is not None:
            raise ValueError("working_days is only given when approving")
        return self


class Appeal(_Action):
    """Handling unit: ask for review of a mistaken or malicious rating, within 2 working days (Art. 15(三))."""

    action: Literal["appeal"]
    grounds: Literal["mistaken", "malicious"]
    evidence: Text


class DecideAppeal(_Action):
    """Approval department: rule on an appeal. Invalid or malicious ratings stop counting; the ticket closes."""

    action: Literal["decide_appeal"]
    decision: Literal["valid", "invalid", "malicious"]
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _reason_for_voiding(self) -> DecideAppeal:
        if self.decision != "valid" and not self.reason:
            raise ValueError("a ruling that voids a rating needs a reason")
        return self


class Consult(_Action):
    """Approval department: coordinate a cross-department case (会商, Art. 15(四)); the reply is due in 15 working days."""

    action: Literal["consult"]
    orgs: list[Annotated[str, Field(pattern=ORG_CODE)]] = Field(min_length=1, max_length=20)


class Resolve(_Action):
    """Handling unit: record the rectification and the reply sent to the evaluator (Art. 15(二))."""

    action: Literal["resolve"]
    rectification: Text
    reply: str = Field(min_length=1, max_length=500, description="sent to the evaluator on their channel")


class CallbackResult(_Action):
    """Approval department or a callback campaign: the evaluator's answer to the callback survey (回访)."""

    action: Literal["callback_result"]
    outcome: Literal["satisfied", "unsatisfied", "no_answer"]
    answer: str = Field(default="", max_length=1000, description="what the evaluator said, if anything")
    channel: Literal["phone", "sms", "telegram", "visit", "other"] | None = None
    campaign_id: WholeInt | None = Field(default=None, ge=1, le=MAX_ID)


class Redo(_Action):
    """Approval department: an unsatisfied callback is the unit's fault; send it back once (Art. 15(五))."""

    action: Literal["redo"]
    reason: Text


class Close(_Action):
    """Approval department: an unsatisfied callback is not the unit's fault; close the ticket."""

    action: Literal["close"]
    reason: Text


TicketAction = Annotated[
    Union[
        Transfer,
        Accept,
        Classify,
        Contact,
        RequestExtension,
        DecideExtension,
        Appeal,
        DecideAppeal,
        Consult,
        Resolve,
        CallbackResult,
        Redo,
        Close,
    ],
    Field(discriminator="action"),
]
ACTION_NAMES = (
    "transfer",
    "accept",
    "classify",
    "contact",
    "request_extension",
    "decide_extension",
    "appeal",
    "decide_appeal",
    "consult",
    "resolve",
    "callback_result",
    "redo",
    "close",
)


class ActionIn(RootModel[TicketAction]):
    """The body of POST /api/v1/tickets/{id}/actions: {"action": "...", ...fields of that action}."""


# --- reads -----------------------------------------------------------------------------------------


class OrgRef(BaseModel):
    code: str
    name: str
    kind: str


class EvaluationRef(BaseModel):
    """The rating behind the ticket: the fields as given, then the later addenda and the effective values."""

    id: int
    level: int
    reasons: list[int]
    text: str
    staff_level: int | None = None
    channel: str
    created_at: datetime
    counts: bool = Field(description="false once an appeal ruled the rating invalid or malicious")
    addenda: list[AddendumOut] = Field(default_factory=list, description="content added after the rating, oldest first")
    current: EvaluationCurrent


class CitizenRef(BaseModel):
    phone_masked: str | None
    reachable_by: str | None = Field(description="sms or telegram: where the reply goes; null if unreachable")


class EventRead(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_org: str | None
    action: str
    from_status: str | None
    to_status: str
    note: str
    data: dict[str, Any]


class TicketSummary(BaseModel):
    id: int
    status: str
    category: str
    level: int
    responsibility: str
    region_code: str
    item_name: str
    approval_org: OrgRef
    unit_org: OrgRef | None
    assignee_org: OrgRef
    created_at: datetime
    received_at: datetime | None
    due_at: datetime
    due_local: str = Field(description="the deadline as a local day: 'YYYY-MM-DD 24:00 Asia/Shanghai'")
    due_provisional: bool = Field(description="computed for a year without an official holiday schedule")
    overdue: bool = Field(description="unfinished and past its due time now")
    overdue_since: datetime | None
    consultation: bool
    extension_working_days: int
    redo_count: int
    resolved_at: datetime | None
    closed_at: datetime | None
    version: int


class TicketDetail(TicketSummary):
    case_no: str | None
    applies_to: list[str] = Field(
        default_factory=list, description="case numbers the rated service covers (every item of a batch or theme)"
    )
    office_name: str
    evaluation: EvaluationRef
    citizen: CitizenRef | None
    reply_text: str
    allowed_actions: list[str] = Field(description="actions the caller may take now")
    events: list[EventRead]


class TicketPage(BaseModel):
    items: list[TicketSummary]
    next_cursor: str | None = Field(description="pass as cursor to get the next page; null on the last page")


class ContactRead(BaseModel):
    ticket_id: int
    phone: str = Field(description="full number in E.164; this read is logged (Art. 16(四))")
    phone_masked: str


class TicketQuery(BaseModel):
    """Filters of GET /api/v1/tickets; everything is optional and combined with AND."""

    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(
        default=None, pattern=r"^[a-z_]{1,24}(,[a-z_]{1,24}){0,15}$", description="one status or a comma-separated list"
    )
    region: str | None = Field(default=None, pattern=r"^\d{6}$", description="行政区划 code (exact)")
    unit: str | None = Field(default=None, pattern=ORG_CODE, description="org code of the handling unit")
    overdue: bool | None = Field(default=None, description="true: unfinished and past due now; false: the others")
    level: int | None = Field(default=None, ge=1, le=2, description="rating level: 1 非常不满意, 2 不满意")
    created_from: date | None = Field(default=None, description="local day, inclusive")
    created_to: date | None = Field(default=None, description="local day, inclusive")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, pattern=r"^\d{1,10}$", description="next_cursor of the previous page")
    case_no: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$",
        description="tickets whose rating covers this case number (its own, or its batch's or theme's)",
    )
