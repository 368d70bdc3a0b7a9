"""The upload feed's table: one row per evaluation record version the province is to receive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# pending: waiting for its turn; sending: claimed (leased) by a feed; acknowledged: the province took it;
# failed: set aside (the province refused it, or the tries ran out), with the province's message.
UPLOAD_STATUSES = ("pending", "sending", "acknowledged", "failed")


def _ts(**kw: Any) -> Any:
    return Field(sa_type=DateTime(timezone=True), **kw)


class UploadRecord(SQLModel, table=True):
    """One version of one evaluation as the province should see it, written in the transaction of the
    change that made it (the evaluation, an addendum, a ruling, the ticket's rectification or callback).

    `payload` is the evaluation's whole state at that version, in the gateway's own terms; the province
    profile maps it to the province's fields when it is sent, so a corrected profile applies to what
    still waits. `record_key` (`<evaluation id>:<version>`) is the id the province sees on every try.
    """

    __tablename__ = "upload_record"
    __table_args__ = (
        UniqueConstraint("evaluation_id", "version", name="uq_upload_evaluation_version"),
        Index("ix_upload_ready", "status", "next_attempt_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    evaluation_id: int = Field(foreign_key="evaluation.id")
    version: int
    record_key: str = Field(max_length=40, unique=True, index=True)
    change: str = Field(max_length=16)  # evaluation | reasons | staff | decision | rectification | callback | close
    level: int
    channel: str = Field(max_length=16)
    evaluated_at: datetime = _ts(index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)
    solo: bool = False  # sent alone: its batch was refused, so each record goes on its own
    attempts: int = 0
    next_attempt_at: datetime = _ts()
    lease_until: datetime | None = _ts(default=None)
    first_sent_at: datetime | None = _ts(default=None)
    acknowledged_at: datetime | None = _ts(default=None)
    error_code: str | None = Field(default=None, max_length=32)
    last_error: str | None = Field(default=None, sa_type=Text)  # the province's own message, when it gave one
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
