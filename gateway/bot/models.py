"""Proof that a chat's user holds the citizen's phone, before the chat is bound to that citizen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime
from sqlmodel import Field, SQLModel


class ChatLinkChallenge(SQLModel, table=True):
    """A code sent by SMS to the citizen's phone, to be answered in the chat that opened the deep link."""

    __tablename__ = "chat_link_challenge"
    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_type=BigInteger, index=True)
    citizen_id: int = Field(foreign_key="citizen.id", index=True)
    invitation_id: int = Field(foreign_key="invitation.id")
    code_hash: str = Field(max_length=64)  # keyed hash of the code: the table alone does not reveal it
    attempts: int = 0  # wrong answers so far
    status: str = Field(default="pending", max_length=16)  # pending | verified | failed | expired | superseded
    created_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    resolved_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
