"""Request and answer models of the fraud-flag API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FLAG_STATUSES = ("open", "confirmed", "dismissed")
RuleName = Literal["burst", "staff_rater", "fast", "device", "address", "staff_share", "targeted", "near_duplicate"]
MAX_ID = 2**31 - 1


class FlagQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "confirmed", "dismissed"] | None = Field(
        default=None, description="only flags in this state"
    )
    rule: RuleName | None = Field(default=None, description="only flags of this rule")
    limit: int = Field(default=50, ge=1, le=500)
    before_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="id of the last flag of the previous page")


class FlagOut(BaseModel):
    id: int
    rule: str
    subject: str
    region_code: str
    status: str
    evaluation_count: int
    created_at: datetime
    ruled_at: datetime | None
    ruled_by: str | None = Field(description="code of the organisation that ruled")
    ruling_note: str


class FlagPage(BaseModel):
    items: list[FlagOut]
    next_before_id: int | None


class FlaggedEvaluation(BaseModel):
    id: int
    level: int
    channel: str
    created_at: datetime
    item_name: str
    org_code: str
    region_code: str
    staff_id: str | None
    citizen: str | None = Field(description="the rater's masked number, or chat for a Telegram rater")
    ticket_id: int | None = Field(description="the bad review's work order: its appeal path can cite this flag")
    counts: bool = Field(description="false once a decision (appeal or fraud ruling) makes it stop counting")


class FlagDetail(FlagOut):
    evidence: dict[str, Any]
    evaluations: list[FlaggedEvaluation]
    decisions_written: int = Field(default=0, description="evaluation_decision rows this flag's ruling wrote")


class RulingIn(BaseModel):
    """Confirm or dismiss a flag. Confirming a good review (level 3-5) makes it stop counting; a bad review
    keeps counting until its work order's appeal is ruled (the flag is evidence for it)."""

    model_config = ConfigDict(extra="forbid")
    outcome: Literal["confirmed", "dismissed"]
    note: str = Field(min_length=1, max_length=2000, description="why: what was checked")

    @field_validator("note")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("note must say why (it cannot be blank)")
        return value.strip()


class StaffContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    staff_id: str = Field(default="", max_length=64)
    phone: str = Field(min_length=1, max_length=32)


class StaffContactsIn(BaseModel):
    """A unit's staff phone list, replacing the one stored before; numbers are kept only as keyed hashes."""

    model_config = ConfigDict(extra="forbid")
    org_code: str = Field(min_length=1, max_length=64)
    contacts: list[StaffContactIn] = Field(max_length=5000)


class StaffContactsOut(BaseModel):
    org_code: str
    contacts: int = Field(description="numbers now on the unit's list")
